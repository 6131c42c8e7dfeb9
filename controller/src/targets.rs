//! The heart of the controller, without any API server: a `LoadBalancerPool` and the Services
//! and EndpointSlices its backends name in, the contract's [`Pool`] and a [`Report`] of how
//! each backend resolved out.
//!
//! - A Service backend's targets are the endpoints of the Service's EndpointSlices (found by
//!   their `kubernetes.io/service-name` label, all slices merged, IPv4 and IPv6 alike) whose
//!   `ready` condition is true or unset, leaving out `terminating` ones.
//! - The backend names a Service port by number or name; the slices carry the port's *name*
//!   and the number behind it (the container port, which may differ from slice to slice), so
//!   the Service port is mapped to its name and each slice's port of that name is used.
//! - A static `address` backend is one target, always ready.
//! - Weights follow Gateway API: a backend's weight is its share of the pool's traffic however
//!   many endpoints it has, so it is split across its ready endpoints (see [`split_weights`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use weir_api::{FieldError, MAX_WEIGHT, Pool, Target};
use weir_crds::{LoadBalancerPool, condition::reason};

use crate::endpoints::Slice;

/// The Services and EndpointSlices of one namespace that a pool's backends may name, as the
/// controller's caches hold them. Objects of other namespaces are ignored when compiling.
#[derive(Clone, Debug, Default)]
pub struct Backends<'a> {
    /// By namespace, then name.
    services: HashMap<&'a str, HashMap<&'a str, &'a Service>>,
    /// By namespace, then the name of their Service.
    slices: HashMap<&'a str, HashMap<&'a str, Vec<&'a Slice>>>,
}

/// A pool compiled for the data planes, and how its backends resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled {
    /// The pool the data planes serve, named `namespace/name`; it passes [`Pool::validate`].
    pub pool: Pool,
    /// How each backend resolved, for the status.
    pub report: Report,
}

/// How a pool's backends resolved: what `status.targets` and `ResolvedRefs` are made of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One per backend, in the spec's order.
    pub backends: Vec<BackendReport>,
    /// Distinct targets known across backends: endpoints ready or not, and static addresses.
    pub total: u32,
    /// Distinct targets in the pool: ready, not terminating endpoints and static addresses.
    pub ready: u32,
}

/// How one backend resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendReport {
    /// For a Service backend, whether the Service exists; `None` for an address.
    pub service_found: Option<bool>,
    /// Endpoints known for it (ready or not), or 1 for a valid address.
    pub total: u32,
    /// Of those, the ones taking traffic.
    pub ready: u32,
    /// Why it did not resolve, if it did not.
    pub problem: Option<Problem>,
}

/// Why a backend did not resolve; its `Display` is a sentence for a condition message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The backend names both a Service and an address, or neither (the schema forbids it).
    NotExactlyOne,
    /// The address is not an IP address and port.
    InvalidAddress {
        /// The address as written.
        address: String,
    },
    /// No Service of that name in the pool's namespace.
    ServiceNotFound {
        /// The Service's name.
        service: String,
    },
    /// The Service is of type ExternalName, which has no endpoints.
    ExternalName {
        /// The Service's name.
        service: String,
    },
    /// The Service has no port of that number or name.
    PortNotFound {
        /// The Service's name.
        service: String,
        /// The port as the backend names it.
        port: IntOrString,
    },
    /// The Service port is not TCP.
    UnsupportedProtocol {
        /// The Service's name.
        service: String,
        /// The port as the backend names it.
        port: IntOrString,
        /// Its protocol.
        protocol: String,
    },
    /// The Service's EndpointSlices have endpoints but none carries the port.
    PortNotInEndpointSlices {
        /// The Service's name.
        service: String,
        /// The name of the Service port (empty for a Service's only, unnamed port).
        port_name: String,
    },
    /// The Service's EndpointSlices list FQDNs, which the data plane cannot use.
    FqdnEndpoints {
        /// The Service's name.
        service: String,
    },
}

/// Why a pool could not be compiled at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The object has no namespace or name (it did not come from the API server).
    #[error("the LoadBalancerPool has no namespace or name")]
    Unnamed,
    /// The compiled pool failed the contract's validation: a check the schema could not
    /// express, or a schema older than this controller.
    #[error("invalid pool: {0}")]
    Invalid(FieldError),
}

/// A backend's targets before weighing: ready ones by address, and how many it knows.
#[derive(Default)]
struct Resolved {
    /// Every endpoint known, with whether it is ready.
    endpoints: BTreeMap<SocketAddr, bool>,
    problem: Option<Problem>,
    service_found: Option<bool>,
}

