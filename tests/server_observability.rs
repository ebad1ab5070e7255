//! Watching a running server as an operator would: `GET /metrics` scraped from a server on
//! a loopback port and parsed as the Prometheus text format, its counters checked against
//! what the test did (uploads, bytes, restores, compaction), `GET /healthz` and
//! `GET /readyz` (ready, then not ready for a disk below `storage.min_free` and for a
//! poisoned vault), who may read `/metrics`, and `--log-format json` (JSON lines, no
//! token in them).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{Body, Reply, request};
use common::server::TestServer;
use common::{ModelDb, Rng};
use ltxvault::auth::{Scope, TokenStore};
use ltxvault::clock::SystemClock;
use ltxvault::config::ConfigFile;
use ltxvault::io::engine::{IoChoice, IoEngine, open_engine};
use ltxvault::server::observe::ROUTES;
use ltxvault::server::{AuthMode, ClusterIdPolicy, Limits, MetricsAccess};
use ltxvault::{Vault, VaultConfig};

/// A server on a loopback port over `vault`; stopped on drop. The test keeps its own
/// handle on the vault (to compact, or to look at it directly).
fn start(vault: Arc<Vault>, auth: AuthMode, access: MetricsAccess) -> TestServer {
    common::server::serve_with(vault, auth, ClusterIdPolicy::Off, access, Limits::default())
}

fn config() -> VaultConfig {
    VaultConfig { io: IoChoice::Std, background_compaction: false, ..VaultConfig::default() }
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(addr, "GET", path, headers, Body::None).expect("reply")
}

/// One scrape of `/metrics`, parsed.
struct Scrape {
    /// (name, labels) -> value.
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
    text: String,
}

impl Scrape {
    /// Parses the Prometheus text format (0.0.4) strictly: every sample belongs to a family
    /// declared by a `# TYPE` line before it, with a value that parses, and no sample
    /// appears twice.
    fn parse(text: &str) -> Scrape {
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "family declared twice: {line}");
                continue;
            }
            if line.starts_with("# HELP ") || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                    let labels = inner
                        .split(',')
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label in {line}"));
                            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).expect("quoted");
                            (k.to_string(), v.to_string())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "bad name: {line}");
            let family = types.keys().find(|f| {
                name == f.as_str()
                    || (types[*f] == "histogram"
                        && ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s) == Some(f.as_str())))
            });
            assert!(family.is_some(), "sample of no declared family: {line}");
            assert!(samples.insert((name.to_string(), labels), value).is_none(), "sample twice: {line}");
        }
        Scrape { samples, text: text.to_string() }
    }

    /// The sample with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = (name.to_string(), labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        *self.samples.get(&key).unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{}", self.text))
    }

    /// The sum of the samples of `name` whose labels include these.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|((n, l), _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, v)| v)
            .sum()
    }
}

fn scrape(addr: SocketAddr, headers: &[(&str, &str)]) -> Scrape {
    let reply = get(addr, "/metrics", headers);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    Scrape::parse(std::str::from_utf8(&reply.body).expect("utf-8"))
}

