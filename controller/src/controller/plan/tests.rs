use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::{Int, String as Named};
use weir_api::channel::{AppliedPool, PoolHealth, RejectedPool, Report};
use weir_crds::{DataPlaneCounts, TargetCounts};

use super::*;
use crate::dataplanes::LINGER;
use crate::fixtures::{ServiceExt, SliceExt, backends, compact, pool, service, slice, to_service};
use crate::selector::Selector;

/// What the caches and the data planes hold, and the clock.
struct Cluster {
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    data_planes: DataPlanes,
    instant: Instant,
}

impl Cluster {
    /// Service `web` with port `http` (80, to the endpoints' `http`), and its slice with
    /// these ready endpoints on 8080.
    fn web(ready: &[&str]) -> Self {
        let slice = ready.iter().fold(
            slice("web", "web-a", "IPv4").port("http", 8080),
            |slice, address| slice.ready(address),
        );
        Self {
            services: vec![service("web").port("http", 80, Named("http".into()))],
            slices: vec![slice],
            data_planes: DataPlanes::new(LINGER),
            instant: Instant::now(),
        }
    }

    /// No Service and no slice.
    fn empty() -> Self {
        Self {
            services: Vec::new(),
            ..Self::web(&[])
        }
    }

    /// Data plane `id` reports that it applied `generation` of `shop/web` and finds these
    /// targets healthy, or that it refused it.
    fn report(&self, id: &str, generation: i64, healthy: &[&str], refused: Option<&str>) {
        let report = Report {
            data_plane: id.to_owned(),
            revision: 1,
            applied: match refused {
                None => vec![AppliedPool {
                    name: "shop/web".into(),
                    generation,
                }],
                Some(_) => vec![],
            },
            rejected: refused
                .map(|reason| RejectedPool {
                    name: "shop/web".into(),
                    generation,
                    reason: reason.into(),
                })
                .into_iter()
                .collect(),
            health: vec![PoolHealth {
                name: "shop/web".into(),
                healthy: healthy.iter().map(|a| a.parse().unwrap()).collect(),
                unhealthy: vec![],
            }],
            selector: String::new(),
        };
        self.data_planes
            .report(report, Selector::default(), self.instant);
    }

    /// The plan of the replica that writes status, which wrote `written` last.
    fn plan_after(&self, lbp: &LoadBalancerPool, written: Option<&Written>) -> Plan {
        self.plan_as(lbp, true, written)
    }

    /// The plan of the replica that writes status and has written nothing yet.
    fn plan(&self, lbp: &LoadBalancerPool) -> Plan {
        self.plan_as(lbp, true, None)
    }

    fn plan_as(
        &self,
        lbp: &LoadBalancerPool,
        writes_status: bool,
        written: Option<&Written>,
    ) -> Plan {
        let slices = compact(&self.slices);
        plan(&Known {
            pool: lbp,
            backends: &backends(&self.services, &slices),
            writes_status,
            written,
            data_planes: &self.data_planes,
            instant: self.instant,
            now: Timestamp::from_second(1000).unwrap(),
        })
    }
}

/// The pool `shop/web` naming Service `web` port 80, at `resourceVersion` 1.
fn web_pool() -> LoadBalancerPool {
    let mut lbp = pool(vec![to_service("web", Int(80), 1)]);
    lbp.metadata.uid = Some("uid-1".into());
    lbp.metadata.resource_version = Some("1".into());
    lbp.metadata.labels = Some([("team".to_owned(), "shop".to_owned())].into());
    lbp
}

/// The pool as the watch brings it back once `written` is in its status.
fn with_status(mut lbp: LoadBalancerPool, written: &Written, version: &str) -> LoadBalancerPool {
    lbp.status = Some(written.status.clone());
    lbp.metadata.resource_version = Some(version.into());
    lbp
}

fn targets(plan: &Plan) -> Vec<String> {
    let entry = plan.publish.as_ref().expect("the pool is published");
    entry
        .pool
        .pool
        .targets
        .iter()
        .map(|t| t.address.to_string())
        .collect()
}

fn written(plan: &Plan) -> &Written {
    &plan.write.as_ref().expect("a status is written").written
}

fn condition<'s>(status: &'s LoadBalancerPoolStatus, type_: &str) -> &'s Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

/// Each condition as `Type=Status/Reason`.
fn conditions(plan: &Plan) -> Vec<String> {
    written(plan)
        .status
        .conditions
        .iter()
        .map(|c| format!("{}={}/{}", c.type_, c.status, c.reason))
        .collect()
}

fn events(plan: &Plan) -> Vec<(bool, &'static str)> {
    plan.write
        .as_ref()
        .expect("a status is written")
        .events
        .iter()
        .map(|n| (n.warning, n.reason))
        .collect()
}

