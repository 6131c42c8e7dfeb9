//! The JSON channel between the controller and its data planes.
//!
//! A data plane opens one long-lived `GET /v1/stream?dataPlane=ID[&since=REVISION]` to the
//! controller and reads newline-delimited [`Update`]s: first a [`Update::Snapshot`] (or, on a
//! reconnect whose `since` the controller can still serve, only the changes it missed), then
//! one message per changed or removed pool. Revisions grow by one per change, across pools,
//! so a data plane knows what it has. It reports back with `POST /v1/report` carrying a
//! [`Report`]: the revision it applied, the pools it refused and why, and the health it sees
//! per target. Both directions authenticate with `Authorization: Bearer TOKEN`. The stream's
//! query values are written with [`encode_query_value`] and read with [`parse_query`], both
//! here so the two sides cannot drift apart.

use std::collections::HashMap;
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

/// Percent-encodes a query value (pod names and label selectors: letters, digits, `-._~`
/// pass; everything else is escaped).
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `a=1&b=x%20y` to a map, percent-decoded (`+` is a space); of a key given twice the last
/// value counts, and what does not decode to UTF-8 is replaced by U+FFFD.
pub fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query_value("weir-dp-7f9c"), "weir-dp-7f9c");
        assert_eq!(
            encode_query_value("app in (web,api)"),
            "app%20in%20%28web%2Capi%29"
        );
    }

    #[test]
    fn queries_are_percent_decoded() {
        let q = parse_query("dataPlane=weir-dp-0&since=42&selector=team%3Dshop%2Ctier%21%3Dedge");
        assert_eq!(q["dataPlane"], "weir-dp-0");
        assert_eq!(q["since"], "42");
        assert_eq!(q["selector"], "team=shop,tier!=edge");
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("a+b%20c%"), "a b c%");
    }
}
