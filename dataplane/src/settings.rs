//! The data plane's command line: one documented struct, parsed by clap, also read from
//! `WEIR_*` environment variables so a container can be configured either way.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use weir_api::Duration;

/// Weir's data plane: a load-balancing HTTP proxy.
///
/// Standalone, it serves the pools of a YAML file (`--pools`), reloads it when it changes or
/// on SIGHUP, and takes target changes on its admin API.
#[derive(Clone, Debug, Parser)]
#[command(name = "weir-dataplane", version, about, long_about = None)]
pub struct Args {
    /// Pools file to serve (standalone mode).
    #[arg(
        long,
        env = "WEIR_POOLS",
        value_name = "FILE",
        conflicts_with = "controller"
    )]
    pub pools: Option<PathBuf>,
    /// The controller's channel URL (Kubernetes mode), e.g. `http://weir-controller.weir-system:8081`.
    #[arg(long, env = "WEIR_CONTROLLER", value_name = "URL")]
    pub controller: Option<http::Uri>,
    /// File holding the bearer token for the controller, read anew on every connection (a
    /// projected ServiceAccount token).
    #[arg(
        long,
        env = "WEIR_TOKEN_FILE",
        value_name = "FILE",
        requires = "controller",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// A fixed bearer token for the controller, for setups without ServiceAccount tokens.
    #[arg(
        long,
        env = "WEIR_TOKEN",
        requires = "controller",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// This data plane's name in the controller's reports; default: `$POD_NAME`, else the
    /// host name.
    #[arg(long, env = "WEIR_DATA_PLANE_ID")]
    pub data_plane_id: Option<String>,
    /// Serve only the pools whose labels match this Kubernetes label selector (e.g.
    /// `tier=edge`, `team in (shop,web)`, `!canary`).
    #[arg(
        long,
        env = "WEIR_POOL_SELECTOR",
        requires = "controller",
        value_parser = label_selector
    )]
    pub pool_selector: Option<String>,
    /// Address the proxy listens on.
    #[arg(long, env = "WEIR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of the admin listener (metrics, status, readiness, target API). Keep it private.
    #[arg(long, env = "WEIR_ADMIN", default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// Access log: `off`, `stdout`, or a file to append to. One line per request; pools
    /// sample with `accessLog.samplePercent`, failures are always logged.
    #[arg(
        long,
        env = "WEIR_ACCESS_LOG",
        default_value = "off",
        value_name = "off|stdout|FILE"
    )]
    pub access_log: crate::access_log::Sink,
    /// Access log lines as JSON objects or as short text.
    #[arg(long, env = "WEIR_ACCESS_LOG_FORMAT", value_enum, default_value_t = crate::access_log::Format::Json)]
    pub access_log_format: crate::access_log::Format,
    /// Runtime worker threads; default: one per core.
    #[arg(long, env = "WEIR_WORKERS")]
    pub workers: Option<usize>,
    /// Listener limits and behaviour.
    #[command(flatten)]
    pub proxy: ProxySettings,
}

/// Listener-level limits and behaviour, the same for every pool.
#[derive(Clone, Debug, clap::Args)]
pub struct ProxySettings {
    /// How many proxies in front of Weir are trusted to append to X-Forwarded-For; with 0,
    /// forwarding headers sent by clients are replaced.
    #[arg(long, env = "WEIR_TRUSTED_HOPS", default_value_t = 0)]
    pub trusted_hops: usize,
    /// Time a client has to send a request's header block; slower clients are disconnected.
    #[arg(long, env = "WEIR_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: Duration,
    /// Time a client may pause while sending a request body; a slower client gets 408 and
    /// its request never counts against the target it was streamed to.
    #[arg(long, env = "WEIR_BODY_READ_TIMEOUT", default_value = "30s")]
    pub body_read_timeout: Duration,
    /// Largest request header block, in bytes; larger ones are answered 431.
    #[arg(long, env = "WEIR_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Most request header fields; more are answered 431.
    #[arg(long, env = "WEIR_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,
    /// Longest request target (path and query), in bytes; longer ones are answered 414.
    #[arg(long, env = "WEIR_MAX_URI_BYTES", default_value_t = 8 * 1024)]
    pub max_uri_bytes: usize,
    /// Largest request body, in bytes; larger ones are answered 413.
    #[arg(long, env = "WEIR_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Most downstream connections open at once; beyond it a new connection is reset at once.
    /// Default: what the open-files limit allows at two descriptors a connection (its own and
    /// one to a target), less 256 for the rest.
    #[arg(long, env = "WEIR_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// How long a client connection with no request in flight stays open: HTTP/1.1 between
    /// requests (until the next one's first byte), HTTP/2 with no open stream.
    /// The default is NGINX's `keepalive_timeout`, above the 60s idle timeout of the cloud
    /// load balancers that may pool connections to Weir, so Weir is not the one to close a
    /// connection they are about to reuse.
    #[arg(long, env = "WEIR_IDLE_TIMEOUT", default_value = "75s")]
    pub idle_timeout: Duration,
    /// Most HTTP/2 streams a client may have open on one connection; more are refused
    /// (RST_STREAM REFUSED_STREAM).
    #[arg(long, env = "WEIR_MAX_CONCURRENT_STREAMS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// On SIGTERM, how long in-flight requests may take to finish before connections close.
    #[arg(long, env = "WEIR_DRAIN_TIMEOUT", default_value = "30s")]
    pub drain_timeout: Duration,
    /// How often the pools file is checked for changes.
    #[arg(long, env = "WEIR_WATCH_INTERVAL", default_value = "500ms")]
    pub watch_interval: Duration,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Args::parse_from(["weir-dataplane"]).proxy
    }
}

/// A selector the controller will accept, checked here so that a typo stops the data plane at
/// startup instead of having every stream refused.
fn label_selector(text: &str) -> Result<String, String> {
    weir_api::selector::Selector::parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let a = Args::parse_from(["weir-dataplane"]);
        assert_eq!(a.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(a.admin, "127.0.0.1:9901".parse().unwrap());
        assert_eq!(a.proxy.header_read_timeout, Duration::from_secs(10));
        assert_eq!(ProxySettings::default().max_uri_bytes, 8192);
        assert_eq!(
            a.proxy.max_connections, None,
            "derived from the open-files limit"
        );
        assert_eq!(a.proxy.idle_timeout, Duration::from_secs(75));
        assert_eq!(a.proxy.max_concurrent_streams, 100);
    }

    #[test]
    fn a_bad_duration_is_refused_with_its_flag() {
        let e = Args::try_parse_from(["weir-dataplane", "--drain-timeout", "5"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--drain-timeout") && e.contains("unit"), "{e}");
    }

    #[test]
    fn a_pool_selector_the_controller_would_refuse_stops_the_data_plane() {
        let parse = |selector: &str| {
            Args::try_parse_from([
                "weir-dataplane",
                "--controller",
                "http://controller:8081",
                "--pool-selector",
                selector,
            ])
        };
        let e = parse("tier within (edge)").unwrap_err().to_string();
        assert!(
            e.contains("--pool-selector") && e.contains("key in (v1,v2)"),
            "{e}"
        );
        let a = parse("tier in (edge,internal),!canary").unwrap();
        assert_eq!(
            a.pool_selector.as_deref(),
            Some("tier in (edge,internal),!canary")
        );
    }
}
