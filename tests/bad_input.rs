//! Bad input changes nothing: a table of malformed requests and files sent to a real
//! server on a loopback port, each with the status and error code it must get, and after
//! each a check that the vault is exactly as it was.
//!
//! "As it was" is checked three ways, all compared with a capture taken before the first
//! case: what clients see (`GET /pos` and `GET /dbs` of every cluster: positions, HWMs,
//! pieces per level), the bytes restored at every TXID of every database (and the status of
//! the TXIDs that are not restore points), and the vault's files on disk (name, size and
//! content of every file but the temporary ones, and an empty `tmp/`).
//!
//! The vault holds two clusters (tokens for each, an admin token, a revoked one; cluster
//! `c1` bound to a LiteFS cluster id), a database with recent history in L0 (`c1/main`), one
//! whose old history has been compacted and partly dropped by retention (`c1/old`, so that
//! a target before retention exists), and `c2/main`. Every refused upload is a variation of
//! one valid next transaction of `c1/main`, which is uploaded at the end to show that the
//! variations were refused for what was changed, not for something else.

mod common;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{Body, Reply, request, send_raw};
use common::ltxgen::crc64;
use common::server::{TestServer, serve};
use ltxvault::auth::{ClusterIds, Scope, TokenStore};
use ltxvault::clock::ManualClock;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::{Checksum, Decoder, Encoder, Format, Header, PageNo, TxId, database_checksum};
use ltxvault::server::{AuthMode, ClusterIdPolicy, Limits};
use ltxvault::{Vault, VaultConfig};

const PAGE: u32 = 512;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// The vault's clock: 2026-01-20T00:00:00Z.
const NOW: i64 = 20_473 * DAY;
const ID_A: &str = "LFSC0123456789ABCDEF";
const ID_B: &str = "LFSCBBBBBBBBBBBBBBBB";
const MAX_BODY: u64 = 1 << 20;

// ------------------------------------------------------------------------------------------
// Databases as the client sees them, and LTX files.

/// A database image and its position; [`Db::tx`] makes the next transaction.
#[derive(Clone)]
struct Db {
    image: Vec<u8>,
    txid: u64,
    checksum: Checksum,
}

impl Db {
    fn new() -> Db {
        Db { image: Vec::new(), txid: 0, checksum: Checksum::EMPTY_DATABASE }
    }

    fn page(&self, pgno: u32) -> &[u8] {
        let size = PAGE as usize;
        &self.image[(pgno as usize - 1) * size..pgno as usize * size]
    }

    /// The next transaction (a snapshot for the first): pages `writes` set to their byte,
    /// `commit` pages long afterwards. Returns the file and the state after it.
    fn tx(&self, commit: u32, writes: &[(u32, u8)], timestamp_ms: i64, compress: bool) -> (Vec<u8>, Db) {
        let mut next = self.clone();
        next.image.resize(commit as usize * PAGE as usize, 0);
        for &(pgno, byte) in writes {
            let size = PAGE as usize;
            next.image[(pgno as usize - 1) * size..pgno as usize * size].fill(byte);
        }
        next.txid += 1;
        next.checksum = database_checksum(&next.image, PAGE);
        let snapshot = self.txid == 0;
        let header = Header {
            page_size: PAGE,
            commit,
            min_txid: TxId(next.txid),
            max_txid: TxId(next.txid),
            timestamp_ms,
            pre_apply_checksum: if snapshot { Checksum::NONE } else { self.checksum },
            ..Header::default()
        };
        let mut pages: Vec<u32> = if snapshot { (1..=commit).collect() } else { writes.iter().map(|w| w.0).collect() };
        pages.sort_unstable();
        let mut encoder = Encoder::new(Vec::new(), &header, Format::V1 { compress }).expect("header");
        for pgno in pages {
            encoder.write_page(PageNo(pgno), next.page(pgno)).expect("page");
        }
        (encoder.finish(next.checksum).expect("finish").0, next)
    }
}

/// An uncompressed v1 file with any header and pages the encoder accepts.
fn ltx(header: Header, pages: &[(u32, Vec<u8>)], post_apply: Checksum) -> Vec<u8> {
    let mut encoder = Encoder::new(Vec::new(), &header, Format::V1 { compress: false }).expect("header");
    for (pgno, data) in pages {
        encoder.write_page(PageNo(*pgno), data).expect("page");
    }
    encoder.finish(post_apply).expect("finish").0
}

/// `file` (uncompressed v1) edited, with its file checksum recomputed so that only the
/// edit is wrong.
fn edited(file: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = file.to_vec();
    edit(&mut bytes);
    let end = bytes.len() - 8;
    let checksum = crc64(&bytes[..end]) | 1 << 63;
    bytes[end..].copy_from_slice(&checksum.to_be_bytes());
    bytes
}

/// `file` edited, checksum left as it was.
fn damaged(file: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = file.to_vec();
    edit(&mut bytes);
    bytes
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_be_bytes());
}

/// Offset of page frame `i` (0-based) of an uncompressed v1 file.
fn frame(i: usize) -> usize {
    100 + i * (4 + PAGE as usize)
}

// ------------------------------------------------------------------------------------------
// The vault under test.

/// Dropped in field order: the server stops, the vault closes, the directory goes.
struct Fixture {
    server: TestServer,
    vault: Arc<Vault>,
    _dir: tempfile::TempDir,
    vault_dir: PathBuf,
    t1: String,
    t2: String,
    admin: String,
    revoked: String,
    /// `c1/main` at its last transaction.
    main: Db,
    /// `c2/main`'s position.
    c2_main: Db,
    /// Every TXID a capture restores, per cluster and database (one past the position).
    points: Vec<(&'static str, &'static str, u64)>,
}

