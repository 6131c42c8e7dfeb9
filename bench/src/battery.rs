//! The `battery` scenario: every malformed or ambiguous request of the battery sent to Weir,
//! HAProxy and NGINX in one run, each proxy in front of its own `weir-echo`, and a markdown
//! table of what each answered and whether the request reached its target.
//!
//! The cases, and the rules that judge Weir's answers, are the data-plane test's own
//! (`dataplane/tests/proxy/battery/cases.rs`, included here by path) so the table and the
//! test cannot drift apart. The run fails when a peer refuses a case that Weir lets through,
//! or when Weir does not do what a case asks of it.

#[path = "../../dataplane/tests/proxy/battery/cases.rs"]
mod cases;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;

use crate::procs::{self, Backend};
use weir_testkit::TempDir;

use crate::plan::{Plan, Proxy};
use crate::procs::{STOP_GRACE, backend_requests};
use crate::tools::Tools;
use cases::{Answer, Case, Expect, Group};

/// Longest a proxy may take to answer one case; above the 1 s the `/delay` target waits, so
/// a proxy that forwards a bad body shows the target's answer rather than a timeout.
const DEADLINE: Duration = Duration::from_secs(3);

/// What one proxy did with one case.
struct Outcome {
    proxy: Proxy,
    answer: Answer,
    /// Requests its target counted meanwhile.
    reached: u64,
}

impl Outcome {
    /// Whether the proxy let the request through: its target served it and the answer is
    /// not an error, or the target's own HTTP parser answered it (an empty-bodied error
    /// relayed from hyper: every proxy's own error pages have a body or `x-weir-error`).
    fn let_through(&self) -> bool {
        let served = self.reached > 0 && self.answer.status.is_some_and(|s| s < 400);
        served || self.by_target_parser()
    }

    /// An error answer with no body from a peer is hyper's, so the target's: HAProxy's and
    /// NGINX's own error pages have a body. (Weir's front is hyper too, so its bare errors
    /// are its own; it never sends raw client bytes to a target.)
    fn by_target_parser(&self) -> bool {
        !self.proxy.is_weir()
            && self.answer.status.is_some_and(|s| s >= 400)
            && self.reached == 0
            && self.answer.body.is_empty()
            && self.answer.header("content-length") == Some("0")
            && self.answer.header("date").is_some()
    }

    fn cell(&self) -> String {
        let mut cell = self.answer.label();
        if self.by_target_parser() {
            cell.push_str(" (target's parser)");
        } else if self.reached > 0 {
            cell.push_str(if self.reached == 1 {
                " fwd"
            } else {
                " fwd ×2+"
            });
        }
        cell
    }
}

/// A proxy under test with the target only it uses.
struct Stand {
    proxy: Proxy,
    listen: SocketAddr,
    guard: procs::Guard,
    backend: Backend,
}

/// Runs the battery through every proxy of the plan and prints the table.
pub async fn run(plan: &Plan, tools: &Tools, tmp: &TempDir) -> anyhow::Result<bool> {
    let cases = cases::all();
    println!(
        "battery: {} requests, each sent once on a fresh connection to every proxy; each proxy \
         has its own weir-echo target and its /_stats count tells whether a request reached it",
        cases.len()
    );
    let mut stands = Vec::new();
    for &proxy in &plan.proxies {
        stands.push(stand(plan, tools, tmp, proxy).await?);
    }

    let mut results: Vec<Vec<Outcome>> = Vec::new();
    for case in &cases {
        let mut row = Vec::new();
        for stand in &mut stands {
            row.push(send(stand, case).await?);
        }
        results.push(row);
    }

    let weir = plan.proxies.iter().position(|p| *p == Proxy::Weir);
    print!("{}", table(plan, &cases, &results, weir));
    let ok = summary(plan, &cases, &results, weir);
    println!("reproduce: {}", plan.command_line());

    for stand in stands {
        crate::proxies::stop_proxy(stand.guard).await;
        stand.backend.guard.stop(STOP_GRACE).await;
    }
    Ok(ok)
}

async fn stand(plan: &Plan, tools: &Tools, tmp: &TempDir, proxy: Proxy) -> anyhow::Result<Stand> {
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let log = tmp.path().join(format!("battery-{proxy}-echo.log"));
    let backend = procs::start_echo(&tools.echo, "echo", any_port, 1, &log).await?;
    let targets = [(backend.addr, 1)];
    let pools = tmp.path().join(format!("battery-{proxy}-pools.yaml"));
    std::fs::write(&pools, crate::proxies::pools_yaml(&targets))?;
    let log = tmp.path().join(format!("battery-{proxy}.log"));
    let (guard, listen) =
        crate::proxies::start_proxy(plan, tools, &pools, &targets, proxy, &log).await?;
    Ok(Stand {
        proxy,
        listen,
        guard,
        backend,
    })
}

