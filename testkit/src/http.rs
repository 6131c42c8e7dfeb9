//! HTTP clients and whole responses.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Longest one request may take before it counts as failed.
pub const REQUEST_BOUND: Duration = Duration::from_secs(10);

/// hyper-util's pooled client.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector
}

/// An HTTP/1.1 client that keeps one connection alive per host.
pub fn http1() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector())
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2c() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector())
}

/// A whole response.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Protocol version it came over.
    pub version: Version,
    /// Header fields.
    pub headers: HeaderMap,
    /// Body, as text.
    pub body: String,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

impl Reply {
    /// The value of header `name`, when there is one and it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The backend that answered (`x-backend`).
    pub fn backend(&self) -> Option<&str> {
        self.header("x-backend")
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one request and reads the whole response, within [`REQUEST_BOUND`].
pub async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply, String> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| format!("building the request: {e}"))?;
    exchange(client, request).await
}

/// Sends `request` and reads the whole response, within [`REQUEST_BOUND`]; `Err` describes
/// what failed (the client's error, the body's, or the bound).
pub async fn exchange(client: &HttpClient, request: Request<Full<Bytes>>) -> Result<Reply, String> {
    let started = Instant::now();
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?;
        Ok::<_, String>(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            elapsed: started.elapsed(),
        })
    };
    match tokio::time::timeout(REQUEST_BOUND, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no complete answer within {REQUEST_BOUND:?}")),
    }
}

/// GET `url` with a fresh HTTP/1.1 client.
///
/// # Panics
/// When no answer comes.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(&http1(), Method::GET, url, headers, "")
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e}"))
}

/// The value of the sample written exactly as `sample` (name and labels) in a Prometheus
/// text exposition such as `/metrics`.
pub fn metric(exposition: &str, sample: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(sample)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_its_exact_name_and_labels() {
        let text = "# HELP x y\nweir_requests_total{pool=\"web\"} 12\n\
                    weir_requests_total{pool=\"webs\"} 3\nweir_up 1 1700000000\n";
        assert_eq!(
            metric(text, "weir_requests_total{pool=\"web\"}"),
            Some(12.0)
        );
        assert_eq!(metric(text, "weir_up"), Some(1.0));
        assert_eq!(metric(text, "weir_requests_total"), None);
        assert_eq!(metric(text, "weir_missing"), None);
    }
}