impl Fixture {
    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    fn upload(&self, token: &str, db: &str, file: &[u8]) -> Reply {
        let headers = [("Authorization", token), ("Litefs-Cluster-Id", ID_A)];
        request(self.addr(), "POST", &format!("/db/tx?db={db}"), &headers, Body::Chunked(file, 4096)).expect("reply")
    }

    fn admin_get(&self, path: &str) -> Reply {
        request(self.addr(), "GET", path, &[("Authorization", &self.admin)], Body::None).expect("reply")
    }
}

fn setup() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let config = VaultConfig {
        io: IoChoice::Std,
        segment_bytes: 1 << 20,
        background_compaction: false,
        // Short windows for L0-L2 so that old history compacts and goes; L3 images kept six
        // days, so that history older than that is before retention.
        retention_ms: vec![Some(HOUR), Some(HOUR), Some(HOUR), Some(6 * DAY)],
        retention_every: Duration::from_secs(86_400),
        ..VaultConfig::default()
    };
    let clock = ManualClock::new(NOW);
    let vault = Arc::new(Vault::open_with_clock(&vault_dir, config, clock).expect("open"));
    let tokens = Arc::new(TokenStore::open(&vault_dir).expect("tokens"));
    let (_, t1) = tokens.create(Scope::Cluster("c1".into()), None).expect("token");
    let (_, t2) = tokens.create(Scope::Cluster("c2".into()), None).expect("token");
    let (_, admin) = tokens.create(Scope::Admin, None).expect("token");
    let (info, revoked) = tokens.create(Scope::Cluster("c1".into()), None).expect("token");
    tokens.revoke(&info.id).expect("revoke");
    let ids = Arc::new(ClusterIds::open(&vault_dir).expect("ids"));
    let limits = Limits {
        max_body_bytes: MAX_BODY,
        header_timeout: Duration::from_secs(2),
        body_idle_timeout: Duration::from_secs(1),
        // Every failed authentication here comes from 127.0.0.1; the limit on them has a
        // test of its own (security_edges.rs).
        auth_failure_limit: u32::MAX,
        ..Limits::default()
    };
    let server = serve(vault.clone(), AuthMode::Tokens(tokens), ClusterIdPolicy::Bind(ids), limits);
    let mut fixture = Fixture {
        server,
        vault,
        _dir: dir,
        vault_dir,
        t1,
        t2,
        admin,
        revoked,
        main: Db::new(),
        c2_main: Db::new(),
        points: Vec::new(),
    };

    // c1/old: four transactions over five days, ten to five days ago; compacted into
    // levels, then retention keeps L0-L2 an hour and images six days: only the images of
    // the last two of those days remain restore points (TXIDs 3 and 4).
    let mut old = Db::new();
    for (i, (commit, ts)) in
        [(2, NOW - 10 * DAY + 1000), (2, NOW - 10 * DAY + MINUTE), (3, NOW - 8 * DAY), (3, NOW - 5 * DAY)]
            .into_iter()
            .enumerate()
    {
        let (file, next) = old.tx(commit, &[(1, 0x70 + i as u8), (commit, 0x80 + i as u8)], ts, false);
        let reply = fixture.upload(&fixture.t1, "old", &file);
        assert_eq!(reply.status, 200, "old TX{}: {}", i + 1, String::from_utf8_lossy(&reply.body));
        old = next;
    }
    for _ in 0..10 {
        if fixture.vault.compact_now().expect("compact") == 0 {
            break;
        }
    }
    fixture.vault.retain_now().expect("retention");
    for (txid, status) in [(1, 404), (2, 404), (3, 200), (4, 200)] {
        let reply = fixture.admin_get(&format!("/db/snapshot?db=old&cluster=c1&txid={txid}&format=sqlite"));
        assert_eq!(
            reply.status,
            status,
            "c1/old at TXID {txid} after retention: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }

    // c1/main: five transactions in the last minute, all in L0; the fourth LZ4-compressed.
    let mut main = Db::new();
    let steps: [(u32, &[(u32, u8)]); 5] =
        [(3, &[]), (3, &[(2, 0x22)]), (4, &[(1, 0x31), (4, 0x34)]), (4, &[(3, 0x43)]), (3, &[(1, 0x51)])];
    for (i, (commit, writes)) in steps.into_iter().enumerate() {
        let writes: Vec<(u32, u8)> = if i == 0 { vec![(1, 0x11), (2, 0x12), (3, 0x13)] } else { writes.to_vec() };
        let (file, next) = main.tx(commit, &writes, NOW - 50_000 + i as i64 * 10_000, i == 3);
        let reply = fixture.upload(&fixture.t1, "main", &file);
        assert_eq!(reply.status, 200, "main TX{}: {}", i + 1, String::from_utf8_lossy(&reply.body));
        main = next;
    }
    // c2/main: same name, another cluster, its own history.
    let mut c2 = Db::new();
    for i in 0..2u8 {
        let (file, next) = c2.tx(2, &[(1, 0xc0 + i), (2, 0xd0 + i)], NOW - 30_000 + i64::from(i), false);
        let reply = fixture.upload(&fixture.t2, "main", &file);
        assert_eq!(reply.status, 200, "c2 TX{}: {}", i + 1, String::from_utf8_lossy(&reply.body));
        c2 = next;
    }
    fixture.points = (1..=main.txid + 1)
        .map(|t| ("c1", "main", t))
        .chain((1..=old.txid + 1).map(|t| ("c1", "old", t)))
        .chain((1..=c2.txid + 1).map(|t| ("c2", "main", t)))
        .collect();
    fixture.main = main;
    fixture.c2_main = c2;
    fixture
}

// ------------------------------------------------------------------------------------------
// What "unchanged" means.

#[derive(Clone, Debug, PartialEq)]
struct State {
    /// `GET /pos` and `GET /dbs` of each cluster.
    listings: Vec<(String, serde_json::Value)>,
    /// Per TXID of each database: the status of its snapshot and a hash of its bytes.
    points: Vec<(String, u16, usize, u64)>,
    /// Every file of the vault but temporary ones: size and content hash.
    files: BTreeMap<String, (u64, u64)>,
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

fn capture(f: &Fixture) -> State {
    let mut state = capture_quick(f);
    state.points = f
        .points
        .iter()
        .map(|&(cluster, db, txid)| {
            let reply = f.admin_get(&format!("/db/snapshot?cluster={cluster}&db={db}&txid={txid}&format=sqlite"));
            (format!("{cluster}/{db}@{txid}"), reply.status, reply.body.len(), hash(&reply.body))
        })
        .collect();
    state
}

/// [`capture`] without the restores: what clients list and the files. (If neither moved,
/// no restore can differ; the full capture checks that too, less often.)
fn capture_quick(f: &Fixture) -> State {
    let mut listings = Vec::new();
    for cluster in ["c1", "c2"] {
        for path in ["/pos", "/dbs"] {
            let reply = f.admin_get(&format!("{path}?cluster={cluster}"));
            assert_eq!(reply.status, 200, "{path}: {}", String::from_utf8_lossy(&reply.body));
            listings.push((format!("{path} {cluster}"), reply.json()));
        }
    }
    let mut files = BTreeMap::new();
    walk(&f.vault_dir, &f.vault_dir, &mut files);
    State { listings, points: Vec::new(), files }
}

fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, (u64, u64)>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().to_string();
        // Temporary files (segments prepared ahead, scratch files of snapshot restores
        // still being removed) are dot-files; nothing else may change.
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let relative = path.strip_prefix(root).expect("inside").display().to_string();
        if entry.file_type().expect("type").is_dir() {
            files.insert(format!("{relative}/"), (0, 0));
            walk(root, &path, files);
        } else {
            let bytes = std::fs::read(&path).expect("read");
            files.insert(relative, (bytes.len() as u64, hash(&bytes)));
        }
    }
}

