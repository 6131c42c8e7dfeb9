//! A pool's status, computed without an API server: from its spec, how it compiled and what
//! the data planes report ([`Observation`]), with the previous status so that a condition
//! whose status did not change keeps its `lastTransitionTime`. The reconciler writes the
//! result only when it differs from what is there, and publishes the [`Notice`]s of
//! [`notices`] as Events.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use weir_crds::condition::{self, reason};
use weir_crds::{DataPlaneCounts, LoadBalancerPoolStatus, TargetCounts};

use crate::dataplanes::Observation;
use crate::targets::{CompileError, Report};

/// What a pool's status is made of.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// `metadata.generation`.
    pub generation: i64,
    /// The spec's routes, summarised (`routes_summary`).
    pub routes: &'a str,
    /// How the pool compiled: the resolution report, or why it could not be compiled.
    pub compiled: Result<&'a Report, &'a CompileError>,
    /// What the data planes selecting it report.
    pub seen: &'a Observation,
}

/// An Event worth publishing about a status change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// A warning (something is wrong) or a normal event.
    pub warning: bool,
    /// Short PascalCase reason.
    pub reason: &'static str,
    /// A sentence.
    pub note: String,
}

/// The status `facts` call for. `previous` lends the `lastTransitionTime` of conditions
/// whose status stays; `now` (rounded down to the second, as the API server stores it) dates
/// the others.
pub fn desired(
    facts: &Facts<'_>,
    previous: Option<&LoadBalancerPoolStatus>,
    now: Timestamp,
) -> LoadBalancerPoolStatus {
    let now = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    let previous = previous.map_or(&[][..], |s| s.conditions.as_slice());
    let make = |type_: &str, status: &str, reason: &str, message: String| {
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: Some(facts.generation),
            last_transition_time,
        }
    };
    let generation = facts.generation;
    let seen = facts.seen;
    let (accepted, resolved, programmed, targets) = match facts.compiled {
        Err(error) => (
            make(
                condition::ACCEPTED,
                "False",
                reason::INVALID,
                error.to_string(),
            ),
            make(
                condition::RESOLVED_REFS,
                "Unknown",
                reason::INVALID,
                "backends are resolved once the pool is accepted".to_owned(),
            ),
            make(
                condition::PROGRAMMED,
                "False",
                reason::INVALID,
                "the pool is not accepted: the data planes keep its last accepted version, if any"
                    .to_owned(),
            ),
            None,
        ),
        Ok(report) => {
            let resolved = match (report.reason(), report.message()) {
                (Some(why), Some(message)) => make(condition::RESOLVED_REFS, "False", why, message),
                _ => make(
                    condition::RESOLVED_REFS,
                    "True",
                    reason::RESOLVED_REFS,
                    "every backend resolved".to_owned(),
                ),
            };
            let programmed = if let Some(rejection) = &seen.rejected {
                make(
                    condition::PROGRAMMED,
                    "False",
                    reason::REJECTED,
                    format!(
                        "data plane {} refused generation {generation}: {}",
                        rejection.data_plane, rejection.reason
                    ),
                )
            } else if seen.connected == 0 {
                make(
                    condition::PROGRAMMED,
                    "False",
                    reason::NO_DATA_PLANES,
                    "no data plane that selects this pool is connected".to_owned(),
                )
            } else if seen.synced == seen.connected {
                make(
                    condition::PROGRAMMED,
                    "True",
                    reason::PROGRAMMED,
                    format!(
                        "generation {generation} applied by {} of {} connected data planes",
                        seen.synced, seen.connected
                    ),
                )
            } else {
                make(
                    condition::PROGRAMMED,
                    "False",
                    reason::PENDING,
                    format!(
                        "generation {generation} applied by {} of {} connected data planes",
                        seen.synced, seen.connected
                    ),
                )
            };
            let accepted = make(
                condition::ACCEPTED,
                "True",
                reason::ACCEPTED,
                "the pool is valid".to_owned(),
            );
            let targets = TargetCounts {
                total: report.total,
                ready: report.ready,
                healthy: seen.healthy.min(report.ready),
            };
            (accepted, resolved, programmed, Some(targets))
        }
    };
    LoadBalancerPoolStatus {
        observed_generation: Some(generation),
        routes: Some(facts.routes.to_owned()),
        targets,
        data_planes: Some(DataPlaneCounts {
            connected: seen.connected,
            synced: seen.synced,
        }),
        conditions: vec![accepted, resolved, programmed],
    }
}

