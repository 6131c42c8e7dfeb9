//! Leader election on a `coordination.k8s.io` Lease, so that of several replicas exactly one
//! writes status and publishes Events while every replica serves the channel.
//!
//! The algorithm is client-go's (`tools/leaderelection`): the holder renews the Lease every
//! retry period; the others watch its record and take it over once it has not changed for the
//! Lease's duration *by their own clock* (no comparison of timestamps written by other
//! machines, so clock skew does not matter); every write is a replace at the read
//! `resourceVersion`, so two candidates never both win. A holder that cannot renew within the
//! renew deadline steps down before its Lease can expire for the others, and a holder that
//! stops releases the Lease so a successor takes over at once.
//!
//! Written here rather than taken from a crate: the Lease crates on crates.io (kube-lease-manager,
//! kube-coordinate, kube-leader-election) pin older kube and k8s-openapi releases than the
//! workspace's, and two k8s-openapi versions cannot share a build. The decision itself is the
//! pure [`decide`], unit-tested on plain values.
//!
//! The holder also writes where its channel listens (annotation [`CHANNEL_ANNOTATION`]):
//! reports that data planes post to another replica are relayed there, since the one writing
//! status needs to hear every data plane.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// The Lease annotation carrying the holder's channel URL.
pub const CHANNEL_ANNOTATION: &str = "weir.dev/channel";
/// How long a new holder waits before writing status after taking over from another
/// replica: data planes report at least every 10 s (`REPORT_REPEAT` in the data plane), so by
/// then every connected data plane has reported to it, directly or relayed. Writing earlier
/// would count the data planes that have not reported yet as gone.
pub const WARM_UP: Duration = Duration::from_secs(11);

/// Where and how to elect.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// This replica's channel URL, for the others to relay reports to.
    pub channel_url: Option<String>,
    /// How long a Lease not renewed stays valid.
    pub duration: Duration,
    /// How long a holder keeps trying to renew before it steps down (below `duration`).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

/// This replica's part, as the status writer and the channel see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// No election configured: the only replica, which writes status.
    Alone,
    /// Another replica (or none yet) holds the Lease.
    Follower {
        /// The holder's channel URL, where reports are relayed; `None` while nobody holds
        /// the Lease or the holder did not say.
        leader_channel: Option<String>,
    },
    /// This replica holds the Lease; it writes status from `writes_from` on.
    Leader {
        /// When the warm-up after a takeover ends.
        writes_from: Instant,
    },
}

impl Role {
    /// Whether this replica writes status and Events at `now`.
    pub fn writes_status(&self, now: Instant) -> bool {
        match self {
            Self::Alone => true,
            Self::Follower { .. } => false,
            Self::Leader { writes_from } => now >= *writes_from,
        }
    }

    /// Where to relay data planes' reports: the holder's channel, when this replica is not it.
    pub fn relay_to(&self) -> Option<&str> {
        match self {
            Self::Follower { leader_channel } => leader_channel.as_deref(),
            _ => None,
        }
    }

    /// The value of the `weir_controller_leader` gauge.
    pub fn is_leader(&self) -> bool {
        matches!(self, Self::Alone | Self::Leader { .. })
    }
}

/// What to do with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (absent, or released): take it.
    Acquire,
    /// Another replica held it and let it expire: take it over.
    TakeOver,
    /// This replica holds it: renew.
    Renew,
    /// Another replica holds it: follow.
    Follow,
}

/// The record of the Lease as last seen and when this replica first saw it so.
#[derive(Clone, Debug)]
pub struct Observed {
    holder: String,
    renewed: Option<MicroTime>,
    at: Instant,
}

impl Observed {
    /// Notes the Lease's `spec` as read at `now`: the clock restarts when its record changed.
    pub fn update(previous: Option<Self>, spec: &LeaseSpec, now: Instant) -> Self {
        let holder = spec.holder_identity.clone().unwrap_or_default();
        match previous {
            Some(p) if p.holder == holder && p.renewed == spec.renew_time => p,
            _ => Self {
                holder,
                renewed: spec.renew_time.clone(),
                at: now,
            },
        }
    }
}

/// Decides what `me` does with a Lease whose record was `observed`, at `now`; `spec` is
/// `None` when the Lease does not exist. A Lease that does not say its duration is held for
/// `default_duration`.
pub fn decide(
    spec: Option<&LeaseSpec>,
    observed: Option<&Observed>,
    me: &str,
    default_duration: Duration,
    now: Instant,
) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Decision::Acquire,
        Some(holder) if holder == me => Decision::Renew,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs);
            let expired = observed.is_some_and(|o| now.saturating_duration_since(o.at) >= duration);
            if expired {
                Decision::TakeOver
            } else {
                Decision::Follow
            }
        }
    }
}