/// What differs between `before` and the state now, if anything.
fn changes(f: &Fixture, before: &State) -> Option<String> {
    diff(&capture(f), before)
}

/// [`changes`] in what [`capture_quick`] sees.
fn quick_changes(f: &Fixture, before: &State) -> Option<String> {
    diff(&State { points: before.points.clone(), ..capture_quick(f) }, before)
}

fn diff(now: &State, before: &State) -> Option<String> {
    let mut diff = Vec::new();
    for ((name, a), (_, b)) in now.listings.iter().zip(&before.listings) {
        if a != b {
            diff.push(format!("{name}: {b} became {a}"));
        }
    }
    for (a, b) in now.points.iter().zip(&before.points) {
        if a != b {
            diff.push(format!("restore point {}: {:?} became {:?}", b.0, b, a));
        }
    }
    for (name, a) in &now.files {
        match before.files.get(name) {
            None => diff.push(format!("new file {name}")),
            Some(b) if a != b => diff.push(format!("file {name} changed")),
            Some(_) => {}
        }
    }
    diff.extend(
        before.files.keys().filter(|name| !now.files.contains_key(*name)).map(|name| format!("{name} is gone")),
    );
    (!diff.is_empty()).then(|| diff.join("; "))
}

// ------------------------------------------------------------------------------------------
// The cases.

/// How a case's request goes out.
enum Send {
    /// Through the test client: method, path and query, headers, body.
    Http(&'static str, String, Vec<(String, String)>, BodyOf),
    /// Bytes written as they are, then the sending side shut.
    Raw(Vec<u8>),
}

enum BodyOf {
    None,
    Fixed(Vec<u8>),
    Chunked(Vec<u8>),
}

struct Case {
    what: String,
    send: Send,
    status: u16,
    /// The JSON error code; `None` where hyper answers before any handler (no JSON).
    code: Option<&'static str>,
    /// The position the error must carry (`c1/main`'s for uploads to it).
    pos: Option<(u64, Checksum)>,
}

fn send(f: &Fixture, send: &Send) -> Option<Reply> {
    match send {
        Send::Http(method, path, headers, body) => {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let body = match body {
                BodyOf::None => Body::None,
                BodyOf::Fixed(bytes) => Body::Fixed(bytes),
                BodyOf::Chunked(bytes) => Body::Chunked(bytes, 4096),
            };
            request(f.addr(), method, path, &headers, body)
        }
        Send::Raw(bytes) => send_raw(f.addr(), bytes),
    }
}

/// Sends a case and says what was wrong with the answer, if anything.
fn run(f: &Fixture, case: &Case) -> Option<String> {
    let Some(reply) = send(f, &case.send) else { return Some("the server closed without a reply".into()) };
    let text = String::from_utf8_lossy(&reply.body);
    let text: String = text.chars().take(300).collect();
    if reply.status != case.status {
        return Some(format!("status {}, expected {}: {text}", reply.status, case.status));
    }
    if reply.header("Litefs-Hwm").is_some() {
        return Some("an HWM on a refusal".into());
    }
    // No code: hyper answered (a bare status), checked above.
    let code = case.code?;
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&reply.body) else {
        return Some(format!("not JSON: {text}"));
    };
    if body["code"] != code {
        return Some(format!("code {}, expected {code}: {body}", body["code"]));
    }
    if body["error"].as_str().is_none_or(str::is_empty) {
        return Some(format!("no message: {body}"));
    }
    if !(body["pos"]["TXID"].is_string() && body["pos"]["PostApplyChecksum"].is_string()) {
        return Some(format!("no position: {body}"));
    }
    if let Some((txid, checksum)) = case.pos {
        let expected = serde_json::json!({"TXID": TxId(txid).to_string(), "PostApplyChecksum": checksum.to_string()});
        if body["pos"] != expected {
            return Some(format!("position {}, expected {expected}", body["pos"]));
        }
    }
    None
}

