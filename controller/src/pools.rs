//! Pools by the Services their backends name ([`PoolIndex`]), fed by the pool watcher's
//! events, so that a Service or EndpointSlice event finds the pools it concerns in one lookup
//! rather than a scan of every pool, as [`SliceIndex`](crate::endpoints::SliceIndex) finds a
//! Service's slices.

use std::collections::{BTreeSet, HashMap};

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use weir_crds::LoadBalancerPool;

use crate::relist::{Filing, Relisted};

/// A Service's place: its namespace and name.
type ServiceKey = (String, String);
/// A pool's identity: namespace and name.
type PoolKey = (String, String);

/// Every watched pool, by each Service it names.
#[derive(Debug, Default)]
pub struct PoolIndex {
    inner: Relisted<Index>,
}

#[derive(Debug, Default)]
struct Index {
    /// The names of the pools naming each Service (a pool names Services of its namespace).
    by_service: HashMap<ServiceKey, BTreeSet<String>>,
    /// The Services each pool was filed under, so that a pool edited to drop one leaves it.
    services_of: HashMap<PoolKey, Vec<String>>,
}

impl Filing<LoadBalancerPool> for Index {
    fn file(&mut self, lbp: &LoadBalancerPool) {
        let Some(id) = key(lbp) else {
            return;
        };
        self.unfile_key(&id);
        let services: Vec<String> = lbp
            .spec
            .service_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        if services.is_empty() {
            return;
        }
        for service in &services {
            self.by_service
                .entry((id.0.clone(), service.clone()))
                .or_default()
                .insert(id.1.clone());
        }
        self.services_of.insert(id, services);
    }

    fn unfile(&mut self, lbp: &LoadBalancerPool) {
        if let Some(id) = key(lbp) {
            self.unfile_key(&id);
        }
    }
}

impl Index {
    fn unfile_key(&mut self, id: &PoolKey) {
        for service in self.services_of.remove(id).unwrap_or_default() {
            let service = (id.0.clone(), service);
            if let Some(pools) = self.by_service.get_mut(&service) {
                pools.remove(&id.1);
                if pools.is_empty() {
                    self.by_service.remove(&service);
                }
            }
        }
    }
}

/// A pool's namespace and name; `None` without either.
fn key(lbp: &LoadBalancerPool) -> Option<PoolKey> {
    Some((lbp.metadata.namespace.clone()?, lbp.metadata.name.clone()?))
}

impl PoolIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows one event of the pool watcher.
    pub fn apply(&self, event: &watcher::Event<LoadBalancerPool>) {
        self.inner.apply(event);
    }

    /// The pools in `namespace` that name Service `service`.
    pub fn naming(&self, namespace: &str, service: &str) -> Vec<ObjectRef<LoadBalancerPool>> {
        self.inner
            .read()
            .by_service
            .get(&(namespace.to_owned(), service.to_owned()))
            .into_iter()
            .flatten()
            .map(|name| ObjectRef::new(name).within(namespace))
            .collect()
    }

    /// Pools held that name at least one Service.
    pub fn len(&self) -> usize {
        self.inner.read().services_of.len()
    }

    /// Whether no pool naming a Service is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int;

    use super::*;
    use crate::fixtures::{NS, pool, to_address, to_service};

    fn named(name: &str, services: &[&str]) -> LoadBalancerPool {
        let mut lbp = pool(services.iter().map(|s| to_service(s, Int(80), 1)).collect());
        lbp.metadata.name = Some(name.to_owned());
        lbp
    }

    fn in_namespace(mut lbp: LoadBalancerPool, namespace: &str) -> LoadBalancerPool {
        lbp.metadata.namespace = Some(namespace.to_owned());
        lbp
    }

    fn names(refs: Vec<ObjectRef<LoadBalancerPool>>) -> Vec<String> {
        refs.into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect()
    }

    #[test]
    fn a_pool_naming_two_services_is_found_by_each() {
        let index = PoolIndex::new();
        index.apply(&watcher::Event::Apply(named("web", &["web-v1", "web-v2"])));
        index.apply(&watcher::Event::Apply(named("api", &["api"])));
        assert_eq!(names(index.naming(NS, "web-v1")), ["shop/web"]);
        assert_eq!(names(index.naming(NS, "web-v2")), ["shop/web"]);
        assert_eq!(names(index.naming(NS, "api")), ["shop/api"]);
        assert!(
            index.naming(NS, "users").is_empty(),
            "a Service no pool names finds none"
        );
    }

    #[test]
    fn two_pools_naming_one_service_are_both_found() {
        let index = PoolIndex::new();
        index.apply(&watcher::Event::Apply(named("web", &["shared"])));
        index.apply(&watcher::Event::Apply(named("canary", &["shared", "v2"])));
        assert_eq!(
            names(index.naming(NS, "shared")),
            ["shop/canary", "shop/web"]
        );
    }

    #[test]
    fn a_pool_edited_to_drop_a_service_is_no_longer_found_by_it() {
        let index = PoolIndex::new();
        index.apply(&watcher::Event::Apply(named("web", &["web-v1", "web-v2"])));
        index.apply(&watcher::Event::Apply(named("web", &["web-v2"])));
        assert!(index.naming(NS, "web-v1").is_empty());
        assert_eq!(names(index.naming(NS, "web-v2")), ["shop/web"]);

        // Edited to name only addresses: it leaves the index.
        let mut addresses = named("web", &[]);
        addresses.spec.backends = vec![to_address("10.0.0.1:8080", 1)];
        index.apply(&watcher::Event::Apply(addresses));
        assert!(index.naming(NS, "web-v2").is_empty());
        assert!(index.is_empty());
    }

    #[test]
    fn a_deleted_pool_is_no_longer_found() {
        let index = PoolIndex::new();
        index.apply(&watcher::Event::Apply(named("web", &["web"])));
        index.apply(&watcher::Event::Apply(named("canary", &["web"])));
        index.apply(&watcher::Event::Delete(named("web", &["web"])));
        assert_eq!(names(index.naming(NS, "web")), ["shop/canary"]);
        index.apply(&watcher::Event::Delete(named("canary", &["web"])));
        assert!(index.naming(NS, "web").is_empty());
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn a_service_of_another_namespace_finds_only_its_own_namespaces_pools() {
        let index = PoolIndex::new();
        index.apply(&watcher::Event::Apply(named("web", &["web"])));
        index.apply(&watcher::Event::Apply(in_namespace(
            named("web", &["web"]),
            "other",
        )));
        assert_eq!(names(index.naming(NS, "web")), ["shop/web"]);
        assert_eq!(names(index.naming("other", "web")), ["other/web"]);
        assert!(index.naming("elsewhere", "web").is_empty());

        index.apply(&watcher::Event::Delete(in_namespace(
            named("web", &["web"]),
            "other",
        )));
        assert!(index.naming("other", "web").is_empty());
        assert_eq!(
            names(index.naming(NS, "web")),
            ["shop/web"],
            "deleting a pool of the same name elsewhere leaves this one"
        );
    }

    #[test]
    fn a_relist_replaces_the_index_whole_when_it_ends() {
        let index = PoolIndex::new();
        index.apply(&watcher::Event::Apply(named("gone", &["web"])));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(named("new", &["web"])));
        assert_eq!(
            names(index.naming(NS, "web")),
            ["shop/gone"],
            "until the re-list ends, readers see the old state"
        );
        index.apply(&watcher::Event::InitDone);
        assert_eq!(names(index.naming(NS, "web")), ["shop/new"]);
    }
}
