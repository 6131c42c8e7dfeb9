//! The Kubernetes objects the tests, the demo and the convergence benchmark write in place of
//! the controllers a real cluster runs (there is no kube-controller-manager here): Services and
//! the EndpointSlices that would be made for them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The port name every Service and slice here uses.
pub const PORT_NAME: &str = "http";

/// Service `name` with one TCP port, `port`, named `http` and aimed at the pods' `http` port.
pub fn service(name: &str, port: i32) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.to_owned()),
                port,
                target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// IPv4 EndpointSlice `name` of Service `service`: `addresses` as its endpoints, all on
/// `port` (named `http`), ready or not as `ready` says.
pub fn endpoint_slice(
    service: &str,
    name: &str,
    addresses: &[IpAddr],
    port: u16,
    ready: bool,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/service-name".to_owned(), service.to_owned()),
                (
                    "endpointslice.kubernetes.io/managed-by".to_owned(),
                    "weir-e2e".to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".to_owned(),
        endpoints: Some(endpoints(addresses, ready)),
        ports: Some(vec![EndpointPort {
            name: Some(PORT_NAME.to_owned()),
            port: Some(i32::from(port)),
            protocol: Some("TCP".to_owned()),
            ..EndpointPort::default()
        }]),
    }
}

/// One endpoint per address, ready (and serving) or not, none terminating.
pub fn endpoints(addresses: &[IpAddr], ready: bool) -> Vec<Endpoint> {
    addresses
        .iter()
        .map(|ip| Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(ready),
                terminating: Some(false),
            }),
            ..Endpoint::default()
        })
        .collect()
}