/// Everything the server must refuse, each with its answer.
fn cases(f: &Fixture) -> Vec<Case> {
    let main = &f.main;
    let main_pos = Some((main.txid, main.checksum));
    let c2_pos = Some((f.c2_main.txid, f.c2_main.checksum));
    // The valid next transaction of c1/main, and its LZ4 form: every variation below
    // starts from it.
    let (next, _) = main.tx(3, &[(2, 0x62), (3, 0x63)], NOW - 1000, false);
    let next_header = *Decoder::new(&next).expect("valid").header();
    let t1 = || vec![("Authorization".to_string(), f.t1.clone()), ("Litefs-Cluster-Id".to_string(), ID_A.to_string())];
    let with = |token: &str| vec![("Authorization".to_string(), token.to_string())];
    let mut cases = Vec::new();
    let mut add = |what: &str, send: Send, status: u16, code: Option<&'static str>, pos: Option<(u64, Checksum)>| {
        cases.push(Case { what: what.to_string(), send, status, code, pos });
    };
    let tx = |query: &str, body: Vec<u8>| Send::Http("POST", format!("/db/tx?{query}"), t1(), BodyOf::Chunked(body));
    let upload = |body: Vec<u8>| tx("db=main", body);
    let get = |path: &str| Send::Http("GET", path.to_string(), t1(), BodyOf::None);
    let post = |path: &str| Send::Http("POST", path.to_string(), t1(), BodyOf::None);

    // --- LTX files: format rules (400 EBADLTX). ---
    add("wrong magic", upload(damaged(&next, |b| b[..4].copy_from_slice(b"LTX2"))), 400, Some("EBADLTX"), main_pos);
    add("unknown header flag", upload(edited(&next, |b| put_u32(b, 4, 0x4))), 400, Some("EBADLTX"), main_pos);
    add("NoChecksum flag in a v1 file", upload(edited(&next, |b| put_u32(b, 4, 0x2))), 400, Some("EBADLTX"), main_pos);
    add("page size 1000", upload(edited(&next, |b| put_u32(b, 8, 1000))), 400, Some("EBADLTX"), main_pos);
    add("page size 0", upload(edited(&next, |b| put_u32(b, 8, 0))), 400, Some("EBADLTX"), main_pos);
    add("MinTXID 0", upload(edited(&next, |b| put_u64(b, 16, 0))), 400, Some("EBADLTX"), main_pos);
    add("MinTXID above MaxTXID", upload(edited(&next, |b| put_u64(b, 16, 9))), 400, Some("EBADLTX"), main_pos);
    add(
        "non-snapshot without a pre-apply checksum",
        upload(edited(&next, |b| put_u64(b, 40, 0))),
        400,
        Some("EBADLTX"),
        main_pos,
    );
    add(
        "pre-apply checksum without its flag bit",
        upload(edited(&next, |b| put_u64(b, 40, main.checksum.0 & !(1 << 63)))),
        400,
        Some("EBADLTX"),
        main_pos,
    );
    add(
        "WAL size without a WAL offset",
        upload(edited(&next, |b| put_u64(b, 56, 4096))),
        400,
        Some("EBADLTX"),
        main_pos,
    );
    add(
        "bad file checksum",
        upload(damaged(&next, |b| *b.last_mut().expect("byte") ^= 1)),
        400,
        Some("EBADLTX"),
        main_pos,
    );
    add(
        "a page byte flipped",
        upload(damaged(&next, |b| b[frame(0) + 4 + 100] ^= 0x10)),
        400,
        Some("EBADLTX"),
        main_pos,
    );
    add(
        "commit smaller than a page in the file",
        upload(edited(&next, |b| put_u32(b, 12, 2))),
        400,
        Some("EBADLTX"),
        main_pos,
    );
    add("page number 0", upload(edited(&next, |b| put_u32(b, frame(0), 0))), 400, Some("EBADLTX"), main_pos);
    add(
        "pages out of order",
        upload(edited(&next, |b| {
            put_u32(b, frame(0), 3);
            put_u32(b, frame(1), 2);
        })),
        400,
        Some("EBADLTX"),
        main_pos,
    );
    add("a page twice", upload(edited(&next, |b| put_u32(b, frame(1), 2))), 400, Some("EBADLTX"), main_pos);
    let lock = PageNo::lock_page(PAGE).0;
    let with_lock_page = {
        let header = Header { commit: lock + 1, ..next_header };
        let file = ltx(header, &[(lock - 1, vec![7; PAGE as usize])], Checksum(1 << 63 | 5));
        edited(&file, |b| put_u32(b, frame(0), lock))
    };
    add("the lock page present", upload(with_lock_page), 400, Some("EBADLTX"), main_pos);
    add(
        "a byte between the end marker and the trailer",
        upload(edited(&next, |b| b.insert(b.len() - 16, 0))),
        400,
        Some("EBADLTX"),
        main_pos,
    );
    add("a byte after the trailer", upload(damaged(&next, |b| b.push(0))), 400, Some("EBADLTX"), main_pos);
    add(
        "end marker missing",
        upload(edited(&next, |b| b.drain(frame(2)..frame(2) + 4).for_each(drop))),
        400,
        Some("EBADLTX"),
        main_pos,
    );
    let (next_lz4, _) = main.tx(3, &[(2, 0x62), (3, 0x63)], NOW - 1000, true);
    add(
        "LZ4 stream damaged",
        upload(damaged(&next_lz4, |b| {
            let at = 100 + (b.len() - 116) / 2;
            b[at] ^= 0xff;
        })),
        400,
        Some("EBADLTX"),
        main_pos,
    );
    add(
        "LZ4 flag on an uncompressed page block",
        upload(edited(&next, |b| put_u32(b, 4, 0x1))),
        400,
        Some("EBADLTX"),
        main_pos,
    );
    add("an SQLite file", upload(b"SQLite format 3\0".repeat(64)), 400, Some("EBADLTX"), main_pos);
    add("text", upload(b"{\"db\": \"main\"}".to_vec()), 400, Some("EBADLTX"), main_pos);

    // --- LTX files that decode but do not fit the database. ---
    add(
        "bad post-apply checksum",
        upload(ltx(next_header, &[(2, vec![0x62; 512]), (3, vec![0x63; 512])], Checksum(main.checksum.0 ^ 1))),
        400,
        Some("EBADCHECKSUM"),
        main_pos,
    );
    add(
        "growth without the new page",
        upload(ltx(
            Header { commit: 4, ..next_header },
            &[(2, vec![0x62; 512])],
            main.tx(3, &[(2, 0x62)], 0, false).1.checksum,
        )),
        400,
        Some("EBADCHECKSUM"),
        main_pos,
    );
    add(
        "page size differs from the stored database's",
        upload(ltx(Header { page_size: 1024, ..next_header }, &[(1, vec![1; 1024])], Checksum(1 << 63 | 9))),
        422,
        Some("EBADHEADER"),
        main_pos,
    );
    let shifted = |min: u64, max: u64, pre: Checksum| {
        let header = Header { min_txid: TxId(min), max_txid: TxId(max), pre_apply_checksum: pre, ..next_header };
        ltx(
            header,
            &[(2, vec![0x62; 512]), (3, vec![0x63; 512])],
            main.tx(3, &[(2, 0x62), (3, 0x63)], 0, false).1.checksum,
        )
    };
    add("TXID gap", upload(shifted(main.txid + 2, main.txid + 2, main.checksum)), 409, Some("EPOSMISMATCH"), main_pos);
    add(
        "overlap with the stored history",
        upload(shifted(main.txid, main.txid + 1, main.checksum)),
        409,
        Some("EPOSMISMATCH"),
        main_pos,
    );
    add(
        "pre-apply checksum of another state",
        upload(shifted(main.txid + 1, main.txid + 1, Checksum(1 << 63 | 0x7d0))),
        409,
        Some("EPOSMISMATCH"),
        main_pos,
    );
    let replay = |txid: u64| {
        let mut db = Db::new();
        let mut file = Vec::new();
        let steps: [(u32, Vec<(u32, u8)>); 5] = [
            (3, vec![(1, 0x11), (2, 0x12), (3, 0x13)]),
            (3, vec![(2, 0x22)]),
            (4, vec![(1, 0x31), (4, 0x34)]),
            (4, vec![(3, 0x43)]),
            (3, vec![(1, 0x51)]),
        ];
        for (i, (commit, writes)) in steps.iter().take(txid as usize).enumerate() {
            (file, db) = db.tx(*commit, writes, NOW - 50_000 + i as i64 * 10_000, i == 3);
        }
        file
    };
    add("replay of the first upload (a snapshot)", upload(replay(1)), 409, Some("EPOSMISMATCH"), main_pos);
    add("replay of an old upload", upload(replay(2)), 409, Some("EPOSMISMATCH"), main_pos);
    add("replay of the last upload", upload(replay(5)), 409, Some("EPOSMISMATCH"), main_pos);
    add(
        "first upload of a new database not a snapshot",
        tx("db=fresh", next.clone()),
        409,
        Some("EPOSMISMATCH"),
        Some((0, Checksum::NONE)),
    );

    // --- Bodies. ---
    add(
        "empty body",
        Send::Http("POST", "/db/tx?db=main".into(), t1(), BodyOf::Fixed(Vec::new())),
        400,
        Some("EBADBODY"),
        main_pos,
    );
    add("no body at all", post("/db/tx?db=main"), 400, Some("EBADBODY"), main_pos);
    let head = |extra: &str| {
        format!(
            "POST /db/tx?db=main HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nLitefs-Cluster-Id: {ID_A}\r\n{extra}\r\n",
            f.t1
        )
        .into_bytes()
    };
    add(
        "chunked body cut mid-chunk",
        Send::Raw(
            [
                head("Transfer-Encoding: chunked\r\n"),
                format!("{:x}\r\n", next.len()).into_bytes(),
                next[..300].to_vec(),
            ]
            .concat(),
        ),
        400,
        Some("EBADBODY"),
        main_pos,
    );
    add(
        "chunked body cut between chunks",
        Send::Raw(
            [head("Transfer-Encoding: chunked\r\n"), b"100\r\n".to_vec(), next[..256].to_vec(), b"\r\n".to_vec()]
                .concat(),
        ),
        400,
        Some("EBADBODY"),
        main_pos,
    );
    add(
        "chunk size not hex",
        Send::Raw(
            [head("Transfer-Encoding: chunked\r\n"), b"zz\r\n".to_vec(), next.clone(), b"\r\n0\r\n\r\n".to_vec()]
                .concat(),
        ),
        400,
        Some("EBADBODY"),
        main_pos,
    );
    add(
        "Content-Length longer than the body",
        Send::Raw([head(&format!("Content-Length: {}\r\n", next.len() + 10)), next.clone()].concat()),
        400,
        Some("EBADBODY"),
        main_pos,
    );
    add(
        "oversized body, announced",
        Send::Raw(head(&format!("Content-Length: {}\r\n", MAX_BODY + 1))),
        413,
        Some("ETOOLARGE"),
        main_pos,
    );
    let huge = [next.clone(), vec![0; MAX_BODY as usize]].concat();
    add("oversized body, chunked", upload(huge), 413, Some("ETOOLARGE"), main_pos);
    add(
        "Content-Length not a number",
        Send::Raw([head("Content-Length: 12abc\r\n"), next.clone()].concat()),
        400,
        None,
        None,
    );

    // --- Names. ---
    for (what, query) in [
        ("no db parameter", "cluster=c1".to_string()),
        ("empty database name", "db=".to_string()),
        ("database name '..'", "db=..".to_string()),
        ("database name '.'", "db=.".to_string()),
        ("database name with an encoded '/'", "db=a%2Fb".to_string()),
        ("database name with a raw '/'", "db=a/b".to_string()),
        ("database name with '..' and '/'", "db=..%2F..%2Fetc".to_string()),
        ("database name with NUL", "db=a%00b".to_string()),
        ("database name with a newline", "db=a%0Ab".to_string()),
        ("database name with a backslash", "db=a%5Cb".to_string()),
        ("database name of 129 bytes", format!("db={}", "x".repeat(129))),
        ("database name of 10 kB", format!("db={}", "x".repeat(10_000))),
        ("database name not ASCII", "db=caf%C3%A9".to_string()),
    ] {
        add(what, tx(&query, next.clone()), 400, Some("EBADDB"), None);
    }
    // The query decoder replaces bytes that are not UTF-8 (U+FFFD), which no name allows.
    add("database name not UTF-8", tx("db=a%FFb", next.clone()), 400, Some("EBADDB"), None);
    add("db given twice", tx("db=main&db=other", next.clone()), 400, Some("EBADINPUT"), None);
    add(
        "cluster name '..' with an admin token",
        Send::Http("GET", "/pos?cluster=..".into(), with(&f.admin), BodyOf::None),
        400,
        Some("EBADCLUSTER"),
        None,
    );
    add(
        "cluster name with '/' with an admin token",
        Send::Http("GET", "/pos?cluster=a%2Fb".into(), with(&f.admin), BodyOf::None),
        400,
        Some("EBADCLUSTER"),
        None,
    );
    add(
        "delete with a bad name",
        Send::Http("DELETE", "/db?db=..".into(), t1(), BodyOf::None),
        400,
        Some("EBADDB"),
        None,
    );

    // --- Query strings. ---
    add("unknown parameter on /pos", get("/pos?bogus=1"), 400, Some("EBADINPUT"), None);
    add("unknown parameter on an upload", tx("db=main&compress=1", next.clone()), 400, Some("EBADINPUT"), None);
    add("misspelt timestamp on a snapshot", get("/db/snapshot?db=main&timestmap=0"), 400, Some("EBADINPUT"), None);
    add("misspelt txid on a restore", post("/db/restore?db=main&txd=1"), 400, Some("EBADINPUT"), None);
    add("the token as a query parameter", get(&format!("/pos?token={}", f.t1)), 400, Some("EBADINPUT"), None);
    add("malformed timestamp", get("/db/snapshot?db=main&timestamp=yesterday"), 400, Some("EBADINPUT"), None);
    add("impossible date", get("/db/snapshot?db=main&timestamp=2026-13-45T00:00:00Z"), 400, Some("EBADINPUT"), None);
    add("empty timestamp", post("/db/restore?db=main&timestamp="), 400, Some("EBADINPUT"), None);
    add("timestamp past i64", get("/db/snapshot?db=main&timestamp=99999999999999999999"), 400, Some("EBADINPUT"), None);
    add("malformed txid", get("/db/snapshot?db=main&txid=xyz"), 400, Some("EBADINPUT"), None);
    add("negative txid", post("/db/restore?db=main&txid=-1"), 400, Some("EBADINPUT"), None);
    add("txid of 17 hex digits", get("/db/snapshot?db=main&txid=0x10000000000000000"), 400, Some("EBADINPUT"), None);
    add("txid and timestamp both", get("/db/snapshot?db=main&txid=1&timestamp=0"), 400, Some("EBADINPUT"), None);
    add("restore without a target", post("/db/restore?db=main"), 400, Some("EBADINPUT"), None);
    add("unknown snapshot format", get("/db/snapshot?db=main&format=csv"), 400, Some("EBADFORMAT"), None);
    add("empty snapshot format", get("/db/snapshot?db=main&format="), 400, Some("EBADFORMAT"), None);
    add("snapshot format in capitals", get("/db/snapshot?db=main&format=LTX"), 400, Some("EBADFORMAT"), None);
    let beyond = main.txid + 1;
    add(
        "snapshot at a TXID beyond the position",
        get(&format!("/db/snapshot?db=main&txid={beyond}")),
        404,
        Some("ENOTXID"),
        main_pos,
    );
    add(
        "restore to a TXID beyond the position",
        post(&format!("/db/restore?db=main&txid={beyond}")),
        404,
        Some("ENOTXID"),
        main_pos,
    );
    add(
        "restore check beyond the position",
        get(&format!("/db/restore/check?db=main&txid={}", u64::MAX)),
        404,
        Some("ENOTXID"),
        main_pos,
    );
    add("snapshot at TXID 0", get("/db/snapshot?db=main&txid=0"), 404, Some("ENOTXID"), main_pos);
    add(
        "restore to a timestamp before the history",
        post(&format!("/db/restore?db=main&timestamp={}", NOW - DAY)),
        404,
        Some("ENOTXID"),
        main_pos,
    );
    add("restore to a TXID before retention", post("/db/restore?db=old&txid=1"), 404, Some("ENOTXID"), None);
    add(
        "restore to a time before retention",
        post(&format!("/db/restore?db=old&timestamp={}", NOW - 9 * DAY)),
        404,
        Some("ENOTXID"),
        None,
    );
    add("snapshot at a TXID before retention", get("/db/snapshot?db=old&txid=2"), 404, Some("ENOTXID"), None);
    add("snapshot of an unknown database", get("/db/snapshot?db=nope"), 404, Some("ENODB"), Some((0, Checksum::NONE)));
    add("restore of an unknown database", post("/db/restore?db=nope&txid=1"), 404, Some("ENODB"), None);
    add(
        "delete of an unknown database",
        Send::Http("DELETE", "/db?db=nope".into(), t1(), BodyOf::None),
        404,
        Some("ENODB"),
        None,
    );
    add("clone onto an existing database", post("/db/clone?db=main&to_db=old"), 409, Some("EEXISTS"), None);
    add("clone of an unknown database", post("/db/clone?db=nope&to_db=x"), 404, Some("ENODB"), None);
    add(
        "cluster clone naming a database",
        post("/cluster/clone?cluster=c1&to_cluster=c9&db=main"),
        400,
        Some("EBADINPUT"),
        None,
    );
    add(
        "SQLite upload that is not SQLite",
        Send::Http("POST", "/db/upload?db=main".into(), t1(), BodyOf::Fixed(vec![7; 4096])),
        422,
        Some("EBADHEADER"),
        None,
    );
    add(
        "SQLite upload with another page size",
        Send::Http("POST", "/db/upload?db=main".into(), t1(), BodyOf::Fixed(sqlite_file(4096))),
        422,
        Some("EBADHEADER"),
        None,
    );
    add(
        "empty SQLite upload",
        Send::Http("POST", "/db/upload?db=main".into(), t1(), BodyOf::Fixed(Vec::new())),
        422,
        Some("EBADHEADER"),
        None,
    );

    // --- Credentials. ---
    let endpoints: [(&str, &str, bool); 6] = [
        ("GET", "/pos", false),
        ("POST", "/db/tx?db=main", true),
        ("GET", "/db/snapshot?db=main", false),
        ("POST", "/db/restore?db=main&txid=1", false),
        ("DELETE", "/db?db=main", false),
        ("GET", "/dbs", false),
    ];
    for (method, path, body) in endpoints {
        let body = || if body { BodyOf::Fixed(next.clone()) } else { BodyOf::None };
        add(
            &format!("{method} {path} without a token"),
            Send::Http(method, path.into(), Vec::new(), body()),
            401,
            Some("EINVALIDAUTH"),
            None,
        );
        let wrong = format!("{}A", &f.t1[..f.t1.len() - 1]);
        let wrong = if wrong == f.t1 { format!("{}B", &f.t1[..f.t1.len() - 1]) } else { wrong };
        add(
            &format!("{method} {path} with a wrong secret"),
            Send::Http(method, path.into(), with(&wrong), body()),
            401,
            Some("EINVALIDAUTH"),
            None,
        );
    }
    add("a revoked token", upload_as(&f.revoked, next.clone()), 401, Some("EINVALIDAUTH"), None);
    add(
        "a token one character short",
        upload_as(&f.t1[..f.t1.len() - 1], next.clone()),
        401,
        Some("EINVALIDAUTH"),
        None,
    );
    add("a token of 10 kB", upload_as(&"x".repeat(10_000), next.clone()), 401, Some("EINVALIDAUTH"), None);
    add(
        "the token after 'Bearer'",
        upload_as(&format!("Bearer {}", f.t1), next.clone()),
        401,
        Some("EINVALIDAUTH"),
        None,
    );
    add(
        "the token as a cluster name",
        upload_as(&format!("cluster {}", f.t1), next.clone()),
        401,
        Some("EINVALIDAUTH"),
        None,
    );
    add(
        "an Authorization header that is not text",
        Send::Raw(
            [
                b"POST /db/tx?db=main HTTP/1.1\r\nHost: x\r\nAuthorization: ltxv1_\xff\xfe\r\n".to_vec(),
                format!("Content-Length: {}\r\n\r\n", next.len()).into_bytes(),
                next.clone(),
            ]
            .concat(),
        ),
        401,
        Some("EINVALIDAUTH"),
        None,
    );
    add(
        "another cluster's token naming this cluster",
        Send::Http("POST", "/db/tx?db=main&cluster=c1".into(), with(&f.t2), BodyOf::Fixed(next.clone())),
        403,
        Some("EFORBIDDEN"),
        None,
    );
    add(
        "another cluster's token reads its own cluster only",
        upload_as(&f.t2, next.clone()),
        409,
        Some("EPOSMISMATCH"),
        c2_pos,
    );
    add(
        "another cluster's token deleting",
        Send::Http("DELETE", "/db?db=main&cluster=c1".into(), with(&f.t2), BodyOf::None),
        403,
        Some("EFORBIDDEN"),
        None,
    );
    add(
        "an admin token without a cluster",
        Send::Http("POST", "/db/tx?db=main".into(), with(&f.admin), BodyOf::Fixed(next.clone())),
        400,
        Some("EBADCLUSTER"),
        None,
    );
    for (what, id, status, code) in [
        ("another LiteFS cluster id", ID_B, 422, "ECLUSTERID"),
        ("a LiteFS cluster id with non-hex digits", "LFSCZZZZZZZZZZZZZZZZ", 422, "ECLUSTERID"),
        ("a LiteFS cluster id too short", "LFSC0123", 400, "EBADCLUSTERID"),
        ("a LiteFS cluster id too long", "LFSC0123456789ABCDEF0", 400, "EBADCLUSTERID"),
        ("a LiteFS cluster id without its prefix", "XXXX0123456789ABCDEF", 400, "EBADCLUSTERID"),
        ("a LiteFS cluster id with a space", "LFSC0123456789ABC EF", 400, "EBADCLUSTERID"),
    ] {
        let headers =
            vec![("Authorization".to_string(), f.t1.clone()), ("Litefs-Cluster-Id".to_string(), id.to_string())];
        add(
            what,
            Send::Http("POST", "/db/tx?db=main".into(), headers, BodyOf::Chunked(next.clone())),
            status,
            Some(code),
            None,
        );
    }
    add(
        "a LiteFS cluster id that is not text",
        Send::Raw(
            [
                format!("POST /db/tx?db=main HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n", f.t1).into_bytes(),
                b"Litefs-Cluster-Id: LFSC\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\r\n".to_vec(),
                format!("Content-Length: {}\r\n\r\n", next.len()).into_bytes(),
                next.clone(),
            ]
            .concat(),
        ),
        400,
        Some("EBADCLUSTERID"),
        None,
    );

    // --- Paths, methods, HTTP. ---
    add("unknown path", get("/v1/pos"), 404, Some("ENOTFOUND"), None);
    add("path with a trailing slash", get("/pos/"), 404, Some("ENOTFOUND"), None);
    add("path traversal", get("/db/../pos"), 404, Some("ENOTFOUND"), None);
    add("GET on the upload endpoint", get("/db/tx?db=main"), 405, Some("EMETHOD"), None);
    add("PUT on /pos", Send::Http("PUT", "/pos".into(), t1(), BodyOf::Fixed(next.clone())), 405, Some("EMETHOD"), None);
    add(
        "request head over hyper's limit",
        Send::Http("GET", "/pos".into(), vec![("X-Padding".to_string(), "p".repeat(512 << 10))], BodyOf::None),
        431,
        None,
        None,
    );
    add("not HTTP", Send::Raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n".to_vec()), 400, None, None);
    cases
}

