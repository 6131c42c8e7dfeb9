//! The kube-runtime side: reflectors over LoadBalancerPools, Services and EndpointSlices, a
//! `Controller` on pools that Services and slices map back to, and [`reconcile`], which
//! compiles a pool with [`targets::compile`], stages it in the
//! [`Hub`] and writes its status when it changes.
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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use weir_api::channel::ChannelPool;
use weir_crds::{LoadBalancerPool, LoadBalancerPoolStatus};

use crate::dataplanes::DataPlanes;
use crate::endpoints::{SERVICE_NAME_LABEL, Slice, SliceIndex};
use crate::hub::{self, Entry, Hub};
use crate::leader::Role;
use crate::metrics::{ErrorLabels, Metrics};
use crate::pools::PoolIndex;
use crate::status::{self, Facts};
use crate::targets::{self, Backends, CompileError, Compiled};
use crate::trim;

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

/// A status this replica wrote.
struct Written {
    /// The pool's uid (a pool deleted and created again is another pool).
    uid: String,
    /// The pool's `resourceVersion` when the status was computed: while the cache still
    /// holds that version, the watch has not brought the write back. Once it moves on, the
    /// cache is the truth again, also when someone else wrote status since.
    from_version: Option<String>,
    status: LoadBalancerPoolStatus,
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

/// Bits of the caches that have synced, set by each reflector's first `InitDone`.
///
/// (kube-runtime's `Store::wait_until_ready` wakes only the last of several concurrent
/// waiters, and the `Controller` is one; a tokio `watch` wakes them all.)
struct Synced;

impl Synced {
    const POOLS: u8 = 1;
    const SERVICES: u8 = 2;
    const SLICES: u8 = 4;
    const ALL: u8 = Self::POOLS | Self::SERVICES | Self::SLICES;

    /// Sets `bit` in `synced` when `event` ends a (re-)list.
    fn mark<K>(synced: &watch::Sender<u8>, bit: u8, event: &watcher::Event<K>) {
        if matches!(event, watcher::Event::InitDone) {
            tracing::debug!(bit, "cache synced");
            synced.send_if_modified(|bits| {
                let before = *bits;
                *bits |= bit;
                *bits != before
            });
        }
    }

    async fn wait(synced: &watch::Receiver<u8>, bits: u8) -> Result<(), Error> {
        let mut synced = synced.clone();
        synced
            .wait_for(|b| b & bits == bits)
            .await
            .map(|_| ())
            .map_err(|_| Error::CachesStopped)
    }
}

impl Context {
    /// Waits for the Service and EndpointSlice caches: a pool compiled before they are synced
    /// would read as having no backends.
    async fn caches_synced(&self) -> Result<(), Error> {
        Synced::wait(&self.synced, Synced::SERVICES | Synced::SLICES).await
    }

    /// Compiles `lbp` with the cached Services and slices of its namespace that it names.
    fn compile(&self, lbp: &LoadBalancerPool) -> Result<Compiled, CompileError> {
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
        targets::compile(lbp, &backends)
    }

    /// Stages a compiled pool in the hub; a pool that failed to compile keeps its last good
    /// version there.
    fn stage(&self, lbp: &LoadBalancerPool, compiled: &Result<Compiled, CompileError>) {
        if let Ok(compiled) = compiled {
            self.hub.stage(
                &compiled.pool.name,
                Some(Entry {
                    pool: ChannelPool {
                        generation: lbp.metadata.generation.unwrap_or_default(),
                        pool: compiled.pool.clone(),
                    },
                    labels: lbp.labels().clone(),
                }),
            );
        }
    }

