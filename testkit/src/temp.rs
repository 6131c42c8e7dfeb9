//! Temporary folders for pools files, logs and configs.

use std::path::Path;

/// A new, empty folder under the system's temporary folder, removed on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// Makes one named `weir-test-…`.
    ///
    /// # Panics
    /// When it cannot be made.
    pub fn new() -> Self {
        Self::with_prefix("weir-test-").expect("creating a temporary folder")
    }

    /// Makes one whose name starts with `prefix`.
    pub fn with_prefix(prefix: &str) -> std::io::Result<Self> {
        tempfile::Builder::new().prefix(prefix).tempdir().map(Self)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}