/// Scrapes until `done` holds (work that ends just after the client has its reply, like a
/// snapshot stream, is counted a moment later), for up to five seconds.
fn scrape_until(addr: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = scrape(addr, &[]);
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Uploads `count` transactions of a fresh model database; returns the bytes sent.
fn upload_history(addr: SocketAddr, cluster: &str, db: &str, count: usize, rng: &mut Rng) -> u64 {
    let auth = format!("cluster {cluster}");
    let mut model = ModelDb::new(4096);
    let mut sent = 0;
    for _ in 0..count {
        let (bytes, next) = model.propose(rng, false);
        let reply =
            request(addr, "POST", &format!("/db/tx?db={db}"), &[("Authorization", &auth)], Body::Chunked(&bytes, 4096))
                .expect("reply");
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        sent += bytes.len() as u64;
        model = next;
    }
    sent
}

#[test]
fn metrics_count_what_the_server_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Arc::new(Vault::open(dir.path(), config()).expect("open"));
    let server = start(vault.clone(), AuthMode::None, MetricsAccess::Open);
    let addr = server.addr;
    let mut rng = Rng::new(6);

    let before = scrape(addr, &[]);
    assert_eq!(before.value("ltxvault_poisoned", &[]), 0.0);
    assert_eq!(before.value("ltxvault_ingest_latency_seconds_count", &[]), 0.0);
    assert!(before.value("ltxvault_filesystem_free_bytes", &[]) > 0.0);

    let sent_a = upload_history(addr, "a", "db1", 7, &mut rng);
    let sent_b = upload_history(addr, "b", "db2", 4, &mut rng);
    let s = scrape(addr, &[]);
    for (cluster, uploads, sent) in [("a", 7.0, sent_a), ("b", 4.0, sent_b)] {
        assert_eq!(s.value("ltxvault_ingest_uploads_total", &[("cluster", cluster)]), uploads);
        assert_eq!(s.value("ltxvault_ingest_bytes_total", &[("cluster", cluster)]), sent as f64);
        // Everything is still in the log: what it stores is what was sent.
        assert_eq!(s.value("ltxvault_stored_bytes", &[("cluster", cluster), ("level", "0")]), sent as f64);
        assert_eq!(s.value("ltxvault_databases", &[("cluster", cluster)]), 1.0);
        assert_eq!(s.value("ltxvault_hwm_lag_txids", &[("cluster", cluster)]), 0.0);
    }
    assert_eq!(s.value("ltxvault_ingest_latency_seconds_count", &[]), 11.0);
    assert_eq!(s.value("ltxvault_ingest_latency_seconds_bucket", &[("le", "+Inf")]), 11.0);
    // Every record went through a group commit, each with a write and an fdatasync.
    assert_eq!(s.value("ltxvault_log_batch_records_sum", &[]), 11.0);
    let batches = s.value("ltxvault_log_batch_records_count", &[]);
    assert!((1.0..=11.0).contains(&batches), "{batches}");
    assert_eq!(s.value("ltxvault_log_sync_seconds_count", &[]), batches);
    assert!(s.value("ltxvault_log_batch_bytes_sum", &[]) > (sent_a + sent_b) as f64);
    assert!(s.value("ltxvault_log_segments_bytes", &[]) > 0.0);
    assert_eq!(s.value("ltxvault_ingest_queue_depth", &[]), 0.0);
    assert_eq!(s.value("ltxvault_ingest_queue_capacity", &[]), 1024.0);
    assert_eq!(s.value("ltxvault_http_requests_total", &[("route", "/db/tx"), ("status", "2xx")]), 11.0);
    // Nothing compacted yet: every upload waits for L1 (all windows long closed: the model's
    // clock is in 2023).
    assert_eq!(s.value("ltxvault_compaction_backlog_pieces", &[("level", "1")]), 11.0);
    assert!(s.value("ltxvault_compaction_lag_seconds", &[("level", "1")]) > 86_400.0);
    assert_eq!(s.value("ltxvault_poisoned", &[]), 0.0);

    // A restore in place (its transaction is one more upload of cluster a), a snapshot
    // streamed out, and a restore to a file through the library.
    let reply = request(addr, "POST", "/db/restore?db=db1&txid=3", &[("Authorization", "cluster a")], Body::None)
        .expect("reply");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let reply = get(addr, "/db/snapshot?db=db2", &[("Authorization", "cluster b")]);
    assert_eq!(reply.status, 200);
    assert!(!reply.body.is_empty());
    vault.restore_latest("a", "db1", &dir.path().join("out.db"), false).expect("restore");
    // A restore of a point that does not exist is the caller's mistake, not a restore.
    let reply = get(addr, "/db/snapshot?db=db2&txid=99", &[("Authorization", "cluster b")]);
    assert_eq!(reply.status, 404);
    let ok = |s: &Scrape, kind: &str| s.value("ltxvault_restores_total", &[("kind", kind), ("outcome", "ok")]);
    let s = scrape_until(addr, |s| ok(s, "snapshot") == 1.0);
    assert_eq!(ok(&s, "in_place"), 1.0);
    assert_eq!(ok(&s, "snapshot"), 1.0);
    assert_eq!(ok(&s, "restore"), 1.0);
    assert_eq!(ok(&s, "clone"), 0.0);
    assert_eq!(s.sum("ltxvault_restores_total", &[("outcome", "error")]), 0.0);
    for kind in ["in_place", "snapshot", "restore"] {
        assert_eq!(s.value("ltxvault_restore_duration_seconds_count", &[("kind", kind)]), 1.0, "{kind}");
    }
    assert_eq!(s.value("ltxvault_ingest_uploads_total", &[("cluster", "a")]), 8.0);
    assert_eq!(s.value("ltxvault_ingest_uploads_total", &[("cluster", "b")]), 4.0);
    assert_eq!(s.sum("ltxvault_corruptions_total", &[]), 0.0);

    // Compaction: every window is closed, so L1, L2 and L3 are written at once.
    assert!(vault.compact_now().expect("compact") > 0);
    let s = scrape(addr, &[]);
    for level in ["1", "2", "3"] {
        let pieces = s.value("ltxvault_compaction_written_pieces_total", &[("level", level)]);
        assert!(pieces >= 2.0, "L{level}: {pieces} pieces (one per database at least)");
        let written = s.value("ltxvault_compaction_written_bytes_total", &[("level", level)]);
        // Nothing was deleted: what compaction wrote is what the level stores.
        assert_eq!(s.sum("ltxvault_stored_bytes", &[("level", level)]), written, "L{level}");
        for cluster in ["a", "b"] {
            assert!(s.value("ltxvault_stored_bytes", &[("cluster", cluster), ("level", level)]) > 0.0);
        }
        // The restore in place's transaction is stamped now: its L1 window is still open.
        let waiting = if level == "1" { 1.0 } else { 0.0 };
        assert_eq!(s.value("ltxvault_compaction_backlog_pieces", &[("level", level)]), waiting, "L{level}");
        assert_eq!(s.value("ltxvault_compaction_lag_seconds", &[("level", level)]), 0.0, "L{level}");
        assert_eq!(s.value("ltxvault_compaction_failures_total", &[("level", level)]), 0.0);
    }
    assert_eq!(s.value("ltxvault_poisoned", &[]), 0.0);

    // Every route is routed and counted under its own name; anything else is `other`.
    for route in ROUTES {
        let reply = get(addr, route, &[]);
        let routed = reply.status != 404
            || serde_json::from_slice::<serde_json::Value>(&reply.body).is_ok_and(|b| b["code"] != "ENOTFOUND");
        assert!(routed, "{route} fell through to the fallback");
    }
    let _ = get(addr, "/no/such/route", &[]);
    let s = scrape(addr, &[]);
    for route in ROUTES.iter().chain(&["other"]) {
        assert!(s.sum("ltxvault_http_requests_total", &[("route", route)]) >= 1.0, "{route}");
    }
    assert_eq!(s.value("ltxvault_http_requests_total", &[("route", "other"), ("status", "4xx")]), 1.0);
    assert!(s.value("ltxvault_http_connections", &[]) >= 1.0, "the scrape's own connection");
    drop(server);
}

