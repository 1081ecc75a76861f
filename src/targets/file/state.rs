//! What this instance wrote: the record that lets it remove exactly its own
//! files later (a target removed from the config, an entry removed from a
//! `dir` output) and nothing else.
//!
//! One JSON file per instance and env, `<[state] dir>/<instance>/files-<env>.json`
//! (mode `0600`), so the service's env workers never write the same file.
//! Each written path is recorded with its output and a keyed fingerprint of
//! what was written (HMAC-SHA256 under a random key kept in the same file):
//! a file is deleted only while it still holds exactly that, so a file a
//! person edited or replaced since is reported and left alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub output: String,
    pub fingerprint: String,
    /// Whether what was written read a secret: what a file held while
    /// tainted is never shown in a plan (`None`: recorded by a release that
    /// did not say; the file's mode decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tainted: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FileState {
    /// Hex of the HMAC key.
    key: String,
    /// Path as written (absolute, or relative to where cfgsync ran) → record.
    pub files: BTreeMap<PathBuf, Record>,
    #[serde(skip)]
    pub dirty: bool,
}

impl FileState {
    fn fresh() -> Self {
        let mut key = [0u8; 32];
        // A failing system RNG leaves a fixed key: fingerprints still tell
        // contents apart, they are just not secret from this file's reader.
        // The kernel's getrandom, not aws-lc's RNG: seeding aws-lc's DRBG
        // (CPU-jitter entropy) costs ~20 ms of CPU at its first use in a
        // process, and every env without a state file starts here.
        let _ = rustix::rand::getrandom(&mut key, rustix::rand::GetRandomFlags::empty());
        Self { key: key.iter().map(|b| format!("{b:02x}")).collect(), files: BTreeMap::new(), dirty: false }
    }

    /// The state for `env` at `path`, or an empty one when there is none.
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("not a cfgsync state file: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::fresh()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Writes the state atomically (temp file, fsync, rename), mode 0600,
    /// and removes temp files a killed process left beside it.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        crate::targets::state::write_atomically(path, &text)
    }

    /// The keyed fingerprint of `content`.
    pub fn fingerprint(&self, content: &[u8]) -> String {
        (self.fingerprinter())(content)
    }

    /// The fingerprint function, usable without holding the state.
    pub fn fingerprinter(&self) -> impl Fn(&[u8]) -> String + Send + Sync + use<> {
        let bytes: Vec<u8> =
            (0..self.key.len() / 2).filter_map(|i| u8::from_str_radix(&self.key[2 * i..2 * i + 2], 16).ok()).collect();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
        move |content: &[u8]| hmac::sign(&key, content).as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn record(&mut self, path: PathBuf, output: &str, content: &crate::secret::Content) {
        let record = Record {
            output: output.to_owned(),
            fingerprint: self.fingerprint(content.expose()),
            tainted: Some(content.is_secret()),
        };
        if self.files.get(&path) != Some(&record) {
            self.files.insert(path, record);
            self.dirty = true;
        }
    }

    pub fn forget(&mut self, path: &Path) {
        if self.files.remove(path).is_some() {
            self.dirty = true;
        }
    }
}

/// `<dir>/<instance>/files-<env>.json`.
pub fn path(dir: &Path, instance: &str, env: &str) -> PathBuf {
    dir.join(instance).join(format!("files-{env}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_fingerprints_are_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "inst", "prod");
        let mut s = FileState::load(&p).unwrap();
        s.record("out/a".into(), "api", &crate::secret::Content::secret("CANARY-x"));
        assert!(s.dirty);
        s.save(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("CANARY"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let again = FileState::load(&p).unwrap();
        assert_eq!(again.files, s.files);
        assert_eq!(again.fingerprint(b"CANARY-x"), s.fingerprint(b"CANARY-x"));
        assert_ne!(FileState::fresh().fingerprint(b"CANARY-x"), s.fingerprint(b"CANARY-x"), "a key per state");
        // A temp file of a process that died while saving is removed by the next save.
        let leftover = p.with_extension("tmp-999999999");
        std::fs::write(&leftover, "partial").unwrap();
        s.save(&p).unwrap();
        assert!(!leftover.exists());
    }
}
