//! Standalone mode: reload the pools file when it changes and on SIGHUP.
//!
//! The file is polled (metadata every tick, content only when metadata moved) rather than
//! watched with inotify: polling sees atomic renames, editors' swap files and Kubernetes'
//! ConfigMap symlink flips alike, and costs one `stat` per tick.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};

use crate::config_file;
use crate::hash::stable_hash;
use crate::state::State;

/// What tells a changed file from an unchanged one without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// Reloads `path` into `state` whenever it changes or SIGHUP arrives, until dropped.
pub async fn watch(path: PathBuf, state: Arc<State>, interval: Duration) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file changes only");
            None
        }
    };
    let mut last = stamp(&path);
    let mut content = content_hash(&path);
    loop {
        let forced = tokio::select! {
            () = tokio::time::sleep(interval) => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = stamp(&path);
        if !forced && now == last {
            continue;
        }
        last = now;
        let hash = content_hash(&path);
        if !forced && hash == content {
            continue;
        }
        content = hash;
        reload(
            &path,
            &state,
            if forced { "SIGHUP" } else { "file changed" },
        );
    }
}

/// Loads `path` and applies it, or keeps the running configuration and logs why not.
pub fn reload(path: &Path, state: &State, reason: &str) -> bool {
    match config_file::load(path) {
        Ok(pools) => {
            let count = pools.pools.len();
            state.apply_file(pools);
            state.listener.reloads.fetch_add(1, Ordering::Relaxed);
            let generation = state.snapshot.load().generation;
            tracing::info!(file = %path.display(), reason, pools = count, generation, "configuration reloaded");
            true
        }
        Err(e) => {
            state
                .listener
                .reload_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(reason, "{e}; keeping the running configuration");
            false
        }
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

fn content_hash(path: &Path) -> Option<u64> {
    std::fs::read(path).ok().map(|b| stable_hash(&b, 0))
}
