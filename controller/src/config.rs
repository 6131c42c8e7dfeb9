//! `weir-controller`'s configuration: one struct, parsed from flags or `WEIR_*` environment
//! variables, then checked as a whole by [`Config::validate`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use clap::Parser;
use weir_api::{Duration, is_dns_label};

use crate::leader::LeaseConfig;

/// Weir's Kubernetes controller: watches LoadBalancerPools, Services and EndpointSlices, serves
/// the compiled pools to data planes over the JSON channel and writes each pool's status.
///
/// The Kubernetes client comes from the environment: `KUBECONFIG` or `~/.kube/config`, else
/// the in-cluster service account.
#[derive(Clone, Debug, Parser)]
#[command(name = "weir-controller", version, about, long_about = None)]
pub struct Config {
    /// Where data planes open their stream and post their reports. Port 0 takes a free port;
    /// the startup line `weir-controller starting channel=ADDR metrics=ADDR` says which.
    #[arg(long, env = "WEIR_CHANNEL", default_value = "0.0.0.0:8081")]
    pub channel: SocketAddr,
    /// Where `/metrics` (Prometheus), `/ready` and `/live` are served. Port 0 as for
    /// `--channel`.
    #[arg(long, env = "WEIR_METRICS", default_value = "0.0.0.0:9902")]
    pub metrics: SocketAddr,
    /// Watch only this namespace; every namespace when unset.
    #[arg(long, env = "WEIR_NAMESPACE")]
    pub namespace: Option<String>,
    /// A bearer token data planes may present, accepted as is (standalone set-ups and tests).
    /// Repeat for several; comma-separated in the variable.
    #[arg(
        long = "token",
        env = "WEIR_TOKENS",
        value_name = "TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub tokens: Vec<String>,
    /// The audience of the data planes' projected ServiceAccount tokens; tokens are checked
    /// with a TokenReview for it. Needs `--allowed-service-account`.
    #[arg(long, env = "WEIR_TOKEN_AUDIENCE", value_name = "AUDIENCE")]
    pub token_audience: Option<String>,
    /// A ServiceAccount whose tokens are accepted, as `namespace:name`. Repeat for several;
    /// comma-separated in the variable.
    #[arg(
        long = "allowed-service-account",
        env = "WEIR_ALLOWED_SERVICE_ACCOUNTS",
        value_name = "NAMESPACE:NAME",
        value_delimiter = ','
    )]
    pub allowed_service_accounts: Vec<ServiceAccountName>,
    /// Elect one replica to write status with a Lease in this namespace (in a pod, its own:
    /// `POD_NAMESPACE` from the downward API). Without it this replica writes status alone:
    /// run one replica only.
    #[arg(long, env = "WEIR_LEASE_NAMESPACE", value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// The Lease's name.
    #[arg(long, env = "WEIR_LEASE_NAME", default_value = "weir-controller")]
    pub lease_name: String,
    /// This replica's identity in the Lease (its pod name); default: host name and process id.
    #[arg(long, env = "WEIR_IDENTITY")]
    pub identity: Option<String>,
    /// The URL of this replica's channel as the other replicas reach it
    /// (`http://$(POD_IP):8081`): the Lease holder publishes it, and the others relay the
    /// reports data planes post to them there. Default: `http://` and the address the channel
    /// listener got, when `--channel` names a specific IP (not 0.0.0.0 or ::), so that
    /// `--channel 10.0.0.7:0` advertises the port it was given. Needed with
    /// `--lease-namespace` otherwise.
    #[arg(long, env = "WEIR_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,
    /// How long a Lease not renewed stays with its holder.
    #[arg(long, env = "WEIR_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: Duration,
    /// How long the holder tries to renew before it steps down (less than the duration).
    #[arg(long, env = "WEIR_LEASE_RENEW_DEADLINE", default_value = "10s")]
    pub lease_renew_deadline: Duration,
    /// How often replicas try to acquire or renew the Lease.
    #[arg(long, env = "WEIR_LEASE_RETRY_PERIOD", default_value = "2s")]
    pub lease_retry_period: Duration,
}

