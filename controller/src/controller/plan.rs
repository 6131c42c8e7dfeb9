//! What reconciling a pool decides, without doing any of it: the pool the data planes are to
//! be served, the status to write and the Events to publish, from what is [`Known`] (the
//! pool, the cached Services and slices it names, what this replica wrote and what the data
//! planes report). [`reconcile`](super::reconcile) gathers what is known, calls [`plan`] and
//! applies the [`Plan`]; nothing here talks to the API server.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tokio::time::Instant;
use weir_api::channel::ChannelPool;
use weir_crds::{LoadBalancerPool, LoadBalancerPoolStatus};

use crate::dataplanes::DataPlanes;
use crate::hub::Entry;
use crate::status::{self, Facts, Notice};
use crate::targets::{self, Backends, Compiled};

/// What a reconcile knows of a pool.
pub struct Known<'a> {
    /// The pool, as the cache holds it.
    pub pool: &'a LoadBalancerPool,
    /// The cached Services and EndpointSlices of its namespace that it names.
    pub backends: &'a Backends<'a>,
    /// Whether this replica writes status now.
    pub writes_status: bool,
    /// The status this replica last wrote for a pool of this name, if it did.
    pub written: Option<&'a Written>,
    /// The data planes, and what they report of the pool.
    pub data_planes: &'a DataPlanes,
    /// Now, for whether data planes are still connected.
    pub instant: Instant,
    /// Now, for the conditions that change.
    pub now: Timestamp,
}

/// What a reconcile does.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// The pool to stage for the data planes; `None` when it does not compile, so that they
    /// keep its last version that did. (Staging a pool as it is changes nothing.)
    pub publish: Option<Entry>,
    /// The status to write and the Events it deserves; `None` when this replica does not
    /// write status or the status would not change.
    pub write: Option<StatusWrite>,
}

/// A status to write.
#[derive(Debug, PartialEq)]
pub struct StatusWrite {
    /// The status, and the pool it was computed from: what to remember once it is written.
    pub written: Written,
    /// The Events the change deserves, published once the status is written.
    pub events: Vec<Notice>,
}

/// A status this replica wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// The pool's uid (a pool deleted and created again is another pool).
    pub uid: String,
    /// The pool's `resourceVersion` when the status was computed: while the cache still
    /// holds that version, the watch has not brought the write back. Once it moves on, the
    /// cache is the truth again, also when someone else wrote status since.
    pub from_version: Option<String>,
    /// The status written.
    pub status: LoadBalancerPoolStatus,
}

/// Compiles the pool for the data planes and, where this replica writes status, computes the
/// status it calls for and whether that differs from the status already there.
pub fn plan(known: &Known<'_>) -> Plan {
    let lbp = known.pool;
    let compiled = targets::compile(lbp, known.backends);
    let publish = compiled.as_ref().ok().map(|c| entry(lbp, c));
    if !known.writes_status {
        return Plan {
            publish,
            write: None,
        };
    }

    let generation = lbp.metadata.generation.unwrap_or_default();
    // A pool that does not compile is not accepted, and the status of a pool not accepted
    // counts no targets: the data planes' health of its last good version is not read.
    let targets: Vec<_> = match &compiled {
        Ok(c) => c.pool.targets.iter().map(|t| t.address).collect(),
        Err(_) => Vec::new(),
    };
    let seen = known.data_planes.observe(
        &name(lbp),
        lbp.labels(),
        generation,
        &targets,
        known.instant,
    );
    let uid = lbp.uid().unwrap_or_default();
    let version = lbp.metadata.resource_version.clone();
    let previous = match known.written {
        Some(w) if w.uid == uid && w.from_version == version => Some(&w.status),
        _ => lbp.status.as_ref(),
    };
    let routes = lbp.spec.routes_summary();
    let facts = Facts {
        generation,
        routes: &routes,
        compiled: compiled.as_ref().map(|c| &c.report),
        seen: &seen,
    };
    let next = status::desired(&facts, previous, known.now);
    if previous == Some(&next) {
        return Plan {
            publish,
            write: None,
        };
    }
    let events = status::notices(previous, &next);
    Plan {
        publish,
        write: Some(StatusWrite {
            written: Written {
                uid,
                from_version: version,
                status: next,
            },
            events,
        }),
    }
}

/// A pool's name as the hub and the data planes know it: `namespace/name`.
pub fn name(lbp: &LoadBalancerPool) -> String {
    format!("{}/{}", lbp.namespace().unwrap_or_default(), lbp.name_any())
}

/// The hub's entry of a compiled pool: the pool, the generation it was compiled from, and
/// the labels data planes select it by.
fn entry(lbp: &LoadBalancerPool, compiled: &Compiled) -> Entry {
    Entry {
        pool: ChannelPool {
            generation: lbp.metadata.generation.unwrap_or_default(),
            pool: compiled.pool.clone(),
        },
        labels: lbp.labels().clone(),
    }
}

#[cfg(test)]
mod tests;
