//! The admin API's edits of one pool's targets, and why one is refused.
//!
//! Each edit changes a copy of the pool; [`State`](super::State) validates the result and
//! puts it in force, or keeps what was there.

use std::net::SocketAddr;

use weir_api::{FieldError, Pool, Target};

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No pool has that name.
    #[error("no pool named {0:?}")]
    NoSuchPool(String),
    /// The pool has no target at that address.
    #[error("pool {pool:?} has no target {address}")]
    NoSuchTarget {
        /// The pool.
        pool: String,
        /// The address.
        address: SocketAddr,
    },
    /// The pool already has a target at that address.
    #[error("pool {pool:?} already has target {address}")]
    TargetExists {
        /// The pool.
        pool: String,
        /// The address.
        address: SocketAddr,
    },
    /// The change would make the pool invalid.
    #[error("{0}")]
    Invalid(#[from] FieldError),
    /// The pools come from the controller: change the `LoadBalancerPool` instead.
    #[error("pools come from the controller here: change the LoadBalancerPool instead")]
    Managed,
}

/// Checks `pool`, the `index`-th in force, after an edit. An edit changes targets only, so
/// what pools must agree on (names, routes) stays as it was validated: the pool alone is
/// checked, its fields named by their path in the pools file.
pub(super) fn validate(pool: &Pool, index: usize) -> Result<(), ChangeError> {
    pool.validate().map_err(|e| {
        ChangeError::Invalid(FieldError {
            path: format!("pools[{index}].{}", e.path),
            ..e
        })
    })
}

/// Adds `target` to `pool`; a second target at one address is refused.
pub(super) fn add_target(pool: &mut Pool, target: Target) -> Result<(), ChangeError> {
    if pool.targets.iter().any(|t| t.address == target.address) {
        return Err(ChangeError::TargetExists {
            pool: pool.name.clone(),
            address: target.address,
        });
    }
    pool.targets.push(target);
    Ok(())
}

/// Removes the target at `address` from `pool`.
pub(super) fn remove_target(pool: &mut Pool, address: SocketAddr) -> Result<(), ChangeError> {
    let before = pool.targets.len();
    pool.targets.retain(|t| t.address != address);
    if pool.targets.len() == before {
        return Err(ChangeError::NoSuchTarget {
            pool: pool.name.clone(),
            address,
        });
    }
    Ok(())
}

/// Sets the weight of the target at `address` in `pool`.
pub(super) fn set_weight(
    pool: &mut Pool,
    address: SocketAddr,
    weight: u32,
) -> Result<(), ChangeError> {
    let name = pool.name.clone();
    let t = pool
        .targets
        .iter_mut()
        .find(|t| t.address == address)
        .ok_or(ChangeError::NoSuchTarget {
            pool: name,
            address,
        })?;
    t.weight = weight;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        serde_yaml::from_str("name: web\ntargets: [{ address: 127.0.0.1:9001, weight: 3 }]\n")
            .unwrap()
    }

    #[test]
    fn a_target_at_an_address_the_pool_has_is_refused_and_nothing_changes() {
        let mut p = pool();
        let again = Target {
            address: "127.0.0.1:9001".parse().unwrap(),
            weight: 1,
        };
        let e = add_target(&mut p, again).unwrap_err();
        assert!(matches!(e, ChangeError::TargetExists { .. }), "{e}");
        assert_eq!(p, pool());
    }

    #[test]
    fn removing_or_reweighting_an_unknown_target_is_refused_and_nothing_changes() {
        let mut p = pool();
        let unknown: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let e = remove_target(&mut p, unknown).unwrap_err();
        assert!(matches!(e, ChangeError::NoSuchTarget { .. }), "{e}");
        let e = set_weight(&mut p, unknown, 2).unwrap_err();
        assert!(matches!(e, ChangeError::NoSuchTarget { .. }), "{e}");
        assert_eq!(p, pool());
    }

    #[test]
    fn edits_change_the_named_target_only() {
        let mut p = pool();
        let added: SocketAddr = "127.0.0.1:9002".parse().unwrap();
        add_target(
            &mut p,
            Target {
                address: added,
                weight: 1,
            },
        )
        .unwrap();
        set_weight(&mut p, added, 7).unwrap();
        assert_eq!(p.targets[0].weight, 3);
        assert_eq!(p.targets[1].weight, 7);
        let first = p.targets[0].address;
        remove_target(&mut p, first).unwrap();
        assert_eq!(p.targets.len(), 1);
        assert_eq!(p.targets[0].address, added);
    }
}
