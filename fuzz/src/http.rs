//! The checks behind the `http_router` fuzz target: a sequence of HTTP requests sent to the
//! server's axum router in-process (`tower::ServiceExt::oneshot`, no sockets) over a vault
//! in a temporary directory, opened once per process.
//!
//! `tests/http_fuzz_regressions.rs` includes this file with `#[path]` to replay the seeds
//! and every saved finding on stable; it uses `ltxvault`, `std` and crates `ltxvault`
//! itself depends on (axum, tokio, tower, http-body-util, tokio-stream, serde_json).
//!
//! # The vault every input starts from
//!
//! ```text
//! c1/lite   Litestream 0.5.17 pg1024 L0 files 1..4 (v3-block, NoChecksum), a real SQLite db
//! c1/fs     a LiteFS-style v1 snapshot (3 pages of 512 bytes) and one incremental
//! c2/fs     the same files in cluster c2
//! ```
//!
//! Two routers share the vault: one with tokens (`$T1`, `$T2` for clusters c1 and c2,
//! `$TA` an admin token) and cluster-id binding, one without authentication
//! (`Authorization: cluster NAME`). After every input the harness checks the vault (not
//! poisoned; every database restores to exactly its recorded checksum), then puts it back:
//! databases the input created or moved are deleted, the starting ones re-uploaded, the
//! cluster-id bindings reset. Every input therefore sees the same databases; only the log
//! and level files underneath keep growing (a restart of the fuzzer starts afresh).
//!
//! # Input layout
//!
//! ```text
//! input   := request ("\n===\n" request)*            (at most MAX_REQUESTS)
//! request := ["!"] METHOD " " TARGET "\n" (NAME ": " VALUE "\n")* "\n" BODY
//! ```
//!
//! - `!` sends the request to the router without authentication, otherwise to the one
//!   with tokens. `$T1`, `$T2`, `$TA` in the target and header values become the tokens.
//! - METHOD `COMPACT` and `RETAIN` run a compaction or retention pass instead of a request
//!   (what the server's background threads do between requests).
//! - Header `Fuzz-Chunks: N` sends the body in N pieces; `Fuzz-Cut: 1` makes the body end
//!   with an error after its bytes, as when a client goes away mid-upload.
//! - A BODY whose first line starts with `$U<d>` is upload template d, `$S` the SQLite file
//!   of c1/lite; the rest of that line edits it: `@OFFSET=HH` sets one byte (the offset
//!   taken modulo the length), `#N` cuts it to N bytes. Any other BODY is sent as it is.
//!   The templates continue the starting databases, so edited ones reach deep into ingest:
//!
//! ```text
//! $U0  c1/lite TXID 5 (Litestream file 5)     $U3  c1/fs or c2/fs TXID 4 (v1 LZ4, after $U2)
//! $U1  c1/lite TXID 6 (Litestream file 6)     $U4  a v1 snapshot for a new database
//! $U2  c1/fs or c2/fs TXID 3 (v1)             $U5  a v3-block snapshot, NoChecksum
//! ```
//!
//! Requests whose method, target or headers hyper would refuse before any handler saw them
//! are skipped. Every check either passes or panics: a panic is a finding.
//!
//! # What is checked
//!
//! - No handler panics or hangs (each request has 30 s).
//! - A 5xx other than 503 is a bug; a 503 must say `EBUSY`.
//! - Every 4xx answer is a JSON error with a `code` and a `pos`, and changed no position.
//! - `POST /db/tx` answered 200 carries `Litefs-Hwm`; `GET /db/snapshot` answered 200
//!   streams a file that decodes and is the point its `Ltxvault-*` headers name.
//! - After the input: the vault is not poisoned and every database restores to a file whose
//!   database checksum is its recorded position's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use ltxvault::auth::{ClusterIds, Scope, TokenStore};
use ltxvault::catalog::Position;
use ltxvault::clock::ManualClock;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::{
    Checksum, Decoder, Encoder, Format, Header, PageNo, TxId, database_checksum, database_file_checksum,
};
use ltxvault::server::api::{AppState, router};
use ltxvault::server::{AuthMode, ClusterIdPolicy, Limits};
use ltxvault::{Vault, VaultConfig};
use tower::ServiceExt;

