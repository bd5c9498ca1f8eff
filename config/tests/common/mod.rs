//! Helpers shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh folder under the system temp folder, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("dae-config-{label}-{}-{unique}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp folder");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `relative` (creating folders) with mode 0600, the mode dae recommends.
    pub fn write(&self, relative: &str, text: &str) -> PathBuf {
        self.write_mode(relative, text, 0o600)
    }

    /// Writes binary `bytes` to `relative` in the folder (asset files).
    pub fn write_bytes(&self, relative: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(relative);
        fs::write(&path, bytes).expect("write file");
        path
    }

    pub fn write_mode(&self, relative: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.0.join(relative);
        fs::create_dir_all(path.parent().expect("file in a folder")).expect("create folders");
        fs::write(&path, text).expect("write file");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The rendered errors of a configuration that must fail to load from memory.
pub fn errors_of(text: &str) -> String {
    match config::load_str("t.dae", text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(errors) => errors.to_string(),
    }
}

/// A configuration that must load from memory.
pub fn loaded(text: &str) -> config::Loaded {
    config::load_str("t.dae", text).unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"))
}
