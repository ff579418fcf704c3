//! Bearer-token authentication and the tokens file.
//!
//! Tokens live in a file outside the repository (`http.tokens_file`), one per line:
//! `sha256hex role name [counties]` (`#` comments and blank lines allowed). Roles are `lab`,
//! `bureau` and `admin`; a bureau line carries its county codes (`441781,441702`) or `*` for
//! the whole city, other roles have no fourth field. Only the SHA-256 of a token is stored; a
//! presented token is hashed and compared in constant time with every entry.
//!
//! `soilmon tokens add|list|revoke` edit the file ([`add`], [`entries`], [`revoke`]); the
//! service watches it through [`TokenStore`], which re-reads it when its modification time,
//! size or inode changes (checked at most every [`RELOAD_CHECK`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::store::queries::Scope;

/// How often the service looks at the tokens file for changes, at most.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Errors of the tokens file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read or written.
    #[error("tokens file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("tokens file line {line}: {detail}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// A management command was refused (duplicate or unknown name, bad arguments).
    #[error("{0}")]
    Refused(String),
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Upload lab batches and read their reports.
    Lab,
    /// Read alerts, incidents and readings of its counties.
    Bureau,
    /// Read everything, including the point registry and broker identities.
    Admin,
    /// A key supervised enterprise (its name is its unified social credit code): uploads
    /// self-monitoring lab batches for its own points only and reads its own results.
    Enterprise,
}

impl Role {
    /// Parses `lab`, `bureau` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "lab" => Some(Role::Lab),
            "bureau" => Some(Role::Bureau),
            "admin" => Some(Role::Admin),
            "enterprise" => Some(Role::Enterprise),
            _ => None,
        }
    }

    /// The file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Lab => "lab",
            Role::Bureau => "bureau",
            Role::Admin => "admin",
            Role::Enterprise => "enterprise",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Role.
    pub role: Role,
    /// Name, for logs, rate limiting and the batch record.
    pub name: String,
    /// Counties whose data it may read: a bureau's counties, `All` for admins and city-wide
    /// bureaus, no county for labs.
    pub scope: Scope,
}

/// The configured tokens (hashes only).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Principal)>,
}

/// The SHA-256 of a token, hex (what the file stores).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn parse_scope(role: Role, field: Option<&str>, line: usize) -> Result<Scope, AuthError> {
    let bad = |detail: &str| AuthError::Line {
        line,
        detail: detail.to_string(),
    };
    match (role, field) {
        (Role::Bureau, None) => Err(bad("a bureau needs its counties (`441781,441702` or `*`)")),
        (Role::Bureau, Some("*")) => Ok(Scope::All),
        (Role::Bureau, Some(list)) => {
            let counties: Vec<String> = list.split(',').map(str::to_string).collect();
            if counties
                .iter()
                .any(|c| c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric()))
            {
                return Err(bad("counties must be comma-separated codes or `*`"));
            }
            Ok(Scope::Counties(counties))
        }
        (_, Some(_)) => Err(bad("only bureau lines carry counties")),
        (Role::Admin, None) => Ok(Scope::All),
        (Role::Lab | Role::Enterprise, None) => Ok(Scope::Counties(Vec::new())),
    }
}