/// Most requests one input sends.
pub const MAX_REQUESTS: usize = 8;
/// What separates two requests in an input.
pub const SEPARATOR: &[u8] = b"\n===\n";
/// The vault clock, fixed: 2025-12-06, nine days after the Litestream vectors were written.
pub const NOW_MS: i64 = 1_765_000_000_000;
/// Largest body the server takes (small, so that 413 is reachable).
pub const MAX_BODY_BYTES: u64 = 256 << 10;
/// The cluster id `Litefs-Cluster-Id` seeds use.
pub const CLUSTER_ID: &str = "LFSC0123456789ABCDEF";

const LITESTREAM: [&[u8]; 6] = [
    include_bytes!("../../tests/fixtures/litestream-0.5.17/pg1024/ltx/0/0000000000000001-0000000000000001.ltx"),
    include_bytes!("../../tests/fixtures/litestream-0.5.17/pg1024/ltx/0/0000000000000002-0000000000000002.ltx"),
    include_bytes!("../../tests/fixtures/litestream-0.5.17/pg1024/ltx/0/0000000000000003-0000000000000003.ltx"),
    include_bytes!("../../tests/fixtures/litestream-0.5.17/pg1024/ltx/0/0000000000000004-0000000000000004.ltx"),
    include_bytes!("../../tests/fixtures/litestream-0.5.17/pg1024/ltx/0/0000000000000005-0000000000000005.ltx"),
    include_bytes!("../../tests/fixtures/litestream-0.5.17/pg1024/ltx/0/0000000000000006-0000000000000006.ltx"),
];

/// One request of an input, as parsed.
#[derive(Debug, Clone)]
pub struct Step {
    /// Sent to the router without authentication.
    pub open: bool,
    /// HTTP method, or `COMPACT` / `RETAIN`.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Headers, placeholders not yet replaced, pseudo-headers included.
    pub headers: Vec<(String, String)>,
    /// Body, templates not yet expanded.
    pub body: Vec<u8>,
}

/// Cuts an input into steps; see the module docs. Never fails: bytes that do not look like
/// a request line make a request hyper would refuse, which the harness skips.
pub fn parse(data: &[u8]) -> Vec<Step> {
    split_all(data, SEPARATOR).into_iter().take(MAX_REQUESTS).map(parse_step).collect()
}

fn split_all<'a>(data: &'a [u8], separator: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = find(rest, separator) {
        parts.push(&rest[..at]);
        rest = &rest[at + separator.len()..];
    }
    parts.push(rest);
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_step(chunk: &[u8]) -> Step {
    let (head, body) = match find(chunk, b"\n\n") {
        Some(at) => (&chunk[..at], chunk[at + 2..].to_vec()),
        None => (chunk, Vec::new()),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n');
    let line = lines.next().unwrap_or_default();
    let (open, line) = match line.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (method, target) = line.split_once(' ').unwrap_or((line, "/"));
    let headers =
        lines.filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))).collect();
    Step { open, method: method.to_string(), target: target.to_string(), headers, body }
}

/// The inverse of [`parse`], for writing seeds.
pub fn unparse(steps: &[Step]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(SEPARATOR);
        }
        if step.open {
            out.push(b'!');
        }
        out.extend_from_slice(format!("{} {}\n", step.method, step.target).as_bytes());
        for (name, value) in &step.headers {
            out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(&step.body);
    }
    out
}

/// A database every input starts with, and the files that make it.
struct Start {
    cluster: &'static str,
    db: &'static str,
    files: Vec<Vec<u8>>,
}

/// A small database image that LiteFS-style v1 files are cut from.
struct Image {
    page_size: u32,
    bytes: Vec<u8>,
}