/// A ServiceAccount, `namespace:name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceAccountName {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Neither static tokens nor TokenReview: no data plane could ever connect.
    #[error(
        "no way to authenticate data planes: give --token, or --token-audience with \
         --allowed-service-account"
    )]
    NoAuthentication,
    /// An audience without anyone allowed.
    #[error("--token-audience needs at least one --allowed-service-account")]
    AudienceWithoutAccounts,
    /// Service accounts without an audience to review their tokens for.
    #[error("--allowed-service-account needs --token-audience")]
    AccountsWithoutAudience,
    /// An empty static token would accept an empty bearer token.
    #[error("--token must not be empty")]
    EmptyToken,
    /// A namespace that is not a DNS label.
    #[error("--namespace {0:?} is not a valid namespace name")]
    Namespace(String),
    /// A Lease namespace that is not a DNS label.
    #[error("--lease-namespace {0:?} is not a valid namespace name")]
    LeaseNamespace(String),
    /// Lease timings client-go would refuse too.
    #[error(
        "the lease timings must satisfy --lease-duration > --lease-renew-deadline > \
         --lease-retry-period > 0"
    )]
    LeaseTimings,
    /// Election without a URL to relay reports to.
    #[error(
        "--lease-namespace needs --advertise-url (http://POD_IP:PORT), or a --channel on a \
         specific IP: the other replicas relay data planes' reports to the leader there"
    )]
    AdvertiseUrl,
    /// An advertised URL that is not `http://host:port`.
    #[error("--advertise-url {0:?} must be http://HOST:PORT")]
    BadAdvertiseUrl(String),
}

impl Config {
    /// Checks the flags together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tokens.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::EmptyToken);
        }
        match (
            &self.token_audience,
            self.allowed_service_accounts.is_empty(),
        ) {
            (Some(_), true) => return Err(ConfigError::AudienceWithoutAccounts),
            (None, false) => return Err(ConfigError::AccountsWithoutAudience),
            (None, true) if self.tokens.is_empty() => return Err(ConfigError::NoAuthentication),
            _ => {}
        }
        if let Some(ns) = &self.namespace
            && !is_dns_label(ns)
        {
            return Err(ConfigError::Namespace(ns.clone()));
        }
        if let Some(ns) = &self.lease_namespace {
            if !is_dns_label(ns) {
                return Err(ConfigError::LeaseNamespace(ns.clone()));
            }
            if self.advertise_url.is_none() && self.channel.ip().is_unspecified() {
                return Err(ConfigError::AdvertiseUrl);
            }
        }
        if let Some(url) = &self.advertise_url {
            let valid = url
                .strip_prefix("http://")
                .and_then(|rest| {
                    rest.trim_end_matches('/')
                        .parse::<http::uri::Authority>()
                        .ok()
                })
                .is_some_and(|authority| authority.port_u16().is_some());
            if !valid {
                return Err(ConfigError::BadAdvertiseUrl(url.clone()));
            }
        }
        let (duration, deadline, retry) = (
            self.lease_duration.get(),
            self.lease_renew_deadline.get(),
            self.lease_retry_period.get(),
        );
        if !(duration > deadline && deadline > retry && !retry.is_zero()) {
            return Err(ConfigError::LeaseTimings);
        }
        Ok(())
    }

    /// The election to run, if any; `channel` is where the channel listener is bound.
    pub fn lease(&self, channel: SocketAddr) -> Option<LeaseConfig> {
        let namespace = self.lease_namespace.clone()?;
        Some(LeaseConfig {
            namespace,
            name: self.lease_name.clone(),
            identity: self.identity(),
            channel_url: self.advertise_url(channel),
            duration: self.lease_duration.get(),
            renew_deadline: self.lease_renew_deadline.get(),
            retry_period: self.lease_retry_period.get(),
        })
    }

    /// The channel URL to advertise: `--advertise-url`, else `http://CHANNEL` when `channel`
    /// (the bound listener's address) is on a specific IP.
    pub fn advertise_url(&self, channel: SocketAddr) -> Option<String> {
        self.advertise_url
            .clone()
            .or_else(|| (!channel.ip().is_unspecified()).then(|| format!("http://{channel}")))
    }

    /// This replica's identity: `--identity`, else host name and process id.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "weir-controller".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }
}

impl FromStr for ServiceAccountName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((namespace, name)) if is_dns_label(namespace) && !name.is_empty() => Ok(Self {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            _ => Err(format!(
                "{s:?} is not namespace:name (a ServiceAccount such as weir:dataplane)"
            )),
        }
    }
}