impl<'a> Backends<'a> {
    /// Indexes `services` by namespace and name, and `slices`, given as namespace, the
    /// Service named in their `kubernetes.io/service-name` label, and slice.
    pub fn new(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = (&'a str, &'a str, &'a Slice)>,
    ) -> Self {
        let mut backends = Self::default();
        for service in services {
            let (Some(namespace), Some(name)) = (
                service.metadata.namespace.as_deref(),
                service.metadata.name.as_deref(),
            ) else {
                continue;
            };
            let namespace = backends.services.entry(namespace).or_default();
            namespace.insert(name, service);
        }
        for (namespace, service, slice) in slices {
            let namespace = backends.slices.entry(namespace).or_default();
            namespace.entry(service).or_default().push(slice);
        }
        backends
    }

    fn service(&self, namespace: &str, name: &str) -> Option<&'a Service> {
        self.services.get(namespace)?.get(name).copied()
    }

    fn slices(&self, namespace: &str, service: &str) -> &[&'a Slice] {
        self.slices
            .get(namespace)
            .and_then(|by_service| by_service.get(service))
            .map_or(&[], Vec::as_slice)
    }
}

impl Report {
    /// Whether every backend resolved (`ResolvedRefs=True`).
    pub fn resolved(&self) -> bool {
        self.backends.iter().all(|b| b.problem.is_none())
    }

    /// The problems, each with the backend's path: `backends[1]: Service "users-v3" not
    /// found`.
    pub fn problems(&self) -> impl Iterator<Item = (usize, &Problem)> {
        self.backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.problem.as_ref().map(|p| (i, p)))
    }

    /// The `ResolvedRefs=False` reason: that of the first problem.
    pub fn reason(&self) -> Option<&'static str> {
        self.problems().next().map(|(_, p)| p.reason())
    }

    /// The problems in one message, `None` when every backend resolved.
    pub fn message(&self) -> Option<String> {
        let problems: Vec<String> = self
            .problems()
            .map(|(i, p)| format!("backends[{i}]: {p}"))
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

impl Problem {
    /// The Gateway API reason for `ResolvedRefs=False`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ServiceNotFound { .. } | Self::PortNotFound { .. } => reason::BACKEND_NOT_FOUND,
            _ => reason::UNSUPPORTED_BACKEND,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotExactlyOne => f.write_str("a backend names exactly one of service or address"),
            Self::InvalidAddress { address } => {
                write!(f, "address {address:?} is not an IP address and port")
            }
            Self::ServiceNotFound { service } => write!(f, "Service {service:?} not found"),
            Self::ExternalName { service } => write!(
                f,
                "Service {service:?} is of type ExternalName, which has no endpoints"
            ),
            Self::PortNotFound { service, port } => match port {
                IntOrString::Int(n) => write!(f, "Service {service:?} has no port {n}"),
                IntOrString::String(name) => {
                    write!(f, "Service {service:?} has no port named {name:?}")
                }
            },
            Self::UnsupportedProtocol {
                service,
                port,
                protocol,
            } => write!(
                f,
                "port {} of Service {service:?} is {protocol}, not TCP",
                port_text(port)
            ),
            Self::PortNotInEndpointSlices { service, port_name } => write!(
                f,
                "the EndpointSlices of Service {service:?} have no port named {port_name:?}"
            ),
            Self::FqdnEndpoints { service } => write!(
                f,
                "the EndpointSlices of Service {service:?} list FQDNs, not IP addresses"
            ),
        }
    }
}

