//! The kube-runtime side: reflectors over LoadBalancerPools, Services and EndpointSlices
//! ([`watches`]), a `Controller` on pools that Services and slices map back to, and
//! [`reconcile`], which gathers what is known of a pool, decides with [`plan::plan`] (a pure
//! function, where `targets::compile` runs) what to stage in the [`Hub`], what status to write
//! and which Events to publish, and then does it. [`run`] reads as its steps.
//!
//! - Deleted pools: the reconciler never sees them; the `Controller` reports
//!   `ObjectNotFound` for a deleted pool's last trigger, and [`run`] removes it from the hub
//!   then. After a re-list (a watch that fell too far behind), pools gone meanwhile are swept.
//! - Reports from data planes change status without any Kubernetes object changing: the
//!   channel sends the affected pools through [`Triggers`] into `Controller::reconcile_on`.
//! - Nothing is served before the caches are synced and every pool has been compiled once
//!   (the `ready` flag), so a restarted controller never sends a data plane a partial
//!   snapshot.
//!
//! RBAC it needs: `get`, `list`, `watch` on `loadbalancerpools.weir.dev`, `services` and
//! `endpointslices.discovery.k8s.io`; `patch` on `loadbalancerpools/status`; `create` and
//! `patch` on `events.events.k8s.io`; `create` on `tokenreviews.authentication.k8s.io` when
//! data planes authenticate with ServiceAccount tokens; `get`, `create` and `update` on
//! `leases.coordination.k8s.io` in the Lease's namespace when replicas elect a leader.
//!
//! - Several replicas: every one runs the reflectors, the hub and the channel; only the one
//!   whose [`Role`] says so (the Lease holder, after its warm-up) writes status and publishes
//!   Events. When a replica starts writing, every pool is reconciled again; when it stops, it
//!   forgets what it wrote, since the next holder may write something else meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use weir_crds::{LoadBalancerPool, LoadBalancerPoolStatus};

use crate::dataplanes::DataPlanes;
use crate::endpoints::{SERVICE_NAME_LABEL, Slice, SliceIndex};
use crate::hub::{self, Hub};
use crate::leader::Role;
use crate::metrics::{ErrorLabels, Metrics};
use crate::status::Notice;
use crate::targets::Backends;

pub mod plan;
pub mod watches;

use plan::{Known, Plan, Written};
use watches::{Caches, Synced, Watches};

/// The field manager of status writes (server-side apply).
pub const FIELD_MANAGER: &str = "weir-controller";
/// Reconcile again after this long even if nothing triggers it.
const RESYNC: Duration = Duration::from_secs(300);
/// Retry after a failed reconcile.
const RETRY: Duration = Duration::from_secs(5);
/// How often data planes that went away are expired.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// What the reconciler works with.
pub struct Context {
    /// The Kubernetes client, for status writes.
    pub client: Client,
    /// The pools served to data planes.
    pub hub: Arc<Hub>,
    /// The data planes and their reports.
    pub data_planes: Arc<DataPlanes>,
    /// Services, as the reflector holds them.
    pub services: Store<Service>,
    /// EndpointSlices labelled with a Service name, compact, by Service.
    pub slices: Arc<SliceIndex>,
    /// Events about pools.
    pub recorder: Recorder,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Which caches have synced ([`Synced`] bits).
    synced: watch::Receiver<u8>,
    /// Whether this replica writes status.
    role: watch::Receiver<Role>,
    /// The last status written per pool, so that a write the watch has not brought back yet
    /// is not repeated.
    written: Mutex<HashMap<String, Written>>,
}

/// What the reconciler shares with the channel and the metrics listener.
#[derive(Clone)]
pub struct Shared {
    /// The pools served.
    pub hub: Arc<Hub>,
    /// The data planes.
    pub data_planes: Arc<DataPlanes>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Re-reconciles pools.
    pub triggers: Triggers,
    /// This replica's part in the election.
    pub role: watch::Receiver<Role>,
}