#[test]
fn healthz_and_readyz_say_whether_the_vault_can_take_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Arc::new(Vault::open(&dir.path().join("ok"), config()).expect("open"));
    let server = start(vault, AuthMode::None, MetricsAccess::Open);
    let reply = get(server.addr, "/healthz", &[]);
    assert_eq!(reply.status, 200);
    let reply = get(server.addr, "/readyz", &[]);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["ready"], true);
    drop(server);

    // storage.min_free above what the disk has: alive, not ready, and saying why.
    let file = ConfigFile::parse("[storage]\nmin_free = \"1000TiB\"\n").expect("parse");
    let config = file.apply(config()).expect("apply");
    assert_eq!(config.min_free_bytes, 1000 << 40);
    let vault = Arc::new(Vault::open(&dir.path().join("full"), config).expect("open"));
    let server = start(vault, AuthMode::None, MetricsAccess::Open);
    assert_eq!(get(server.addr, "/healthz", &[]).status, 200);
    let reply = get(server.addr, "/readyz", &[]);
    assert_eq!(reply.status, 503);
    let body = reply.json();
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["poisoned"], false, "{body}");
    assert!(body["problems"][0].as_str().is_some_and(|p| p.contains("storage.min_free")), "{body}");
    assert!(body["free_bytes"].as_u64().is_some_and(|free| free < 1000 << 40), "{body}");
    drop(server);

    // A failed fdatasync poisons the vault: not ready, and the metric says so.
    let vault = Arc::new(
        Vault::open_with(&dir.path().join("poisoned"), self::config(), Arc::new(SystemClock), Some(failing_engine()))
            .expect("open"),
    );
    let server = start(vault, AuthMode::None, MetricsAccess::Open);
    assert_eq!(get(server.addr, "/readyz", &[]).status, 200);
    assert_eq!(scrape(server.addr, &[]).value("ltxvault_poisoned", &[]), 0.0);
    let (bytes, _) = ModelDb::new(4096).propose(&mut Rng::new(1), false);
    let reply = request(server.addr, "POST", "/db/tx?db=x", &[("Authorization", "cluster c")], Body::Fixed(&bytes))
        .expect("reply");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["code"], "EPOISONED");
    assert_eq!(get(server.addr, "/healthz", &[]).status, 200);
    let reply = get(server.addr, "/readyz", &[]);
    assert_eq!(reply.status, 503);
    let body = reply.json();
    assert_eq!(body["poisoned"], true, "{body}");
    assert!(body["problems"][0].as_str().is_some_and(|p| p.contains("poisoned")), "{body}");
    let s = scrape(server.addr, &[]);
    assert_eq!(s.value("ltxvault_poisoned", &[]), 1.0);
    assert_eq!(s.value("ltxvault_ingest_uploads_total", &[("cluster", "c")]), 0.0, "nothing was acknowledged");
}

/// An engine whose every write-and-sync fails with EIO, as a dying disk's would.
struct Failing(Box<dyn IoEngine>);

