//! EndpointSlices as the controller keeps them: compact [`Slice`]s indexed by the Service they
//! belong to ([`SliceIndex`]), fed by the slice watcher's events.
//!
//! Why not kube-runtime's reflector store of `EndpointSlice`s: the API type costs about 400
//! bytes an endpoint even with every unused field emptied (its struct has room for a target
//! reference, topology, hints…), so 1,000 Services of 100 endpoints held 40 MB; a [`Slice`]
//! holds 18 bytes an endpoint. And a pool's slices are found by their Service in one lookup
//! instead of a scan of every slice in the cluster.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;

use crate::relist::{Filing, Relisted};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What compiling a pool reads of an EndpointSlice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slice {
    /// Whether its `addressType` is `IPv4` or `IPv6` (`FQDN` slices cannot be proxied to).
    pub ip: bool,
    /// Whether it lists any endpoint at all, usable or not (to tell an empty slice from one
    /// whose endpoints are FQDNs or lack the port).
    pub listed: bool,
    /// Its TCP ports: name (`""` when unnamed) and number (`None` when absent or not a valid
    /// port), in the slice's order.
    pub ports: Box<[(Box<str>, Option<u16>)]>,
    /// Each endpoint's first address (the only one with a meaning, in the API's own words)
    /// when it is of the slice's family, and whether it takes traffic: ready (an unset
    /// `ready` means ready) and not terminating.
    pub endpoints: Box<[(IpAddr, bool)]>,
}

impl From<&EndpointSlice> for Slice {
    fn from(slice: &EndpointSlice) -> Self {
        let family = match slice.address_type.as_str() {
            "IPv4" => Some(true),
            "IPv6" => Some(false),
            _ => None,
        };
        let listed = slice.endpoints.as_ref().is_some_and(|e| !e.is_empty());
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .map(|p| {
                let name: Box<str> = p.name.as_deref().unwrap_or_default().into();
                let number = p
                    .port
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0);
                (name, number)
            })
            .collect();
        let endpoints = match family {
            None => Box::default(),
            Some(v4) => slice
                .endpoints
                .iter()
                .flatten()
                .filter_map(|endpoint| {
                    let ip = endpoint.addresses.first()?.parse::<IpAddr>().ok()?;
                    if ip.is_ipv4() != v4 {
                        return None;
                    }
                    let conditions = endpoint.conditions.as_ref();
                    let ready = conditions.and_then(|c| c.ready).unwrap_or(true)
                        && !conditions.and_then(|c| c.terminating).unwrap_or(false);
                    Some((ip, ready))
                })
                .collect(),
        };
        Self {
            ip: family.is_some(),
            listed,
            ports,
            endpoints,
        }
    }
}

impl Slice {
    /// The number of the TCP port named `name`, if the slice has one and it is valid.
    pub fn port(&self, name: &str) -> Option<u16> {
        self.ports
            .iter()
            .find(|(n, _)| &**n == name)
            .and_then(|(_, number)| *number)
    }
}

/// A slice's place: its namespace and the Service its `kubernetes.io/service-name` names.
type ServiceKey = (String, String);
/// A slice's identity: namespace and name.
type SliceKey = (String, String);

/// Every watched slice, compact, by Service.
#[derive(Debug, Default)]
pub struct SliceIndex {
    inner: Relisted<Index>,
}

#[derive(Debug, Default)]
struct Index {
    by_service: HashMap<ServiceKey, BTreeMap<String, Arc<Slice>>>,
    /// Which Service each slice was filed under, so that a relabelled slice moves.
    service_of: HashMap<SliceKey, ServiceKey>,
}

impl Filing<EndpointSlice> for Index {
    fn file(&mut self, slice: &EndpointSlice) {
        let Some((service, id)) = keys(slice) else {
            return;
        };
        if let Some(old) = self.service_of.get(&id)
            && *old != service
        {
            let old = old.clone();
            self.remove_filed(&old, &id);
        }
        self.by_service
            .entry(service.clone())
            .or_default()
            .insert(id.1.clone(), Arc::new(Slice::from(slice)));
        self.service_of.insert(id, service);
    }

    fn unfile(&mut self, slice: &EndpointSlice) {
        let Some((_, id)) = keys(slice) else {
            return;
        };
        if let Some(service) = self.service_of.remove(&id) {
            self.remove_filed(&service, &id);
        }
    }
}

impl Index {
    fn remove_filed(&mut self, service: &ServiceKey, id: &SliceKey) {
        if let Some(slices) = self.by_service.get_mut(service) {
            slices.remove(&id.1);
            if slices.is_empty() {
                self.by_service.remove(service);
            }
        }
    }
}

