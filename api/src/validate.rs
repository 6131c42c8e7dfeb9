//! Checks that serde cannot express: ranges, formats, uniqueness and fields that depend on
//! each other. Each failure names the field by path (`pools[1].targets[0].weight`) so that a
//! file loader can turn it into a line number and the controller into a condition message.

use std::collections::{HashMap, HashSet};

use crate::{AffinityKind, Pool, PoolsFile, Route};

/// Largest weight a target may have, as in Gateway API.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// A field that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Path of the field, such as `pools[0].routes[1].host`.
    pub path: String,
    /// What is wrong with it, in words a user acts on.
    pub message: String,
}

impl FieldError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    fn within(mut self, parent: &str) -> Self {
        self.path = format!("{parent}.{}", self.path);
        self
    }
}

impl PoolsFile {
    /// Validates every pool and what pools must agree on: unique names and no route claimed
    /// by two pools.
    pub fn validate(&self) -> Result<(), FieldError> {
        let mut names = HashSet::new();
        // Each route and the pool (index) that claimed it first. A pool may list one route
        // twice, as the channel allows: only another pool's claim is a conflict.
        let mut routes: HashMap<&Route, usize> = HashMap::new();
        for (i, pool) in self.pools.iter().enumerate() {
            let at = format!("pools[{i}]");
            pool.validate().map_err(|e| e.within(&at))?;
            if !names.insert(pool.name.as_str()) {
                return Err(FieldError::new(
                    format!("{at}.name"),
                    format!("pool name {:?} is used twice", pool.name),
                ));
            }
            for (j, route) in pool.routes.iter().enumerate() {
                let owner = *routes.entry(route).or_insert(i);
                if owner != i {
                    return Err(FieldError::new(
                        format!("{at}.routes[{j}]"),
                        format!(
                            "host {:?} with pathPrefix {:?} is already routed to pool {}",
                            route.host, route.path_prefix, self.pools[owner].name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Pool {
    /// Validates one pool on its own; paths are relative to the pool.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !is_pool_name(&self.name) {
            return Err(FieldError::new(
                "name",
                format!(
                    "{:?} is not a valid name: use 1-63 lowercase letters, digits and '-', \
                     starting and ending with a letter or digit (pools from Kubernetes are \
                     named namespace/name)",
                    self.name
                ),
            ));
        }
        if self.routes.is_empty() {
            return Err(FieldError::new("routes", "a pool needs at least one route"));
        }
        for (i, route) in self.routes.iter().enumerate() {
            validate_host(&route.host)
                .map_err(|m| FieldError::new(format!("routes[{i}].host"), m))?;
            if !route.path_prefix.starts_with('/') {
                return Err(FieldError::new(
                    format!("routes[{i}].pathPrefix"),
                    format!("{:?} must start with '/'", route.path_prefix),
                ));
            }
            if route.path_prefix.contains(['?', '#', ' ']) {
                return Err(FieldError::new(
                    format!("routes[{i}].pathPrefix"),
                    format!(
                        "{:?} must be a path without query, fragment or spaces",
                        route.path_prefix
                    ),
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, target) in self.targets.iter().enumerate() {
            if target.weight > MAX_WEIGHT {
                return Err(FieldError::new(
                    format!("targets[{i}].weight"),
                    format!("{} is above the maximum weight {MAX_WEIGHT}", target.weight),
                ));
            }
            if target.address.port() == 0 {
                return Err(FieldError::new(
                    format!("targets[{i}].address"),
                    "port 0 is not a valid target port",
                ));
            }
            if !seen.insert(target.address) {
                return Err(FieldError::new(
                    format!("targets[{i}].address"),
                    format!("{} is listed twice", target.address),
                ));
            }
        }
        if let Some(affinity) = &self.session_affinity {
            match affinity.kind {
                AffinityKind::Cookie => {
                    if !is_token(affinity.cookie_name()) {
                        return Err(FieldError::new(
                            "sessionAffinity.cookieName",
                            format!("{:?} is not a valid cookie name", affinity.cookie_name()),
                        ));
                    }
                }
                AffinityKind::Header => match affinity.header_name.as_deref() {
                    None => {
                        return Err(FieldError::new(
                            "sessionAffinity.headerName",
                            "is required when type is Header",
                        ));
                    }
                    Some(h) if !is_token(h) => {
                        return Err(FieldError::new(
                            "sessionAffinity.headerName",
                            format!("{h:?} is not a valid header name"),
                        ));
                    }
                    Some(_) => {}
                },
                AffinityKind::ClientIp => {}
            }
            if affinity.kind != AffinityKind::Cookie
                && (affinity.cookie_name.is_some() || affinity.ttl.is_some())
            {
                return Err(FieldError::new(
                    "sessionAffinity",
                    "cookieName and ttl apply only when type is Cookie",
                ));
            }
            if affinity.kind != AffinityKind::Header && affinity.header_name.is_some() {
                return Err(FieldError::new(
                    "sessionAffinity.headerName",
                    "applies only when type is Header",
                ));
            }
        }
        self.validate_resilience()?;
        if self.timeouts.connect.get().is_zero() {
            return Err(FieldError::new(
                "timeouts.connect",
                "must be greater than 0",
            ));
        }
        if self.timeouts.request.get().is_zero() {
            return Err(FieldError::new(
                "timeouts.request",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

impl Pool {
    fn validate_resilience(&self) -> Result<(), FieldError> {
        let positive = |path: &str, v: u32| {
            if v == 0 {
                Err(FieldError::new(path, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        let percent = |path: &str, v: u32| {
            if v > 100 {
                Err(FieldError::new(path, format!("{v} is above 100 percent")))
            } else {
                Ok(())
            }
        };
        let nonzero = |path: &str, d: crate::Duration| {
            if d.get().is_zero() {
                Err(FieldError::new(path, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        if let Some(h) = &self.health_check {
            if !h.path.starts_with('/') {
                return Err(FieldError::new(
                    "healthCheck.path",
                    format!("{:?} must start with '/'", h.path),
                ));
            }
            nonzero("healthCheck.interval", h.interval)?;
            nonzero("healthCheck.timeout", h.timeout)?;
            positive("healthCheck.healthyThreshold", h.healthy_threshold)?;
            positive("healthCheck.unhealthyThreshold", h.unhealthy_threshold)?;
            if h.expected_statuses.is_empty() {
                return Err(FieldError::new(
                    "healthCheck.expectedStatuses",
                    "needs at least one status",
                ));
            }
        }
        if let Some(o) = &self.outlier_detection {
            nonzero("outlierDetection.baseEjectionTime", o.base_ejection_time)?;
            if o.max_ejection_time < o.base_ejection_time {
                return Err(FieldError::new(
                    "outlierDetection.maxEjectionTime",
                    "must not be below baseEjectionTime",
                ));
            }
            percent(
                "outlierDetection.maxEjectionPercent",
                o.max_ejection_percent,
            )?;
        }
        let b = &self.circuit_breaker;
        positive("circuitBreaker.maxConnections", b.max_connections)?;
        positive("circuitBreaker.maxRequests", b.max_requests)?;
        positive("circuitBreaker.halfOpenRequests", b.half_open_requests)?;
        nonzero("circuitBreaker.resetTimeout", b.reset_timeout)?;
        percent("panicThreshold", self.panic_threshold)?;
        if let Some(s) = &self.slow_start {
            nonzero("slowStart.window", s.window)?;
        }
        let r = &self.retries;
        if !(1..=10).contains(&r.attempts) {
            return Err(FieldError::new(
                "retries.attempts",
                format!("{} is not between 1 and 10", r.attempts),
            ));
        }
        percent("retries.budgetPercent", r.budget_percent)?;
        if let Some(log) = &self.access_log {
            percent("accessLog.samplePercent", log.sample_percent)?;
        }
        if r.backoff_max < r.backoff_base {
            return Err(FieldError::new(
                "retries.backoffMax",
                "must not be below backoffBase",
            ));
        }
        if let Some(per_try) = self.timeouts.per_try {
            nonzero("timeouts.perTry", per_try)?;
        }
        Ok(())
    }
}

/// A pool name: a DNS label, or `namespace/name` for pools compiled from Kubernetes objects
/// (a namespace is a DNS label, an object name a DNS subdomain).
fn is_pool_name(s: &str) -> bool {
    match s.split_once('/') {
        None => is_dns_label(s),
        Some((namespace, name)) => {
            is_dns_label(namespace)
                && !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(is_dns_label)
        }
    }
}

/// A DNS label (RFC 1123): what Kubernetes namespaces and most names are, and each part of a
/// host name.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// An RFC 9110 token: what header and cookie names are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

fn validate_host(host: &str) -> Result<(), String> {
    if host == "*" {
        return Ok(());
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.len() > 253 || !name.split('.').all(is_dns_label) {
        return Err(format!(
            "{host:?} is not a host: use a lowercase DNS name (api.example.com), a wildcard \
             (*.example.com) or *"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SessionAffinity, Target};

    fn pool() -> Pool {
        serde_json::from_str(r#"{"name":"web","targets":[{"address":"127.0.0.1:9001"}]}"#).unwrap()
    }

    fn err(p: &Pool) -> String {
        p.validate().unwrap_err().to_string()
    }

    #[test]
    fn a_plain_pool_is_valid() {
        assert_eq!(pool().validate(), Ok(()));
    }

    #[test]
    fn names_must_be_dns_labels() {
        let mut p = pool();
        p.name = "Web_1".into();
        assert!(err(&p).starts_with("name: \"Web_1\" is not a valid name"));
        p.name = "shop/users.v2".into();
        assert_eq!(p.validate(), Ok(()), "namespace/name from Kubernetes");
        p.name = "shop/".into();
        assert!(p.validate().is_err());
    }

    #[test]
    fn hosts_are_exact_wildcard_or_any() {
        let mut p = pool();
        for ok in ["*", "api.example.com", "*.example.com", "localhost"] {
            p.routes[0].host = ok.into();
            assert_eq!(p.validate(), Ok(()), "{ok}");
        }
        for bad in [
            "API.example.com",
            "a.*.com",
            "*example.com",
            "",
            "exa mple.com",
        ] {
            p.routes[0].host = bad.into();
            assert!(err(&p).starts_with("routes[0].host:"), "{bad}");
        }
    }

    #[test]
    fn path_prefixes_start_with_a_slash() {
        let mut p = pool();
        p.routes[0].path_prefix = "api".into();
        assert_eq!(err(&p), "routes[0].pathPrefix: \"api\" must start with '/'");
    }

    #[test]
    fn weights_are_bounded_and_addresses_unique() {
        let mut p = pool();
        p.targets[0].weight = MAX_WEIGHT + 1;
        assert!(err(&p).starts_with("targets[0].weight:"));
        let mut p = pool();
        p.targets.push(Target {
            address: "127.0.0.1:9001".parse().unwrap(),
            weight: 2,
        });
        assert_eq!(
            err(&p),
            "targets[1].address: 127.0.0.1:9001 is listed twice"
        );
    }

    #[test]
    fn header_affinity_needs_a_header_name() {
        let mut p = pool();
        p.session_affinity = Some(SessionAffinity {
            kind: AffinityKind::Header,
            cookie_name: None,
            header_name: None,
            ttl: None,
        });
        assert_eq!(
            err(&p),
            "sessionAffinity.headerName: is required when type is Header"
        );
    }

    #[test]
    fn resilience_settings_are_bounded() {
        let mut p = pool();
        p.panic_threshold = 150;
        assert_eq!(err(&p), "panicThreshold: 150 is above 100 percent");
        let mut p = pool();
        p.retries.attempts = 0;
        assert_eq!(err(&p), "retries.attempts: 0 is not between 1 and 10");
        let mut p = pool();
        p.health_check = Some(crate::HealthCheck {
            healthy_threshold: 0,
            ..Default::default()
        });
        assert_eq!(err(&p), "healthCheck.healthyThreshold: must be at least 1");
    }

    #[test]
    fn pools_need_unique_names_and_distinct_routes() {
        let file = PoolsFile {
            pools: vec![pool(), pool()],
        };
        assert_eq!(file.validate().unwrap_err().path, "pools[1].name");
        let mut other = pool();
        other.name = "other".into();
        let file = PoolsFile {
            pools: vec![pool(), other],
        };
        let e = file.validate().unwrap_err();
        assert_eq!(e.path, "pools[1].routes[0]");
        assert!(e.message.ends_with("is already routed to pool web"), "{e}");
    }

    /// Found by the `channel_updates` fuzz target: the channel took a pool listing one route
    /// twice, which the pools file refused as "already routed to another pool".
    #[test]
    fn a_pool_may_list_its_own_route_twice() {
        let mut p = pool();
        p.routes.push(p.routes[0].clone());
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(PoolsFile { pools: vec![p] }.validate(), Ok(()));
    }
}