impl IoEngine for Failing {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn write_and_sync(&mut self, _: &File, _: u64, _: &[&[u8]]) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(5))
    }
    fn write_all_at(&mut self, file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.0.write_all_at(file, offset, buf)
    }
    fn sync_data(&mut self, file: &File) -> io::Result<()> {
        self.0.sync_data(file)
    }
    fn allocate(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        self.0.allocate(file, offset, len)
    }
}

fn failing_engine() -> Box<dyn IoEngine> {
    Box::new(Failing(open_engine(IoChoice::Std).expect("std engine").0))
}

#[test]
fn metrics_for_admins_only_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = Arc::new(TokenStore::open(dir.path()).expect("tokens"));
    let (_, cluster_token) = tokens.create(Scope::Cluster("c".into()), None).expect("create");
    let (_, admin_token) = tokens.create(Scope::Admin, None).expect("create");
    let vault = Arc::new(Vault::open(dir.path(), config()).expect("open"));

    let server = start(vault.clone(), AuthMode::Tokens(tokens.clone()), MetricsAccess::Admin);
    let addr = server.addr;
    let bearer = format!("Bearer {admin_token}");
    assert_eq!(get(addr, "/metrics", &[]).status, 401);
    assert_eq!(get(addr, "/metrics", &[("Authorization", "Bearer ltxv1_nonsense")]).status, 401);
    assert_eq!(get(addr, "/metrics", &[("Authorization", &cluster_token)]).status, 403);
    scrape(addr, &[("Authorization", &admin_token)]);
    scrape(addr, &[("Authorization", &bearer)]);
    // Health needs no credential at all.
    assert_eq!(get(addr, "/healthz", &[]).status, 200);
    assert_eq!(get(addr, "/readyz", &[]).status, 200);
    drop(server);

    let server = start(vault, AuthMode::Tokens(tokens), MetricsAccess::Open);
    scrape(server.addr, &[]);
}

fn ltxvault() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_ltxvault"))
}

/// Every line of `stderr` as a JSON object.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(value["timestamp"].is_string() && value["level"].is_string(), "{line}");
            value
        })
        .collect()
}

#[test]
fn serve_logs_json_lines_without_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("vault");
    let (_, token) = TokenStore::open(&data).expect("tokens").create(Scope::Cluster("c".into()), None).expect("create");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = ltxvault()
        .args(["serve", "--log-format", "json", "--data"])
        .arg(&data)
        .args(["--listen", &addr.to_string()])
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ltxvault serve");
    wait_for_listen(addr, &mut child);
    let (bytes, _) = ModelDb::new(4096).propose(&mut Rng::new(2), false);
    let reply = request(addr, "POST", "/db/tx?db=d", &[("Authorization", &token)], Body::Fixed(&bytes)).expect("reply");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let wrong = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(get(addr, "/pos", &[("Authorization", &wrong)]).status, 401);
    assert_eq!(get(addr, "/pos", &[("Authorization", &token)]).status, 200);
    // SAFETY: kill(2) on the pid of a child this test started and has not waited for.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{:?}", out.status);
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    for secret in [&token[..], &wrong[..], &token[token.len() - 20..]] {
        assert!(!stderr.contains(secret), "a token is in the log:\n{stderr}");
    }
    let events = json_lines(&stderr);
    let message = |e: &serde_json::Value| e["message"].as_str().unwrap_or_default().to_string();
    assert!(events.iter().any(|e| message(e).starts_with("serving on http://")), "{stderr}");
    assert!(events.iter().any(|e| message(e).contains("stopped")), "{stderr}");
    let routes: BTreeSet<(String, u64)> = events
        .iter()
        .filter(|e| message(e) == "request")
        .map(|e| (e["route"].as_str().unwrap_or_default().to_string(), e["status"].as_u64().unwrap_or(0)))
        .collect();
    assert!(routes.contains(&("/db/tx".to_string(), 200)), "{routes:?}");
    assert!(routes.contains(&("/pos".to_string(), 401)), "{routes:?}");

    // Another command, failing, in JSON too: the error is one more event.
    let out = ltxvault()
        .args(["info", "--log-format", "json", "--cluster", "c", "--db", "d", "--endpoint", "http://127.0.0.1:1"])
        .args(["--token", &token])
        .env("RUST_LOG", "trace")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(!stderr.contains(&token), "a token is in the log:\n{stderr}");
    let events = json_lines(&stderr);
    assert!(events.iter().any(|e| e["level"] == "ERROR" && message(e) == "command failed"), "{stderr}");
}

fn wait_for_listen(addr: SocketAddr, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = io::Read::read_to_string(&mut stderr, &mut err);
            }
            panic!("serve exited ({status}) before listening: {err}");
        }
        assert!(Instant::now() < deadline, "serve did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