#[test]
fn a_resolved_pool_is_published_with_its_generation_and_labels_and_its_status_written() {
    let cluster = Cluster::web(&["10.0.0.1", "10.0.0.2"]);
    let lbp = web_pool();
    let plan = cluster.plan(&lbp);
    let entry = plan.publish.as_ref().unwrap();
    assert_eq!(entry.pool.pool.name, "shop/web");
    assert_eq!(entry.pool.generation, 1);
    assert_eq!(entry.labels, *lbp.labels());
    assert_eq!(targets(&plan), ["10.0.0.1:8080", "10.0.0.2:8080"]);

    let written = written(&plan);
    assert_eq!(
        (written.uid.as_str(), written.from_version.as_deref()),
        ("uid-1", Some("1")),
        "what is remembered names the pool and the version the status was computed from"
    );
    assert_eq!(written.status.observed_generation, Some(1));
    assert_eq!(written.status.routes.as_deref(), Some("*/"));
    assert_eq!(
        written.status.targets,
        Some(TargetCounts {
            total: 2,
            ready: 2,
            healthy: 0
        })
    );
    assert_eq!(
        conditions(&plan),
        [
            "Accepted=True/Accepted",
            "ResolvedRefs=True/ResolvedRefs",
            "Programmed=False/NoDataPlanes"
        ]
    );
    assert_eq!(
        events(&plan),
        [],
        "no data plane yet is no event: nothing is wrong with the pool"
    );
}

#[test]
fn a_pool_naming_a_missing_service_is_published_empty_and_warned_about() {
    let plan = Cluster::empty().plan(&web_pool());
    assert_eq!(
        targets(&plan),
        Vec::<String>::new(),
        "the pool is valid: its routes stay, answered 503"
    );
    let status = &written(&plan).status;
    let resolved = condition(status, "ResolvedRefs");
    assert_eq!(
        (resolved.status.as_str(), resolved.reason.as_str()),
        ("False", "BackendNotFound")
    );
    assert_eq!(resolved.message, r#"backends[0]: Service "web" not found"#);
    assert_eq!(status.targets.map(|t| t.total), Some(0));
    assert_eq!(
        events(&plan),
        [(true, "BackendNotFound"), (true, "NoReadyTargets")]
    );
}

#[test]
fn an_invalid_pool_publishes_nothing_so_the_data_planes_keep_its_last_good_version() {
    let mut lbp = web_pool();
    lbp.spec.routes[0].host = "API.example.com".into();
    let plan = Cluster::web(&["10.0.0.1"]).plan(&lbp);
    assert_eq!(plan.publish, None);
    let status = &written(&plan).status;
    let accepted = condition(status, "Accepted");
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "Invalid")
    );
    assert!(
        accepted
            .message
            .starts_with("invalid pool: routes[0].host:"),
        "{}",
        accepted.message
    );
    assert_eq!(
        condition(status, "Programmed").message,
        "the pool is not accepted: the data planes keep its last accepted version, if any"
    );
    assert_eq!(status.targets, None, "an invalid pool counts no targets");
    assert_eq!(events(&plan), [(true, "Invalid")]);
}

#[test]
fn a_replica_that_does_not_write_status_only_publishes() {
    let cluster = Cluster::web(&["10.0.0.1"]);
    let plan = cluster.plan_as(&web_pool(), false, None);
    assert_eq!(targets(&plan), ["10.0.0.1:8080"]);
    assert_eq!(plan.write, None);
}

#[test]
fn a_status_already_there_is_not_written_again() {
    let cluster = Cluster::web(&["10.0.0.1"]);
    let first = cluster.plan(&web_pool());
    let lbp = with_status(web_pool(), written(&first), "2");
    let again = cluster.plan(&lbp);
    assert_eq!(again.write, None, "the same facts call for the same status");
    assert_eq!(
        again.publish, first.publish,
        "and the same pool, which the hub takes as no change"
    );
}

#[test]
fn a_status_written_but_not_yet_watched_back_is_not_written_twice() {
    let cluster = Cluster::web(&["10.0.0.1"]);
    let lbp = web_pool();
    let first = cluster.plan(&lbp);
    // The cache still holds version 1, without the status.
    let again = cluster.plan_after(&lbp, Some(written(&first)));
    assert_eq!(again.write, None);
}

