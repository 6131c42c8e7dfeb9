//! The data plane's side of the channel: the newline-delimited `weir_api::channel::Update`s
//! the controller streams, applied by `weir_dataplane::channel::Received::apply` as
//! `channel::stream_once` does.
//!
//! Input: the stream's bytes; every line (trimmed, blank ones skipped) is one update. A line
//! that is not an update ends a connection in the data plane, which reconnects keeping what it
//! applied, so here the next line simply follows. Properties, after every update:
//! - an update reads back as itself once written (the controller writes what this reads);
//! - an update out of order (a revision gap) changes nothing;
//! - an applied update brings the revision it names, and "unchanged" means unchanged; a
//!   heartbeat changes nothing;
//! - the pools in force are a configuration the pools file would accept too (each pool valid,
//!   no route claimed twice), and compile ([`weir_fuzz::compile`]).

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_api::channel::Update;
use weir_dataplane::channel::{ChannelError, Received};

fuzz_target!(|data: &[u8]| {
    let mut received = Received::default();
    for line in data.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let Ok(update) = serde_json::from_slice::<Update>(line) else {
            continue;
        };
        let written = serde_json::to_vec(&update).expect("an update serializes");
        let again: Update = serde_json::from_slice(&written).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&written));
        });
        assert_eq!(again, update);

        let revision = update.revision();
        let heartbeat = matches!(update, Update::Heartbeat { .. });
        let (had, before) = (received.revision, received.pools.clone());
        match received.apply(update) {
            Ok(changed) if heartbeat => {
                assert!(!changed, "a heartbeat changed the pools");
                assert_eq!(received.revision, had, "a heartbeat moved the revision");
                continue;
            }
            Ok(changed) => {
                assert_eq!(received.revision, revision);
                if !changed {
                    assert_eq!(
                        received.pools, before,
                        "an unchanged apply changed the pools"
                    );
                }
            }
            Err(ChannelError::Gap { .. }) => {
                assert_eq!(received.revision, had, "a gap moved the revision");
                assert_eq!(received.pools, before, "a gap changed the pools");
                continue;
            }
            Err(e) => panic!("apply failed otherwise than with a gap: {e}"),
        }
        for (name, pool) in &received.pools {
            assert_eq!(*name, pool.pool.name);
            assert_eq!(pool.pool.validate(), Ok(()), "pool {name} in force");
        }
        let pools = received.pools_file();
        if let Err(e) = pools.validate() {
            panic!("the pools in force are not a valid configuration: {e}");
        }
        if received.pools != before {
            weir_fuzz::compile(&pools);
        }
    }
});