impl Image {
    fn checksum(&self) -> Checksum {
        database_checksum(&self.bytes, self.page_size)
    }

    /// One v1 file from TXID `txid` writing `pages` (number, fill byte) and cutting or
    /// growing the image to `commit` pages.
    fn file(&mut self, txid: u64, commit: u32, pages: &[(u32, u8)], compress: bool) -> Vec<u8> {
        let size = self.page_size as usize;
        let pre = if txid == 1 { Checksum::NONE } else { self.checksum() };
        if txid == 1 {
            self.bytes.clear();
        }
        let header = Header {
            page_size: self.page_size,
            commit,
            min_txid: TxId(txid),
            max_txid: TxId(txid),
            timestamp_ms: NOW_MS - 3_600_000 + txid as i64 * 1000,
            pre_apply_checksum: pre,
            ..Header::default()
        };
        let mut encoder = Encoder::new(Vec::new(), &header, Format::V1 { compress }).expect("template header");
        self.bytes.resize(self.bytes.len().max(commit as usize * size), 0);
        for &(pgno, fill) in pages {
            let mut page = vec![fill; size];
            page[..8].copy_from_slice(&u64::from(pgno).to_be_bytes());
            encoder.write_page(PageNo(pgno), &page).expect("template page");
            self.bytes[(pgno as usize - 1) * size..pgno as usize * size].copy_from_slice(&page);
        }
        self.bytes.truncate(commit as usize * size);
        encoder.finish(self.checksum()).expect("template trailer").0
    }
}

/// The starting databases and the upload templates (see the module docs).
fn fixtures() -> (Vec<Start>, Vec<Vec<u8>>) {
    let mut fs = Image { page_size: 512, bytes: Vec::new() };
    let fs_files = vec![fs.file(1, 3, &[(1, 0x11), (2, 0x12), (3, 0x13)], false), fs.file(2, 4, &[(4, 0x24)], false)];
    let u2 = fs.file(3, 4, &[(2, 0x32)], false);
    let u3 = fs.file(4, 2, &[(1, 0x41)], true);
    let mut fresh = Image { page_size: 512, bytes: Vec::new() };
    let u4 = fresh.file(1, 2, &[(1, 0x51), (2, 0x52)], false);
    let u5 = {
        let header = Header {
            flags: ltxvault::ltx::format::HEADER_FLAG_NO_CHECKSUM,
            page_size: 1024,
            commit: 1,
            min_txid: TxId(1),
            max_txid: TxId(1),
            timestamp_ms: NOW_MS - 60_000,
            ..Header::default()
        };
        let mut encoder = Encoder::new(Vec::new(), &header, Format::V3Block).expect("template header");
        encoder.write_page(PageNo(1), &[0x61; 1024]).expect("template page");
        encoder.finish(Checksum::NONE).expect("template trailer").0
    };
    let starts = vec![
        Start { cluster: "c1", db: "lite", files: LITESTREAM[..4].iter().map(|f| f.to_vec()).collect() },
        Start { cluster: "c1", db: "fs", files: fs_files.clone() },
        Start { cluster: "c2", db: "fs", files: fs_files },
    ];
    let templates = vec![LITESTREAM[4].to_vec(), LITESTREAM[5].to_vec(), u2, u3, u4, u5];
    (starts, templates)
}

/// Every database's position, by cluster and name.
type Positions = BTreeMap<(String, String), Position>;

/// The vault, the two routers and what resetting needs. Built once per fuzzing process;
/// the regression tests build one per test over a temporary directory.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    vault: Arc<Vault>,
    with_tokens: Router,
    without_auth: Router,
    ids: Arc<ClusterIds>,
    tokens: [(String, String); 3],
    starts: Vec<Start>,
    templates: Vec<Vec<u8>>,
    sqlite: Vec<u8>,
    start_positions: Positions,
    scratch: PathBuf,
}

