//! The embedded file source: `source/<env>.toml`, for demos, tests and
//! air-gapped use. No server needed.
//!
//! ```toml
//! [keys]
//! "api/db_host" = "db.staging.internal"
//!
//! [secrets."api/db"]
//! password = "staging-only-password"
//! ```
//!
//! The whole file is read on every fetch, so a snapshot is always one
//! consistent version of it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{KeyOrigin, KeyValue, Request, Secret, Snapshot, Source, SourceError, SourceKind};
use crate::config::Location;
use crate::secret::SecretString;

pub struct FileSource {
    dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvFile {
    #[serde(default)]
    keys: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, BTreeMap<String, String>>,
}

impl FileSource {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn read(&self, env: &str) -> Result<Snapshot, SourceError> {
        let path = self.dir.join(format!("{env}.toml"));
        let text = std::fs::read_to_string(&path).map_err(|e| SourceError::Read {
            source_kind: SourceKind::File,
            path: path.display().to_string(),
            cause: e.to_string(),
        })?;
        // toml's messages quote the offending input; for a secrets file that
        // could be a value, so only the position and a generic cause are kept.
        let parsed: EnvFile = toml::from_str(&text).map_err(|e| {
            let at = Location::at(&path, &text, e.span().map_or(0, |s| s.start));
            SourceError::Invalid {
                source_kind: SourceKind::File,
                path: at.to_string(),
                cause: "not a valid env file: expected `[keys]` with string values and `[secrets.\"path\"]` tables of string fields".to_owned(),
            }
        })?;
        let keys = parsed.keys.into_iter().map(|(k, v)| (k, KeyValue::new(v.into_bytes(), KeyOrigin::File))).collect();
        let secrets = parsed
            .secrets
            .into_iter()
            .map(|(path, fields)| {
                let fields = fields.into_iter().map(|(f, v)| (f, SecretString::new(v))).collect();
                (path, Secret { fields, version: None })
            })
            .collect();
        Ok(Snapshot { env: env.to_owned(), keys, secrets, revision: None })
    }
}

impl Source for FileSource {
    async fn fetch(&self, request: &Request) -> Result<Snapshot, SourceError> {
        self.read(&request.env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_keys_and_secrets_and_hides_values_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("prod.toml"),
            "[keys]\n\"api/host\" = \"h\"\n[secrets.\"api/db\"]\npassword = \"pw\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("bad.toml"), "[keys]\n\"x\" = \"fine\"\n[secrets.\"a\"]\npassword = 12345678\n")
            .unwrap();
        let src = FileSource::new(dir.path().to_path_buf());
        let snap = src.fetch(&Request { env: "prod".into(), ..Default::default() }).await.unwrap();
        assert_eq!(snap.keys["api/host"].text(), Some("h"));
        assert_eq!(snap.secrets["api/db"].fields["password"].expose(), "pw");

        let err = src.fetch(&Request { env: "bad".into(), ..Default::default() }).await.unwrap_err().to_string();
        assert!(err.contains("bad.toml:4:"), "{err}");
        assert!(!err.contains("12345678"), "{err}");

        let err = src.fetch(&Request { env: "nope".into(), ..Default::default() }).await.unwrap_err().to_string();
        assert!(err.starts_with("file source: reading ") && err.contains("nope.toml"), "{err}");
    }
}
