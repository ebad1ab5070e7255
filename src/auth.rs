//! Who may talk to `ltxvault serve`: API tokens, and the LiteFS cluster id each cluster is
//! bound to. No HTTP here; the server calls [`TokenStore::authenticate`] with the
//! `Authorization` header and [`ClusterIds::check`] / [`ClusterIds::bind`] with the
//! `Litefs-Cluster-Id` header.
//!
//! ```text
//! <vault>/auth/                  mode 0700
//! <vault>/auth/tokens            token records (JSON, below), mode 0600
//! <vault>/auth/tokens.lock       flock taken by every writer of `tokens`
//! <vault>/auth/cluster-ids       cluster name -> bound LiteFS cluster id, mode 0600
//! <vault>/auth/cluster-ids.lock  flock taken by every writer of `cluster-ids`
//! ```
//!
//! # Tokens
//!
//! LiteFS sends its configured token verbatim as the `Authorization` header value (no
//! scheme), so a token is exactly the string an operator puts in `LITEFS_CLOUD_TOKEN`:
//!
//! ```text
//! ltxv1_<id: 16 lowercase hex>_<secret: 43 chars, base64url without padding of 32 random bytes>
//! ltxv1_3f9c0a1b2c3d4e5f_q0l9m-ZB2x3yQ4...   (66 characters in all)
//! ```
//!
//! The id names the token in `token list` and `token revoke` and is not secret. The
//! secret comes from the OS (`getrandom`) and is shown once, by `token create`; the store
//! keeps only SHA-256 of the secret's 43 ASCII characters. With 256 random bits a plain hash
//! is enough (no salt or slow hash: there is nothing to guess).
//!
//! [`TokenStore::authenticate`] does the same work whatever is wrong with what it is given:
//! one SHA-256 over at most 43 bytes (one compression block, whatever the length), one map
//! look-up, one constant-time comparison (`subtle`) against the stored hash, or against a
//! dummy when the token is malformed or its id unknown. Its running time therefore does not say which of "malformed", "unknown id"
//! and "wrong secret" happened, and never depends on how much of the secret was right.
//! Tokens and hashes are never logged.
//!
//! # Cluster ids
//!
//! A LiteFS cluster has an id, `LFSC` and 16 more characters (LiteFS generates 16 uppercase
//! hex digits from 8 random bytes; its `ValidateClusterID` checks only the length, 20, and
//! the prefix). The primary sends it on every backup request as `Litefs-Cluster-Id`. It
//! lives in the file `clusterid` in the node's LiteFS data directory (`data.dir` in
//! `litefs.yml`), and for a Consul lease also in Consul under `<lease key>/clusterid`.
//! LiteFS Cloud bound a cluster to the first id that wrote to it and then refused other ids
//! with 422 `cluster id mismatch, expecting "LFSC…"`; [`ClusterIds`] keeps those bindings so
//! that two LiteFS clusters configured with the same token cannot overwrite each other's
//! history. A request without the header is accepted.
//!
//! # File format and concurrency
//!
//! Both files are one JSON object ([`crate::sealed`]), `{"format": F, "data": D, "xxh3": X}`,
//! where `F` names the file and its version (`ltxvault-tokens-v1`,
//! `ltxvault-cluster-ids-v1`) and `X` is the xxh3-64 (16 hex digits) of `D` serialised
//! compactly by serde_json (`D` is re-serialised to verify it, so a hand edit or a damaged
//! byte fails the check instead of, say, moving a token to another cluster). `D` for tokens:
//!
//! ```text
//! {"tokens": {"<id>": {"scope": {"kind": "cluster", "name": "c"} | {"kind": "admin"},
//!                      "note": "text" | null, "created": "2025-01-02T03:04:05Z",
//!                      "sha256": "<64 hex>"}, ...}}
//! ```
//!
//! and for cluster ids `{"clusters": {"<cluster>": {"id": "LFSC…", "bound": "<RFC 3339>"}}}`.
//!
//! The files are shared by a running server and the CLI (`ltxvault token create` while
//! `serve` runs), so they do not use the vault's `LOCK`. A writer takes an exclusive flock on
//! the file's `.lock`, reads the file afresh, writes a temporary file (mode 0600) in the same
//! directory, syncs it, renames it over the file and syncs the directory. It also sets the
//! new file's mtime to at least one nanosecond after the old one's, so that (device, inode,
//! size, mtime, ctime) differs after every write even when the clock is coarse or an inode
//! number is reused. Readers take no lock: a rename is atomic, and every call `stat`s the
//! file (one system call) and re-reads it when that identity changed, so a token created or
//! revoked, or a binding reset, by another process counts from the next request. A file that
//! fails its checks is never overwritten and refuses every token (fail closed) until fixed.

use std::collections::BTreeMap;
use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::io::TempFile;
use crate::names;

/// The directory under the vault that holds both files.
pub const AUTH_DIR: &str = "auth";
/// The token file's name in [`AUTH_DIR`].
pub const TOKENS_FILE: &str = "tokens";
/// The cluster-id file's name in [`AUTH_DIR`].
pub const CLUSTER_IDS_FILE: &str = "cluster-ids";

