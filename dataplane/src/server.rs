//! The proxy listener: HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one socket, upgrades
//! passed through, the limits that keep hostile clients from holding the proxy, and a graceful
//! drain on shutdown.
//!
//! What each limit defends against, and why the library's own defences are enough where Weir
//! adds none, is in `docs/hardening.md`. In short:
//! - a cap on open connections (`--max-connections`): beyond it a new connection is accepted
//!   and reset at once, never left waiting in the kernel's queue;
//! - per connection, one task watches an `activity::Activity` that the socket, every request
//!   and every response body report to: HTTP/1.1 heads must arrive within the header read
//!   timeout of their first byte, and a connection with nothing in flight closes after the
//!   idle timeout (hyper has neither for a keep-alive connection between requests, nor any
//!   idle timeout for HTTP/2);
//! - HTTP/2: h2's own budgets (reset streams waiting to be accepted, CONTINUATION frames,
//!   empty DATA frames, stream errors) answer GOAWAY `ENHANCE_YOUR_CALM`; Weir adds a budget
//!   of streams the client resets before their answer, which h2 cannot see once hyper has
//!   accepted a stream (rapid reset paced so that each stream reaches the proxy).

mod activity;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub use activity::{PREMATURE_RESETS_ALLOWED, PREMATURE_WINDOW};

use self::activity::{Activity, Expiry, Protocol, Timeouts, Tracked, Watched};
use crate::proxy;
use crate::settings::ProxySettings;
use crate::state::State;
use crate::stats::{Closed, ListenerStats};
use crate::validate;

/// Smallest read buffer hyper accepts.
const MIN_BUF: usize = 8192;

/// Descriptors kept for everything but client connections when the connection cap is derived
/// from the open-files limit: the listeners, the pools file, health checks, the controller
/// channel, and upstream connections idle in their pools beyond one per client.
const RESERVED_FDS: u64 = 256;

/// How long a connection that was sent GOAWAY (idle, or condemned for abuse) may take to close
/// on its own before it is dropped, once nothing is in flight on it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves proxied traffic from `listener` until `shutdown` completes, then stops accepting and
/// lets in-flight requests finish for up to the drain timeout: idle keep-alive connections
/// close, busy HTTP/1.1 ones close after their current response, HTTP/2 ones get GOAWAY.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let builder = Arc::new(connection_builder(&state.settings));
    let max_connections = max_connections(&state.settings);
    tracing::info!(max_connections, "downstream connection cap");
    // Each connection task holds a sender; the drain is over when every one has been dropped.
    let (open, mut all_closed) = mpsc::channel::<Infallible>(1);
    // Tells every connection to close gracefully; also ends the wait for a first byte.
    let (drain_started, draining) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning, and keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = Slot::take(&state, max_connections) else {
            refuse(&state.listener, stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        state.listener.connections.fetch_add(1, Ordering::Relaxed);
        let connection = Connection {
            state: state.clone(),
            builder: builder.clone(),
            client: Arc::new(proxy::Peer::new(peer)),
            draining: draining.clone(),
            _open: open.clone(),
        };
        tokio::spawn(connection.run(stream, slot));
    }
    drop(listener);
    drop(drain_started);
    drop(open);
    let drain = state.settings.drain_timeout.get();
    tracing::info!(
        open_connections = state.listener.active_connections.load(Ordering::Relaxed),
        timeout = ?drain,
        "draining"
    );
    tokio::select! {
        None = all_closed.recv() => tracing::info!("drained"),
        () = tokio::time::sleep(drain) => tracing::warn!(
            open_connections = state.listener.active_connections.load(Ordering::Relaxed),
            "drain timeout reached; closing the remaining connections"
        ),
    }
}

/// The connection cap in force: `--max-connections`, or what the open-files limit allows.
///
/// Derived, it keeps two descriptors per client connection (its own and one to a target) and
/// `RESERVED_FDS` more, so that the proxy refuses connections cleanly before `accept` starts
/// failing with EMFILE, where it could only back off while clients wait in the kernel's queue.
/// HAProxy derives its `maxconn` from `ulimit -n` the same way.
pub fn max_connections(settings: &ProxySettings) -> u64 {
    if let Some(max) = settings.max_connections {
        return max;
    }
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    (soft.saturating_sub(RESERVED_FDS) / 2).max(1)
}