#[test]
fn once_the_cache_moves_on_it_is_the_truth_again() {
    let cluster = Cluster::web(&["10.0.0.1"]);
    let first = cluster.plan(&web_pool());
    // Version 2 arrives without this write's status (someone else cleared it): it is written
    // again, rather than trusting what this replica remembers.
    let mut moved = web_pool();
    moved.metadata.resource_version = Some("2".into());
    let again = cluster.plan_after(&moved, Some(written(&first)));
    assert_eq!(written(&again).status, written(&first).status);
    assert_eq!(written(&again).from_version.as_deref(), Some("2"));
}

#[test]
fn a_pool_deleted_and_created_again_is_another_pool() {
    let cluster = Cluster::web(&["10.0.0.1"]);
    let lbp = web_pool();
    let first = cluster.plan(&lbp);
    let mut recreated = lbp.clone();
    recreated.metadata.uid = Some("uid-2".into());
    let plan = cluster.plan_after(&recreated, Some(written(&first)));
    assert_eq!(written(&plan).uid, "uid-2");
}

#[test]
fn a_pool_whose_targets_changed_publishes_them_and_writes_the_new_counts() {
    let before = Cluster::web(&["10.0.0.1"]);
    let first = before.plan(&web_pool());
    let lbp = with_status(web_pool(), written(&first), "2");

    let after = Cluster::web(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    let plan = after.plan(&lbp);
    assert_eq!(
        targets(&plan),
        ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
    );
    assert_eq!(
        written(&plan).status.targets.map(|t| (t.total, t.ready)),
        Some((3, 3))
    );
    assert_eq!(
        condition(&written(&plan).status, "Accepted").last_transition_time,
        condition(&written(&first).status, "Accepted").last_transition_time,
        "conditions that keep their status keep their transition time"
    );
    assert_eq!(events(&plan), []);
}

#[test]
fn a_pool_that_lost_its_last_ready_target_warns_once() {
    let before = Cluster::web(&["10.0.0.1"]);
    let first = before.plan(&web_pool());
    let lbp = with_status(web_pool(), written(&first), "2");

    let none_ready = Cluster::web(&[]);
    let plan = none_ready.plan(&lbp);
    assert_eq!(targets(&plan), Vec::<String>::new());
    assert_eq!(events(&plan), [(true, "NoReadyTargets")]);

    let lbp = with_status(lbp, written(&plan), "3");
    assert_eq!(
        none_ready.plan(&lbp).write,
        None,
        "still no ready target: nothing new to say"
    );
}

#[test]
fn a_pool_every_data_plane_applied_is_programmed_with_an_event() {
    let cluster = Cluster::web(&["10.0.0.1", "10.0.0.2"]);
    cluster.report("dp-1", 1, &["10.0.0.1:8080", "10.0.0.2:8080"], None);
    cluster.report("dp-2", 1, &["10.0.0.1:8080"], None);
    let plan = cluster.plan(&web_pool());
    let status = &written(&plan).status;
    assert_eq!(
        status.data_planes,
        Some(DataPlaneCounts {
            connected: 2,
            synced: 2
        })
    );
    assert_eq!(
        status.targets.map(|t| t.healthy),
        Some(1),
        "healthy on every data plane"
    );
    assert_eq!(
        condition(status, "Programmed").message,
        "generation 1 applied by 2 of 2 connected data planes"
    );
    assert_eq!(events(&plan), [(false, "Programmed")]);
}

#[test]
fn a_data_plane_that_runs_an_older_generation_leaves_the_pool_pending() {
    let cluster = Cluster::web(&["10.0.0.1"]);
    cluster.report("dp-1", 1, &["10.0.0.1:8080"], None);
    let mut edited = web_pool();
    edited.metadata.generation = Some(2);
    let plan = cluster.plan(&edited);
    assert_eq!(plan.publish.as_ref().map(|e| e.pool.generation), Some(2));
    let programmed = condition(&written(&plan).status, "Programmed");
    assert_eq!(
        (programmed.reason.as_str(), programmed.message.as_str()),
        (
            "Pending",
            "generation 2 applied by 0 of 1 connected data planes"
        )
    );
    assert_eq!(events(&plan), []);
}

#[test]
fn a_pool_a_data_plane_refused_is_programmed_false_with_a_warning() {
    let cluster = Cluster::web(&["10.0.0.1"]);
    cluster.report(
        "dp-1",
        1,
        &[],
        Some("host \"*\" with pathPrefix \"/\" is already routed to pool shop/other"),
    );
    let plan = cluster.plan(&web_pool());
    let programmed = condition(&written(&plan).status, "Programmed");
    assert_eq!(programmed.reason, "Rejected");
    assert!(
        programmed
            .message
            .starts_with("data plane dp-1 refused generation 1: host"),
        "{}",
        programmed.message
    );
    assert_eq!(events(&plan), [(true, "Rejected")]);
}
