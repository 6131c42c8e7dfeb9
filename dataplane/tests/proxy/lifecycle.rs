//! Process lifecycle: startup with a bad pools file, and the drain on SIGTERM.

use std::io::Read as _;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::net::TcpStream;

use crate::support::{Backend, Proxy, TempDir, dataplane_command, get, pool, pools_file};

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let backend = Backend::start("b1");
    let mut proxy = Proxy::start(
        &pools_file(&[pool("web", &[], &[(&backend, 1)])]),
        &["--drain-timeout", "5s"],
    )
    .await;

    let url = proxy.url("/delay/1500");
    let in_flight = tokio::spawn(async move { get(&url, &[]).await });
    // Wait until the proxy has the request in flight to the target.
    let waiting = Instant::now();
    loop {
        let status = proxy.status().await;
        if status["pools"][0]["targets"][0]["active_requests"] == 1 {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(2),
            "the request never got in flight: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let signalled = Instant::now();
    proxy.signal(Signal::SIGTERM);

    let mut not_ready = None;
    while signalled.elapsed() < Duration::from_secs(1) {
        let ready = get(&proxy.admin_url("/ready"), &[]).await;
        if ready.status == 503 {
            not_ready = Some((signalled.elapsed(), ready.body.trim().to_owned()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut refused = None;
    while signalled.elapsed() < Duration::from_secs(1) {
        if let Err(e) = TcpStream::connect(proxy.addr).await {
            refused = Some((signalled.elapsed(), e.kind()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let finished = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the in-flight request ended within 5 s")
        .expect("the in-flight request task");
    let finished_after = signalled.elapsed();
    let exit = proxy.wait_exit(Duration::from_secs(5)).await;
    println!(
        "SIGTERM with /delay/1500 in flight: /ready {not_ready:?}; new connections {refused:?}; \
         in-flight answer {} {:?} after {:?} ({:?} after SIGTERM); exit {exit:?} after {:?}",
        finished.status,
        finished.body.trim(),
        finished.elapsed,
        finished_after,
        signalled.elapsed()
    );

    let (_, body) = not_ready.expect("/ready did not turn 503 within 1 s of SIGTERM");
    assert_eq!(body, "draining");
    let (_, kind) = refused.expect("new connections were still accepted 1 s after SIGTERM");
    assert_eq!(kind, std::io::ErrorKind::ConnectionRefused);
    assert_eq!(
        finished.status, 200,
        "the in-flight request was cut: {}",
        finished.body
    );
    assert_eq!(finished.body, "b1\n");
    let exit = exit.expect("still running 5 s after the in-flight request finished");
    assert_eq!(exit.code(), Some(0), "exit status {exit}");
    assert!(proxy.log().contains("drained"), "no `drained` in the log");
}

#[tokio::test]
async fn startup_with_an_invalid_pools_file_exits_64_naming_file_line_and_field() {
    let dir = TempDir::new();
    let target = "127.0.0.1:9";
    let cases = [
        (
            "weight: heavy",
            "pools[0].targets[1].weight",
            "invalid type",
        ),
        (
            "weight: 5000000",
            "pools[0].targets[1].weight",
            "above the maximum weight",
        ),
        ("wieght: 2", "pools[0].targets[1]", "unknown field `wieght`"),
    ];
    for (i, (bad, field, message)) in cases.into_iter().enumerate() {
        let yaml = format!(
            "pools:\n  - name: web\n    targets:\n      - {{ address: {target}, weight: 1 }}\n      \
             - {{ address: 127.0.0.1:10, {bad} }}\n"
        );
        let line = 1 + yaml
            .lines()
            .position(|l| l.contains(bad))
            .expect("the bad line");
        let file = dir.path().join(format!("pools-{i}.yaml"));
        std::fs::write(&file, &yaml).expect("writing the pools file");
        let mut child = dataplane_command(Some(&file), &[])
            .spawn()
            .expect("starting weir-dataplane");
        let started = Instant::now();
        let exit = loop {
            if let Some(exit) = child.try_wait().expect("waiting for weir-dataplane") {
                break Some(exit);
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("piped stderr")
            .read_to_string(&mut stderr)
            .expect("reading stderr");
        println!(
            "{bad}: exit {exit:?} after {:?}, stderr {stderr:?}",
            started.elapsed()
        );
        let exit = exit.expect("weir-dataplane kept running with an invalid pools file");
        assert_eq!(exit.code(), Some(64), "{bad}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{bad}: not one stderr line: {stderr}");
        let expected = format!("{}:{line}: field {field}: ", file.display());
        assert!(
            lines[0].contains(&expected),
            "{bad}: {:?} does not name `{expected}`",
            lines[0]
        );
        assert!(
            lines[0].contains(message),
            "{bad}: {:?} does not say {message:?}",
            lines[0]
        );
    }
}
