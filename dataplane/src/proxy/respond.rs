//! The target's response, turned into the client's.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{RequestBody, ResponseBody};
use crate::headers::{self, X_REQUEST_ID};
use crate::stats::InFlight;
use crate::upstream::Checkout;

/// The target's response as the client gets it: affinity cookie, request id, hop-by-hop
/// fields removed, and either a tunnel (101) or the body streamed through.
pub fn respond(
    mut response: Response<Incoming>,
    checkout: Option<Checkout<RequestBody>>,
    in_flight: InFlight,
    set_cookie: Option<&HeaderValue>,
    request_id: &HeaderValue,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ResponseBody> {
    let headers = response.headers_mut();
    if let Some(cookie) = set_cookie {
        headers.append(header::SET_COOKIE, cookie.clone());
    }
    headers.insert(&X_REQUEST_ID, request_id.clone());
    match client_upgrade {
        Some(client_upgrade) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            headers::strip_hop_by_hop(response.headers_mut(), true);
            // The connection now belongs to the tunnel; it never returns to its client.
            drop(checkout);
            let target_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                // The request stays in flight for as long as the tunnel is open.
                let _in_flight = in_flight;
                if let (Ok(client), Ok(upstream)) = (client_upgrade.await, target_upgrade.await) {
                    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
            response.map(|_| ResponseBody::empty())
        }
        _ => {
            headers::strip_hop_by_hop(response.headers_mut(), false);
            let mut checkout = checkout;
            if http_body::Body::is_end_stream(response.body()) {
                // No body to wait for (204, 304, HEAD, Content-Length: 0): hyper may never
                // poll it, so the connection goes back now.
                if let Some(c) = checkout.take() {
                    c.release();
                }
            }
            response.map(|inner| ResponseBody::Upstream {
                inner,
                in_flight,
                checkout,
                log: None,
            })
        }
    }
}