/// Compiles `lbp` with the Services and EndpointSlices of `backends` into the pool the data
/// planes serve and a report of each backend.
///
/// Backends that do not resolve contribute no targets and are reported; the pool is still
/// compiled, so that the others keep serving. A target reached through two backends (the same
/// address) gets both weights.
pub fn compile(lbp: &LoadBalancerPool, backends: &Backends<'_>) -> Result<Compiled, CompileError> {
    let (Some(namespace), Some(name)) = (lbp.namespace(), lbp.metadata.name.as_deref()) else {
        return Err(CompileError::Unnamed);
    };
    let spec = &lbp.spec;
    let resolved: Vec<Resolved> = spec
        .backends
        .iter()
        .map(|backend| match (&backend.service, &backend.address) {
            (Some(service), None) => {
                resolve_service(backends, &namespace, &service.name, &service.port)
            }
            (None, Some(address)) => resolve_address(address),
            _ => Resolved {
                problem: Some(Problem::NotExactlyOne),
                ..Resolved::default()
            },
        })
        .collect();

    let ready: Vec<Vec<SocketAddr>> = resolved
        .iter()
        .map(|r| {
            r.endpoints
                .iter()
                .filter(|(_, ready)| **ready)
                .map(|(a, _)| *a)
                .collect()
        })
        .collect();
    let shares: Vec<(u32, usize)> = spec
        .backends
        .iter()
        .zip(&ready)
        .map(|(backend, ready)| (backend.weight, ready.len()))
        .collect();
    let per_endpoint = split_weights(&shares);

    let mut targets: BTreeMap<SocketAddr, u32> = BTreeMap::new();
    for (addresses, weight) in ready.iter().zip(per_endpoint) {
        for address in addresses {
            let sum = targets.entry(*address).or_default();
            *sum = sum.saturating_add(weight).min(MAX_WEIGHT);
        }
    }
    let known: BTreeSet<SocketAddr> = resolved
        .iter()
        .flat_map(|r| r.endpoints.keys().copied())
        .collect();

    let report = Report {
        total: count(known.len()),
        ready: count(targets.len()),
        backends: resolved
            .into_iter()
            .map(|r| BackendReport {
                service_found: r.service_found,
                total: count(r.endpoints.len()),
                ready: count(r.endpoints.values().filter(|ready| **ready).count()),
                problem: r.problem,
            })
            .collect(),
    };
    let pool = Pool {
        name: format!("{namespace}/{name}"),
        routes: spec.routes.clone(),
        algorithm: spec.algorithm,
        session_affinity: spec.session_affinity.clone(),
        targets: targets
            .into_iter()
            .map(|(address, weight)| Target { address, weight })
            .collect(),
        upstream: spec.upstream.clone(),
        timeouts: spec.timeouts.clone(),
        health_check: spec.health_check.clone(),
        outlier_detection: spec.outlier_detection.clone(),
        circuit_breaker: spec.circuit_breaker.clone(),
        panic_threshold: spec.panic_threshold,
        slow_start: spec.slow_start.clone(),
        retries: spec.retries.clone(),
        access_log: spec.access_log.clone(),
    };
    pool.validate().map_err(CompileError::Invalid)?;
    Ok(Compiled { pool, report })
}

/// Per-endpoint weights for backends given as (weight, ready endpoints), such that each
/// backend's endpoints together carry its weight's share of the pool's traffic, as Gateway API
/// wants: with 90/10, one pod behind the first and five behind the second, the first pod gets
/// 90% and each of the five 2%.
///
/// The ideal per-endpoint weight is `weight / endpoints`, a fraction; the data plane takes
/// integers up to [`MAX_WEIGHT`], so every backend's ideal is scaled by one common factor `K`
/// (a common factor keeps the ratios between backends) and rounded:
///
/// 1. Exactly, when it fits: `K` = the least common multiple of the endpoint counts makes
///    every `weight × K / endpoints` a whole number; the results are divided by their greatest
///    common divisor to stay small and readable (90/10 over 1 and 5 pods: 45 and 1).
/// 2. Otherwise (counts whose multiple is too large, or weights too heavy), `K` makes the
///    largest per-endpoint weight exactly `MAX_WEIGHT` and the others are rounded. A backend's
///    ideal per-endpoint weight `ê` is then off by at most 0.5, so its share is off by at most
///    `0.5 / ê` of itself: under 0.1% whenever its per-endpoint weight is at least 1/2000 of the
///    heaviest's (`ê ≥ 500`). Beyond a ratio of 1 to a million no integer weight can express
///    the share, and such an endpoint keeps weight 1 rather than being drained by rounding.
///
/// Backends of weight 0 get 0 (drained); backends without ready endpoints take no share, so
/// the others divide the traffic among themselves.
pub fn split_weights(backends: &[(u32, usize)]) -> Vec<u32> {
    let live = |&(weight, endpoints): &(u32, usize)| weight > 0 && endpoints > 0;
    if !backends.iter().any(live) {
        return vec![0; backends.len()];
    }
    exact_weights(backends, live).unwrap_or_else(|| scaled_weights(backends, live))
}