/// What one request got, for the regression tests to look at.
#[derive(Debug)]
pub struct Exchange {
    /// The request as sent (method and target).
    pub request: String,
    /// The status, or `None` for a request hyper would have refused (skipped).
    pub status: Option<StatusCode>,
    /// The body.
    pub body: Vec<u8>,
}

impl Harness {
    /// A vault in `dir` (created) with the starting databases, and the routers over it.
    pub fn new(dir: &Path) -> Harness {
        let config = VaultConfig {
            io: IoChoice::Std,
            segment_bytes: 1 << 20,
            max_upload_bytes: MAX_BODY_BYTES,
            enqueue_timeout: Duration::from_secs(5),
            background_compaction: false,
            ..VaultConfig::default()
        };
        let vault = Arc::new(Vault::open_with_clock(dir, config, ManualClock::new(NOW_MS)).expect("open the vault"));
        let tokens = Arc::new(TokenStore::open(dir).expect("token store"));
        let ids = Arc::new(ClusterIds::open(dir).expect("cluster ids"));
        let token = |scope: Scope| tokens.create(scope, None).expect("create a token").1;
        let tokens_text = [
            ("$T1".to_string(), token(Scope::Cluster("c1".into()))),
            ("$T2".to_string(), token(Scope::Cluster("c2".into()))),
            ("$TA".to_string(), token(Scope::Admin)),
        ];
        let limits = Limits {
            max_body_bytes: MAX_BODY_BYTES,
            max_concurrent_uploads: 4,
            body_idle_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            ..Limits::default()
        };
        let state = |auth, policy| AppState::new(vault.clone(), auth, policy, limits.clone()).expect("router state");
        let with_tokens = router(state(AuthMode::Tokens(tokens.clone()), ClusterIdPolicy::Bind(ids.clone())));
        let without_auth = router(state(AuthMode::None, ClusterIdPolicy::Off));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let (starts, templates) = fixtures();
        let scratch = dir.join("fuzz-scratch");
        std::fs::create_dir_all(&scratch).expect("scratch directory");
        let mut harness = Harness {
            runtime,
            vault,
            with_tokens,
            without_auth,
            ids,
            tokens: tokens_text,
            starts,
            templates,
            sqlite: Vec::new(),
            start_positions: Positions::new(),
            scratch,
        };
        harness.put_back();
        harness.start_positions = harness.positions();
        let image = harness.scratch.join("lite.db");
        harness.vault.restore_latest("c1", "lite", &image, true).expect("restore c1/lite");
        harness.sqlite = std::fs::read(&image).expect("read c1/lite");
        harness
    }

    /// Sends every request of `data`, checks each answer and the vault after them, then puts
    /// the vault back as it started.
    pub fn run(&self, data: &[u8]) -> Vec<Exchange> {
        let mut exchanges = Vec::new();
        for step in parse(data) {
            exchanges.push(self.step(&step));
        }
        self.check_vault();
        self.put_back();
        exchanges
    }

