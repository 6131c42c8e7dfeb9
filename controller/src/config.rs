//! `weir-controller`'s configuration: one struct, parsed from flags or `WEIR_*` environment
//! variables, then checked as a whole by [`Config::validate`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use clap::Parser;

/// Weir's Kubernetes controller: watches LoadBalancerPools, Services and EndpointSlices, serves
/// the compiled pools to data planes over the JSON channel and writes each pool's status.
///
/// The Kubernetes client comes from the environment: `KUBECONFIG` or `~/.kube/config`, else
/// the in-cluster service account.
#[derive(Clone, Debug, Parser)]
#[command(name = "weir-controller", version, about, long_about = None)]
pub struct Config {
    /// Where data planes open their stream and post their reports.
    #[arg(long, env = "WEIR_CHANNEL", default_value = "0.0.0.0:8081")]
    pub channel: SocketAddr,
    /// Where `/metrics` (Prometheus), `/ready` and `/live` are served.
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
            && !dns_label(ns)
        {
            return Err(ConfigError::Namespace(ns.clone()));
        }
        Ok(())
    }
}

impl FromStr for ServiceAccountName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((namespace, name)) if dns_label(namespace) && !name.is_empty() => Ok(Self {
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

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
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
    }
}