/// Asks the controller to reconcile pools again (their data planes reported something new).
#[derive(Clone, Debug)]
pub struct Triggers(mpsc::UnboundedSender<ObjectRef<LoadBalancerPool>>);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reflectors stopped before their caches synced (the controller is stopping).
    #[error("the caches stopped before they synced")]
    CachesStopped,
    /// The status could not be written.
    #[error("cannot write the status of {pool}: {source}")]
    Status {
        /// `namespace/name`.
        pool: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The metric label of the error.
    pub fn label(&self) -> &'static str {
        match self {
            Self::CachesStopped => "caches",
            Self::Status { .. } => "status",
        }
    }
}

impl Triggers {
    /// A sender, and the stream `Controller::reconcile_on` takes.
    pub fn new() -> (
        Self,
        impl Stream<Item = ObjectRef<LoadBalancerPool>> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        (Self(tx), stream)
    }

    /// Reconciles the pools named `namespace/name`.
    pub fn pools<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) {
        for name in names {
            if let Some((namespace, name)) = name.as_ref().split_once('/') {
                let _ = self.0.send(ObjectRef::new(name).within(namespace));
            }
        }
    }
}

impl Context {
    /// Waits for the Service and EndpointSlice caches: a pool compiled before they are synced
    /// would read as having no backends.
    async fn caches_synced(&self) -> Result<(), Error> {
        Synced::wait(&self.synced, Synced::SERVICES | Synced::SLICES)
            .await
            .map_err(|_| Error::CachesStopped)
    }

    /// What reconciling `lbp` would do, from the cached Services and slices of its namespace
    /// that it names, what this replica wrote and what the data planes report.
    fn plan(&self, lbp: &LoadBalancerPool, writes_status: bool) -> Plan {
        let namespace = lbp.namespace().unwrap_or_default();
        let names = lbp.spec.service_names();
        let services: Vec<Arc<Service>> = names
            .iter()
            .filter_map(|name| self.services.get(&ObjectRef::new(name).within(&namespace)))
            .collect();
        let slices: Vec<(&str, Vec<Arc<Slice>>)> = names
            .iter()
            .map(|name| (*name, self.slices.slices(&namespace, name)))
            .collect();
        let backends = Backends::new(
            services.iter().map(|s| &**s),
            slices.iter().flat_map(|(service, slices)| {
                slices.iter().map(|s| (namespace.as_str(), *service, &**s))
            }),
        );
        let written = self.written().get(&plan::name(lbp)).cloned();
        plan::plan(&Known {
            pool: lbp,
            backends: &backends,
            writes_status,
            written: written.as_ref(),
            data_planes: &self.data_planes,
            instant: Instant::now(),
            now: k8s_openapi::jiff::Timestamp::now(),
        })
    }

    /// Does what `plan` says: stages the pool for the data planes, then writes its status
    /// and, once written, remembers it and publishes the Events.
    async fn apply(&self, lbp: &LoadBalancerPool, plan: Plan) -> Result<(), Error> {
        if let Some(entry) = plan.publish {
            let name = entry.pool.pool.name.clone();
            self.hub.stage(&name, Some(entry));
        }
        let Some(write) = plan.write else {
            return Ok(());
        };
        self.write_status(lbp, &write.written.status).await?;
        self.written().insert(plan::name(lbp), write.written);
        self.publish_events(lbp, write.events).await;
        Ok(())
    }