/// What every token starts with; the `1` is the format's version.
pub const TOKEN_PREFIX: &str = "ltxv1_";
const ID_BYTES: usize = 8;
const ID_CHARS: usize = ID_BYTES * 2;
const SECRET_BYTES: usize = 32;
/// Base64url without padding: 4 characters per 3 bytes, the last group shortened.
const SECRET_CHARS: usize = (SECRET_BYTES * 4).div_ceil(3);
const ID_OFFSET: usize = TOKEN_PREFIX.len();
const SEPARATOR_OFFSET: usize = ID_OFFSET + ID_CHARS;
const SECRET_OFFSET: usize = SEPARATOR_OFFSET + 1;
/// Length of every token.
pub const TOKEN_LEN: usize = SECRET_OFFSET + SECRET_CHARS;
const _: () = assert!(SECRET_CHARS == 43 && TOKEN_LEN == 66);

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Most tokens one store holds.
pub const MAX_TOKENS: usize = 10_000;
/// Longest note, in bytes.
pub const MAX_NOTE_LEN: usize = 256;
/// Most clusters with a bound id.
pub const MAX_BOUND_CLUSTERS: usize = 100_000;
/// Largest file either store reads.
const MAX_FILE_BYTES: u64 = 32 << 20;
const _: () = assert!((MAX_TOKENS * (MAX_NOTE_LEN * 6 + 512)) as u64 <= MAX_FILE_BYTES);

/// Length of a LiteFS cluster id (`ClusterIDLen` in LiteFS).
pub const CLUSTER_ID_LEN: usize = 20;
/// What every LiteFS cluster id starts with (`ClusterIDPrefix` in LiteFS).
pub const CLUSTER_ID_PREFIX: &str = "LFSC";

/// Unreadable-file errors in `authenticate` are logged at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

/// What a token may do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Scope {
    /// Act on one cluster only: what a LiteFS node gets.
    Cluster(String),
    /// Act on every cluster (control plane, operators).
    Admin,
}

impl Scope {
    /// Whether this scope may act on `cluster`.
    pub fn allows_cluster(&self, cluster: &str) -> bool {
        match self {
            Scope::Cluster(own) => own == cluster,
            Scope::Admin => true,
        }
    }

    /// The cluster of a cluster-scoped token.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Scope::Cluster(name) => Some(name),
            Scope::Admin => None,
        }
    }

    fn validate(&self) -> Result<()> {
        match self {
            Scope::Cluster(name) => names::validate("cluster", name),
            Scope::Admin => Ok(()),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Cluster(name) => write!(f, "cluster:{name}"),
            Scope::Admin => f.write_str("admin"),
        }
    }
}

/// A token as `list` shows it: never the secret nor its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// 16 lowercase hex digits; the part of the token after `ltxv1_`.
    pub id: String,
    /// What it may do.
    pub scope: Scope,
    /// The operator's note, if any.
    pub note: Option<String>,
    /// When it was created, RFC 3339 UTC to the second.
    pub created: String,
}

/// One stored token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    scope: Scope,
    note: Option<String>,
    created: String,
    #[serde(with = "hex32")]
    sha256: [u8; 32],
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: BTreeMap<String, TokenRecord>,
}

impl FileData for TokenFile {
    const FORMAT: &'static str = "ltxvault-tokens-v1";

