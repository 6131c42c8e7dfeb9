//! The target of each try: a bounded stream of candidates, affinity first, then the
//! balancer, of which the first that an `accept` predicate takes is used (pingora's
//! `select_with`).
//!
//! The candidates never repeat, and leave out the targets already tried for as long as
//! another is usable: the balancer is told what to leave out rather than asked again until it
//! offers something new, so a least-request or hashing pick steps to the next-best target and
//! a round robin does not spend a turn on a target it may not use.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::affinity;
use crate::balance::{Load, Pick};
use crate::error::ProxyError;
use crate::hash::stable_hash;
use crate::state::{Affinity, Candidates, PoolState};

/// One candidate: a target, and with cookie affinity the cookie that pins the client to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer<'p> {
    /// The target's index in the pool.
    pub index: usize,
    /// `Set-Cookie` for the response, when the client is not pinned to this target yet.
    pub set_cookie: Option<&'p HeaderValue>,
}

/// The candidates for one try, best first; see the module doc.
#[derive(Debug)]
pub struct Offers<'p, 'r> {
    pool: &'p PoolState,
    headers: &'r HeaderMap,
    client: IpAddr,
    now: Instant,
    tried: &'r [usize],
    /// Offered and not taken: never offered again.
    passed: Vec<usize>,
    /// The last offer, passed over if another is asked for.
    last: Option<usize>,
    /// Set once every untried target has been offered: the tried ones may come again.
    repeats: bool,
    /// Picks left; a safety bound, since each offer leaves the candidates for good.
    picks: usize,
    /// Tried and passed over together, when both are left out.
    scratch: Vec<usize>,
}

impl<'p, 'r> Offers<'p, 'r> {
    /// The candidates of `pool` at `now` for a request with `headers` from `client`, after
    /// the targets in `tried`.
    pub fn new(
        pool: &'p PoolState,
        headers: &'r HeaderMap,
        client: IpAddr,
        now: Instant,
        tried: &'r [usize],
    ) -> Self {
        Self {
            pool,
            headers,
            client,
            now,
            tried,
            passed: Vec::new(),
            last: None,
            repeats: false,
            // Every target once, one pick that finds no untried target, one that finds none.
            picks: pool.targets.len() + 3,
            scratch: Vec::new(),
        }
    }

    /// At most `picks` picks of the balancer, offered or not.
    #[cfg(test)]
    fn bounded(mut self, picks: usize) -> Self {
        self.picks = picks;
        self
    }
}

impl<'p> Iterator for Offers<'p, '_> {
    type Item = Offer<'p>;

    fn next(&mut self) -> Option<Offer<'p>> {
        if let Some(i) = self.last.take() {
            self.passed.push(i);
        }
        while self.picks > 0 {
            self.picks -= 1;
            let exclude: &[usize] = match (self.passed.is_empty(), self.repeats) {
                (true, false) => self.tried,
                (true, true) => &[],
                (false, true) => &self.passed,
                (false, false) => {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(self.tried);
                    self.scratch.extend_from_slice(&self.passed);
                    &self.scratch
                }
            };
            let candidates = Candidates {
                pool: self.pool,
                now: self.now,
                exclude,
            };
            match pick(self.pool, &candidates, self.headers, self.client) {
                Some(offer) => {
                    self.last = Some(offer.index);
                    return Some(offer);
                }
                // Every other target is tried or unusable: a target may take a second try.
                None if !self.repeats && !self.tried.is_empty() => self.repeats = true,
                None => break,
            }
        }
        self.picks = 0;
        None
    }
}

/// The target of one try: the first candidate whose breaker admits it (a half-open breaker
/// lets only its trial requests through).
pub fn select<'p>(
    pool: &'p PoolState,
    headers: &HeaderMap,
    client: IpAddr,
    now: Instant,
    tried: &[usize],
) -> Result<Offer<'p>, ProxyError> {
    select_with(pool, headers, client, now, tried, |i| {
        pool.targets[i].health.admit(now)
    })
}

/// The first candidate that `accept` takes.
pub fn select_with<'p>(
    pool: &'p PoolState,
    headers: &HeaderMap,
    client: IpAddr,
    now: Instant,
    tried: &[usize],
    mut accept: impl FnMut(usize) -> bool,
) -> Result<Offer<'p>, ProxyError> {
    Offers::new(pool, headers, client, now, tried)
        .find(|offer| accept(offer.index))
        .ok_or_else(|| ProxyError::NoTarget(pool.config.name.clone()))
}

/// One pick among `candidates`, honouring session affinity.
fn pick<'p>(
    pool: &'p PoolState,
    candidates: &Candidates<'_>,
    headers: &HeaderMap,
    client: IpAddr,
) -> Option<Offer<'p>> {
    let client_key = || match client {
        IpAddr::V4(ip) => stable_hash(&ip.octets(), 0),
        IpAddr::V6(ip) => stable_hash(&ip.octets(), 0),
    };
    let offer = |index| Offer {
        index,
        set_cookie: None,
    };
    let balancer = pool.balancer.load();
    match &pool.affinity {
        Affinity::None => balancer.pick(candidates, client_key).map(offer),
        Affinity::Cookie { name, by_id } => {
            let pinned = affinity::pinned_id(headers, name)
                .and_then(|id| by_id.get(&id).copied())
                .filter(|i| candidates.usable(*i));
            if let Some(i) = pinned {
                return Some(offer(i));
            }
            let index = balancer.pick(candidates, client_key)?;
            Some(Offer {
                index,
                set_cookie: pool.targets[index].set_cookie.as_ref(),
            })
        }
        Affinity::Header { name, table } => match headers.get(name) {
            Some(v) => table.pick(candidates, || stable_hash(v.as_bytes(), 0)),
            None => balancer.pick(candidates, client_key),
        }
        .map(offer),
        Affinity::ClientIp { table } => table.pick(candidates, client_key).map(offer),
    }
}

#[cfg(test)]
mod tests;
