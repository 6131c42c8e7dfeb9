//! The size of the request path's futures. Every await point of `serve` is stored in the
//! connection's task, and hyper moves the whole future into its slot once per request: a
//! byte of future is a byte copied per request (callgrind found 8 KB of `memcpy` per GET when
//! the rare paths, a new connection to the target above all, were inline).

use hyper::body::Incoming;

use super::forward::forward;
use super::serve;
use crate::body::RequestBody;
use crate::upstream::TargetClient;

/// The size of the future `make` returns, without calling it: the futures of the request
/// path are named by their type only, and the values they take (a connection's body) cannot
/// be made in a unit test.
fn future_size<F: Future>(_make: impl FnOnce() -> F) -> usize {
    size_of::<F>()
}

/// The bounds, with room for a compiler's or a dependency's change; a debug build lays
/// futures out larger than a release build does, and the bounds hold in both. A future that
/// outgrows one has gained an inline path: box it where it is rare (see `upstream`).
const SERVE_MAX: usize = 4608;
const SEND_MAX: usize = 1280;

#[test]
#[allow(unreachable_code, clippy::diverging_sub_expression)]
fn a_request_in_flight_holds_a_small_future() {
    let serve = future_size(|| serve::<Incoming>(unreachable!(), unreachable!(), unreachable!()));
    let forward = future_size(|| {
        forward::<Incoming>(
            unreachable!(),
            unreachable!(),
            unreachable!(),
            unreachable!(),
            unreachable!(),
            unreachable!(),
            unreachable!(),
        )
    });
    let send = future_size(|| {
        TargetClient::<RequestBody>::send(unreachable!(), unreachable!(), unreachable!())
    });
    eprintln!("futures: serve {serve} B, forward {forward} B, send to a target {send} B");
    assert!(serve <= SERVE_MAX, "serve's future is {serve} B");
    assert!(send <= SEND_MAX, "a target's send future is {send} B");
    // The request path holds the send future inside forward's, and forward's inside serve's.
    assert!(send < forward && forward < serve);
}