impl fmt::Display for ServiceAccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let config =
            Config::try_parse_from(std::iter::once("weir-controller").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn defaults_and_repeated_flags() {
        let c = parse(&[
            "--token",
            "a",
            "--token",
            "b",
            "--token-audience",
            "weir",
            "--allowed-service-account",
            "weir:dataplane",
            "--allowed-service-account",
            "shop:sidecar",
        ])
        .unwrap();
        assert_eq!(c.channel.to_string(), "0.0.0.0:8081");
        assert_eq!(c.metrics.to_string(), "0.0.0.0:9902");
        assert_eq!(c.namespace, None);
        assert_eq!(c.tokens, ["a", "b"]);
        assert_eq!(
            c.allowed_service_accounts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["weir:dataplane", "shop:sidecar"]
        );
    }

    #[test]
    fn configurations_that_cannot_work_are_refused_with_the_flag_to_fix() {
        let e = parse(&[]).unwrap_err();
        assert!(e.contains("--token-audience"), "{e}");
        let e = parse(&["--token-audience", "weir"]).unwrap_err();
        assert!(e.contains("--allowed-service-account"), "{e}");
        let e = parse(&["--allowed-service-account", "weir:dp"]).unwrap_err();
        assert!(e.contains("needs --token-audience"), "{e}");
        let e = parse(&["--token", "a", "--allowed-service-account", "weir"]).unwrap_err();
        assert!(e.contains("namespace:name"), "{e}");
        let e = parse(&["--token", " "]).unwrap_err();
        assert!(e.contains("must not be empty"), "{e}");
        let e = parse(&["--token", "a", "--namespace", "Shop"]).unwrap_err();
        assert!(e.contains("not a valid namespace"), "{e}");
        let e = parse(&["--token", "a", "--lease-namespace", "weir"]).unwrap_err();
        assert!(e.contains("needs --advertise-url"), "{e}");
        let e = parse(&["--token", "a", "--advertise-url", "10.0.0.1:8081"]).unwrap_err();
        assert!(e.contains("must be http://HOST:PORT"), "{e}");
        let e = parse(&["--token", "a", "--lease-duration", "5s"]).unwrap_err();
        assert!(
            e.contains("--lease-duration > --lease-renew-deadline"),
            "{e}"
        );
    }

    #[test]
    fn election_runs_only_with_a_lease_namespace() {
        let bound = "10.0.0.7:8081".parse().unwrap();
        let alone = parse(&["--token", "a"]).unwrap();
        assert!(alone.lease(bound).is_none());
        let elected = parse(&[
            "--token",
            "a",
            "--lease-namespace",
            "weir-system",
            "--identity",
            "weir-controller-0",
            "--advertise-url",
            "http://10.0.0.7:8081",
        ])
        .unwrap();
        let lease = elected.lease(bound).unwrap();
        assert_eq!(
            (lease.namespace.as_str(), lease.name.as_str()),
            ("weir-system", "weir-controller")
        );
        assert_eq!(lease.identity, "weir-controller-0");
        assert_eq!(lease.channel_url.as_deref(), Some("http://10.0.0.7:8081"));
        assert_eq!(lease.duration, std::time::Duration::from_secs(15));
        assert_eq!(lease.renew_deadline, std::time::Duration::from_secs(10));
        assert_eq!(lease.retry_period, std::time::Duration::from_secs(2));
    }

    #[test]
    fn a_channel_on_a_specific_ip_is_advertised_with_the_port_it_got() {
        let elected = parse(&[
            "--token",
            "a",
            "--lease-namespace",
            "weir-system",
            "--channel",
            "127.0.0.1:0",
        ])
        .unwrap();
        let lease = elected.lease("127.0.0.1:40123".parse().unwrap()).unwrap();
        assert_eq!(lease.channel_url.as_deref(), Some("http://127.0.0.1:40123"));
        let v6 = parse(&["--token", "a", "--channel", "[::1]:0"]).unwrap();
        assert_eq!(
            v6.advertise_url("[::1]:40123".parse().unwrap()).as_deref(),
            Some("http://[::1]:40123")
        );
        let given = parse(&[
            "--token",
            "a",
            "--channel",
            "127.0.0.1:0",
            "--advertise-url",
            "http://weir-0.weir:8081",
        ])
        .unwrap();
        assert_eq!(
            given
                .advertise_url("127.0.0.1:40123".parse().unwrap())
                .as_deref(),
            Some("http://weir-0.weir:8081"),
            "--advertise-url wins over the bound address"
        );
        // 0.0.0.0 (the default) says nothing a peer could dial.
        let e = parse(&["--token", "a", "--lease-namespace", "weir-system"]).unwrap_err();
        assert!(e.contains("needs --advertise-url"), "{e}");
        let e = parse(&[
            "--token",
            "a",
            "--lease-namespace",
            "weir-system",
            "--channel",
            "[::]:8081",
        ])
        .unwrap_err();
        assert!(e.contains("needs --advertise-url"), "{e}");
    }
}