    fn validate(&self) -> std::result::Result<(), String> {
        if self.tokens.len() > MAX_TOKENS {
            return Err(format!("{} tokens; the limit is {MAX_TOKENS}", self.tokens.len()));
        }
        for (id, record) in &self.tokens {
            if !is_token_id(id) {
                return Err(format!("token id \"{}\" is not 16 lowercase hex digits", id.escape_default()));
            }
            record.scope.validate().map_err(|e| format!("token {id}: {e}"))?;
            if let Some(note) = &record.note {
                check_note(note).map_err(|e| format!("token {id}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// The API tokens of one vault. Cheap to share between threads (`Arc<TokenStore>`).
pub struct TokenStore {
    file: SharedFile<TokenFile>,
    last_error_log: Mutex<Option<Instant>>,
}

impl TokenStore {
    /// Opens (creating if needed) the token store of the vault in `vault_dir`, and reads it
    /// once so that a damaged file is reported now rather than as refused tokens later.
    pub fn open(vault_dir: &Path) -> Result<TokenStore> {
        let file = SharedFile::open(vault_dir, TOKENS_FILE)?;
        file.current()?;
        Ok(TokenStore { file, last_error_log: Mutex::new(None) })
    }

    /// The path of the token file.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Creates a token and returns its description and the token itself. The token is not
    /// stored (only a hash of its secret) and cannot be shown again.
    pub fn create(&self, scope: Scope, note: Option<&str>) -> Result<(TokenInfo, String)> {
        scope.validate()?;
        if let Some(note) = note {
            check_note(note).map_err(Error::Invalid)?;
        }
        let mut secret_bytes = [0u8; SECRET_BYTES];
        random_fill(&mut secret_bytes)?;
        let secret = base64url(&secret_bytes);
        debug_assert_eq!(secret.len(), SECRET_CHARS);
        let record = TokenRecord {
            scope,
            note: note.map(str::to_string),
            created: now_rfc3339(),
            sha256: Sha256::digest(secret.as_bytes()).into(),
        };
        let id = self.file.update(|file| {
            if file.tokens.len() >= MAX_TOKENS {
                return Err(Error::Invalid(format!(
                    "the vault already holds {MAX_TOKENS} tokens, the limit; revoke some first"
                )));
            }
            // A collision of 64 random bits is not going to happen, but costs one loop to
            // rule out.
            let id = loop {
                let mut id_bytes = [0u8; ID_BYTES];
                random_fill(&mut id_bytes)?;
                let id = to_hex(&id_bytes);
                if !file.tokens.contains_key(&id) {
                    break id;
                }
            };
            file.tokens.insert(id.clone(), record.clone());
            Ok(id)
        })?;
        let token = format!("{TOKEN_PREFIX}{id}_{secret}");
        assert_eq!(token.len(), TOKEN_LEN);
        Ok((info(&id, &record), token))
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<TokenInfo>> {
        let file = self.file.current()?;
        let mut list: Vec<TokenInfo> = file.tokens.iter().map(|(id, record)| info(id, record)).collect();
        list.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        Ok(list)
    }

    /// Deletes the token with this id (the 16 hex digits after `ltxv1_`; a whole token is
    /// accepted too). Servers stop accepting it from their next request.
    pub fn revoke(&self, id: &str) -> Result<TokenInfo> {
        let id = parse_token(id.trim()).map(|t| t.id).unwrap_or(id.trim());
        self.file.update(|file| match file.tokens.remove(id) {
            Some(record) => Ok(info(id, &record)),
            None => Err(Error::Invalid(format!(
                "no token with id \"{}\" (\"ltxvault token list\" shows the ids)",
                id.chars().take(40).collect::<String>().escape_default()
            ))),
        })
    }

    /// The scope of `presented` (an `Authorization` header value), or `None` when it is not
    /// a token of this store: malformed, unknown id, wrong secret, or the store unreadable
    /// (logged, without the token). Runs in the same time in every case (module doc).
    pub fn authenticate(&self, presented: &str) -> Option<Scope> {
        let presented = presented.trim().as_bytes();
        let file = match self.file.current() {
            Ok(file) => Some(file),
            Err(err) => {
                self.log_unreadable(&err);
                None
            }
        };
        let parsed = std::str::from_utf8(presented).ok().and_then(parse_token);
        // Malformed tokens hash a prefix of what was sent and look up an id that cannot
        // exist, so that they cost what a well-formed token costs.
        let (id, secret) = match parsed {
            Some(token) => (token.id, token.secret.as_bytes()),
            None => ("-", &presented[..presented.len().min(SECRET_CHARS)]),
        };
        let digest: [u8; 32] = Sha256::digest(secret).into();
        let record = file.as_deref().and_then(|f| f.tokens.get(id));
        let expected = record.map_or(&DUMMY_HASH, |r| &r.sha256);
        let equal = bool::from(digest[..].ct_eq(&expected[..]));
        match record {
            Some(record) if equal => Some(record.scope.clone()),
            _ => None,
        }
    }

    fn log_unreadable(&self, err: &Error) {
        let mut last = self.last_error_log.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL) {
            *last = Some(Instant::now());
            tracing::error!(%err, "the token store cannot be read; refusing every token until it is fixed");
        }
    }
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore").field("path", &self.file.path).finish_non_exhaustive()
    }
}

/// Compared with when no token matches; no secret hashes to it that anyone can find.
const DUMMY_HASH: [u8; 32] = [0; 32];

fn info(id: &str, record: &TokenRecord) -> TokenInfo {
    TokenInfo {
        id: id.to_string(),
        scope: record.scope.clone(),
        note: record.note.clone(),
        created: record.created.clone(),
    }
}

/// The two parts of a well-formed token.
struct ParsedToken<'a> {
    id: &'a str,
    secret: &'a str,
}

fn parse_token(token: &str) -> Option<ParsedToken<'_>> {
    if token.len() != TOKEN_LEN || !token.starts_with(TOKEN_PREFIX) {
        return None;
    }
    let id = token.get(ID_OFFSET..SEPARATOR_OFFSET)?;
    let secret = token.get(SECRET_OFFSET..)?;
    let well_formed = is_token_id(id)
        && token.as_bytes()[SEPARATOR_OFFSET] == b'_'
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(ParsedToken { id, secret })
}

fn is_token_id(id: &str) -> bool {
    id.len() == ID_CHARS && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_note(note: &str) -> std::result::Result<(), String> {
    if note.len() > MAX_NOTE_LEN {
        return Err(format!("the note is {} bytes long; the limit is {MAX_NOTE_LEN}", note.len()));
    }
    if note.chars().any(char::is_control) {
        return Err("the note contains a control character (newline, tab...)".to_string());
    }
    Ok(())
}

fn random_fill(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::io("read random bytes from the OS", std::io::Error::other(e.to_string())))
}

fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let bits = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(BASE64URL[(bits >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A 32-byte hash as 64 lowercase hex digits in the token file.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::to_hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let bad = || serde::de::Error::custom("expected 64 lowercase hex digits");
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------
// Cluster ids
// ---------------------------------------------------------------------------------------

/// The cluster id each cluster of the vault is bound to. Cheap to share between threads.
pub struct ClusterIds {
    file: SharedFile<ClusterIdFile>,
}

/// What [`ClusterIds::check_or_bind`] and [`ClusterIds::bind`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// No id was presented; nothing checked, nothing bound.
    NotPresented,
    /// The presented id is the one the cluster was already bound to.
    Matched,
    /// The cluster had no id; it is now bound, durably, to the presented one.
    NewlyBound,
}

/// A request's cluster id differs from the one its cluster is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The vault's cluster name.
    pub cluster: String,
    /// The id the cluster is bound to.
    pub bound: String,
    /// The id the request carried.
    pub presented: String,
}

impl Mismatch {
    /// LiteFS Cloud's message, word for word: `cluster id mismatch, expecting "LFSC…"`.
    /// [`Display`](std::fmt::Display) starts with it and goes on to say how to fix it.
    pub fn short_message(&self) -> String {
        format!("cluster id mismatch, expecting \"{}\"", self.bound)
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Mismatch { cluster, bound, presented } = self;
        write!(
            f,
            "{} (got \"{presented}\"): this vault's cluster \"{cluster}\" was first written by a LiteFS cluster \
             with that id; if the cluster was rebuilt, run \"ltxvault cluster reset-id --data DIR --cluster {cluster}\" \
             on the vault, or write {bound} into the file \"clusterid\" in the primary's LiteFS data directory \
             (data.dir in litefs.yml; with a Consul lease, also the Consul key <lease key>/clusterid) and restart LiteFS",
            self.short_message()
        )
    }
}

/// Why a cluster id was refused, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterIdError {
    /// The id differs from the bound one (LiteFS Cloud answered 422).
    #[error("{0}")]
    Mismatch(Mismatch),
    /// The header is not a LiteFS cluster id.
    #[error(
        "malformed Litefs-Cluster-Id \"{0}\": a LiteFS cluster id is \"LFSC\" and 16 more characters (16 uppercase hex digits when LiteFS made it)"
    )]
    Malformed(String),
    /// The cluster name is invalid, or the binding file could not be read or written.
    #[error(transparent)]
    Store(#[from] Error),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoundId {
    id: String,
    bound: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterIdFile {
    clusters: BTreeMap<String, BoundId>,
}

impl FileData for ClusterIdFile {
    const FORMAT: &'static str = "ltxvault-cluster-ids-v1";

    fn validate(&self) -> std::result::Result<(), String> {
        if self.clusters.len() > MAX_BOUND_CLUSTERS {
            return Err(format!("{} clusters; the limit is {MAX_BOUND_CLUSTERS}", self.clusters.len()));
        }
        for (cluster, bound) in &self.clusters {
            names::validate("cluster", cluster).map_err(|e| e.to_string())?;
            if !is_cluster_id(&bound.id) {
                return Err(format!(
                    "cluster \"{cluster}\": \"{}\" is not a LiteFS cluster id",
                    bound.id.escape_default()
                ));
            }
        }
        Ok(())
    }
}

/// Whether LiteFS would accept `id` as a cluster id (`ValidateClusterID`: 20 bytes starting
/// with `LFSC`), restricted to printable ASCII without space, which is all an id can be to
/// travel in a header and be quoted in a message.
pub fn is_cluster_id(id: &str) -> bool {
    id.len() == CLUSTER_ID_LEN && id.starts_with(CLUSTER_ID_PREFIX) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The header value as it was, for an error message: bounded and escaped.
fn shown(text: &str) -> String {
    text.chars().take(40).flat_map(char::escape_default).collect()
}

/// A presented header value: `None` when absent or blank, else a valid id.
fn presented_id(presented: Option<&str>) -> Result<Option<&str>, ClusterIdError> {
    match presented.map(str::trim) {
        None | Some("") => Ok(None),
        Some(id) if is_cluster_id(id) => Ok(Some(id)),
        Some(other) => Err(ClusterIdError::Malformed(shown(other))),
    }
}

impl ClusterIds {
    /// Opens (creating if needed) the cluster-id bindings of the vault in `vault_dir`, and
    /// reads them once so that a damaged file is reported now.
    pub fn open(vault_dir: &Path) -> Result<ClusterIds> {
        let file = SharedFile::open(vault_dir, CLUSTER_IDS_FILE)?;
        file.current()?;
        Ok(ClusterIds { file })
    }

    /// The path of the bindings file.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// The id `cluster` is bound to, if any.
    pub fn bound_id(&self, cluster: &str) -> Result<Option<String>> {
        names::validate("cluster", cluster)?;
        Ok(self.file.current()?.clusters.get(cluster).map(|b| b.id.clone()))
    }

    /// Checks a request's `Litefs-Cluster-Id` (`presented`, `None` when absent) against
    /// `cluster`'s binding; never binds. Absent header: accepted. Cluster not bound yet:
    /// accepted.
    pub fn check(&self, cluster: &str, presented: Option<&str>) -> Result<(), ClusterIdError> {
        names::validate("cluster", cluster)?;
        let Some(id) = presented_id(presented)? else { return Ok(()) };
        match self.file.current()?.clusters.get(cluster) {
            Some(bound) if bound.id != id => Err(mismatch(cluster, &bound.id, id)),
            _ => Ok(()),
        }
    }

    /// Binds `cluster` to `id` unless it is bound already: the server calls this after a
    /// successful write. Bound to `id` already: `Matched`, nothing written. Bound to another
    /// id (a concurrent first write of another LiteFS cluster won): `Mismatch`.
    pub fn bind(&self, cluster: &str, id: &str) -> Result<Binding, ClusterIdError> {
        names::validate("cluster", cluster)?;
        let Some(id) = presented_id(Some(id))? else { return Err(ClusterIdError::Malformed(String::new())) };
        // Cheap path, taken by every write after the first: no lock, no write.
        if let Some(bound) = self.file.current()?.clusters.get(cluster) {
            return if bound.id == id { Ok(Binding::Matched) } else { Err(mismatch(cluster, &bound.id, id)) };
        }
        let mut outcome = Ok(Binding::Matched);
        self.file.update(|file| {
            match file.clusters.get(cluster) {
                Some(bound) if bound.id == id => {}
                Some(bound) => outcome = Err(mismatch(cluster, &bound.id, id)),
                None => {
                    if file.clusters.len() >= MAX_BOUND_CLUSTERS {
                        return Err(Error::Invalid(format!(
                            "{MAX_BOUND_CLUSTERS} clusters are bound to ids already, the limit"
                        )));
                    }
                    file.clusters.insert(cluster.to_string(), BoundId { id: id.to_string(), bound: now_rfc3339() });
                    outcome = Ok(Binding::NewlyBound);
                }
            }
            Ok(())
        })?;
        outcome
    }

    /// [`check`](Self::check), then [`bind`](Self::bind) if an id was presented: for a
    /// caller that binds on any accepted request rather than on a successful write.
    pub fn check_or_bind(&self, cluster: &str, presented: Option<&str>) -> Result<Binding, ClusterIdError> {
        names::validate("cluster", cluster)?;
        match presented_id(presented)? {
            None => Ok(Binding::NotPresented),
            Some(id) => self.bind(cluster, id),
        }
    }

    /// Forgets `cluster`'s binding, so that the next write binds again; returns the id it
    /// was bound to (`None`: it was not bound).
    pub fn reset(&self, cluster: &str) -> Result<Option<String>> {
        names::validate("cluster", cluster)?;
        self.file.update(|file| Ok(file.clusters.remove(cluster).map(|b| b.id)))
    }
}

impl std::fmt::Debug for ClusterIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIds").field("path", &self.file.path).finish_non_exhaustive()
    }
}

fn mismatch(cluster: &str, bound: &str, presented: &str) -> ClusterIdError {
    ClusterIdError::Mismatch(Mismatch {
        cluster: cluster.to_string(),
        bound: bound.to_string(),
        presented: presented.to_string(),
    })
}

// ---------------------------------------------------------------------------------------
// A small JSON file shared between processes
// ---------------------------------------------------------------------------------------

/// The contents of one shared file.
trait FileData: Serialize + DeserializeOwned + Default + Clone + PartialEq {
    /// The `format` member: the file's kind and version.
    const FORMAT: &'static str;
    /// Checks the rules serde cannot (names, ids, limits).
    fn validate(&self) -> std::result::Result<(), String>;
}

/// What `stat` says about the file; any write changes it (module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// The file as last read: its stamp (`None`: absent) and its contents, or why they were
/// refused.
type Snapshot<T> = (Option<Stamp>, std::result::Result<Arc<T>, String>);

struct SharedFile<T> {
    path: PathBuf,
    lock_path: PathBuf,
    cache: Mutex<Option<Snapshot<T>>>,
}

impl<T: FileData> SharedFile<T> {
    fn open(vault_dir: &Path, name: &str) -> Result<SharedFile<T>> {
        let dir = vault_dir.join(AUTH_DIR);
        crate::io::make_private_dir(&dir)?;
        // An existing directory keeps its mode through `make_private_dir`; it is ours, so
        // make it private too.
        std::fs::set_permissions(&dir, Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("chmod 700 {}", dir.display()), e))?;
        Ok(SharedFile { path: dir.join(name), lock_path: dir.join(format!("{name}.lock")), cache: Mutex::new(None) })
    }

    /// The contents as of now: re-read if the file changed since the last call.
    fn current(&self) -> Result<Arc<T>> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(Stamp::of(&meta)),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(format!("stat {}", self.path.display()), e)),
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = match cache.take() {
            Some(snapshot) if snapshot.0 == stamp => snapshot,
            _ => self.read()?,
        };
        let contents = snapshot.1.clone();
        *cache = Some(snapshot);
        contents.map_err(|reason| self.corrupt(reason))
    }

    /// Reads the file afresh. I/O errors are returned; a file that fails its checks is
    /// returned as such, to be remembered until the file changes.
    fn read(&self) -> Result<Snapshot<T>> {
        let io_error = |what: &str, e| Error::io(format!("{what} {}", self.path.display()), e);
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok((None, Ok(Arc::new(T::default())))),
            Err(e) => return Err(io_error("open", e)),
        };
        let stamp = Stamp::of(&file.metadata().map_err(|e| io_error("stat", e))?);
        if stamp.size > MAX_FILE_BYTES {
            return Ok((Some(stamp), Err(format!("{} bytes; the limit is {MAX_FILE_BYTES}", stamp.size))));
        }
        let mut bytes = Vec::with_capacity(stamp.size as usize);
        (&mut file).take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| io_error("read", e))?;
        Ok((Some(stamp), decode::<T>(&bytes).map(Arc::new)))
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::Corrupt {
            file: self.path.clone(),
            offset: 0,
            reason: format!(
                "{reason}; the file was changed outside ltxvault or damaged: restore it from a backup, \
                 or move it away to start again empty"
            ),
        }
    }

    /// Applies `change` to the file's current contents under the writers' lock and, if
    /// they changed, replaces the file durably. `change` returning an error writes nothing.
    fn update<R>(&self, change: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(|e| Error::io(format!("open {}", self.lock_path.display()), e))?;
        lock.lock().map_err(|e| Error::io(format!("lock {}", self.lock_path.display()), e))?;
        self.remove_stale_temporaries();
        let (stamp, contents) = self.read()?;
        let old = contents.map_err(|reason| self.corrupt(reason))?;
        let mut new = T::clone(&old);
        let out = change(&mut new)?;
        if new != *old {
            assert!(new.validate().is_ok(), "a change keeps the file valid: {:?}", new.validate());
            self.write(&new, stamp)?;
        }
        // Whatever was written, the next `current` re-reads: the stamp cached now would be
        // the old file's.
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
        drop(lock);
        Ok(out)
    }

    fn write(&self, contents: &T, old: Option<Stamp>) -> Result<()> {
        let bytes = crate::sealed::seal(T::FORMAT, contents)?;
        let temp = TempFile::create(&self.path)?;
        let io_error = |what: &str, e| Error::io(format!("{what} {}", temp.path().display()), e);
        temp.file().set_permissions(Permissions::from_mode(0o600)).map_err(|e| io_error("chmod 600", e))?;
        temp.write_all_at(&bytes, 0)?;
        let after_old =
            old.map_or(UNIX_EPOCH, |s| UNIX_EPOCH + Duration::from_nanos(u64::try_from(s.mtime_ns + 1).unwrap_or(0)));
        temp.file().set_modified(SystemTime::now().max(after_old)).map_err(|e| io_error("set mtime of", e))?;
        temp.commit()
    }

    /// Removes temporary files a writer that crashed left (none can be in use: their
    /// writers hold the lock we hold).
    fn remove_stale_temporaries(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else { return };
        let prefix = format!(".{}.tmp-", name.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The file's contents, checked ([`crate::sealed`], then the rules serde cannot check).
fn decode<T: FileData>(bytes: &[u8]) -> std::result::Result<T, String> {
    let data: T = crate::sealed::unseal(T::FORMAT, bytes)?;
    data.validate()?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_store() -> (tempfile::TempDir, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn cluster(name: &str) -> Scope {
        Scope::Cluster(name.to_string())
    }

    /// Replaces the secret's last character with another valid one.
    fn with_other_secret(token: &str) -> String {
        let (head, last) = token.split_at(token.len() - 1);
        format!("{head}{}", if last == "A" { "B" } else { "A" })
    }

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        // RFC 4648 section 10 vectors, with the URL alphabet and no padding.
        for (input, want) in
            [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE")]
        {
            assert_eq!(base64url(input.as_bytes()), want);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(&[0u8; 32]).len(), SECRET_CHARS);
    }

    #[test]
    fn create_authenticate_revoke_round_trip() {
        let (_dir, store) = token_store();
        let (info, token) = store.create(cluster("prod"), Some("fly app prod")).unwrap();
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(token.starts_with(&format!("ltxv1_{}_", info.id)), "{token}");
        assert_eq!(info.scope, cluster("prod"));
        assert_eq!(info.note.as_deref(), Some("fly app prod"));
        assert!(chrono::DateTime::parse_from_rfc3339(&info.created).is_ok(), "{}", info.created);
        assert_eq!(store.authenticate(&token), Some(cluster("prod")));
        // Header values may arrive with surrounding whitespace.
        assert_eq!(store.authenticate(&format!(" {token}\t")), Some(cluster("prod")));

        let (admin_info, admin) = store.create(Scope::Admin, None).unwrap();
        assert_eq!(store.authenticate(&admin), Some(Scope::Admin));
        assert_eq!(store.list().unwrap(), {
            let mut both = vec![info.clone(), admin_info];
            both.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
            both
        });

        assert_eq!(store.revoke(&info.id).unwrap(), info);
        assert_eq!(store.authenticate(&token), None);
        assert_eq!(store.authenticate(&admin), Some(Scope::Admin));
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn refuses_wrong_secret_unknown_id_garbage_and_empty() {
        let (_dir, store) = token_store();
        let (_, token) = store.create(cluster("c"), None).unwrap();
        let unknown_id = format!("ltxv1_{}{}", "0".repeat(ID_CHARS), &token[SEPARATOR_OFFSET..]);
        let no_separator = format!("{}-{}", &token[..SEPARATOR_OFFSET], &token[SECRET_OFFSET..]);
        let bad_char = format!("{}!", &token[..TOKEN_LEN - 1]);
        let upper_id =
            token.replacen(&token[ID_OFFSET..SEPARATOR_OFFSET], &token[ID_OFFSET..SEPARATOR_OFFSET].to_uppercase(), 1);
        for presented in [
            with_other_secret(&token),
            unknown_id,
            no_separator,
            bad_char,
            format!("{token}x"),
            token[..TOKEN_LEN - 1].to_string(),
            format!("Bearer {token}"),
            "cluster c".to_string(),
            "garbage".to_string(),
            String::new(),
            "é".repeat(40),
        ] {
            assert_eq!(store.authenticate(&presented), None, "{presented:?}");
        }
        if upper_id != token {
            assert_eq!(store.authenticate(&upper_id), None, "{upper_id:?}");
        }
        assert_eq!(store.authenticate(&token), Some(cluster("c")));
    }

    #[test]
    fn the_file_holds_no_secret() {
        let (dir, store) = token_store();
        let (info, token) = store.create(cluster("c"), None).unwrap();
        let text = std::fs::read_to_string(dir.path().join("auth/tokens")).unwrap();
        let secret = &token[SECRET_OFFSET..];
        assert!(!text.contains(secret), "{text}");
        assert!(text.contains(&info.id));
        assert!(text.contains(&to_hex(&Sha256::digest(secret.as_bytes()))), "stores SHA-256 of the secret: {text}");
    }

    #[test]
    fn refuses_bad_cluster_names_notes_and_unknown_ids() {
        let (_dir, store) = token_store();
        for name in ["", "a/b", "..", "a b"] {
            let err = store.create(cluster(name), None).unwrap_err();
            assert!(err.to_string().contains("cluster name"), "{err}");
        }
        assert!(store.create(Scope::Admin, Some("two\nlines")).is_err());
        assert!(store.create(Scope::Admin, Some(&"n".repeat(MAX_NOTE_LEN + 1))).is_err());
        let err = store.revoke("0123456789abcdef").unwrap_err();
        assert!(err.to_string().contains("no token with id \"0123456789abcdef\""), "{err}");
        assert!(store.list().unwrap().is_empty(), "failed creates store nothing");
    }

    #[test]
    fn revoke_accepts_the_whole_token() {
        let (_dir, store) = token_store();
        let (_, token) = store.create(cluster("c"), None).unwrap();
        store.revoke(&token).unwrap();
        assert_eq!(store.authenticate(&token), None);
    }

    #[test]
    fn another_instance_sees_creates_and_revokes() {
        let (dir, server) = token_store();
        let cli = TokenStore::open(dir.path()).unwrap();
        assert!(server.list().unwrap().is_empty());
        let (info, token) = cli.create(cluster("c"), None).unwrap();
        assert_eq!(server.authenticate(&token), Some(cluster("c")));
        // Several changes in quick succession, each of which must be seen.
        for _ in 0..20 {
            let (other_info, other) = cli.create(Scope::Admin, None).unwrap();
            assert_eq!(server.authenticate(&other), Some(Scope::Admin));
            cli.revoke(&other_info.id).unwrap();
            assert_eq!(server.authenticate(&other), None);
        }
        cli.revoke(&info.id).unwrap();
        assert_eq!(server.authenticate(&token), None);
        assert!(server.list().unwrap().is_empty());
    }

    /// Readers notice a change by the file's (inode, size, mtime, ctime). With a coarse
    /// file-system clock, two writes of the same size within one tick whose second temporary
    /// file reuses the inode number a reader cached would look unchanged, and that reader
    /// would keep a revoked token. Writers therefore move mtime strictly forward; here the
    /// old file's mtime is an hour ahead, as after a clock step back.
    #[test]
    fn every_write_moves_mtime_forward() {
        let (dir, store) = token_store();
        store.create(Scope::Admin, None).unwrap();
        let path = dir.path().join("auth/tokens");
        let ahead = SystemTime::now() + Duration::from_secs(3600);
        File::options().write(true).open(&path).unwrap().set_modified(ahead).unwrap();
        store.create(Scope::Admin, None).unwrap();
        let after = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(after > ahead, "{after:?} is not after {ahead:?}");
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let (dir, _store) = token_store();
        let tokens: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        let store = TokenStore::open(dir.path()).unwrap();
                        (0..5).map(|_| store.create(Scope::Admin, None).unwrap().1).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let store = TokenStore::open(dir.path()).unwrap();
        assert_eq!(store.list().unwrap().len(), 40);
        assert!(tokens.iter().all(|t| store.authenticate(t) == Some(Scope::Admin)));
    }

    #[test]
    fn files_are_private() {
        let (dir, store) = token_store();
        store.create(Scope::Admin, None).unwrap();
        let ids = ClusterIds::open(dir.path()).unwrap();
        ids.bind("c", "LFSC0123456789ABCDEF").unwrap();
        let mode = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("auth"), 0o700);
        for file in ["auth/tokens", "auth/tokens.lock", "auth/cluster-ids", "auth/cluster-ids.lock"] {
            assert_eq!(mode(file), 0o600, "{file}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("auth"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn an_existing_auth_dir_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("auth")).unwrap();
        std::fs::set_permissions(dir.path().join("auth"), Permissions::from_mode(0o755)).unwrap();
        TokenStore::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("auth")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_damaged_file_refuses_every_token_and_is_not_overwritten() {
        let (dir, store) = token_store();
        let (_, token) = store.create(cluster("c"), None).unwrap();
        let path = dir.path().join("auth/tokens");
        // These edits rewrite the file in place with the same size, so only its mtime
        // tells them apart; let a coarse file-system clock tick between writes.
        let tick = || std::thread::sleep(Duration::from_millis(50));
        tick();
        // Moving the token to another cluster by hand breaks the checksum.
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replace("\"name\": \"c\"", "\"name\": \"d\"");
        assert_ne!(edited, text);
        std::fs::write(&path, &edited).unwrap();
        assert_eq!(store.authenticate(&token), None);
        let err = store.create(Scope::Admin, None).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("xxh3"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
        assert!(TokenStore::open(dir.path()).is_err());
        // Putting the file back restores service.
        tick();
        std::fs::write(&path, &text).unwrap();
        assert_eq!(store.authenticate(&token), Some(cluster("c")));
    }

    #[test]
    fn a_deleted_file_means_no_tokens() {
        let (dir, store) = token_store();
        let (_, token) = store.create(cluster("c"), None).unwrap();
        std::fs::remove_file(dir.path().join("auth/tokens")).unwrap();
        assert_eq!(store.authenticate(&token), None);
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn scope_helpers() {
        assert!(cluster("a").allows_cluster("a"));
        assert!(!cluster("a").allows_cluster("b"));
        assert!(Scope::Admin.allows_cluster("b"));
        assert_eq!(cluster("a").cluster(), Some("a"));
        assert_eq!(Scope::Admin.cluster(), None);
        assert_eq!(serde_json::to_string(&cluster("a")).unwrap(), r#"{"kind":"cluster","name":"a"}"#);
        assert_eq!(serde_json::to_string(&Scope::Admin).unwrap(), r#"{"kind":"admin"}"#);
    }

    // Cluster ids

    const A: &str = "LFSCAAAAAAAAAAAAAAAA";
    const B: &str = "LFSCBBBBBBBBBBBBBBBB";

    fn cluster_ids() -> (tempfile::TempDir, ClusterIds) {
        let dir = tempfile::tempdir().unwrap();
        let ids = ClusterIds::open(dir.path()).unwrap();
        (dir, ids)
    }

    #[test]
    fn cluster_id_format_is_litefs_s() {
        assert!(is_cluster_id("LFSC0123456789ABCDEF"));
        // LiteFS checks only length and prefix, so it accepts a hand-written lowercase id.
        assert!(is_cluster_id("LFSC0123456789abcdef"));
        for bad in
            ["", "LFSC", "LFSC0123456789ABCDE", "LFSC0123456789ABCDEF0", "XFSC0123456789ABCDEF", "LFSC01234567 9ABCDEF"]
        {
            assert!(!is_cluster_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn first_bind_wins_then_mismatch() {
        let (_dir, ids) = cluster_ids();
        ids.check("c", Some(A)).unwrap();
        assert_eq!(ids.bound_id("c").unwrap(), None, "check never binds");
        assert_eq!(ids.bind("c", A).unwrap(), Binding::NewlyBound);
        assert_eq!(ids.bind("c", A).unwrap(), Binding::Matched);
        ids.check("c", Some(A)).unwrap();
        ids.check("c", None).unwrap();
        ids.check("c", Some("")).unwrap();
        let ClusterIdError::Mismatch(m) = ids.check("c", Some(B)).unwrap_err() else { panic!("expected mismatch") };
        assert_eq!(m, Mismatch { cluster: "c".into(), bound: A.into(), presented: B.into() });
        assert_eq!(m.short_message(), format!("cluster id mismatch, expecting \"{A}\""));
        let text = m.to_string();
        assert!(text.starts_with(&m.short_message()), "{text}");
        for part in ["ltxvault cluster reset-id --data DIR --cluster c", "\"clusterid\"", "data directory"] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(matches!(ids.bind("c", B), Err(ClusterIdError::Mismatch(_))));
        // Other clusters are independent.
        assert_eq!(ids.check_or_bind("d", Some(B)).unwrap(), Binding::NewlyBound);
        assert_eq!(ids.check_or_bind("d", None).unwrap(), Binding::NotPresented);
        assert_eq!(ids.check_or_bind("d", Some(B)).unwrap(), Binding::Matched);
        assert!(matches!(ids.check_or_bind("d", Some(A)), Err(ClusterIdError::Mismatch(_))));
    }

    #[test]
    fn malformed_ids_and_names_are_their_own_errors() {
        let (_dir, ids) = cluster_ids();
        for bad in ["LFSC123", "lfsc0123456789ABCDEF", "hello world"] {
            let err = ids.check("c", Some(bad)).unwrap_err();
            assert!(matches!(err, ClusterIdError::Malformed(_)), "{bad}: {err}");
            assert!(err.to_string().contains("malformed Litefs-Cluster-Id"), "{err}");
            assert!(matches!(ids.check_or_bind("c", Some(bad)), Err(ClusterIdError::Malformed(_))));
            assert!(matches!(ids.bind("c", bad), Err(ClusterIdError::Malformed(_))));
        }
        assert!(matches!(ids.check("a/b", Some(A)), Err(ClusterIdError::Store(Error::InvalidName(_)))));
        assert!(ids.reset("..").is_err());
        assert_eq!(ids.bound_id("c").unwrap(), None);
    }

    /// Two LiteFS clusters writing their first transaction at once, through separate
    /// processes' views of the file: exactly one binds, every other one is told it lost.
    #[test]
    fn concurrent_first_binds_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..8).map(|i| format!("LFSC{i:016X}")).collect();
        for round in 0..10 {
            let cluster = format!("c{round}");
            let barrier = std::sync::Barrier::new(ids.len());
            let outcomes: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = ids
                    .iter()
                    .map(|id| {
                        let (barrier, cluster) = (&barrier, &cluster);
                        let store = ClusterIds::open(dir.path()).unwrap();
                        scope.spawn(move || {
                            barrier.wait();
                            (id.clone(), store.bind(cluster, id))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let winners: Vec<&String> =
                outcomes.iter().filter(|(_, o)| matches!(o, Ok(Binding::NewlyBound))).map(|(id, _)| id).collect();
            assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
            for (_, outcome) in &outcomes {
                match outcome {
                    Ok(Binding::NewlyBound) => {}
                    Err(ClusterIdError::Mismatch(m)) => assert_eq!(&m.bound, winners[0]),
                    other => panic!("round {round}: {other:?}"),
                }
            }
            assert_eq!(ClusterIds::open(dir.path()).unwrap().bound_id(&cluster).unwrap().as_ref(), Some(winners[0]));
        }
    }

    #[test]
    fn reset_then_a_new_id_binds() {
        let (_dir, ids) = cluster_ids();
        ids.bind("c", A).unwrap();
        assert_eq!(ids.reset("c").unwrap(), Some(A.to_string()));
        assert_eq!(ids.reset("c").unwrap(), None);
        ids.check("c", Some(B)).unwrap();
        assert_eq!(ids.bind("c", B).unwrap(), Binding::NewlyBound);
        assert!(matches!(ids.check("c", Some(A)), Err(ClusterIdError::Mismatch(_))));
    }

    #[test]
    fn bindings_persist_and_reach_another_instance() {
        let (dir, server) = cluster_ids();
        let cli = ClusterIds::open(dir.path()).unwrap();
        server.check("c", Some(A)).unwrap();
        server.bind("c", A).unwrap();
        assert_eq!(ClusterIds::open(dir.path()).unwrap().bound_id("c").unwrap(), Some(A.to_string()));
        assert!(matches!(cli.check("c", Some(B)), Err(ClusterIdError::Mismatch(_))));
        cli.reset("c").unwrap();
        server.check("c", Some(B)).unwrap();
        assert_eq!(server.bind("c", B).unwrap(), Binding::NewlyBound);
        assert!(matches!(cli.check("c", Some(A)), Err(ClusterIdError::Mismatch(_))));
    }

    #[test]
    fn stores_do_not_disturb_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = TokenStore::open(dir.path()).unwrap();
        let ids = ClusterIds::open(dir.path()).unwrap();
        let (_, token) = tokens.create(cluster("c"), None).unwrap();
        ids.bind("c", A).unwrap();
        assert_eq!(tokens.authenticate(&token), Some(cluster("c")));
        assert_eq!(ids.bound_id("c").unwrap(), Some(A.to_string()));
    }
}