/// Why an election round failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached.
    #[error("lease {name}: {source}")]
    Api {
        /// `namespace/name`.
        name: String,
        /// What the client said.
        #[source]
        source: kube::Error,
    },
}

/// Runs the election until `stop` resolves, publishing this replica's [`Role`] on `role`;
/// then releases the Lease if it holds it.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    role: watch::Sender<Role>,
    stop: impl std::future::Future<Output = ()>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut elector = Elector {
        api,
        config,
        observed: None,
        renewed_at: None,
    };
    tokio::pin!(stop);
    loop {
        let next = elector.round(&role, Instant::now()).await;
        let wait = if role.borrow().is_leader() {
            elector.config.retry_period
        } else {
            // client-go's JitterFactor 1.2: followers spread their attempts.
            elector
                .config
                .retry_period
                .mul_f64(1.0 + 1.2 * fastrand::f64())
        };
        if let Some(next) = next {
            role.send_if_modified(|r| {
                if *r == next {
                    return false;
                }
                log_change(r, &next, &elector.config.identity);
                *r = next;
                true
            });
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut stop => break,
        }
    }
    if role.borrow().is_leader() {
        match elector.release().await {
            Ok(()) => tracing::info!(lease = %elector.name(), "lease released"),
            Err(e) => tracing::warn!(error = %e, "cannot release the lease; it expires on its own"),
        }
        role.send_replace(Role::Follower {
            leader_channel: None,
        });
    }
}

fn log_change(before: &Role, after: &Role, me: &str) {
    match (before.is_leader(), after) {
        (false, Role::Leader { writes_from }) => {
            let warm_up = writes_from.saturating_duration_since(Instant::now());
            tracing::info!(identity = %me, ?warm_up, "leading: this replica writes status");
        }
        (true, Role::Follower { .. }) => {
            tracing::warn!(identity = %me, "no longer leading: status writes stop");
        }
        (_, Role::Follower { leader_channel }) => {
            tracing::info!(leader_channel = ?leader_channel, "following");
        }
        _ => {}
    }
}

struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
    /// When this replica last renewed successfully, while it leads.
    renewed_at: Option<Instant>,
}

impl Elector {
    fn name(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn error(&self, source: kube::Error) -> Error {
        Error::Api {
            name: self.name(),
            source,
        }
    }

    /// One attempt to acquire or renew; the new role, or `None` to keep the current one.
    async fn round(&mut self, role: &watch::Sender<Role>, now: Instant) -> Option<Role> {
        match self.try_round(role, now).await {
            Ok(next) => Some(next),
            Err(e) => {
                // A holder keeps its role through errors until the renew deadline, since its
                // Lease is still valid for the others until then.
                let deadline_passed = self.renewed_at.is_none_or(|at| {
                    now.saturating_duration_since(at) >= self.config.renew_deadline
                });
                tracing::warn!(error = %e, "leader election round failed");
                if role.borrow().is_leader() && deadline_passed {
                    self.renewed_at = None;
                    return Some(Role::Follower {
                        leader_channel: None,
                    });
                }
                None
            }
        }
    }

    async fn try_round(&mut self, role: &watch::Sender<Role>, now: Instant) -> Result<Role, Error> {
        let lease = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error(e))?;
        let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
        if let Some(spec) = spec {
            self.observed = Some(Observed::update(self.observed.take(), spec, now));
        }
        let decision = decide(
            spec,
            self.observed.as_ref(),
            &self.config.identity,
            self.config.duration,
            now,
        );
        let leading_since = match role.borrow().clone() {
            Role::Leader { writes_from } => Some(writes_from),
            _ => None,
        };
        match decision {
            Decision::Follow => {
                self.renewed_at = None;
                let leader_channel = lease
                    .as_ref()
                    .and_then(|l| l.annotations().get(CHANNEL_ANNOTATION).cloned());
                Ok(Role::Follower { leader_channel })
            }
            Decision::Acquire | Decision::TakeOver | Decision::Renew => {
                let existed = lease.is_some();
                match self.write(lease, decision == Decision::Renew).await {
                    Ok(()) => {
                        self.renewed_at = Some(now);
                        // Only a Lease that never existed had no holder collecting the
                        // data planes' reports; after a release, an expiry or a restart of
                        // this replica, the reports are still to come.
                        let writes_from =
                            leading_since.unwrap_or(if existed { now + WARM_UP } else { now });
                        Ok(Role::Leader { writes_from })
                    }
                    // Someone else wrote first: follow them from the next read on.
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(Role::Follower {
                        leader_channel: None,
                    }),
                    Err(e) => Err(self.error(e)),
                }
            }
        }
    }

