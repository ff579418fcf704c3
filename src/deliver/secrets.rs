//! Subscription secrets, kept outside the database and the repository: the file named by
//! `deliver.secrets_file`, mode 0600, one line per subscription, `NAME JSON`, e.g.
//!
//! ```text
//! yangchun-hook {"secret":"k3J…"}
//! yangchun-ding {"url":"https://oapi.dingtalk.com/robot/send?access_token=…","secret":"SEC…"}
//! ```
//!
//! `secret` is the webhook's HMAC key or DingTalk's signing secret; `url` the robot URL with
//! its access token (the database holds it with the token redacted). The file is written
//! whole to a temporary file and renamed, so a reader never sees half of it; the service
//! re-reads it every few seconds. Nothing in it is ever printed after `subscriptions add`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The secrets of one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Secrets {
    /// HMAC key (webhook) or signing secret (DingTalk signed mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The robot URL with its token (DingTalk, WeCom).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Errors reading or writing the secrets file.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// `deliver.secrets_file` is not set.
    #[error("deliver.secrets_file is not set (SOILMON__DELIVER__SECRETS_FILE): a file outside the repository")]
    NotConfigured,
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A line is not `NAME JSON`.
    #[error("{path}:{line}: expected `NAME {{json}}`")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretsError + '_ {
    move |source| SecretsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads every subscription's secrets; a missing file is empty.
pub fn load(path: &Path) -> Result<BTreeMap<String, Secrets>, SecretsError> {
    if path.as_os_str().is_empty() {
        return Err(SecretsError::NotConfigured);
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut all = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = || SecretsError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
        };
        let (name, json) = line.split_once(' ').ok_or_else(malformed)?;
        let s: Secrets = serde_json::from_str(json.trim()).map_err(|_| malformed())?;
        all.insert(name.to_string(), s);
    }
    Ok(all)
}

/// Sets (`Some`) or removes (`None`) the secrets of `name`, rewriting the file atomically
/// with mode 0600.
pub fn store(path: &Path, name: &str, secrets: Option<&Secrets>) -> Result<(), SecretsError> {
    let mut all = load(path)?;
    match secrets {
        Some(s) => all.insert(name.to_string(), s.clone()),
        None => all.remove(name),
    };
    let mut text = String::from(
        "# soilmon subscription secrets (soilmon subscriptions add); keep mode 0600\n",
    );
    for (n, s) in &all {
        let json = serde_json::to_string(s).unwrap_or_default();
        text.push_str(&format!("{n} {json}\n"));
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// A new random secret: 32 bytes, base64url without padding.
pub fn new_secret() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn store_load_remove_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        assert!(load(&path).unwrap().is_empty());
        let a = Secrets {
            secret: Some("k".into()),
            url: None,
        };
        let b = Secrets {
            secret: None,
            url: Some("https://robot/send?access_token=t".into()),
        };
        store(&path, "a", Some(&a)).unwrap();
        store(&path, "b", Some(&b)).unwrap();
        let all = load(&path).unwrap();
        assert_eq!(all.get("a"), Some(&a));
        assert_eq!(all.get("b"), Some(&b));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        store(&path, "a", None).unwrap();
        assert_eq!(load(&path).unwrap().len(), 1);
        std::fs::write(&path, "broken\n").unwrap();
        assert!(matches!(
            load(&path),
            Err(SecretsError::Malformed { line: 1, .. })
        ));
    }
}
