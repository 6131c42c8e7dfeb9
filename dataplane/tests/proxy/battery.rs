//! The malformed-request battery (`battery/cases.rs`, shared with `bench/run battery`)
//! against a real `weir-dataplane` in front of a real `weir-echo`: every request is either
//! refused before anything reaches the target, with the status its case names, or reaches
//! the target well-formed, as the target's own report of it shows. After each case the proxy
//! still serves.

#[path = "battery/cases.rs"]
mod cases;

use std::time::Duration;

use crate::support::{Backend, Proxy, pool, pools_file};

/// Longest a case may take; the `/delay` target of the body cases waits 1 s.
const DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn every_battery_request_is_refused_before_the_target_or_reaches_it_well_formed() {
    let backend = Backend::start("b1");
    let proxy = Proxy::start(&pools_file(&[pool("web", &[], &[(&backend, 1)])]), &[]).await;
    let cases = cases::all();
    let mut misses = Vec::new();
    for case in &cases {
        let before = backend.requests().await;
        let (addr, request) = (proxy.addr, case.request.clone());
        let answer = tokio::task::spawn_blocking(move || cases::exchange(addr, &request, DEADLINE))
            .await
            .expect("the exchange panicked")
            .unwrap_or_else(|e| panic!("{}: cannot reach the proxy: {e}", case.name));
        let reached = backend.requests().await - before;
        println!(
            "{:<28} {:<40} want {:<12} got {:<14} x-weir-error {:<18} target saw {reached}",
            case.group.title(),
            case.name,
            case.expect.label(),
            answer.label(),
            answer.header("x-weir-error").unwrap_or("-"),
        );
        if let Err(miss) = cases::judge(case, &answer, reached) {
            misses.push(format!("{}: {miss}\n    (why: {})", case.name, case.why));
        }
        let after = proxy.get("/", &[]).await;
        if after.status != 200 {
            misses.push(format!(
                "{}: the proxy answered {} to a plain GET after it",
                case.name, after.status
            ));
        }
    }
    assert!(
        misses.is_empty(),
        "{} of {} battery cases are not as specified:\n{}",
        misses.len(),
        cases.len(),
        misses.join("\n")
    );
}
