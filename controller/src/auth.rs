//! Who may follow the channel: data planes present `Authorization: Bearer TOKEN`, either one
//! of the static tokens given to the controller, or a projected ServiceAccount token that a
//! TokenReview finds valid for the configured audience and that belongs to an allowed
//! ServiceAccount. Positive reviews are cached for [`REVIEW_TTL`], so a data plane's
//! once-a-second reports do not each cost a review.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;

use crate::config::ServiceAccountName;

/// How long a positive TokenReview is trusted.
pub const REVIEW_TTL: Duration = Duration::from_secs(60);
/// Cached reviews at most; beyond, expired ones are dropped, then all.
const MAX_CACHED: usize = 10_000;

/// Checks bearer tokens.
pub struct Authenticator {
    tokens: Vec<String>,
    review: Option<Reviewer>,
}

/// TokenReview for one audience and a list of allowed ServiceAccounts.
struct Reviewer {
    api: Api<TokenReview>,
    audience: String,
    allowed: Vec<ServiceAccountName>,
    cache: Mutex<HashMap<String, (Instant, Identity)>>,
}

/// Who a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// One of the static tokens.
    Static,
    /// A ServiceAccount, with the pod its token is bound to, if any.
    ServiceAccount {
        /// `namespace:name`.
        account: ServiceAccountName,
        /// `authentication.kubernetes.io/pod-name`.
        pod: Option<String>,
    },
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token: send Authorization: Bearer TOKEN")]
    Missing,
    /// The token is not one of the static tokens and TokenReview did not accept it.
    #[error("the bearer token is not valid{0}")]
    Invalid(String),
    /// The token is valid, but its ServiceAccount is not allowed.
    #[error("ServiceAccount {account} may not follow this controller (allowed: {allowed})")]
    NotAllowed {
        /// The token's ServiceAccount, or user name.
        account: String,
        /// The allowed ServiceAccounts.
        allowed: String,
    },
    /// The TokenReview itself failed.
    #[error("cannot review the token: {0}")]
    Review(#[source] kube::Error),
    /// A data plane speaking for another: its token is bound to pod `pod`, but it calls
    /// itself `claimed`.
    #[error("dataPlane {claimed:?} does not match the pod {pod:?} the token is bound to")]
    Impersonation {
        /// The data plane identity in the request.
        claimed: String,
        /// The pod of the token.
        pod: String,
    },
}

impl Identity {
    /// Checks that a request naming data plane `claimed` may: a token bound to a pod speaks
    /// only for that pod (data planes are named after their pods), so one data plane cannot
    /// report for another and skew the status. Static tokens and unbound ServiceAccount
    /// tokens name no pod and may speak for any data plane.
    pub fn may_speak_for(&self, claimed: &str) -> Result<(), Denied> {
        match self {
            Self::ServiceAccount { pod: Some(pod), .. } if pod != claimed => {
                Err(Denied::Impersonation {
                    claimed: claimed.to_owned(),
                    pod: pod.clone(),
                })
            }
            _ => Ok(()),
        }
    }
}

impl Authenticator {
    /// Accepts `tokens` as they are, and, with `review` (a client, an audience and the allowed
    /// ServiceAccounts), tokens TokenReview accepts.
    pub fn new(
        tokens: Vec<String>,
        review: Option<(Client, String, Vec<ServiceAccountName>)>,
    ) -> Self {
        Self {
            tokens,
            review: review.map(|(client, audience, allowed)| Reviewer {
                api: Api::all(client),
                audience,
                allowed,
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Checks the `Authorization` header.
    pub async fn check(&self, header: Option<&HeaderValue>) -> Result<Identity, Denied> {
        let token = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Denied::Missing)?;
        if self.tokens.iter().any(|t| same(t, token)) {
            return Ok(Identity::Static);
        }
        match &self.review {
            Some(reviewer) => reviewer.check(token).await,
            None => Err(Denied::Invalid(String::new())),
        }
    }
}

impl Reviewer {
    async fn check(&self, token: &str) -> Result<Identity, Denied> {
        let now = Instant::now();
        if let Some((at, identity)) = self.cache().get(token)
            && now.saturating_duration_since(*at) < REVIEW_TTL
        {
            return Ok(identity.clone());
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let status = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(Denied::Review)?
            .status
            .unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.map(|e| format!(": {e}")).unwrap_or_default();
            return Err(Denied::Invalid(why));
        }
        if !status
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&self.audience))
        {
            return Err(Denied::Invalid(format!(
                ": it is not meant for audience {:?}",
                self.audience
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let account = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.parse::<ServiceAccountName>().ok());
        let Some(account) = account.filter(|a| self.allowed.contains(a)) else {
            return Err(Denied::NotAllowed {
                account: username,
                allowed: self
                    .allowed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let pod = user
            .extra
            .as_ref()
            .and_then(|e| e.get("authentication.kubernetes.io/pod-name"))
            .and_then(|v| v.first().cloned());
        let identity = Identity::ServiceAccount { account, pod };
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (at, _)| now.saturating_duration_since(*at) < REVIEW_TTL);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), (now, identity.clone()));
        Ok(identity)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Identity)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Denied {
    /// The HTTP status it is answered with: 401 without a valid token, 403 for a valid token of
    /// someone not allowed, 503 when the review could not be made.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Missing | Self::Invalid(_) => StatusCode::UNAUTHORIZED,
            Self::NotAllowed { .. } | Self::Impersonation { .. } => StatusCode::FORBIDDEN,
            Self::Review(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Compares in time independent of where the two differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_tokens_are_accepted_and_anything_else_refused_with_401() {
        let auth = Authenticator::new(vec!["s3cret".into()], None);
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert_eq!(
            auth.check(Some(&header("Bearer s3cret"))).await.unwrap(),
            Identity::Static
        );
        for bad in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "Bearer "] {
            let e = auth.check(Some(&header(bad))).await.unwrap_err();
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED, "{bad}: {e}");
        }
        let e = auth.check(None).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "no bearer token: send Authorization: Bearer TOKEN"
        );
    }

    #[test]
    fn a_pod_bound_token_speaks_only_for_its_pod() {
        let bound = Identity::ServiceAccount {
            account: "weir:dataplane".parse().unwrap(),
            pod: Some("weir-dataplane-7c9f-abcde".into()),
        };
        assert!(bound.may_speak_for("weir-dataplane-7c9f-abcde").is_ok());
        let e = bound
            .may_speak_for("weir-dataplane-7c9f-zzzzz")
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(e.to_string().contains("does not match the pod"), "{e}");
        let unbound = Identity::ServiceAccount {
            account: "weir:dataplane".parse().unwrap(),
            pod: None,
        };
        assert!(unbound.may_speak_for("anyone").is_ok());
        assert!(Identity::Static.may_speak_for("anyone").is_ok());
    }
}
