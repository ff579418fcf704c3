//! Bearer-token authentication. Tokens live in a file outside the repository, one per line:
//! `sha256hex role name` (`#` comments and blank lines allowed). Only the SHA-256 of a token
//! is stored; a presented token is hashed and compared in constant time with every entry.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Errors loading the tokens file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("tokens file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A line is not `sha256hex role name`.
    #[error("tokens file line {line}: expected `sha256hex role name`")]
    Line {
        /// 1-based line number.
        line: usize,
    },
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Role, e.g. `lab`.
    pub role: String,
    /// Name, for logs and the batch record.
    pub name: String,
}

/// The configured tokens (hashes only).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Principal)>,
}

impl Tokens {
    /// Loads the file; an empty path gives no tokens (every request is refused).
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        if path.as_os_str().is_empty() {
            return Ok(Tokens::default());
        }
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Tokens::parse(&text)
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Tokens, AuthError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(hash), Some(role), name) = (parts.next(), parts.next(), parts.next()) else {
                return Err(AuthError::Line { line: line_no });
            };
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hash, &mut digest)
                .map_err(|_| AuthError::Line { line: line_no })?;
            entries.push((
                digest,
                Principal {
                    role: role.to_string(),
                    name: name.unwrap_or(role).to_string(),
                },
            ));
        }
        Ok(Tokens { entries })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of a presented token, if it is valid. Every entry is compared, in
    /// constant time.
    pub fn check(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (hash, who) in &self.entries {
            if constant_time_eq(hash, &digest) && found.is_none() {
                found = Some(who.clone());
            }
        }
        found
    }
}

/// Compares two digests without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash() {
        let h = hex::encode(Sha256::digest(b"secret-1"));
        let t = Tokens::parse(&format!("# comment\n{h} lab alice\n")).expect("parses");
        assert_eq!(t.len(), 1);
        assert_eq!(t.check("secret-1").map(|p| p.role), Some("lab".into()));
        assert_eq!(t.check("secret-2"), None);
        assert!(Tokens::parse("nothex lab x").is_err());
    }
}
