//! Relays data planes' reports from a replica that does not write status to the one that
//! does (the Lease holder, see [`leader`](crate::leader)).
//!
//! Data planes post reports to the controller's Service, so any replica may get them; the
//! holder must hear every data plane to count them in status. A relayed report carries the
//! data plane's own `Authorization` (the holder checks it again, so relaying grants nothing)
//! and [`RELAYED_BY`], so it is never relayed twice. Relaying is fire-and-forget: a lost
//! report is made good by the next one, at most 10 s later.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use weir_api::channel::REPORT_PATH;

/// The header naming the replica that relayed a report.
pub const RELAYED_BY: &str = "x-weir-relayed-by";
/// A relay that takes longer is dropped; the data plane reports again soon.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Posts reports to the Lease holder's channel.
#[derive(Clone, Debug)]
pub struct Relay {
    client: Client<HttpConnector, Full<Bytes>>,
    identity: HeaderValue,
}

impl Relay {
    /// A relay that signs its reports as `identity` (this replica's).
    pub fn new(identity: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(TIMEOUT));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            identity: HeaderValue::from_str(identity)
                .unwrap_or_else(|_| HeaderValue::from_static("unnamed")),
        }
    }

    /// Sends `report` (its JSON, as received) to the channel at `base` (`http://host:port`)
    /// in the background.
    pub fn forward(&self, base: &str, authorization: Option<HeaderValue>, report: Bytes) {
        let uri = format!("{}{REPORT_PATH}", base.trim_end_matches('/'));
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(RELAYED_BY, self.identity.clone());
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = match request.body(Full::new(report)) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(%uri, error = %e, "cannot relay a report: bad leader URL");
                return;
            }
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TIMEOUT, client.request(request)).await {
                Ok(Ok(response)) if response.status().is_success() => {}
                Ok(Ok(response)) => {
                    tracing::warn!(%uri, status = %response.status(), "the leader refused a relayed report");
                }
                Ok(Err(e)) => {
                    tracing::warn!(%uri, error = %e, "cannot relay a report to the leader")
                }
                Err(_) => tracing::warn!(%uri, "relaying a report to the leader timed out"),
            }
        });
    }
}
