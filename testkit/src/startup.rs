//! What Weir's programs say when they start, which is where a harness learns the ports they
//! bound (every process binds port 0: see the [crate documentation](crate)).
//!
//! - `weir-dataplane` logs `weir-dataplane serving listen=ADDR admin=ADDR` (an info line, so
//!   `WEIR_LOG` must let info through);
//! - `weir-controller` logs `weir-controller starting channel=ADDR metrics=ADDR …`;
//! - `weir-echo` prints `listening on ADDR` as its first line on stdout.

use std::net::SocketAddr;

/// What `weir-dataplane`'s startup line contains.
pub const DATAPLANE_SERVING: &str = "weir-dataplane serving";

/// What `weir-controller`'s startup line contains.
pub const CONTROLLER_STARTING: &str = "weir-controller starting";

/// The address logged as `name=ADDR` in a `tracing` line such as
/// `weir-dataplane serving listen=127.0.0.1:40123 admin=127.0.0.1:40125`.
pub fn logged_addr(line: &str, name: &str) -> Option<SocketAddr> {
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&key))
        .and_then(|value| value.parse().ok())
}

/// The proxy and admin addresses in `weir-dataplane`'s startup line.
///
/// # Errors
/// When the line names no `listen=ADDR` or no `admin=ADDR`, saying so with the line.
pub fn dataplane_addrs(line: &str) -> Result<(SocketAddr, SocketAddr), String> {
    match (logged_addr(line, "listen"), logged_addr(line, "admin")) {
        (Some(listen), Some(admin)) => Ok((listen, admin)),
        _ => Err(format!(
            "weir-dataplane's startup line names no listen=ADDR admin=ADDR: {line}"
        )),
    }
}

/// The address in `weir-echo`'s first line, `listening on ADDR`.
///
/// # Errors
/// When the line says something else, quoting it.
pub fn echo_addr(line: &str) -> Result<SocketAddr, String> {
    line.trim()
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok())
        .ok_or_else(|| format!("weir-echo printed {line:?} instead of `listening on ADDR`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dataplane_startup_line_names_both_listeners() {
        let line = "2026-01-01T00:00:00Z  INFO weir_dataplane: weir-dataplane serving \
                    listen=127.0.0.1:40123 admin=127.0.0.1:40125 workers=1";
        assert_eq!(
            dataplane_addrs(line),
            Ok((
                "127.0.0.1:40123".parse().unwrap(),
                "127.0.0.1:40125".parse().unwrap()
            ))
        );
        let partial = "weir-dataplane serving listen=127.0.0.1:40123";
        assert!(dataplane_addrs(partial).unwrap_err().contains(partial));
    }

    #[test]
    fn a_name_that_is_only_a_suffix_is_not_read() {
        assert_eq!(
            logged_addr("xlisten=127.0.0.1:1 listen=bad", "listen"),
            None
        );
    }

    #[test]
    fn echo_says_where_it_listens_or_is_quoted() {
        assert_eq!(
            echo_addr("listening on 198.18.0.2:38001\n"),
            Ok("198.18.0.2:38001".parse().unwrap())
        );
        assert!(echo_addr("hello").unwrap_err().contains("\"hello\""));
    }
}
