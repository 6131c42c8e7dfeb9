//! The three watches (pools, Services, EndpointSlices) and the caches they fill: reflector
//! stores of the trimmed pools and Services, the compact slices by Service, the pools by the
//! Services they name, and which caches have synced ([`Synced`]).

use std::sync::Arc;

use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use weir_crds::LoadBalancerPool;

use crate::endpoints::{SERVICE_NAME_LABEL, SliceIndex};
use crate::hub::Hub;
use crate::pools::PoolIndex;
use crate::trim;

/// What the watches fill, shared by the reconciler and the controller's other tasks.
#[derive(Clone)]
pub struct Caches {
    /// Pools, trimmed.
    pub pools: Store<LoadBalancerPool>,
    /// Services, trimmed.
    pub services: Store<Service>,
    /// EndpointSlices labelled with a Service name, compact, by Service.
    pub slices: Arc<SliceIndex>,
    /// Pools by the Services they name.
    pub by_service: Arc<PoolIndex>,
    /// Which caches have synced ([`Synced`] bits).
    pub synced: watch::Receiver<u8>,
}

/// The objects each watch touched, as streams for the `Controller`.
pub struct Watches {
    /// Pools.
    pub pools: Touched<LoadBalancerPool>,
    /// Services.
    pub services: Touched<Service>,
    /// EndpointSlices.
    pub slices: Touched<EndpointSlice>,
}

/// The objects of kind `K` a watch touched.
pub type Touched<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// Bits of the caches that have synced, set by each reflector's first `InitDone`.
///
/// (kube-runtime's `Store::wait_until_ready` wakes only the last of several concurrent
/// waiters, and the `Controller` is one; a tokio `watch` wakes them all.)
pub struct Synced;

impl Synced {
    /// The pool cache.
    pub const POOLS: u8 = 1;
    /// The Service cache.
    pub const SERVICES: u8 = 2;
    /// The EndpointSlice index.
    pub const SLICES: u8 = 4;
    /// Every cache.
    pub const ALL: u8 = Self::POOLS | Self::SERVICES | Self::SLICES;

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

    /// Waits until every cache of `bits` has synced; an error when the watches stopped first.
    pub async fn wait(
        synced: &watch::Receiver<u8>,
        bits: u8,
    ) -> Result<(), watch::error::RecvError> {
        let mut synced = synced.clone();
        synced.wait_for(|b| b & bits == bits).await.map(|_| ())
    }
}

/// Starts the three watches, in `namespace` or the whole cluster. Pools gone from a re-list
/// are swept from `hub`.
pub fn start(client: &Client, namespace: Option<&str>, hub: &Arc<Hub>) -> (Caches, Watches) {
    let (synced_tx, synced) = watch::channel(0u8);
    let synced_tx = Arc::new(synced_tx);
    let (pools, pool_writer) = reflector::store::<LoadBalancerPool>();
    let (services, service_writer) = reflector::store::<Service>();
    let caches = Caches {
        pools,
        services,
        slices: Arc::new(SliceIndex::new()),
        by_service: Arc::new(PoolIndex::new()),
        synced,
    };
    let pool_events = {
        let (hub, caches, synced_tx) = (hub.clone(), caches.clone(), synced_tx.clone());
        watcher(api(client, namespace), watcher::Config::default())
            .default_backoff()
            .modify(trim::pool)
            .reflect(pool_writer)
            .inspect_ok(move |event| {
                caches.by_service.apply(event);
                Synced::mark(&synced_tx, Synced::POOLS, event);
                if matches!(event, watcher::Event::InitDone) {
                    // Pools deleted while the watch was down never get a Delete event.
                    hub.sweep(|name| {
                        name.split_once('/').is_some_and(|(ns, name)| {
                            caches.pools.get(&ObjectRef::new(name).within(ns)).is_some()
                        })
                    });
                }
            })
            .touched_objects()
    };
    let service_events = {
        let synced_tx = synced_tx.clone();
        watcher(api(client, namespace), watcher::Config::default())
            .default_backoff()
            .modify(trim::service)
            .reflect(service_writer)
            .inspect_ok(move |event| Synced::mark(&synced_tx, Synced::SERVICES, event))
            .touched_objects()
    };
    let slice_events = {
        let slices = caches.slices.clone();
        watcher(
            api(client, namespace),
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
    let watches = Watches {
        pools: pool_events.boxed(),
        services: service_events.boxed(),
        slices: slice_events.boxed(),
    };
    (caches, watches)
}

/// The objects of kind `K` in `namespace`, or in every namespace.
fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
