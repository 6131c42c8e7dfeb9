use std::time::Duration;

use weir_api::Duration as ApiDuration;

use super::*;

fn policy() -> Policy {
    Policy {
        check: Some(HealthCheck::default()),
        outlier: Some(OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_failures: 2,
            ..Default::default()
        }),
        breaker: CircuitBreaker {
            failure_threshold: 100,
            ..Default::default()
        },
        slow_start: None,
    }
}

fn target(policy: Policy) -> TargetHealth {
    TargetHealth::new("web", "127.0.0.1:9001".parse().unwrap(), policy)
}

#[tokio::test(start_paused = true)]
async fn checks_rise_and_fall_by_their_thresholds() {
    let t = target(policy());
    let now = Instant::now();
    assert!(t.is_usable(now), "a target starts usable");
    t.probe(false, now);
    t.probe(false, now);
    assert!(
        t.is_usable(now),
        "two failures are under the fall threshold of 3"
    );
    t.probe(false, now);
    assert!(!t.is_usable(now));
    assert_eq!(t.condition(now), Condition::Unhealthy);
    t.probe(true, now);
    assert!(
        !t.is_usable(now),
        "one pass is under the rise threshold of 2"
    );
    t.probe(false, now);
    t.probe(true, now);
    assert!(!t.is_usable(now), "a failure in between restarts the count");
    t.probe(true, now);
    assert!(t.is_usable(now));
}

#[tokio::test(start_paused = true)]
async fn a_target_can_start_unhealthy() {
    let mut p = policy();
    p.check = Some(HealthCheck {
        start_unhealthy: true,
        ..Default::default()
    });
    let t = target(p);
    assert!(!t.is_usable(Instant::now()));
    t.probe(true, Instant::now());
    t.probe(true, Instant::now());
    assert!(t.is_usable(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn gateway_failures_eject_for_base_times_ejections_capped() {
    let mut p = policy();
    p.outlier = Some(OutlierDetection {
        consecutive_gateway_failures: 2,
        base_ejection_time: ApiDuration::from_secs(30),
        max_ejection_time: ApiDuration::from_secs(75),
        ..Default::default()
    });
    let t = target(p);
    let mut lengths = Vec::new();
    for _ in 0..4 {
        let start = Instant::now();
        t.record(Outcome::GatewayFailure, start, || true);
        t.record(Outcome::GatewayFailure, start, || true);
        let Condition::Ejected(until) = t.condition(start) else {
            panic!("not ejected")
        };
        lengths.push((until - start).as_secs());
        assert!(!t.is_usable(start));
        tokio::time::advance(until - start).await;
        assert!(
            t.is_usable(Instant::now()),
            "usable again when the ejection ends"
        );
    }
    assert_eq!(lengths, [30, 60, 75, 75]);
    assert_eq!(t.ejections.load(Ordering::Relaxed), 4);
}

#[tokio::test(start_paused = true)]
async fn a_success_in_between_resets_the_count_and_the_pool_limit_holds() {
    let t = target(policy());
    let now = Instant::now();
    t.record(Outcome::ServerError, now, || true);
    t.record(Outcome::ServerError, now, || true);
    t.record(Outcome::Success, now, || true);
    t.record(Outcome::ServerError, now, || true);
    assert!(
        t.is_usable(now),
        "the 5xx count restarted after the success"
    );
    t.record(Outcome::ServerError, now, || false);
    t.record(Outcome::ServerError, now, || false);
    assert!(t.is_usable(now), "maxEjectionPercent reached: not ejected");
    assert_eq!(t.ejections.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn the_pool_may_look_at_this_target_while_deciding_its_ejection() {
    let t = target(policy());
    let now = Instant::now();
    // The pool's maxEjectionPercent check reads every target, this one included.
    t.record(Outcome::GatewayFailure, now, || {
        t.condition(now) == Condition::Healthy
    });
    t.record(Outcome::GatewayFailure, now, || {
        t.condition(now) == Condition::Healthy
    });
    assert!(matches!(t.condition(now), Condition::Ejected(_)));
}

#[tokio::test(start_paused = true)]
async fn a_passing_check_ends_an_ejection_early() {
    let t = target(policy());
    let now = Instant::now();
    t.record(Outcome::GatewayFailure, now, || true);
    t.record(Outcome::GatewayFailure, now, || true);
    assert!(!t.is_usable(now));
    tokio::time::advance(Duration::from_secs(1)).await;
    t.probe(true, Instant::now());
    assert!(t.is_usable(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_half_opens_and_closes() {
    let p = Policy {
        breaker: CircuitBreaker {
            failure_threshold: 3,
            reset_timeout: ApiDuration::from_secs(10),
            half_open_requests: 2,
            ..Default::default()
        },
        check: Some(HealthCheck::default()),
        ..Default::default()
    };
    let t = target(p);
    let now = Instant::now();
    for _ in 0..3 {
        assert!(t.admit(now));
        t.record(Outcome::GatewayFailure, now, || true);
    }
    assert!(!t.is_usable(now), "open after 3 failures");
    assert!(!t.admit(now));
    assert!(matches!(t.condition(now), Condition::BreakerOpen(_)));
    tokio::time::advance(Duration::from_secs(10)).await;
    let now = Instant::now();
    assert!(t.is_usable(now), "half-open after the reset timeout");
    assert!(t.admit(now) && t.admit(now), "two trial slots");
    assert!(!t.admit(now), "no third trial while two are out");
    assert!(!t.is_usable(now));
    t.record(Outcome::GatewayFailure, now, || true);
    assert!(!t.admit(now), "a failed trial opens the breaker again");
    assert_eq!(t.breaker_opens.load(Ordering::Relaxed), 2);
    tokio::time::advance(Duration::from_secs(10)).await;
    let now = Instant::now();
    assert!(t.admit(now));
    t.record(Outcome::Success, now, || true);
    assert_eq!(
        t.condition(now),
        Condition::Healthy,
        "a successful trial closes it"
    );
    for _ in 0..3 {
        assert!(t.admit(now));
        t.record(Outcome::GatewayFailure, now, || true);
    }
    assert!(!t.admit(now));
    t.probe(true, now);
    assert_eq!(
        t.condition(now),
        Condition::BreakerHalfOpen,
        "a passing check half-opens it"
    );
    assert!(t.admit(now));
    t.record(Outcome::Success, now, || true);
    assert_eq!(
        t.condition(now),
        Condition::Healthy,
        "a successful trial closes it"
    );
    assert!((0..10).all(|_| t.admit(now)));
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_from_a_tenth_to_all() {
    let mut p = policy();
    p.slow_start = Some(SlowStart {
        window: ApiDuration::from_secs(20),
    });
    let t = target(p);
    let start = Instant::now();
    assert_eq!(t.weight_factor(start), 0.1);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!((t.weight_factor(Instant::now()) - 0.5).abs() < 1e-9);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(t.weight_factor(Instant::now()), 1.0);
    assert_eq!(t.condition(Instant::now()), Condition::Healthy);
}

#[test]
fn panic_mode_starts_below_the_threshold() {
    assert!(!in_panic(5, 10, 50));
    assert!(in_panic(4, 10, 50));
    assert!(!in_panic(0, 10, 0), "0 turns panic mode off");
    assert!(in_panic(1, 3, 50));
    assert!(
        !in_panic(0, 3, 50),
        "with nothing usable, requests fail fast instead"
    );
}

#[test]
fn at_least_one_target_may_be_ejected() {
    assert_eq!(max_ejected(3, 10), 1);
    assert_eq!(max_ejected(10, 50), 5);
}