/// Sends one case to one proxy and counts what reached its target.
async fn send(stand: &mut Stand, case: &Case) -> anyhow::Result<Outcome> {
    let count = |counts: Vec<u64>| counts.first().copied().unwrap_or_default();
    let before = count(backend_requests(std::slice::from_ref(&stand.backend)).await?);
    let (addr, request) = (stand.listen, case.request.clone());
    let answer = tokio::task::spawn_blocking(move || cases::exchange(addr, &request, DEADLINE))
        .await?
        .with_context(|| format!("sending {} to {}", case.name, stand.proxy))?;
    // A target that got a bad body answers after its delay: wait for that before counting.
    if matches!(case.expect, Expect::RefuseBody(_)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = count(backend_requests(std::slice::from_ref(&stand.backend)).await?);
    stand.guard.check_alive()?;
    Ok(Outcome {
        proxy: stand.proxy,
        answer,
        reached: after.saturating_sub(before),
    })
}

fn table(plan: &Plan, cases: &[Case], results: &[Vec<Outcome>], weir: Option<usize>) -> String {
    let mut out = String::new();
    let names: Vec<&str> = plan.proxies.iter().map(|p| peer_name(*p)).collect();
    for group in Group::ALL {
        let _ = writeln!(out, "\n### {}\n", group.title());
        let _ = writeln!(out, "| case | Weir must | {} | why |", names.join(" | "));
        let _ = writeln!(out, "|---|---|{}---|", "---|".repeat(names.len()));
        for (case, row) in cases.iter().zip(results).filter(|(c, _)| c.group == group) {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, outcome)| {
                    let mut cell = outcome.cell();
                    if Some(i) == weir
                        && cases::judge(case, &outcome.answer, outcome.reached).is_err()
                    {
                        cell.push_str(" **(not as specified)**");
                    }
                    cell
                })
                .collect();
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                case.name,
                case.expect.label(),
                cells.join(" | "),
                case.why.replace('|', "\\|")
            );
        }
    }
    out.push_str(
        "\nCells: the status the client got (`fwd`: the request reached that proxy's target; \
         `(target's parser)`: the proxy passed it on and the target's HTTP parser refused it; \
         `closed`: the connection closed with no answer; `not HTTP/1.x`: an answer without a \
         status line).\n",
    );
    out
}

fn peer_name(proxy: Proxy) -> &'static str {
    match proxy {
        Proxy::Weir => "Weir",
        Proxy::WeirLog => "Weir (access log)",
        Proxy::Haproxy => "HAProxy",
        Proxy::Nginx => "NGINX",
    }
}

/// Prints, per peer, the cases it refuses that Weir lets through, and Weir's misses; true
/// when there are none of either.
fn summary(plan: &Plan, cases: &[Case], results: &[Vec<Outcome>], weir: Option<usize>) -> bool {
    println!();
    let Some(weir) = weir else {
        println!("(Weir is not in --proxies: nothing to compare)");
        return true;
    };
    let mut ok = true;
    let missed: Vec<String> = cases
        .iter()
        .zip(results)
        .filter_map(|(case, row)| {
            let o = &row[weir];
            cases::judge(case, &o.answer, o.reached)
                .err()
                .map(|e| format!("{}: {e}", case.name))
        })
        .collect();
    println!(
        "Weir does what the battery asks in {} of {} cases",
        cases.len() - missed.len(),
        cases.len()
    );
    for miss in &missed {
        println!("  not as specified: {miss}");
    }
    ok &= missed.is_empty();
    for (i, &proxy) in plan.proxies.iter().enumerate() {
        if i == weir {
            continue;
        }
        let stricter: Vec<&str> = cases
            .iter()
            .zip(results)
            .filter(|(_, row)| !row[i].let_through() && row[weir].let_through())
            .map(|(case, _)| case.name)
            .collect();
        let refused = results.iter().filter(|row| !row[i].let_through()).count();
        println!(
            "{} refuses {refused} of {} cases; {} of them Weir lets through (must be 0){}",
            peer_name(proxy),
            cases.len(),
            stricter.len(),
            if stricter.is_empty() {
                String::new()
            } else {
                format!(": {}", stricter.join(", "))
            }
        );
        ok &= stricter.is_empty();
    }
    let refused = results
        .iter()
        .filter(|row| !row[weir].let_through())
        .count();
    let alone: Vec<&str> = cases
        .iter()
        .zip(results)
        .filter(|(_, row)| {
            !row[weir].let_through()
                && row
                    .iter()
                    .enumerate()
                    .all(|(i, o)| i == weir || o.let_through())
        })
        .map(|(case, _)| case.name)
        .collect();
    println!(
        "Weir refuses {refused} of {} cases, {} of them let through by every peer: {}",
        cases.len(),
        alone.len(),
        alone.join(", ")
    );
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(proxy: Proxy, wire: &[u8], reached: u64) -> Outcome {
        let answer = cases::exchange_bytes(wire);
        Outcome {
            proxy,
            answer,
            reached,
        }
    }

    #[test]
    fn a_served_request_is_let_through_and_a_proxys_own_error_is_not() {
        let served = outcome(
            Proxy::Nginx,
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n",
            1,
        );
        assert!(served.let_through());
        assert_eq!(served.cell(), "200 fwd");
        let own = outcome(
            Proxy::Haproxy,
            b"HTTP/1.1 400 Bad request\r\ncontent-length: 5\r\n\r\n<h1/>",
            0,
        );
        assert!(!own.let_through());
        assert_eq!(own.cell(), "400");
    }

    #[test]
    fn a_bare_error_relayed_by_a_peer_is_its_targets_parser() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 20:00:00 GMT\r\n\r\n";
        let relayed = outcome(Proxy::Haproxy, bare, 0);
        assert!(relayed.let_through());
        assert_eq!(relayed.cell(), "400 (target's parser)");
        // Weir's front is hyper too: its bare errors are its own.
        let weir = outcome(Proxy::Weir, bare, 0);
        assert!(!weir.let_through());
        assert_eq!(weir.cell(), "400");
    }
}