fn upload_as(token: &str, body: Vec<u8>) -> Send {
    let headers =
        vec![("Authorization".to_string(), token.to_string()), ("Litefs-Cluster-Id".to_string(), ID_A.to_string())];
    Send::Http("POST", "/db/tx?db=main".into(), headers, BodyOf::Chunked(body))
}

/// A real SQLite database file with the given page size.
fn sqlite_file(page_size: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.db");
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch(&format!("PRAGMA page_size = {page_size}; CREATE TABLE t (x); INSERT INTO t VALUES (1);"))
        .expect("sql");
    drop(conn);
    std::fs::read(&path).expect("read")
}

#[test]
fn malformed_requests_are_refused_with_their_code_and_change_nothing() {
    let started = Instant::now();
    let f = setup();
    let mut before = capture(&f);
    let cases = cases(&f);
    let mut failures = Vec::new();
    let mut requests = 0usize;
    for case in &cases {
        if let Some(wrong) = run(&f, case) {
            failures.push(format!("{}: {wrong}", case.what));
        }
        if let Some(changed) = changes(&f, &before) {
            failures.push(format!("{}: changed the vault: {changed}", case.what));
            before = capture(&f);
        }
        requests += 1;
    }

    // Every truncation of the valid next upload, uncompressed and LZ4: an empty body is
    // EBADBODY, any other prefix EBADLTX. The listings and files are checked after every
    // length, the restores too after each sweep.
    let main = &f.main;
    let main_pos = Some((main.txid, main.checksum));
    let mut swept = Vec::new();
    for compress in [false, true] {
        let (next, _) = main.tx(3, &[(2, 0x62), (3, 0x63)], NOW - 1000, compress);
        let form = if compress { "LZ4" } else { "plain" };
        swept.push(format!("{form} {} bytes", next.len()));
        for len in 0..next.len() {
            let (status, code) = if len == 0 { (400, "EBADBODY") } else { (400, "EBADLTX") };
            let case = Case {
                what: format!("{form} upload cut to {len} of {} bytes", next.len()),
                send: Send::Http(
                    "POST",
                    "/db/tx?db=main".into(),
                    vec![("Authorization".into(), f.t1.clone()), ("Litefs-Cluster-Id".into(), ID_A.into())],
                    BodyOf::Fixed(next[..len].to_vec()),
                ),
                status,
                code: Some(code),
                pos: main_pos,
            };
            if let Some(wrong) = run(&f, &case) {
                failures.push(format!("{}: {wrong}", case.what));
            }
            if let Some(changed) = quick_changes(&f, &before) {
                failures.push(format!("{}: changed the vault: {changed}", case.what));
                before = capture(&f);
            }
            requests += 1;
        }
        if let Some(changed) = changes(&f, &before) {
            failures.push(format!("the truncations of the {form} upload changed the vault: {changed}"));
        }
    }
    assert!(failures.is_empty(), "{} of {requests} requests went wrong:\n{}", failures.len(), failures.join("\n"));
    assert!(f.vault.poisoned().is_none());

    // The valid upload every case varied is accepted: the refusals were for what each
    // case changed. (LZ4 form; the plain one carries the same transaction.)
    let (next_lz4, after) = main.tx(3, &[(2, 0x62), (3, 0x63)], NOW - 1000, true);
    let reply = f.upload(&f.t1, "main", &next_lz4);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("Litefs-Hwm"), Some(TxId(after.txid).to_string().as_str()));
    let snapshot = f.admin_get("/db/snapshot?cluster=c1&db=main&format=sqlite");
    assert!(snapshot.body == after.image, "the accepted upload restores");
    eprintln!(
        "bad_input: {} table cases, every truncation of the upload ({}), {requests} refused requests in all, {:.1} s",
        cases.len(),
        swept.join(", "),
        started.elapsed().as_secs_f64()
    );
    assert!(cases.len() >= 40);
}
