//! Test objects built with small builders, as kube-rs/controller-rs does: Services,
//! EndpointSlices and pools with only the fields the compiler reads.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weir_crds::{Backend, LoadBalancerPool, LoadBalancerPoolSpec, ServiceBackend};

use crate::endpoints::{SERVICE_NAME_LABEL, Slice};
use crate::targets::Backends;

/// The namespace every fixture lives in.
pub const NS: &str = "shop";

/// A ClusterIP Service `name` in [`NS`] without ports yet.
pub fn service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NS.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec::default()),
        ..Service::default()
    }
}

/// Builder methods on a Service.
pub trait ServiceExt: Sized {
    /// Adds TCP port `port` named `name` (`""`: unnamed) whose target port is `target`.
    fn port(self, name: &str, port: i32, target: IntOrString) -> Self;
    /// Makes it an ExternalName Service.
    fn external_name(self) -> Self;
    /// Adds a UDP port.
    fn udp_port(self, name: &str, port: i32) -> Self;
}

impl ServiceExt for Service {
    fn port(mut self, name: &str, port: i32, target: IntOrString) -> Self {
        push_port(&mut self, name, port, target, None);
        self
    }

    fn external_name(mut self) -> Self {
        let spec = self.spec.get_or_insert_with(ServiceSpec::default);
        spec.type_ = Some("ExternalName".to_owned());
        spec.external_name = Some("db.example.com".to_owned());
        self
    }

    fn udp_port(mut self, name: &str, port: i32) -> Self {
        push_port(&mut self, name, port, IntOrString::Int(port), Some("UDP"));
        self
    }
}

fn push_port(
    service: &mut Service,
    name: &str,
    port: i32,
    target: IntOrString,
    protocol: Option<&str>,
) {
    let spec = service.spec.get_or_insert_with(ServiceSpec::default);
    spec.ports.get_or_insert_with(Vec::new).push(ServicePort {
        name: (!name.is_empty()).then(|| name.to_owned()),
        port,
        target_port: Some(target),
        protocol: protocol.map(str::to_owned),
        ..ServicePort::default()
    });
}

/// An EndpointSlice `name` of Service `service` in [`NS`], of `address_type` (`IPv4`, `IPv6`,
/// `FQDN`), without ports or endpoints yet.
pub fn slice(service: &str, name: &str, address_type: &str) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NS.to_owned()),
            labels: Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into()),
            ..ObjectMeta::default()
        },
        address_type: address_type.to_owned(),
        endpoints: None,
        ports: None,
    }
}

/// Builder methods on an EndpointSlice.
pub trait SliceExt: Sized {
    /// Adds TCP port `port` named `name` (`""`: unnamed).
    fn port(self, name: &str, port: i32) -> Self;
    /// Adds an endpoint with conditions ready, serving and terminating as given (`None`:
    /// unset).
    fn endpoint_with(self, address: &str, ready: Option<bool>, terminating: Option<bool>) -> Self;
    /// Adds a ready endpoint.
    fn ready(self, address: &str) -> Self {
        self.endpoint_with(address, Some(true), Some(false))
    }
    /// Adds an endpoint that is not ready.
    fn not_ready(self, address: &str) -> Self {
        self.endpoint_with(address, Some(false), Some(false))
    }
}

impl SliceExt for EndpointSlice {
    fn port(mut self, name: &str, port: i32) -> Self {
        self.ports.get_or_insert_with(Vec::new).push(EndpointPort {
            name: Some(name.to_owned()),
            port: Some(port),
            protocol: Some("TCP".to_owned()),
            ..EndpointPort::default()
        });
        self
    }

    fn endpoint_with(
        mut self,
        address: &str,
        ready: Option<bool>,
        terminating: Option<bool>,
    ) -> Self {
        self.endpoints.get_or_insert_with(Vec::new).push(Endpoint {
            addresses: vec![address.to_owned()],
            conditions: Some(EndpointConditions {
                ready,
                serving: ready,
                terminating,
            }),
            ..Endpoint::default()
        });
        self
    }
}

/// A pool `web` in [`NS`] with these backends and defaults elsewhere.
pub fn pool(backends: Vec<Backend>) -> LoadBalancerPool {
    let mut spec: LoadBalancerPoolSpec =
        serde_json::from_str(r#"{"backends":[]}"#).expect("a minimal spec");
    spec.backends = backends;
    let mut pool = LoadBalancerPool::new("web", spec);
    pool.metadata.namespace = Some(NS.to_owned());
    pool.metadata.generation = Some(1);
    pool
}

/// A backend naming Service `name` and `port` with `weight`.
pub fn to_service(name: &str, port: IntOrString, weight: u32) -> Backend {
    Backend {
        service: Some(ServiceBackend {
            name: name.to_owned(),
            port,
        }),
        address: None,
        weight,
    }
}

/// A static-address backend.
pub fn to_address(address: &str, weight: u32) -> Backend {
    Backend {
        service: None,
        address: Some(address.to_owned()),
        weight,
    }
}

/// The slices as the controller's index holds them: namespace, Service and compact slice
/// (slices without the Service label are not indexed).
pub fn compact(slices: &[EndpointSlice]) -> Vec<(String, String, Slice)> {
    slices
        .iter()
        .filter_map(|s| {
            let service = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
            Some((
                s.metadata.namespace.clone()?,
                service.clone(),
                Slice::from(s),
            ))
        })
        .collect()
}

/// What compiling reads of `services` and the compact `slices`.
pub fn backends<'a>(
    services: &'a [Service],
    slices: &'a [(String, String, Slice)],
) -> Backends<'a> {
    Backends::new(
        services,
        slices
            .iter()
            .map(|(ns, svc, s)| (ns.as_str(), svc.as_str(), s)),
    )
}