    /// Writes `status` into the pool's status subresource (server-side apply).
    async fn write_status(
        &self,
        lbp: &LoadBalancerPool,
        status: &LoadBalancerPoolStatus,
    ) -> Result<(), Error> {
        let name = plan::name(lbp);
        let api: Api<LoadBalancerPool> =
            Api::namespaced(self.client.clone(), &lbp.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": LoadBalancerPool::api_version(&()),
            "kind": LoadBalancerPool::kind(&()),
            "status": status,
        });
        api.patch_status(
            &lbp.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::Status {
            pool: name.clone(),
            source,
        })?;
        self.metrics.status_writes.inc();
        tracing::info!(
            pool = %name,
            generation = lbp.metadata.generation.unwrap_or_default(),
            targets = ?status.targets,
            data_planes = ?status.data_planes,
            conditions = %conditions_text(status),
            "status written"
        );
        Ok(())
    }

    /// Publishes `notices` as Events about the pool; one that cannot be published is logged.
    async fn publish_events(&self, lbp: &LoadBalancerPool, notices: Vec<Notice>) {
        let reference = lbp.object_ref(&());
        for notice in notices {
            let event = Event {
                type_: if notice.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: notice.reason.to_owned(),
                note: Some(notice.note),
                action: "Reconcile".to_owned(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &reference).await {
                tracing::warn!(pool = %plan::name(lbp), error = %e, "cannot publish an event");
            }
        }
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<String, Written>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Plans what the pool calls for and does it: stages it for the data planes, and writes its
/// status if it changed (when this replica writes status).
pub async fn reconcile(lbp: Arc<LoadBalancerPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    ctx.caches_synced().await?;
    let writes_status = ctx.role.borrow().writes_status(Instant::now());
    let plan = ctx.plan(&lbp, writes_status);
    ctx.apply(&lbp, plan).await?;
    Ok(Action::requeue(RESYNC))
}

/// Counts the failure and retries after a few seconds.
pub fn error_policy(lbp: Arc<LoadBalancerPool>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            error: error.label(),
        })
        .inc();
    tracing::warn!(pool = %lbp.name_any(), namespace = ?lbp.namespace(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

/// Runs the controller until its watches end: reflectors, the `Controller`, the hub's
/// committer and the expiry of data planes that went away. Sets `ready` once the caches are
/// synced and every pool has been compiled into the hub.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    shared: Shared,
    triggered: impl Stream<Item = ObjectRef<LoadBalancerPool>> + Send + 'static,
    ready: watch::Sender<bool>,
) {
    let (caches, watches) = watches::start(&client, namespace.as_deref(), &shared.hub);
    let ctx = Arc::new(context(client, &shared, &caches));
    let background = [
        tokio::spawn(follow_role(
            shared.role.clone(),
            ctx.clone(),
            caches.pools.clone(),
            shared.triggers.clone(),
        )),
        tokio::spawn(commit_changes(shared.clone())),
        tokio::spawn(expire_data_planes(shared)),
        tokio::spawn(prime_hub(ctx.clone(), caches.clone(), ready)),
    ];
    control(watches, caches, triggered, ctx).await;
    for task in background {
        task.abort();
    }
}

/// The reconciler's context, with a recorder that names this controller (and its Pod).
fn context(client: Client, shared: &Shared, caches: &Caches) -> Context {
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    Context {
        client: client.clone(),
        hub: shared.hub.clone(),
        data_planes: shared.data_planes.clone(),
        services: caches.services.clone(),
        slices: caches.slices.clone(),
        recorder: Recorder::new(client, reporter),
        metrics: shared.metrics.clone(),
        synced: caches.synced.clone(),
        role: shared.role.clone(),
        written: Mutex::new(HashMap::new()),
    }
}

/// Runs kube-runtime's `Controller` until the watches end: on every pool, on the pools that
/// name a Service or an EndpointSlice's Service that changed, and on the pools `triggered`
/// names (data planes reported on them).
async fn control(
    watches: Watches,
    caches: Caches,
    triggered: impl Stream<Item = ObjectRef<LoadBalancerPool>> + Send + 'static,
    ctx: Arc<Context>,
) {
    let by_service = caches.by_service;
    let naming =
        move |namespace: Option<String>, service: Option<String>| match (namespace, service) {
            (Some(namespace), Some(service)) => by_service.naming(&namespace, &service),
            _ => Vec::new(),
        };
    let naming_slice = naming.clone();
    Controller::for_stream(watches.pools, caches.pools)
        .watches_stream(watches.services, move |s: Service| {
            naming(s.metadata.namespace, s.metadata.name)
        })
        .watches_stream(watches.slices, move |s: EndpointSlice| {
            let service = s.labels().get(SERVICE_NAME_LABEL).cloned();
            naming_slice(s.metadata.namespace, service)
        })
        .reconcile_on(triggered)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            match result {
                Ok(_) => {}
                Err(controller::Error::ObjectNotFound(gone)) => remove_deleted(&ctx, &gone),
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => tracing::warn!(error = %e, "controller error"),
            }
            std::future::ready(())
        })
        .await;
}