fn exact_weights(
    backends: &[(u32, usize)],
    live: impl Fn(&(u32, usize)) -> bool,
) -> Option<Vec<u32>> {
    let mut lcm: u128 = 1;
    for &(_, endpoints) in backends.iter().filter(|b| live(b)) {
        let n = endpoints as u128;
        lcm = lcm.checked_mul(n / gcd(lcm, n))?;
        // Keeps `weight × lcm` far from overflowing; such a multiple would not fit anyway.
        if lcm > u128::from(u64::MAX) {
            return None;
        }
    }
    let raw: Vec<u128> = backends
        .iter()
        .map(|b| {
            if live(b) {
                u128::from(b.0) * lcm / b.1 as u128
            } else {
                0
            }
        })
        .collect();
    let divisor = raw.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    raw.iter()
        .map(|w| u32::try_from(w / divisor).ok().filter(|w| *w <= MAX_WEIGHT))
        .collect()
}

fn scaled_weights(backends: &[(u32, usize)], live: impl Fn(&(u32, usize)) -> bool) -> Vec<u32> {
    // The heaviest per-endpoint weight, weight / endpoints, compared by cross-multiplying.
    let &(top_weight, top_endpoints) = backends
        .iter()
        .filter(|b| live(b))
        .max_by(|a, b| (u128::from(a.0) * b.1 as u128).cmp(&(u128::from(b.0) * a.1 as u128)))
        .expect("at least one live backend");
    let (top_weight, top_endpoints) = (u128::from(top_weight), top_endpoints as u128);
    backends
        .iter()
        .map(|b| {
            if !live(b) {
                return 0;
            }
            // MAX × (w / n) / (w_top / n_top), rounded to the nearest.
            let numerator = u128::from(MAX_WEIGHT) * u128::from(b.0) * top_endpoints;
            let denominator = b.1 as u128 * top_weight;
            let weight = (2 * numerator + denominator) / (2 * denominator);
            u32::try_from(weight)
                .unwrap_or(MAX_WEIGHT)
                .clamp(1, MAX_WEIGHT)
        })
        .collect()
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn resolve_address(address: &str) -> Resolved {
    match address.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Resolved {
            endpoints: BTreeMap::from([(addr, true)]),
            ..Resolved::default()
        },
        _ => Resolved {
            problem: Some(Problem::InvalidAddress {
                address: address.to_owned(),
            }),
            ..Resolved::default()
        },
    }
}

fn resolve_service(
    backends: &Backends<'_>,
    namespace: &str,
    name: &str,
    port: &IntOrString,
) -> Resolved {
    let mut resolved = Resolved {
        service_found: Some(false),
        ..Resolved::default()
    };
    let fail = |mut resolved: Resolved, problem| {
        resolved.problem = Some(problem);
        resolved
    };
    let service_name = name.to_owned();
    let Some(service) = backends.service(namespace, name) else {
        return fail(
            resolved,
            Problem::ServiceNotFound {
                service: service_name,
            },
        );
    };
    resolved.service_found = Some(true);
    let spec = service.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return fail(
            resolved,
            Problem::ExternalName {
                service: service_name,
            },
        );
    }
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let Some(service_port) = find_port(ports, port) else {
        return fail(
            resolved,
            Problem::PortNotFound {
                service: service_name,
                port: port.clone(),
            },
        );
    };
    let protocol = service_port.protocol.as_deref().unwrap_or("TCP");
    if protocol != "TCP" {
        return fail(
            resolved,
            Problem::UnsupportedProtocol {
                service: service_name,
                port: port.clone(),
                protocol: protocol.to_owned(),
            },
        );
    }
    // Slices name their ports as the Service does; a Service's only port may be unnamed.
    let port_name = service_port.name.as_deref().unwrap_or_default();

    let mut fqdn = false;
    let mut missing_port = false;
    for slice in backends.slices(namespace, name) {
        if !slice.ip {
            fqdn |= slice.listed;
            continue;
        }
        let Some(slice_port) = slice.port(port_name) else {
            missing_port |= slice.listed;
            continue;
        };
        for (ip, ready) in &slice.endpoints {
            // An endpoint listed twice (slices are replaced one at a time) counts once, ready
            // if any copy is.
            *resolved
                .endpoints
                .entry(SocketAddr::new(*ip, slice_port))
                .or_default() |= *ready;
        }
    }
    if resolved.endpoints.is_empty() {
        if fqdn {
            return fail(
                resolved,
                Problem::FqdnEndpoints {
                    service: service_name,
                },
            );
        }
        if missing_port {
            return fail(
                resolved,
                Problem::PortNotInEndpointSlices {
                    service: service_name,
                    port_name: port_name.to_owned(),
                },
            );
        }
    }
    resolved
}

/// The Service port a backend names, by number (`port`) or by name.
fn find_port<'s>(ports: &'s [ServicePort], port: &IntOrString) -> Option<&'s ServicePort> {
    ports.iter().find(|p| match port {
        IntOrString::Int(n) => p.port == *n,
        IntOrString::String(name) => p.name.as_deref() == Some(name.as_str()),
    })
}