    fn step(&self, step: &Step) -> Exchange {
        let label = format!("{}{} {}", if step.open { "!" } else { "" }, step.method, step.target);
        match step.method.as_str() {
            "COMPACT" => {
                self.vault.compact_now().unwrap_or_else(|e| panic!("compaction failed: {e}"));
                return Exchange { request: label, status: Some(StatusCode::OK), body: Vec::new() };
            }
            "RETAIN" => {
                self.vault.retain_now().unwrap_or_else(|e| panic!("retention failed: {e}"));
                return Exchange { request: label, status: Some(StatusCode::OK), body: Vec::new() };
            }
            _ => {}
        }
        let Some(request) = self.request(step) else {
            return Exchange { request: label, status: None, body: Vec::new() };
        };
        let is_snapshot = request.uri().path() == "/db/snapshot" && request.method() == Method::GET;
        let sqlite = request.uri().query().is_some_and(|q| q.contains("format=sqlite"));
        let is_tx = request.uri().path() == "/db/tx" && request.method() == Method::POST;
        let router = if step.open { &self.without_auth } else { &self.with_tokens };
        let before = self.positions();
        let (status, headers, body) = self.runtime.block_on(async {
            let send = async {
                let response = router.clone().oneshot(request).await.expect("the router is infallible");
                let (parts, body) = response.into_parts();
                let body = body.collect().await.map(|b| b.to_bytes().to_vec());
                (parts.status, parts.headers, body)
            };
            tokio::time::timeout(Duration::from_secs(30), send)
                .await
                .unwrap_or_else(|_| panic!("{label}: no answer within 30 s"))
        });
        let body = body.unwrap_or_else(|e| panic!("{label}: {status}, the body broke off: {e}"));
        let text = || String::from_utf8_lossy(&body).into_owned();
        if status.is_server_error() {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{label}: {status} {}", text());
            let code = error_code(&body).unwrap_or_else(|| panic!("{label}: 503 without a JSON error: {}", text()));
            assert_eq!(code, "EBUSY", "{label}: 503 {}", text());
        }
        if status.is_client_error() || status.is_server_error() {
            assert!(error_code(&body).is_some(), "{label}: {status} without a JSON error: {}", text());
            assert_eq!(self.positions(), before, "{label}: refused with {status} {} but positions moved", text());
        }
        if status == StatusCode::OK && is_tx {
            let hwm = headers.get("Litefs-Hwm").and_then(|v| v.to_str().ok()).and_then(TxId::parse);
            assert!(hwm.is_some(), "{label}: 200 without a Litefs-Hwm header");
        }
        if status == StatusCode::OK && is_snapshot {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            let txid = header("Ltxvault-Txid").and_then(|t| TxId::parse(&t)).expect("Ltxvault-Txid");
            let checksum = header("Ltxvault-Checksum").and_then(|c| Checksum::parse(&c)).expect("Ltxvault-Checksum");
            let page_size: u32 = header("Ltxvault-Page-Size").and_then(|p| p.parse().ok()).expect("Ltxvault-Page-Size");
            if sqlite {
                let commit: usize = header("Ltxvault-Commit").and_then(|c| c.parse().ok()).expect("Ltxvault-Commit");
                assert_eq!(body.len(), commit * page_size as usize, "{label}: SQLite snapshot of the wrong size");
            } else {
                let summary = Decoder::new(&body)
                    .and_then(Decoder::verify)
                    .unwrap_or_else(|e| panic!("{label}: the LTX snapshot does not decode: {e}"));
                assert_eq!(summary.header.max_txid, txid, "{label}: snapshot of another TXID");
                assert_eq!(summary.trailer.post_apply_checksum, checksum, "{label}: snapshot of another state");
            }
        }
        Exchange { request: label, status: Some(status), body }
    }