impl Tokens {
    /// Loads the file; an empty path gives no tokens (every request is refused).
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        if path.as_os_str().is_empty() {
            return Ok(Tokens::default());
        }
        Tokens::parse(&read(path)?)
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
            let bad = |detail: &str| AuthError::Line {
                line: line_no,
                detail: detail.to_string(),
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 2 || parts.len() > 4 {
                return Err(bad("expected `sha256hex role name [counties]`"));
            }
            let mut digest = [0u8; 32];
            hex::decode_to_slice(parts[0], &mut digest)
                .map_err(|_| bad("the first field must be a SHA-256 in hex"))?;
            let role = Role::parse(parts[1])
                .ok_or_else(|| bad("role must be lab, bureau, admin or enterprise"))?;
            let name = parts.get(2).copied().unwrap_or(parts[1]).to_string();
            let scope = parse_scope(role, parts.get(3).copied(), line_no)?;
            entries.push((digest, Principal { role, name, scope }));
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

    /// The principals, in file order.
    pub fn principals(&self) -> impl Iterator<Item = &Principal> {
        self.entries.iter().map(|(_, p)| p)
    }

    /// The principal of a presented token, if it is valid. Every entry is compared, in
    /// constant time.
    pub fn check(&self, token: &str) -> Option<Principal> {
        self.check_digest(&Sha256::digest(token.as_bytes()).into())
    }

    /// The principal whose token has this SHA-256 (a console session keeps only the
    /// digest of the token it was opened with), compared in constant time.
    pub fn check_digest(&self, digest: &[u8; 32]) -> Option<Principal> {
        let mut found = None;
        for (hash, who) in &self.entries {
            if constant_time_eq(hash, digest) && found.is_none() {
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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuthError + '_ {
    move |source| AuthError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

/// A file's identity for change detection: modification time, size and inode.
type Stamp = (Option<SystemTime>, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok(), m.len(), ino))
}

struct Loaded {
    tokens: Tokens,
    stamp: Option<Stamp>,
    checked: Instant,
}

/// The tokens of a running service, re-read when the file changes.
///
/// A file that becomes unreadable or malformed fails closed: no token is valid until it is
/// fixed (an error is logged), so a botched edit can never keep a revoked token alive.
pub struct TokenStore {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

impl TokenStore {
    /// Loads the file (an error here stops the service: it is a configuration error).
    pub fn open(path: &Path) -> Result<TokenStore, AuthError> {
        let tokens = Tokens::load(path)?;
        Ok(TokenStore {
            path: path.to_path_buf(),
            loaded: RwLock::new(Loaded {
                tokens,
                stamp: stamp(path),
                checked: Instant::now(),
            }),
        })
    }

    /// A fixed set of tokens (no file).
    pub fn fixed(tokens: Tokens) -> TokenStore {
        TokenStore {
            path: PathBuf::new(),
            loaded: RwLock::new(Loaded {
                tokens,
                stamp: None,
                checked: Instant::now(),
            }),
        }
    }

    /// Number of tokens currently loaded.
    pub fn len(&self) -> usize {
        match self.loaded.read() {
            Ok(l) => l.tokens.len(),
            Err(p) => p.into_inner().tokens.len(),
        }
    }

    /// True when no token is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-reads the file if it changed and the last look is older than [`RELOAD_CHECK`].
    fn refresh(&self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let due = match self.loaded.read() {
            Ok(l) => l.checked.elapsed() >= RELOAD_CHECK,
            Err(_) => true,
        };
        if !due {
            return;
        }
        let mut l = match self.loaded.write() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if l.checked.elapsed() < RELOAD_CHECK {
            return;
        }
        l.checked = Instant::now();
        let now = stamp(&self.path);
        if now == l.stamp {
            return;
        }
        l.stamp = now;
        match Tokens::load(&self.path) {
            Ok(t) => {
                tracing::info!(tokens = t.len(), path = %self.path.display(), "http: tokens file reloaded");
                l.tokens = t;
            }
            Err(e) => {
                tracing::error!(error = %e, "http: tokens file unusable; refusing every token until it is fixed");
                l.tokens = Tokens::default();
            }
        }
    }

    /// The principal of a presented token, if it is valid (after a reload when due).
    pub fn check(&self, token: &str) -> Option<Principal> {
        self.refresh();
        match self.loaded.read() {
            Ok(l) => l.tokens.check(token),
            Err(p) => p.into_inner().tokens.check(token),
        }
    }
}

impl TokenStore {
    /// The principal whose token has the SHA-256 `digest`, if it is still valid (after a
    /// reload when due): a revoked token ends the console sessions opened with it.
    pub fn check_digest(&self, digest: &[u8; 32]) -> Option<Principal> {
        self.refresh();
        match self.loaded.read() {
            Ok(l) => l.tokens.check_digest(digest),
            Err(p) => p.into_inner().tokens.check_digest(digest),
        }
    }
}

/// A fresh random token: 32 bytes, base64url without padding.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The file line of a token.
fn line_of(hash: &str, p: &Principal) -> String {
    match (&p.role, &p.scope) {
        (Role::Bureau, Scope::All) => format!("{hash} bureau {} *", p.name),
        (Role::Bureau, Scope::Counties(c)) => format!("{hash} bureau {} {}", p.name, c.join(",")),
        (role, _) => format!("{hash} {role} {}", p.name),
    }
}

/// The entries of the file (missing file: none).
pub fn entries(path: &Path) -> Result<Vec<Principal>, AuthError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    Ok(Tokens::load(path)?.principals().cloned().collect())
}

/// Generates a token for `name`, appends its hash to the file (created with mode 0600) and
/// returns the token, which is not stored anywhere. Refused when the name is taken.
pub fn add(path: &Path, name: &str, role: Role, scope: Scope) -> Result<String, AuthError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(AuthError::Refused(format!(
            "token name {name:?}: use letters, digits, '-', '_' or '.'"
        )));
    }
    if let Scope::Counties(c) = &scope {
        if role == Role::Bureau && c.is_empty() {
            return Err(AuthError::Refused(
                "a bureau token needs --county or --all".into(),
            ));
        }
    }
    if entries(path)?.iter().any(|p| p.name == name) {
        return Err(AuthError::Refused(format!(
            "a token named {name:?} exists; revoke it first"
        )));
    }
    let token = new_token();
    let p = Principal {
        role,
        name: name.to_string(),
        scope,
    };
    let line = line_of(&hash_token(&token), &p);
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(io_err(path))?;
    writeln!(f, "{line}").map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(token)
}

/// Removes the token named `name`: the file is rewritten to a temporary file (mode 0600)
/// and renamed over the original, so the service never sees a half-written file.
pub fn revoke(path: &Path, name: &str) -> Result<(), AuthError> {
    let text = read(path)?;
    // Validate first: never rewrite a file we do not understand.
    Tokens::parse(&text)?;
    let mut kept = String::new();
    let mut removed = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_comment = fields.first().map_or(true, |f| f.starts_with('#'));
        let line_name = fields.get(2).or(fields.get(1)).copied();
        if !is_comment && line_name == Some(name) {
            removed += 1;
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    if removed == 0 {
        return Err(AuthError::Refused(format!("no token named {name:?}")));
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).write(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(kept.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash() {
        let h = hash_token("secret-1");
        let t = Tokens::parse(&format!("# comment\n{h} lab alice\n")).expect("parses");
        assert_eq!(t.len(), 1);
        assert_eq!(t.check("secret-1").map(|p| p.role), Some(Role::Lab));
        assert_eq!(t.check("secret-2"), None);
        assert!(Tokens::parse("nothex lab x").is_err());
    }

    #[test]
    fn roles_and_scopes() {
        let h = hash_token("b");
        let t = Tokens::parse(&format!("{h} bureau yc 441781,441702\n")).expect("parses");
        let p = t.check("b").expect("valid");
        assert_eq!(
            p.scope,
            Scope::Counties(vec!["441781".into(), "441702".into()])
        );
        let t = Tokens::parse(&format!("{h} bureau city *\n")).expect("parses");
        assert_eq!(t.check("b").map(|p| p.scope), Some(Scope::All));
        let t = Tokens::parse(&format!("{h} admin root\n")).expect("parses");
        assert_eq!(t.check("b").map(|p| p.scope), Some(Scope::All));
        assert!(Tokens::parse(&format!("{h} bureau yc\n")).is_err());
        assert!(Tokens::parse(&format!("{h} lab l 441781\n")).is_err());
        assert!(Tokens::parse(&format!("{h} viewer v\n")).is_err());
    }

    #[test]
    fn add_list_revoke() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        let t1 = add(&path, "lab1", Role::Lab, Scope::Counties(vec![])).expect("add");
        let t2 = add(
            &path,
            "yc",
            Role::Bureau,
            Scope::Counties(vec!["441781".into()]),
        )
        .expect("add");
        assert!(add(&path, "yc", Role::Admin, Scope::All).is_err());
        assert!(add(&path, "b", Role::Bureau, Scope::Counties(vec![])).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let names: Vec<String> = entries(&path)
            .expect("list")
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, vec!["lab1", "yc"]);
        revoke(&path, "lab1").expect("revoke");
        assert!(revoke(&path, "lab1").is_err());
        let t = Tokens::load(&path).expect("load");
        assert_eq!(t.check(&t1), None);
        assert_eq!(t.check(&t2).map(|p| p.role), Some(Role::Bureau));
    }
}