fn port_text(port: &IntOrString) -> String {
    match port {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(name) => format!("{name:?}"),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::{Int, String as Named};

    use super::*;
    use crate::fixtures::{
        NS, ServiceExt, SliceExt, backends, compact, pool, service, slice, to_address, to_service,
    };

    fn compile_with(
        lbp: &LoadBalancerPool,
        services: &[Service],
        slices: &[EndpointSlice],
    ) -> Compiled {
        let slices = compact(slices);
        compile(lbp, &backends(services, &slices)).expect("the pool compiles")
    }

    fn targets(compiled: &Compiled) -> Vec<(String, u32)> {
        compiled
            .pool
            .targets
            .iter()
            .map(|t| (t.address.to_string(), t.weight))
            .collect()
    }

    fn web() -> Service {
        service("web").port("http", 80, Named("http".into()))
    }

    /// Share of the pool's traffic, in percent, of the targets whose address is in `of`.
    fn share(compiled: &Compiled, of: &[&str]) -> f64 {
        let total: f64 = compiled
            .pool
            .targets
            .iter()
            .map(|t| f64::from(t.weight))
            .sum();
        let part: f64 = compiled
            .pool
            .targets
            .iter()
            .filter(|t| of.contains(&t.address.to_string().as_str()))
            .map(|t| f64::from(t.weight))
            .sum();
        100.0 * part / total
    }

    #[test]
    fn a_service_backend_becomes_its_ready_endpoints() {
        let lbp = pool(vec![to_service("web", Int(80), 1)]);
        let slices = [slice("web", "web-a", "IPv4")
            .port("http", 8080)
            .ready("10.0.0.1")
            .ready("10.0.0.2")
            .ready("10.0.0.3")];
        let compiled = compile_with(&lbp, &[web()], &slices);
        assert_eq!(compiled.pool.name, "shop/web");
        assert_eq!(
            targets(&compiled),
            [
                ("10.0.0.1:8080".into(), 1),
                ("10.0.0.2:8080".into(), 1),
                ("10.0.0.3:8080".into(), 1)
            ]
        );
        assert_eq!(compiled.pool.validate(), Ok(()));
        let report = &compiled.report;
        assert!(report.resolved());
        assert_eq!(report.message(), None);
        assert_eq!((report.total, report.ready), (3, 3));
        assert_eq!(
            report.backends,
            [BackendReport {
                service_found: Some(true),
                total: 3,
                ready: 3,
                problem: None
            }]
        );
    }

    #[test]
    fn unset_readiness_counts_as_ready_and_terminating_endpoints_are_left_out() {
        let lbp = pool(vec![to_service("web", Int(80), 1)]);
        let slices = [slice("web", "web-a", "IPv4")
            .port("http", 8080)
            .endpoint_with("10.0.0.1", Some(true), Some(false))
            .endpoint_with("10.0.0.2", Some(false), Some(false))
            .endpoint_with("10.0.0.3", None, None)
            .endpoint_with("10.0.0.4", Some(true), Some(true))
            .endpoint_with("10.0.0.5", None, Some(true))];
        let compiled = compile_with(&lbp, &[web()], &slices);
        assert_eq!(
            targets(&compiled),
            [("10.0.0.1:8080".into(), 1), ("10.0.0.3:8080".into(), 1)]
        );
        assert_eq!((compiled.report.total, compiled.report.ready), (5, 2));
        assert!(compiled.report.resolved(), "not ready is not a missing ref");
    }

    #[test]
    fn the_slices_of_a_service_are_merged_and_an_endpoint_in_two_counts_once() {
        let lbp = pool(vec![to_service("web", Int(80), 1)]);
        let slices = [
            slice("web", "web-a", "IPv4")
                .port("http", 8080)
                .ready("10.0.0.1")
                .not_ready("10.0.0.2"),
            slice("web", "web-b", "IPv4")
                .port("http", 8080)
                .ready("10.0.0.2")
                .ready("10.0.0.3"),
            // Another Service's slice is not merged in.
            slice("api", "api-a", "IPv4")
                .port("http", 8080)
                .ready("10.0.0.9"),
        ];
        let compiled = compile_with(&lbp, &[web()], &slices);
        assert_eq!(
            targets(&compiled),
            [
                ("10.0.0.1:8080".into(), 1),
                ("10.0.0.2:8080".into(), 1),
                ("10.0.0.3:8080".into(), 1)
            ]
        );
        assert_eq!((compiled.report.total, compiled.report.ready), (3, 3));
    }

    #[test]
    fn dual_stack_services_give_ipv4_and_ipv6_targets() {
        let lbp = pool(vec![to_service("web", Named("http".into()), 1)]);
        let slices = [
            slice("web", "web-v4", "IPv4")
                .port("http", 8080)
                .ready("10.0.0.1"),
            slice("web", "web-v6", "IPv6")
                .port("http", 8080)
                .ready("fd00::1")
                // An address of the wrong family for its slice is ignored.
                .ready("10.0.0.7"),
        ];
        let compiled = compile_with(&lbp, &[web()], &slices);
        assert_eq!(
            targets(&compiled),
            [("10.0.0.1:8080".into(), 1), ("[fd00::1]:8080".into(), 1)]
        );
    }

    #[test]
    fn ports_resolve_by_number_or_name_through_the_service_to_each_slices_port() {
        // The Service's port 80 is named http; its target port is named too, so pods of two
        // versions expose it on different container ports, in different slices.
        let web =
            service("web")
                .port("metrics", 9100, Int(9100))
                .port("http", 80, Named("web".into()));
        let slices = [
            slice("web", "web-a", "IPv4")
                .port("metrics", 9100)
                .port("http", 8080)
                .ready("10.0.0.1"),
            slice("web", "web-b", "IPv4")
                .port("http", 8081)
                .port("metrics", 9100)
                .ready("10.0.0.2"),
        ];
        let expected = [
            ("10.0.0.1:8080".to_owned(), 1),
            ("10.0.0.2:8081".to_owned(), 1),
        ];
        for port in [Int(80), Named("http".into())] {
            let lbp = pool(vec![to_service("web", port.clone(), 1)]);
            let compiled = compile_with(&lbp, std::slice::from_ref(&web), &slices);
            assert_eq!(targets(&compiled), expected, "{port:?}");
        }
    }

    #[test]
    fn a_services_only_unnamed_port_matches_the_slices_unnamed_port() {
        let web = service("web").port("", 80, Int(8080));
        let slices = [slice("web", "web-a", "IPv4")
            .port("", 8080)
            .ready("10.0.0.1")];
        let lbp = pool(vec![to_service("web", Int(80), 1)]);
        let compiled = compile_with(&lbp, &[web], &slices);
        assert_eq!(targets(&compiled), [("10.0.0.1:8080".into(), 1)]);
    }

    #[test]
    fn static_addresses_pass_through_with_their_weights() {
        let lbp = pool(vec![
            to_address("203.0.113.7:8080", 3),
            to_address("[2001:db8::7]:8080", 1),
        ]);
        let compiled = compile_with(&lbp, &[], &[]);
        assert_eq!(
            targets(&compiled),
            [
                ("203.0.113.7:8080".into(), 3),
                ("[2001:db8::7]:8080".into(), 1)
            ]
        );
        let report = &compiled.report;
        assert_eq!(report.backends[0].service_found, None);
        assert_eq!((report.total, report.ready), (2, 2));
    }

    #[test]
    fn a_missing_service_is_reported_and_the_other_backends_still_serve() {
        let lbp = pool(vec![
            to_service("users-v3", Int(8080), 50),
            to_address("203.0.113.7:8080", 50),
        ]);
        let compiled = compile_with(&lbp, &[web()], &[]);
        assert_eq!(targets(&compiled), [("203.0.113.7:8080".into(), 1)]);
        let report = &compiled.report;
        assert!(!report.resolved());
        assert_eq!(report.backends[0].service_found, Some(false));
        assert_eq!(report.reason(), Some("BackendNotFound"));
        assert_eq!(
            report.message().as_deref(),
            Some("backends[0]: Service \"users-v3\" not found")
        );
    }

    #[test]
    fn a_missing_or_unusable_port_is_reported() {
        let services = [
            web(),
            service("dns").udp_port("dns", 53),
            service("db").external_name(),
        ];
        let cases = [
            (
                to_service("web", Int(8080), 1),
                "Service \"web\" has no port 8080",
                "BackendNotFound",
            ),
            (
                to_service("web", Named("grpc".into()), 1),
                "Service \"web\" has no port named \"grpc\"",
                "BackendNotFound",
            ),
            (
                to_service("dns", Int(53), 1),
                "port 53 of Service \"dns\" is UDP, not TCP",
                "UnsupportedBackend",
            ),
            (
                to_service("db", Int(5432), 1),
                "Service \"db\" is of type ExternalName, which has no endpoints",
                "UnsupportedBackend",
            ),
            (
                to_address("db.example.com:5432", 1),
                "address \"db.example.com:5432\" is not an IP address and port",
                "UnsupportedBackend",
            ),
        ];
        for (backend, message, reason) in cases {
            let compiled = compile_with(&pool(vec![backend]), &services, &[]);
            let report = &compiled.report;
            assert_eq!(report.message(), Some(format!("backends[0]: {message}")));
            assert_eq!(report.reason(), Some(reason), "{message}");
            assert!(compiled.pool.targets.is_empty());
        }
    }

    #[test]
    fn slices_without_the_port_or_with_fqdns_are_reported() {
        let lbp = pool(vec![to_service("web", Int(80), 1)]);
        let other_port = [slice("web", "web-a", "IPv4")
            .port("admin", 9000)
            .ready("10.0.0.1")];
        let compiled = compile_with(&lbp, &[web()], &other_port);
        assert_eq!(
            compiled.report.message().as_deref(),
            Some("backends[0]: the EndpointSlices of Service \"web\" have no port named \"http\"")
        );
        let fqdn = [slice("web", "web-a", "FQDN")
            .port("http", 8080)
            .ready("web.example.com")];
        let compiled = compile_with(&lbp, &[web()], &fqdn);
        assert_eq!(
            compiled.report.message().as_deref(),
            Some("backends[0]: the EndpointSlices of Service \"web\" list FQDNs, not IP addresses")
        );
    }

    #[test]
    fn objects_of_other_namespaces_are_not_seen() {
        let lbp = pool(vec![to_service("web", Int(80), 1)]);
        let mut elsewhere = web();
        elsewhere.metadata.namespace = Some("other".into());
        let mut slice = slice("web", "web-a", "IPv4")
            .port("http", 8080)
            .ready("10.0.0.1");
        slice.metadata.namespace = Some("other".into());
        let compiled = compile_with(&lbp, &[elsewhere], &[slice]);
        assert_eq!(
            compiled.report.message().as_deref(),
            Some("backends[0]: Service \"web\" not found")
        );
        assert_eq!(NS, "shop");
    }

    /// The case: a 90/10 split stays 90/10 when the 10% side scales from 1 to 5 pods,
    /// and when the 90% side does.
    #[test]
    fn a_90_10_split_stays_90_10_however_many_pods_each_side_has() {
        let services = [
            service("v1").port("http", 80, Int(8080)),
            service("v2").port("http", 80, Int(8080)),
        ];
        let lbp = pool(vec![
            to_service("v1", Int(80), 90),
            to_service("v2", Int(80), 10),
        ]);
        let pods = |service: &str, prefix: &str, n: usize| {
            (1..=n).fold(
                slice(service, service, "IPv4").port("http", 8080),
                |s, i| s.ready(&format!("{prefix}.{i}")),
            )
        };
        let names = |prefix: &str, n: usize| -> Vec<String> {
            (1..=n).map(|i| format!("{prefix}.{i}:8080")).collect()
        };
        for (v1, v2) in [(1, 1), (1, 5), (5, 1), (3, 7), (1, 100), (13, 17)] {
            let slices = [pods("v1", "10.1.0", v1), pods("v2", "10.2.0", v2)];
            let compiled = compile_with(&lbp, &services, &slices);
            let v1_names = names("10.1.0", v1);
            let v1_share = share(
                &compiled,
                &v1_names.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            assert!(
                (v1_share - 90.0).abs() < 0.5,
                "{v1} and {v2} pods: {v1_share}%"
            );
            assert_eq!(compiled.pool.targets.len(), v1 + v2);
        }
        // With 1 and 5 pods, exactly: 45 for the one, 1 for each of the five.
        let compiled = compile_with(
            &lbp,
            &services,
            &[pods("v1", "10.1.0", 1), pods("v2", "10.2.0", 5)],
        );
        let weights: Vec<u32> = compiled.pool.targets.iter().map(|t| t.weight).collect();
        assert_eq!(weights, [45, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn split_weights_keep_every_backends_share_within_half_a_point() {
        let weights = [1, 3, 10, 90, 333, 1_000, 65_535, 1_000_000];
        let counts = [1, 2, 3, 5, 7, 11, 13, 64, 97, 1_000];
        for &w1 in &weights {
            for &w2 in &weights {
                for &n1 in &counts {
                    for &n2 in &counts {
                        let backends = [(w1, n1), (w2, n2), (7, 3)];
                        let split = split_weights(&backends);
                        assert!(
                            split.iter().all(|w| (1..=MAX_WEIGHT).contains(w)),
                            "{backends:?}: {split:?}"
                        );
                        let totals: Vec<f64> = backends
                            .iter()
                            .zip(&split)
                            .map(|(&(_, n), &w)| n as f64 * f64::from(w))
                            .collect();
                        let sum: f64 = totals.iter().sum();
                        let wanted: f64 = backends.iter().map(|b| f64::from(b.0)).sum();
                        // Shares are representable when per-endpoint weights differ by less
                        // than MAX_WEIGHT / 500 (see split_weights).
                        let per_endpoint: Vec<f64> = backends
                            .iter()
                            .map(|&(w, n)| f64::from(w) / n as f64)
                            .collect();
                        let spread = per_endpoint.iter().cloned().fold(0.0, f64::max)
                            / per_endpoint.iter().cloned().fold(f64::MAX, f64::min);
                        if spread > f64::from(MAX_WEIGHT) / 500.0 {
                            continue;
                        }
                        for (i, &(w, _)) in backends.iter().enumerate() {
                            let got = 100.0 * totals[i] / sum;
                            let want = 100.0 * f64::from(w) / wanted;
                            assert!(
                                (got - want).abs() < 0.5,
                                "{backends:?} → {split:?}: backend {i} {got}% for {want}%"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn weight_zero_drains_and_backends_without_ready_endpoints_take_no_share() {
        assert_eq!(split_weights(&[(0, 3), (5, 2)]), [0, 1]);
        assert_eq!(split_weights(&[(90, 0), (10, 4)]), [0, 1]);
        assert_eq!(split_weights(&[(0, 3), (5, 0)]), [0, 0]);
        assert_eq!(split_weights(&[]), Vec::<u32>::new());

        let lbp = pool(vec![
            to_service("web", Int(80), 0),
            to_address("203.0.113.7:8080", 1),
        ]);
        let slices = [slice("web", "web-a", "IPv4")
            .port("http", 8080)
            .ready("10.0.0.1")];
        let compiled = compile_with(&lbp, &[web()], &slices);
        assert_eq!(
            targets(&compiled),
            [("10.0.0.1:8080".into(), 0), ("203.0.113.7:8080".into(), 1)],
            "a drained backend's endpoints stay known with weight 0"
        );
    }

    #[test]
    fn a_target_reached_through_two_backends_gets_both_weights() {
        let lbp = pool(vec![
            to_service("web", Int(80), 1),
            to_address("10.0.0.1:8080", 1),
        ]);
        let slices = [slice("web", "web-a", "IPv4")
            .port("http", 8080)
            .ready("10.0.0.1")
            .ready("10.0.0.2")];
        let compiled = compile_with(&lbp, &[web()], &slices);
        // The Service's half is split over two pods (1 each of 2), the address has the other
        // half (2): 10.0.0.1 carries 3 of 4.
        assert_eq!(
            targets(&compiled),
            [("10.0.0.1:8080".into(), 3), ("10.0.0.2:8080".into(), 1)]
        );
        assert_eq!((compiled.report.total, compiled.report.ready), (2, 2));
    }

    #[test]
    fn the_output_does_not_depend_on_the_order_of_objects() {
        let lbp = pool(vec![
            to_service("web", Int(80), 2),
            to_service("api", Int(80), 1),
        ]);
        let services = [web(), service("api").port("http", 80, Int(8080))];
        let mut slices = vec![
            slice("web", "web-a", "IPv4")
                .port("http", 8080)
                .ready("10.0.0.2"),
            slice("web", "web-b", "IPv4")
                .port("http", 8080)
                .ready("10.0.0.1"),
            slice("api", "api-a", "IPv6")
                .port("http", 8080)
                .ready("fd00::2"),
        ];
        let first = compile_with(&lbp, &services, &slices);
        slices.reverse();
        let mut reversed_services = services.to_vec();
        reversed_services.reverse();
        assert_eq!(compile_with(&lbp, &reversed_services, &slices), first);
    }

    #[test]
    fn a_pool_the_contract_refuses_is_an_error() {
        let mut lbp = pool(vec![]);
        lbp.spec.routes[0].host = "API.example.com".into();
        let err = compile(&lbp, &Backends::default()).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid pool: routes[0].host:"),
            "{err}"
        );
        let mut unnamed = pool(vec![]);
        unnamed.metadata.namespace = None;
        assert_eq!(
            compile(&unnamed, &Backends::default()),
            Err(CompileError::Unnamed)
        );
    }
}