    /// Writes this replica into the Lease (creating it if absent), at the `resourceVersion`
    /// read so a concurrent writer makes this fail with 409.
    async fn write(&self, lease: Option<Lease>, renew: bool) -> Result<(), kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let duration = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX);
        let mut lease = lease.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec::default()),
        });
        let exists = lease.metadata.resource_version.is_some();
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !renew {
            spec.acquire_time = Some(now.clone());
            if exists {
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            } else {
                spec.lease_transitions = Some(0);
            }
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(now);
        let annotations = lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        match &self.config.channel_url {
            Some(url) => {
                annotations.insert(CHANNEL_ANNOTATION.to_owned(), url.clone());
            }
            None => {
                annotations.remove(CHANNEL_ANNOTATION);
            }
        }
        if exists {
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await?;
        } else {
            self.api.create(&PostParams::default(), &lease).await?;
        }
        Ok(())
    }

    /// Gives the Lease up: no holder, so the next candidate acquires it without waiting for
    /// it to expire (client-go's `ReleaseOnCancel`).
    async fn release(&self) -> Result<(), Error> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        if let Some(annotations) = lease.metadata.annotations.as_mut() {
            annotations.remove(CHANNEL_ANNOTATION);
        }
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATION: Duration = Duration::from_secs(15);

    fn held_by(holder: &str, renewed_second: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(renewed_second).unwrap(),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_missing_or_released_lease_is_acquired() {
        let now = Instant::now();
        assert_eq!(decide(None, None, "a", DURATION, now), Decision::Acquire);
        let released = LeaseSpec {
            holder_identity: Some(String::new()),
            ..held_by("", 100)
        };
        assert_eq!(
            decide(Some(&released), None, "a", DURATION, now),
            Decision::Acquire
        );
    }

    #[test]
    fn the_holder_renews() {
        let spec = held_by("a", 100);
        let seen = Observed::update(None, &spec, Instant::now());
        assert_eq!(
            decide(Some(&spec), Some(&seen), "a", DURATION, Instant::now()),
            Decision::Renew
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_holder_is_followed_until_its_record_stands_still_for_the_duration() {
        let spec = held_by("b", 100);
        let seen = Observed::update(None, &spec, Instant::now());
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(
            decide(Some(&spec), Some(&seen), "a", DURATION, Instant::now()),
            Decision::Follow
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            decide(Some(&spec), Some(&seen), "a", DURATION, Instant::now()),
            Decision::TakeOver
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_restarts_the_clock_whatever_time_it_names() {
        let spec = held_by("b", 100);
        let seen = Observed::update(None, &spec, Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        // The holder's clock may be far behind ours: only the change counts.
        let renewed = held_by("b", 50);
        let seen = Observed::update(Some(seen), &renewed, Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            decide(Some(&renewed), Some(&seen), "a", DURATION, Instant::now()),
            Decision::Follow
        );
        // The same record read again does not restart it.
        let seen = Observed::update(Some(seen), &renewed, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            decide(Some(&renewed), Some(&seen), "a", DURATION, Instant::now()),
            Decision::TakeOver
        );
    }

    #[test]
    fn a_lease_held_by_another_is_followed_when_first_read() {
        // Without an observation this replica has not watched the Lease for its duration yet.
        let spec = held_by("b", 0);
        assert_eq!(
            decide(Some(&spec), None, "a", DURATION, Instant::now()),
            Decision::Follow
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_writes_status_only_after_its_warm_up() {
        let role = Role::Leader {
            writes_from: Instant::now() + WARM_UP,
        };
        assert!(role.is_leader());
        assert!(!role.writes_status(Instant::now()));
        tokio::time::advance(WARM_UP).await;
        assert!(role.writes_status(Instant::now()));
        assert_eq!(role.relay_to(), None);
    }

    #[test]
    fn a_follower_relays_to_the_holder_and_never_writes() {
        let role = Role::Follower {
            leader_channel: Some("http://10.0.0.7:8081".into()),
        };
        assert!(!role.writes_status(Instant::now()));
        assert_eq!(role.relay_to(), Some("http://10.0.0.7:8081"));
        assert!(Role::Alone.writes_status(Instant::now()));
    }
}