/// The Service a slice is filed under and its identity; `None` without a namespace, name or
/// Service label.
fn keys(slice: &EndpointSlice) -> Option<(ServiceKey, SliceKey)> {
    let namespace = slice.metadata.namespace.clone()?;
    let name = slice.metadata.name.clone()?;
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    Some(((namespace.clone(), service), (namespace, name)))
}

impl SliceIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows one event of the slice watcher.
    pub fn apply(&self, event: &watcher::Event<EndpointSlice>) {
        self.inner.apply(event);
    }

    /// The slices of Service `service` in `namespace`.
    pub fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<Slice>> {
        self.inner
            .read()
            .by_service
            .get(&(namespace.to_owned(), service.to_owned()))
            .map(|slices| slices.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Slices held.
    pub fn len(&self) -> usize {
        self.inner.read().service_of.len()
    }

    /// Whether no slice is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn slice(name: &str, service: &str, addresses: &[&str]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": "shop",
                "labels": { SERVICE_NAME_LABEL: service },
            },
            "addressType": "IPv4",
            "endpoints": addresses.iter().map(|a| json!({ "addresses": [a] })).collect::<Vec<_>>(),
            "ports": [{ "name": "http", "port": 8080 }],
        }))
        .unwrap()
    }

    #[test]
    fn a_slice_keeps_first_addresses_of_its_family_readiness_and_tcp_ports() {
        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": { "name": "web-1", "namespace": "shop" },
            "addressType": "IPv4",
            "endpoints": [
                { "addresses": ["10.0.0.1", "10.0.0.9"] },
                { "addresses": ["10.0.0.2"], "conditions": { "ready": false } },
                { "addresses": ["10.0.0.3"], "conditions": { "ready": true, "terminating": true } },
                { "addresses": ["fd00::1"] },
                { "addresses": ["not-an-ip"] },
                { "addresses": [] },
            ],
            "ports": [
                { "name": "http", "port": 8080 },
                { "name": "dns", "port": 53, "protocol": "UDP" },
                { "port": 70000 },
            ],
        }))
        .unwrap();
        let compact = Slice::from(&s);
        assert!(compact.ip && compact.listed);
        assert_eq!(
            &*compact.endpoints,
            [
                ("10.0.0.1".parse().unwrap(), true),
                ("10.0.0.2".parse().unwrap(), false),
                ("10.0.0.3".parse().unwrap(), false),
            ]
        );
        assert_eq!(compact.port("http"), Some(8080));
        assert_eq!(compact.port("dns"), None, "UDP ports are left out");
        assert_eq!(compact.port(""), None, "70000 is no port");
    }

    #[test]
    fn an_fqdn_slice_is_listed_but_has_no_ip_endpoints() {
        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": { "name": "ext", "namespace": "shop" },
            "addressType": "FQDN",
            "endpoints": [{ "addresses": ["example.com"] }],
        }))
        .unwrap();
        let compact = Slice::from(&s);
        assert!(!compact.ip && compact.listed && compact.endpoints.is_empty());
    }

    #[test]
    fn the_index_files_slices_by_service_and_follows_changes() {
        let index = SliceIndex::new();
        index.apply(&watcher::Event::Apply(slice("web-a", "web", &["10.0.0.1"])));
        index.apply(&watcher::Event::Apply(slice("web-b", "web", &["10.0.0.2"])));
        index.apply(&watcher::Event::Apply(slice("api-a", "api", &["10.0.1.1"])));
        assert_eq!(index.slices("shop", "web").len(), 2);
        assert_eq!(index.slices("shop", "api").len(), 1);
        assert!(index.slices("other", "web").is_empty());

        // Relabelled to another Service: it moves.
        index.apply(&watcher::Event::Apply(slice("web-b", "api", &["10.0.0.2"])));
        assert_eq!(index.slices("shop", "web").len(), 1);
        assert_eq!(index.slices("shop", "api").len(), 2);

        index.apply(&watcher::Event::Delete(slice("web-a", "web", &[])));
        assert!(index.slices("shop", "web").is_empty());
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_relist_replaces_the_index_whole_when_it_ends() {
        let index = SliceIndex::new();
        index.apply(&watcher::Event::Apply(slice("gone", "web", &["10.0.0.1"])));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(slice(
            "new",
            "web",
            &["10.0.0.2"],
        )));
        // Until the re-list ends, readers see the old state.
        let during: Vec<IpAddr> = index.slices("shop", "web")[0]
            .endpoints
            .iter()
            .map(|(ip, _)| *ip)
            .collect();
        assert_eq!(during, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        index.apply(&watcher::Event::InitDone);
        let slices = index.slices("shop", "web");
        assert_eq!(slices.len(), 1);
        assert_eq!(
            slices[0].endpoints[0].0,
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
    }
}