    fn forget(&self, name: &str) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    fn forget_all(&self) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Compiles the pool, stages it for the data planes, and writes its status if it changed.
pub async fn reconcile(lbp: Arc<LoadBalancerPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    ctx.caches_synced().await?;
    let namespace = lbp.namespace().unwrap_or_default();
    let name = format!("{namespace}/{}", lbp.name_any());
    let generation = lbp.metadata.generation.unwrap_or_default();
    let compiled = ctx.compile(&lbp);
    ctx.stage(&lbp, &compiled);
    if !ctx.role.borrow().writes_status(Instant::now()) {
        return Ok(Action::requeue(RESYNC));
    }

    let targets: Vec<SocketAddr> = match &compiled {
        Ok(c) => c.pool.targets.iter().map(|t| t.address).collect(),
        Err(_) => ctx
            .hub
            .get(&name)
            .map(|e| e.pool.pool.targets.iter().map(|t| t.address).collect())
            .unwrap_or_default(),
    };
    let seen = ctx
        .data_planes
        .observe(&name, lbp.labels(), generation, &targets, Instant::now());
    let uid = lbp.uid().unwrap_or_default();
    let version = lbp.metadata.resource_version.clone();
    let previous = {
        let written = ctx.written.lock().unwrap_or_else(|p| p.into_inner());
        match written.get(&name) {
            Some(w) if w.uid == uid && w.from_version == version => Some(w.status.clone()),
            _ => lbp.status.clone(),
        }
    };
    let routes = lbp.spec.routes_summary();
    let facts = Facts {
        generation,
        routes: &routes,
        compiled: compiled.as_ref().map(|c| &c.report),
        seen: &seen,
    };
    let next = status::desired(
        &facts,
        previous.as_ref(),
        k8s_openapi::jiff::Timestamp::now(),
    );
    if previous.as_ref() == Some(&next) {
        return Ok(Action::requeue(RESYNC));
    }

    let api: Api<LoadBalancerPool> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": LoadBalancerPool::api_version(&()),
        "kind": LoadBalancerPool::kind(&()),
        "status": next,
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
    ctx.metrics.status_writes.inc();
    tracing::info!(
        pool = %name,
        generation,
        targets = ?next.targets,
        data_planes = ?next.data_planes,
        conditions = %conditions_text(&next),
        "status written"
    );
    let notices = status::notices(previous.as_ref(), &next);
    ctx.written
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            name.clone(),
            Written {
                uid,
                from_version: version,
                status: next,
            },
        );
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
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(pool = %name, error = %e, "cannot publish an event");
        }
    }
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
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let Shared {
        hub,
        data_planes,
        metrics,
        triggers,
        role,
    } = shared;

    let (synced_tx, synced) = watch::channel(0u8);
    let synced_tx = Arc::new(synced_tx);
    let (pool_store, pool_writer) = reflector::store::<LoadBalancerPool>();
    let (services, service_writer) = reflector::store::<Service>();
    let slices = Arc::new(SliceIndex::new());
    let by_service = Arc::new(PoolIndex::new());

    let pool_events = {
        let (hub, pool_store, synced_tx) = (hub.clone(), pool_store.clone(), synced_tx.clone());
        let by_service = by_service.clone();
        watcher(
            api::<LoadBalancerPool>(&client, ns),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(trim::pool)
        .reflect(pool_writer)
        .inspect_ok(move |event| {
            by_service.apply(event);
            Synced::mark(&synced_tx, Synced::POOLS, event);
            if matches!(event, watcher::Event::InitDone) {
                // Pools deleted while the watch was down never get a Delete event.
                hub.sweep(|name| {
                    name.split_once('/').is_some_and(|(ns, name)| {
                        pool_store.get(&ObjectRef::new(name).within(ns)).is_some()
                    })
                });
            }
        })
        .touched_objects()
    };
    let service_events = {
        let synced_tx = synced_tx.clone();
        watcher(api::<Service>(&client, ns), watcher::Config::default())
            .default_backoff()
            .modify(trim::service)
            .reflect(service_writer)
            .inspect_ok(move |event| Synced::mark(&synced_tx, Synced::SERVICES, event))
            .touched_objects()
    };
    let slice_events = {
        let (synced_tx, slices) = (synced_tx.clone(), slices.clone());
        watcher(
            api::<EndpointSlice>(&client, ns),
            // Slices are the big objects (up to 100 endpoints each, 1,000 by default): smaller
            // pages bound what a (re-)list holds at once, at the cost of a few more requests.
            watcher::Config::default()
                .labels(SERVICE_NAME_LABEL)
                .page_size(100),
        )
        .default_backoff()
        .inspect_ok(move |event| {
            slices.apply(event);
            Synced::mark(&synced_tx, Synced::SLICES, event);
        })
        .touched_objects()
    };

    let reporter = Reporter {
        controller: FIELD_MANAGER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        hub: hub.clone(),
        data_planes: data_planes.clone(),
        services: services.clone(),
        slices: slices.clone(),
        recorder: Recorder::new(client, reporter),
        metrics: metrics.clone(),
        synced: synced.clone(),
        role: role.clone(),
        written: Mutex::new(HashMap::new()),
    });
    let leadership = tokio::spawn(follow_role(
        role,
        ctx.clone(),
        pool_store.clone(),
        triggers.clone(),
    ));

    let committer = {
        let (hub, data_planes, metrics) = (hub.clone(), data_planes.clone(), metrics.clone());
        tokio::spawn(async move {
            hub.coalesce(hub::QUIET, hub::MAX_DELAY, |revisions, staged| {
                metrics.revision.set(*revisions.end());
                metrics.pools.set(gauge(hub.names().len()));
                data_planes.committed(revisions, staged);
            })
            .await;
        })
    };
    let expiry = {
        let (hub, data_planes, metrics, triggers) = (
            hub.clone(),
            data_planes.clone(),
            metrics.clone(),
            triggers.clone(),
        );
        tokio::spawn(async move {
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
        })
    };
    let priming = {
        let (ctx, pool_store) = (ctx.clone(), pool_store.clone());
        tokio::spawn(async move {
            if Synced::wait(&synced, Synced::ALL).await.is_err() {
                return;
            }
            let pools = pool_store.state();
            for lbp in &pools {
                let compiled = ctx.compile(lbp);
                ctx.stage(lbp, &compiled);
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
        })
    };

    // Pools that name the Service a Service or an EndpointSlice event is about.
    let naming =
        move |namespace: Option<String>, service: Option<String>| match (namespace, service) {
            (Some(namespace), Some(service)) => by_service.naming(&namespace, &service),
            _ => Vec::new(),
        };
    let naming_slice = naming.clone();
    let hub_for_removal = hub.clone();
    Controller::for_stream(pool_events, pool_store)
        .watches_stream(service_events, move |s: Service| {
            naming(s.metadata.namespace, s.metadata.name)
        })
        .watches_stream(slice_events, move |s: EndpointSlice| {
            let service = s.labels().get(SERVICE_NAME_LABEL).cloned();
            naming_slice(s.metadata.namespace, service)
        })
        .reconcile_on(triggered)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            match result {
                Ok(_) => {}
                Err(controller::Error::ObjectNotFound(gone)) => {
                    let name = match &gone.namespace {
                        Some(ns) => format!("{ns}/{}", gone.name),
                        None => gone.name.clone(),
                    };
                    if hub_for_removal.get(&name).is_some() {
                        tracing::info!(pool = %name, "pool deleted; removing it from the data planes");
                    }
                    hub_for_removal.stage(&name, None);
                    ctx.forget(&name);
                }
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => tracing::warn!(error = %e, "controller error"),
            }
            std::future::ready(())
        })
        .await;
    committer.abort();
    expiry.abort();
    priming.abort();
    leadership.abort();
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
            let names: Vec<String> = pools
                .state()
                .iter()
                .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
                .collect();
            tracing::info!(pools = names.len(), "writing status from now on");
            triggers.pools(names);
        } else if !writes && writing {
            ctx.forget_all();
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