/// Refuses a connection beyond the cap: reset at once (a zero linger turns the close into a
/// RST), so the client sees "connection reset" straight away and no TIME_WAIT is left here,
/// which a flood of refused connections would otherwise fill.
fn refuse(stats: &ListenerStats, stream: TcpStream) {
    stats.refused_connections.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// A place under the connection cap, held by the connection's socket (so an upgraded
/// connection keeps it until the tunnel closes) and counted in the open-connections gauge.
#[derive(Debug)]
struct Slot(Arc<State>);

impl Slot {
    fn take(state: &Arc<State>, max: u64) -> Option<Self> {
        let open = &state.listener.active_connections;
        if open.fetch_add(1, Ordering::AcqRel) >= max {
            open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(state.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0
            .listener
            .active_connections
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one connection's task needs.
struct Connection {
    state: Arc<State>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    client: Arc<proxy::Peer>,
    draining: watch::Receiver<()>,
    _open: mpsc::Sender<Infallible>,
}

/// Why the connection task closed a connection gracefully.
#[derive(Clone, Copy, Debug)]
enum Closing {
    /// Idle HTTP/2: GOAWAY, then dropped once nothing is in flight.
    Idle,
    /// Condemned for premature resets: GOAWAY, new streams refused, dropped after the grace.
    Abuse,
    /// The proxy is draining: GOAWAY or close after the current response; the drain timeout
    /// bounds it.
    Drain,
}

impl Connection {
    /// Serves the connection until it ends, a timeout closes it or the drain does.
    async fn run(mut self, stream: TcpStream, slot: Slot) {
        let settings = &self.state.settings;
        let timeouts = Timeouts {
            idle: settings.idle_timeout.get(),
            header: settings.header_read_timeout.get(),
        };
        // hyper-util reads the first bytes to tell HTTP/1.1 from h2c, so a client that
        // connects and sends nothing (or half an HTTP/2 preface) gets the header read timeout
        // for that wait too.
        let sniffed = tokio::select! {
            sniffed = tokio::time::timeout(timeouts.header, sniff(&stream)) => sniffed,
            _ = self.draining.changed() => return,
        };
        let protocol = match sniffed {
            Ok(Some(protocol)) => protocol,
            Ok(None) => return,
            Err(_) => {
                self.state.listener.closed(Closed::HeaderTimeout);
                return;
            }
        };
        let activity = Activity::new(protocol);
        // What hyper drops of each HTTP/1 head, read off the wire for validate::check.
        let heads = validate::Heads::default();
        let limit = settings.max_header_bytes.max(MIN_BUF);
        let io = TokioIo::new(validate::Wire::new(
            Watched::new(stream, activity.clone(), slot),
            heads.clone(),
            limit,
        ));
        let service = {
            let (state, client, activity) =
                (self.state.clone(), self.client.clone(), activity.clone());
            service_fn(move |mut req: Request<Incoming>| {
                heads.attach(&mut req);
                // Started here, not in the future: hyper calls this as it reads the head, and
                // the connection task must never see the connection idle in between.
                let started = activity.request();
                let (state, client) = (state.clone(), client.clone());
                async move {
                    // REFUSED_STREAM tells the client the request was not processed and may
                    // be sent again elsewhere.
                    let mut request =
                        started.map_err(|_| h2::Error::from(h2::Reason::REFUSED_STREAM))?;
                    let response = proxy::serve(&state, req, &client).await;
                    request.answered();
                    Ok::<_, h2::Error>(response.map(|body| Tracked::new(body, request)))
                }
            })
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        tokio::pin!(connection);
        let mut closing: Option<(Closing, Instant)> = None;
        let timer = tokio::time::sleep(timeouts.header);
        tokio::pin!(timer);
        let ended = loop {
            // When to look next. Nothing tells this task that a request came or went or that
            // a head began, so it looks at least once a header timeout: a head that began
            // since still gets its whole header timeout, and an expired deadline is seen
            // when it passes.
            let now = Instant::now();
            let look = match closing {
                Some((_, at)) => at,
                None => match activity.deadline(timeouts) {
                    Some((at, _)) => at.min(now + timeouts.header),
                    None => now + timeouts.idle.min(timeouts.header),
                },
            };
            timer.as_mut().reset(look);
            tokio::select! {
                ended = connection.as_mut() => break ended,
                () = activity.condemned_now.notified(), if closing.is_none() => {
                    self.state.listener.closed(Closed::PrematureResets);
                    tracing::info!(
                        peer = %self.client.addr,
                        "HTTP/2 client reset too many streams before their answers; closing"
                    );
                    connection.as_mut().graceful_shutdown();
                    closing = Some((Closing::Abuse, Instant::now() + CLOSE_GRACE));
                }
                () = &mut timer => match closing {
                    Some((Closing::Abuse, _)) => return,
                    Some((why, _)) if activity.in_flight() == 0 => {
                        tracing::debug!(peer = %self.client.addr, ?why, "closed after GOAWAY");
                        return;
                    }
                    Some((why, _)) => closing = Some((why, Instant::now() + CLOSE_GRACE)),
                    None => match activity.deadline(timeouts) {
                        Some((at, why)) if at <= Instant::now() => {
                            self.state.listener.closed(match why {
                                Expiry::Idle => Closed::IdleTimeout,
                                Expiry::Header => Closed::HeaderTimeout,
                            });
                            if protocol == Protocol::Http1 {
                                // Nothing in flight, so nothing to say; and hyper's graceful
                                // close would wait for a half-read head to finish.
                                return;
                            }
                            connection.as_mut().graceful_shutdown();
                            closing = Some((Closing::Idle, Instant::now() + CLOSE_GRACE));
                        }
                        // Not yet, or a request is in flight.
                        _ => {}
                    },
                },
                _ = self.draining.changed(), if closing.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    // The drain's own timeout bounds this one.
                    closing = Some((Closing::Drain, Instant::now() + settings.drain_timeout.get()));
                }
            }
        };
        if let Err(e) = ended {
            if let Some(reason) = goaway_sent(&*e) {
                self.state
                    .listener
                    .closed(if reason == h2::Reason::ENHANCE_YOUR_CALM {
                        Closed::Http2Calm
                    } else {
                        Closed::Http2Error
                    });
                tracing::info!(peer = %self.client.addr, %reason, "HTTP/2 connection closed with GOAWAY");
            } else {
                tracing::debug!(peer = %self.client.addr, error = %e, "downstream connection ended with an error");
            }
        }
    }
}

/// The error code of the GOAWAY that h2 sent because the client broke the protocol or one of
/// h2's budgets, found in the connection's error chain.
fn goaway_sent(e: &(dyn StdError + 'static)) -> Option<h2::Reason> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return (h2.is_go_away() && h2.is_library())
                .then(|| h2.reason())
                .flatten();
        }
        cause = e.source();
    }
    None
}

/// Waits until the client has sent enough to tell an HTTP/1.1 request from the HTTP/2
/// preface; `None` when it closed first.
async fn sniff(stream: &TcpStream) -> Option<Protocol> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    loop {
        match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) if n == PREFACE.len() && buf == PREFACE => return Some(Protocol::Http2),
            Ok(n) if buf[..n] != PREFACE[..n] => return Some(Protocol::Http1),
            // A strict prefix of the preface: peek would return the same bytes at once, so
            // wait a little for the rest. Only stalled clients ever get here.
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// One builder for every connection: limits from the settings. Header and idle timeouts are
/// the connection task's, not hyper's: hyper's HTTP/1.1 header timer also runs while a
/// keep-alive connection waits for its next request, which would make it the idle timeout.
fn connection_builder(settings: &ProxySettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(settings.max_header_bytes.max(MIN_BUF))
        .max_headers(settings.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        // h2's own defaults, written out because the abuse tests rely on them: streams the
        // client resets before hyper accepts them (rapid reset sent in one burst), and
        // streams h2 itself had to reset for the client's protocol errors (CVE-2019-9514).
        // Beyond either, GOAWAY ENHANCE_YOUR_CALM.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        // Also bounds a header block's CONTINUATION frames: h2 allows what this size needs
        // at the smallest frame size, plus a quarter, and at least 5.
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_connection_cap_leaves_room_for_a_target_connection_each() {
        let mut settings = ProxySettings::default();
        let derived = max_connections(&settings);
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert!(
            derived * 2 + RESERVED_FDS <= soft.max(RESERVED_FDS + 2),
            "{derived} of {soft}"
        );
        settings.max_connections = Some(7);
        assert_eq!(max_connections(&settings), 7);
    }

    #[test]
    fn a_goaway_h2_sent_is_told_from_other_errors() {
        let io = std::io::Error::other("reset by peer");
        assert_eq!(goaway_sent(&io), None);
        let reset = h2::Error::from(h2::Reason::CANCEL);
        assert_eq!(goaway_sent(&reset), None, "not a GOAWAY, and not h2's own");
    }
}
