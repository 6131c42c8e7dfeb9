//! The JSON channel between the controller and its data planes.
//!
//! A data plane opens one long-lived `GET /v1/stream?dataPlane=ID[&since=REVISION]` to the
//! controller and reads newline-delimited [`Update`]s: first a [`Update::Snapshot`] (or, on a
//! reconnect whose `since` the controller can still serve, only the changes it missed), then
//! one message per changed or removed pool. Revisions grow by one per change, across pools,
//! so a data plane knows what it has. It reports back with `POST /v1/report` carrying a
//! [`Report`]: the revision it applied, the pools it refused and why, and the health it sees
//! per target. Both directions authenticate with `Authorization: Bearer TOKEN`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Pool;

/// Path of the update stream.
pub const STREAM_PATH: &str = "/v1/stream";
/// Path reports are posted to.
pub const REPORT_PATH: &str = "/v1/report";

/// One line of the update stream, controller to data plane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Update {
    /// Every pool this data plane serves, replacing whatever it had.
    #[serde(rename_all = "camelCase")]
    Snapshot {
        /// Revision this state is at.
        revision: u64,
        /// The pools.
        pools: Vec<ChannelPool>,
    },
    /// A pool added or changed.
    #[serde(rename_all = "camelCase")]
    Pool {
        /// Revision after this change.
        revision: u64,
        /// The pool as it now is.
        pool: Box<ChannelPool>,
    },
    /// A pool removed (deleted, or no longer selected for this data plane).
    #[serde(rename_all = "camelCase")]
    Removed {
        /// Revision after this change.
        revision: u64,
        /// The pool's name (`namespace/name`).
        name: String,
    },
    /// Sent when nothing changed for a while, so either side notices a dead connection.
    #[serde(rename_all = "camelCase")]
    Heartbeat {
        /// Current revision.
        revision: u64,
    },
}

/// A pool as the controller sends it: the data plane's [`Pool`] and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelPool {
    /// `metadata.generation` of the `LoadBalancerPool` it was compiled from; reported back
    /// so the controller knows which generation each data plane runs.
    pub generation: i64,
    /// The pool; its name is `namespace/name`.
    pub pool: Pool,
}

/// What a data plane reports, data plane to controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Report {
    /// The data plane's stable identity (its pod name).
    pub data_plane: String,
    /// Last revision applied.
    pub revision: u64,
    /// Generation in force per pool.
    pub applied: Vec<AppliedPool>,
    /// Pools refused, with why; the data plane keeps serving their last good version.
    pub rejected: Vec<RejectedPool>,
    /// Health as this data plane sees it.
    pub health: Vec<PoolHealth>,
    /// The pool selector its stream was opened with (empty: every pool). Reports may reach
    /// another controller replica than the stream, and the one writing status needs to know
    /// which pools this data plane serves.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
}

/// A pool a data plane applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppliedPool {
    /// `namespace/name`.
    pub name: String,
    /// Generation applied.
    pub generation: i64,
}

/// A pool a data plane refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RejectedPool {
    /// `namespace/name`.
    pub name: String,
    /// Generation refused.
    pub generation: i64,
    /// Why, in words for a condition message.
    pub reason: String,
}

/// The health of one pool's targets as a data plane sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolHealth {
    /// `namespace/name`.
    pub name: String,
    /// Targets taking traffic.
    pub healthy: Vec<SocketAddr>,
    /// Targets not taking traffic (unhealthy, ejected, breaker open).
    pub unhealthy: Vec<SocketAddr>,
}

impl Update {
    /// The revision the update brings the data plane to.
    pub fn revision(&self) -> u64 {
        match self {
            Self::Snapshot { revision, .. }
            | Self::Pool { revision, .. }
            | Self::Removed { revision, .. }
            | Self::Heartbeat { revision } => *revision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_tagged_json_lines() {
        let pool: Pool = serde_json::from_str(
            r#"{"name":"shop/users","targets":[{"address":"10.0.0.1:8080","weight":90}]}"#,
        )
        .unwrap();
        let u = Update::Pool {
            revision: 7,
            pool: Box::new(ChannelPool {
                generation: 3,
                pool,
            }),
        };
        let line = serde_json::to_string(&u).unwrap();
        assert!(
            line.starts_with(
                r#"{"type":"pool","revision":7,"pool":{"generation":3,"pool":{"name":"shop/users""#
            ),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<Update>(&line).unwrap(), u);
        let removed: Update =
            serde_json::from_str(r#"{"type":"removed","revision":8,"name":"shop/users"}"#).unwrap();
        assert_eq!(removed.revision(), 8);
    }

    #[test]
    fn an_unknown_message_type_is_refused() {
        assert!(serde_json::from_str::<Update>(r#"{"type":"reboot","revision":1}"#).is_err());
    }
}