/// The Events a change from `previous` to `next` deserves: the pool programmed, refused by a
/// data plane, not accepted, a backend not resolved, no ready target left.
pub fn notices(
    previous: Option<&LoadBalancerPoolStatus>,
    next: &LoadBalancerPoolStatus,
) -> Vec<Notice> {
    let find = |status: Option<&LoadBalancerPoolStatus>, type_: &str| -> Option<Condition> {
        status?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .cloned()
    };
    let became = |type_: &str, status: &str, reason: &str| -> Option<Condition> {
        let now = find(Some(next), type_).filter(|c| c.status == status && c.reason == reason)?;
        let before = find(previous, type_);
        let same = before.is_some_and(|b| b.status == now.status && b.reason == now.reason);
        (!same).then_some(now)
    };
    let mut out = Vec::new();
    if let Some(c) = became(condition::ACCEPTED, "False", reason::INVALID) {
        out.push(Notice {
            warning: true,
            reason: "Invalid",
            note: c.message,
        });
    }
    for why in [reason::BACKEND_NOT_FOUND, reason::UNSUPPORTED_BACKEND] {
        if let Some(c) = became(condition::RESOLVED_REFS, "False", why) {
            out.push(Notice {
                warning: true,
                reason: why,
                note: c.message,
            });
        }
    }
    let ready = |s: Option<&LoadBalancerPoolStatus>| s.and_then(|s| s.targets).map(|t| t.ready);
    if ready(Some(next)) == Some(0) && ready(previous) != Some(0) {
        out.push(Notice {
            warning: true,
            reason: "NoReadyTargets",
            note: "no backend has a ready target: requests to the pool's routes get 503".to_owned(),
        });
    }
    if let Some(c) = became(condition::PROGRAMMED, "False", reason::REJECTED) {
        out.push(Notice {
            warning: true,
            reason: "Rejected",
            note: c.message,
        });
    }
    if let Some(c) = became(condition::PROGRAMMED, "True", reason::PROGRAMMED) {
        out.push(Notice {
            warning: false,
            reason: "Programmed",
            note: c.message,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplanes::Rejection;
    use crate::targets::{BackendReport, Problem};

    fn report(ready: u32, problem: Option<Problem>) -> Report {
        Report {
            backends: vec![BackendReport {
                service_found: Some(problem.is_none()),
                total: 2,
                ready,
                problem,
            }],
            total: 2,
            ready,
        }
    }

    fn seen(connected: u32, synced: u32, healthy: u32) -> Observation {
        Observation {
            connected,
            synced,
            healthy,
            rejected: None,
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn get<'s>(status: &'s LoadBalancerPoolStatus, type_: &str) -> &'s Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_resolved_pool_every_data_plane_applied_is_programmed() {
        let r = report(2, None);
        let s = seen(2, 2, 2);
        let facts = Facts {
            generation: 3,
            routes: "*/",
            compiled: Ok(&r),
            seen: &s,
        };
        let status = desired(&facts, None, at(1000));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.routes.as_deref(), Some("*/"));
        assert_eq!(
            status.targets,
            Some(TargetCounts {
                total: 2,
                ready: 2,
                healthy: 2
            })
        );
        assert_eq!(
            status.data_planes,
            Some(DataPlaneCounts {
                connected: 2,
                synced: 2
            })
        );
        let types: Vec<(&str, &str)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                ("Accepted", "True"),
                ("ResolvedRefs", "True"),
                ("Programmed", "True")
            ]
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        let notices = notices(None, &status);
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].reason, "Programmed");
    }

    #[test]
    fn transition_times_stay_while_a_condition_keeps_its_status() {
        let r = report(2, None);
        let (half, all) = (seen(2, 1, 2), seen(2, 2, 2));
        let facts = |s| Facts {
            generation: 1,
            routes: "*/",
            compiled: Ok(&r),
            seen: s,
        };
        let first = desired(&facts(&half), None, at(1000));
        let programmed = get(&first, "Programmed");
        assert_eq!(
            (programmed.status.as_str(), programmed.reason.as_str()),
            ("False", "Pending")
        );
        assert_eq!(
            programmed.message,
            "generation 1 applied by 1 of 2 connected data planes"
        );
        let again = desired(&facts(&half), Some(&first), at(2000));
        assert_eq!(again, first, "nothing changed, nothing to write");
        let done = desired(&facts(&all), Some(&first), at(3000));
        assert_eq!(
            get(&done, "Programmed").last_transition_time,
            Time(at(3000))
        );
        assert_eq!(get(&done, "Accepted").last_transition_time, Time(at(1000)));
        let notices = notices(Some(&first), &done);
        assert_eq!(
            notices.iter().map(|n| n.reason).collect::<Vec<_>>(),
            ["Programmed"]
        );
    }

    #[test]
    fn a_missing_service_reads_as_resolved_refs_false_and_no_ready_targets() {
        let r = report(
            0,
            Some(Problem::ServiceNotFound {
                service: "users-v3".into(),
            }),
        );
        let s = seen(1, 1, 0);
        let facts = Facts {
            generation: 1,
            routes: "*/",
            compiled: Ok(&r),
            seen: &s,
        };
        let status = desired(&facts, None, at(1000));
        let resolved = get(&status, "ResolvedRefs");
        assert_eq!(resolved.status, "False");
        assert_eq!(resolved.reason, "BackendNotFound");
        assert_eq!(
            resolved.message,
            r#"backends[0]: Service "users-v3" not found"#
        );
        let reasons: Vec<_> = notices(None, &status).iter().map(|n| n.reason).collect();
        assert_eq!(reasons, ["BackendNotFound", "NoReadyTargets", "Programmed"]);
    }

    #[test]
    fn a_refusal_by_a_data_plane_is_programmed_false_with_its_reason() {
        let r = report(2, None);
        let s = Observation {
            connected: 2,
            synced: 1,
            healthy: 2,
            rejected: Some(Rejection {
                data_plane: "dp-2".into(),
                reason: "host \"*\" with pathPrefix \"/\" is already routed to pool ns/other"
                    .into(),
            }),
        };
        let facts = Facts {
            generation: 4,
            routes: "*/",
            compiled: Ok(&r),
            seen: &s,
        };
        let status = desired(&facts, None, at(1000));
        let programmed = get(&status, "Programmed");
        assert_eq!(
            (programmed.status.as_str(), programmed.reason.as_str()),
            ("False", "Rejected")
        );
        assert!(
            programmed
                .message
                .starts_with("data plane dp-2 refused generation 4: host"),
            "{}",
            programmed.message
        );
        assert_eq!(notices(None, &status)[0].reason, "Rejected");
    }

    #[test]
    fn no_data_plane_and_an_invalid_pool_say_so() {
        let r = report(2, None);
        let none = seen(0, 0, 0);
        let facts = Facts {
            generation: 1,
            routes: "*/",
            compiled: Ok(&r),
            seen: &none,
        };
        let status = desired(&facts, None, at(1000));
        assert_eq!(get(&status, "Programmed").reason, "NoDataPlanes");
        assert_eq!(status.targets.unwrap().healthy, 0);

        let error = CompileError::Unnamed;
        let facts = Facts {
            compiled: Err(&error),
            ..facts
        };
        let invalid = desired(&facts, Some(&status), at(2000));
        assert_eq!(get(&invalid, "Accepted").status, "False");
        assert_eq!(get(&invalid, "ResolvedRefs").status, "Unknown");
        assert_eq!(invalid.targets, None);
        assert_eq!(notices(Some(&status), &invalid)[0].reason, "Invalid");
    }
}