/// Removes a pool the `Controller` found deleted from the data planes, and forgets its
/// status.
fn remove_deleted(ctx: &Context, gone: &ObjectRef<kube::core::DynamicObject>) {
    let name = match &gone.namespace {
        Some(ns) => format!("{ns}/{}", gone.name),
        None => gone.name.clone(),
    };
    if ctx.hub.get(&name).is_some() {
        tracing::info!(pool = %name, "pool deleted; removing it from the data planes");
    }
    ctx.hub.stage(&name, None);
    ctx.written().remove(&name);
}

/// Commits what is staged in the hub, coalesced, and tells the data planes' convergence
/// clock.
async fn commit_changes(shared: Shared) {
    let Shared {
        hub,
        data_planes,
        metrics,
        ..
    } = shared;
    hub.coalesce(hub::QUIET, hub::MAX_DELAY, |revisions, staged| {
        metrics.revision.set(*revisions.end());
        metrics.pools.set(gauge(hub.names().len()));
        data_planes.committed(revisions, staged);
    })
    .await;
}

/// Every [`EXPIRE_EVERY`]: forgets data planes that went away (reconciling the pools they
/// selected), and counts the connected ones and the changes they converged on.
async fn expire_data_planes(shared: Shared) {
    let Shared {
        hub,
        data_planes,
        metrics,
        triggers,
        ..
    } = shared;
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for (id, selector) in data_planes.expire(now) {
            tracing::info!(data_plane = %id, "data plane gone: no stream and no report for 30 s");
            triggers.pools(hub.selected(&selector));
        }
        metrics.data_planes.set(gauge(data_planes.connected(now)));
        for took in data_planes.converged(now, |r| hub.issued(r)) {
            metrics.convergence.observe(took.as_secs_f64());
        }
    }
}

/// Once every cache has synced, compiles every pool into the hub and commits it, then sets
/// `ready`: data planes are served a whole snapshot, never a partial one.
async fn prime_hub(ctx: Arc<Context>, caches: Caches, ready: watch::Sender<bool>) {
    if Synced::wait(&caches.synced, Synced::ALL).await.is_err() {
        return;
    }
    let pools = caches.pools.state();
    for lbp in &pools {
        if let Some(entry) = ctx.plan(lbp, false).publish {
            let name = entry.pool.pool.name.clone();
            ctx.hub.stage(&name, Some(entry));
        }
    }
    ctx.hub.commit();
    ctx.metrics.revision.set(ctx.hub.revision());
    ctx.metrics.pools.set(gauge(ctx.hub.names().len()));
    tracing::info!(
        pools = pools.len(),
        revision = ctx.hub.revision(),
        "caches synced and pools compiled; serving data planes"
    );
    let _ = ready.send(true);
}

/// Follows this replica's [`Role`]: when it starts writing status (at once, or after the
/// warm-up of a new Lease holder) every pool is reconciled, since none was while it did not;
/// when it stops, it forgets what it wrote.
async fn follow_role(
    mut role: watch::Receiver<Role>,
    ctx: Arc<Context>,
    pools: Store<LoadBalancerPool>,
    triggers: Triggers,
) {
    let mut writing = false;
    loop {
        let current = role.borrow_and_update().clone();
        let writes = current.writes_status(Instant::now());
        ctx.metrics.leader.set(i64::from(current.is_leader()));
        if writes && !writing {
            let names: Vec<String> = pools.state().iter().map(|p| plan::name(p)).collect();
            tracing::info!(pools = names.len(), "writing status from now on");
            triggers.pools(names);
        } else if !writes && writing {
            ctx.written().clear();
        }
        writing = writes;
        let warming = match current {
            Role::Leader { writes_from } if !writes => Some(writes_from),
            _ => None,
        };
        let changed = match warming {
            Some(until) => tokio::select! {
                () = tokio::time::sleep_until(until) => Ok(()),
                changed = role.changed() => changed,
            },
            None => role.changed().await,
        };
        if changed.is_err() {
            return;
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn conditions_text(status: &LoadBalancerPoolStatus) -> String {
    status
        .conditions
        .iter()
        .map(|c| format!("{}={}/{}", c.type_, c.status, c.reason))
        .collect::<Vec<_>>()
        .join(",")
}