    /// The request `step` describes, or `None` where hyper would refuse it.
    fn request(&self, step: &Step) -> Option<Request<Body>> {
        let method = Method::from_bytes(step.method.as_bytes()).ok()?;
        let uri: Uri = self.fill(&step.target).parse().ok()?;
        // hyper hands a handler origin-form targets only.
        uri.path_and_query()?;
        if uri.scheme().is_some() || !uri.path().starts_with('/') {
            return None;
        }
        let mut builder = Request::builder().method(method).uri(uri);
        let mut chunks = 1usize;
        let mut cut = false;
        for (name, value) in &step.headers {
            if name.eq_ignore_ascii_case("Fuzz-Chunks") {
                chunks = value.parse::<usize>().unwrap_or(1).clamp(1, 64);
            } else if name.eq_ignore_ascii_case("Fuzz-Cut") {
                cut = value == "1";
            } else {
                let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                let value = HeaderValue::from_str(&self.fill(value)).ok()?;
                builder = builder.header(name, value);
            }
        }
        let body = self.body(&step.body);
        let body = if chunks == 1 && !cut {
            Body::from(body)
        } else {
            let size = body.len().div_ceil(chunks).max(1);
            let mut pieces: Vec<Result<Bytes, std::io::Error>> =
                body.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            if cut {
                pieces.push(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the client went away")));
            }
            Body::from_stream(tokio_stream::iter(pieces))
        };
        builder.body(body).ok()
    }

    fn fill(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (placeholder, token) in &self.tokens {
            text = text.replace(placeholder.as_str(), token);
        }
        text
    }

    /// The body bytes: a template with its edits, or the raw bytes.
    fn body(&self, raw: &[u8]) -> Vec<u8> {
        let line_end = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
        let line = String::from_utf8_lossy(&raw[..line_end]);
        let mut words = line.split(' ');
        let first = words.next().unwrap_or_default();
        let mut bytes = if first == "$S" {
            self.sqlite.clone()
        } else if let Some(t) = first.strip_prefix("$U").and_then(|d| d.parse::<usize>().ok()) {
            match self.templates.get(t) {
                Some(template) => template.clone(),
                None => return raw.to_vec(),
            }
        } else {
            return raw.to_vec();
        };
        for word in words {
            if let Some((offset, value)) = word.strip_prefix('@').and_then(|w| w.split_once('=')) {
                if let (Ok(offset), Ok(value)) = (offset.parse::<usize>(), u8::from_str_radix(value, 16))
                    && !bytes.is_empty()
                {
                    let at = offset % bytes.len();
                    bytes[at] = value;
                }
            } else if let Some(len) = word.strip_prefix('#').and_then(|n| n.parse::<usize>().ok()) {
                bytes.truncate(len);
            }
        }
        bytes
    }

    /// Every database's position, as the catalog has it.
    fn positions(&self) -> Positions {
        self.vault.databases(None).into_iter().map(|info| ((info.cluster, info.db), info.position)).collect()
    }

    /// The vault is not poisoned, and every database restores to a file whose database
    /// checksum is its recorded one.
    fn check_vault(&self) {
        if let Some(reason) = self.vault.poisoned() {
            panic!("the vault is poisoned: {reason}");
        }
        let out = self.scratch.join("restore.db");
        for info in self.vault.databases(None) {
            let name = format!("{}/{}", info.cluster, info.db);
            let summary = self
                .vault
                .restore_latest(&info.cluster, &info.db, &out, true)
                .unwrap_or_else(|e| panic!("{name} at {:?} does not restore: {e}", info.position));
            assert_eq!(summary.position, info.position, "{name}: the restore is of another point");
            let checksum = database_file_checksum(&out, info.page_size).expect("checksum the restored file");
            assert_eq!(checksum, info.position.checksum, "{name}: the restored file is not the recorded state");
        }
    }

    /// Puts the vault back to the starting databases.
    fn put_back(&self) {
        let wanted: BTreeMap<(String, String), Position> = self.start_positions.clone();
        for ((cluster, db), position) in self.positions() {
            if wanted.get(&(cluster.clone(), db.clone())) != Some(&position) {
                self.vault.delete_database(&cluster, &db).unwrap_or_else(|e| panic!("delete {cluster}/{db}: {e}"));
            }
        }
        let now = self.positions();
        for start in &self.starts {
            if !now.contains_key(&(start.cluster.to_string(), start.db.to_string())) {
                for file in &start.files {
                    self.vault
                        .ingest(start.cluster, start.db, file.clone())
                        .unwrap_or_else(|e| panic!("upload {}/{}: {e}", start.cluster, start.db));
                }
            }
        }
        for cluster in ["c1", "c2"] {
            if self.ids.bound_id(cluster).expect("read the cluster-id bindings").is_some() {
                self.ids.reset(cluster).expect("reset a cluster-id binding");
            }
        }
        if !self.start_positions.is_empty() {
            assert_eq!(self.positions(), self.start_positions, "the vault did not go back to where it started");
        }
    }
}

/// The `code` of a JSON error answer that also carries a position.
fn error_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("pos")?;
    value.get("code")?.as_str().map(str::to_string)
}
