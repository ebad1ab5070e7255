//! Kill -9 under load. `ltxvault serve` (the real binary) takes uploads from simulated
//! LiteFS primaries and is killed with SIGKILL at random moments (mid-upload, mid group
//! commit, while a log segment is being prepared, in a compaction or retention pass, now
//! and then while it is still recovering from the previous kill), then started again, over
//! and over. After every restart:
//!
//! - the vault opens: the server listens again;
//! - every database's position is the one its primary last saw acknowledged, or that of an
//!   upload whose reply the kill cut off (landed or not, both are allowed; nothing else
//!   is), and is at or past every HWM the server ever returned for it;
//! - the stored state and a sample of earlier acknowledged points restore (`GET
//!   /db/snapshot`) to the primary's model, byte for byte;
//! - the primaries resume as LiteFS does after a failed request: either `GET /pos` first,
//!   or straight on with the next upload, learning the stored position from the
//!   `EPOSMISMATCH` that refuses it when the cut-off upload had landed.
//!
//! The primaries use the load generator's HTTP client (`ltxvault::bench::http`: one
//! keep-alive connection each, chunked uploads as Go sends them) and the tests' model
//! database, which knows the image every TXID must restore to. Each transaction is a real
//! SQLite transaction (rusqlite, on a scratch copy of the acknowledged image: updates,
//! inserts and deletes, with `auto_vacuum` so the file grows and shrinks), because
//! `ltxvault verify` checks restored points with SQLite's integrity check.
//!
//! The first half of the kills runs with retention off, and at its end every acknowledged
//! TXID is restored (the vault opened in-process, straight after a kill) and compared with
//! the model. The second half runs with compaction windows and retention periods of
//! seconds, so that kills land in compaction and retention passes; there an earlier point
//! either restores exactly or is refused as no longer a restore point, never wrong, and the
//! stored state always restores. The run ends with a clean stop and the same check.
//!
//! After every kill, a copy of the vault as the kill left it (what the restarted server
//! then recovers) is checked by `ltxvault verify` (every stored byte, then restore drills
//! with SQLite's integrity check), which must pass; so must a last `verify` of the vault
//! itself after the clean stop.
//!
//! Seeded: `LTXVAULT_SEED` replays a run. `LTXVAULT_SOAK_KILLS` sets the number of kills
//! under load (default 50); a long run before a release uses 500.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::http::{Body, request};
use common::serve::Serve;
use common::{ModelDb, Rng, seed};
use ltxvault::bench::http::{Connection, Reply, get_pos_request, post_tx_request};
use ltxvault::catalog::Position;
use ltxvault::ltx::{Checksum, TxId, database_checksum};
use ltxvault::restore::Target;
use ltxvault::vault::SnapshotFormat;
use ltxvault::{Error, Vault, VaultConfig};

const PRIMARIES: usize = 12;
const CLUSTERS: usize = 3;
const PAGE_SIZE: u32 = 1024;
/// Databases stay about this small however long the run (deletes win above it), so memory
/// and disk stay bounded.
const MAX_PAGES: i64 = 40;
/// Every point keeps its checksum; every this many TXIDs it keeps its whole image too.
const IMAGE_EVERY: u64 = 32;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Small segments (so kills land in segment preparation and rolls) and windows of seconds
/// (so compaction runs all the time). `--retention off` in the first half.
const CONFIG: &str = r#"
[storage]
segment_size = "256KiB"

[levels]
l1_window = "1s"
l2_window = "2s"
l3_window = "4s"
grace = "200ms"

[retention]
l0 = "3s"
l1 = "6s"
l2 = "12s"
l3 = "20s"
every = "500ms"
"#;

/// A restore point the client knows: what the database was after that TXID.
struct Point {
    checksum: Checksum,
    commit: u32,
    image: Option<Vec<u8>>,
}

/// What the primaries saw, summed.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// Uploads answered 200.
    acked: u64,
    /// Uploads whose reply never came (the kill cut them off).
    cut_off: u64,
    /// Of those, found stored afterwards.
    landed: u64,
    /// Of those, found not stored.
    not_landed: u64,
    /// `GET /pos` resyncs after a failure.
    resyncs: u64,
    /// Uploads refused with `EPOSMISMATCH` because a cut-off upload had landed.
    pos_mismatch: u64,
    /// Bytes of the uploads acknowledged.
    bytes: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.acked += other.acked;
        self.cut_off += other.cut_off;
        self.landed += other.landed;
        self.not_landed += other.not_landed;
        self.resyncs += other.resyncs;
        self.pos_mismatch += other.pos_mismatch;
        self.bytes += other.bytes;
    }
}

fn position(model: &ModelDb) -> Position {
    if model.txid == 0 {
        return Position::default();
    }
    Position { txid: TxId(model.txid), checksum: model.checksum }
}

/// One simulated LiteFS primary writing one database.
struct Primary {
    cluster: String,
    db: String,
    /// The database as last acknowledged, or as found stored after a lost reply.
    model: ModelDb,
    /// Uploads sent since then whose reply never came: the vault may hold any one of them.
    in_doubt: Vec<ModelDb>,
    /// Every point acknowledged (or found stored), by TXID.
    points: BTreeMap<u64, Point>,
    /// The highest `Litefs-Hwm` the server returned for this database.
    max_hwm: u64,
    rng: Rng,
    /// Where the next transaction is made: a copy of the acknowledged image.
    scratch: PathBuf,
    connection: Option<Connection>,
    /// The last request failed: the next step resyncs, by `GET /pos` or by an upload.
    failed: bool,
    tally: Tally,
    violations: Vec<String>,
}

impl Primary {
    fn new(index: usize, seed: u64, scratch: &Path) -> Primary {
        let mut model = ModelDb::new(PAGE_SIZE);
        model.real_time = true;
        Primary {
            cluster: format!("c{}", index % CLUSTERS),
            db: format!("db{}", index / CLUSTERS),
            model,
            in_doubt: Vec::new(),
            points: BTreeMap::new(),
            max_hwm: 0,
            rng: Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            scratch: scratch.join(format!("primary-{index}.db")),
            connection: None,
            failed: false,
            tally: Tally::default(),
            violations: Vec::new(),
        }
    }

    fn authorization(&self) -> String {
        format!("cluster {}", self.cluster)
    }

    fn violation(&mut self, what: String) {
        self.violations.push(format!("{}/{}: {what}", self.cluster, self.db));
    }

    /// Uploads (or resyncs) until `stop`, with short random pauses; counts its
    /// acknowledgements in `acks` too.
    async fn run(mut self, addr: SocketAddr, stop: Arc<AtomicBool>, acks: Arc<AtomicU64>) -> Primary {
        while !stop.load(Ordering::SeqCst) {
            let before = self.tally.acked;
            if self.failed && self.rng.chance(50) {
                self.resync(addr).await;
            } else {
                self.upload(addr).await;
            }
            acks.fetch_add(self.tally.acked - before, Ordering::SeqCst);
            let pause = 2 + self.rng.below(18);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self.connection = None;
        self
    }

    /// One request on the primary's keep-alive connection.
    async fn exchange(&mut self, addr: SocketAddr, request: &[u8]) -> Exchange {
        if self.connection.is_none() {
            match tokio::time::timeout(REQUEST_TIMEOUT, Connection::connect(addr)).await {
                Ok(Ok(connection)) => self.connection = Some(connection),
                _ => return Exchange::NotSent,
            }
        }
        let Some(connection) = self.connection.as_mut() else { return Exchange::NotSent };
        match tokio::time::timeout(REQUEST_TIMEOUT, connection.exchange(request)).await {
            Ok(Ok(reply)) => {
                if reply.close {
                    self.connection = None;
                }
                Exchange::Reply(reply)
            }
            _ => {
                self.connection = None;
                Exchange::NoReply
            }
        }
    }

    async fn upload(&mut self, addr: SocketAddr) {
        let compress = self.rng.chance(30);
        let (bytes, next) = self.propose(compress);
        let request = post_tx_request(addr, &self.authorization(), &self.db, &bytes);
        let reply = match self.exchange(addr, &request).await {
            Exchange::Reply(reply) => reply,
            Exchange::NotSent => {
                self.failed = true;
                return;
            }
            Exchange::NoReply => {
                self.tally.cut_off += 1;
                self.in_doubt.push(next);
                self.failed = true;
                return;
            }
        };
        match (reply.status, error_code(&reply.body).as_str()) {
            (200, _) => {
                let hwm = reply.hwm.as_deref().and_then(|h| u64::from_str_radix(h, 16).ok());
                match hwm {
                    Some(hwm) if hwm >= next.txid => self.max_hwm = self.max_hwm.max(hwm),
                    other => self.violation(format!("a 200 for TXID {} with Litefs-Hwm {other:?}", next.txid)),
                }
                self.tally.acked += 1;
                self.tally.bytes += bytes.len() as u64;
                // Uploads in doubt were built on the same position as this one: none landed.
                self.tally.not_landed += self.in_doubt.len() as u64;
                self.in_doubt.clear();
                self.adopt(next);
            }
            (409, "EPOSMISMATCH") => {
                self.tally.pos_mismatch += 1;
                match position_of(&reply_json(&reply.body)["pos"]) {
                    Some(pos) if pos == position(&self.model) => self.violation(format!(
                        "an upload continuing the stored position {pos} was refused with EPOSMISMATCH"
                    )),
                    Some(pos) => self.reconcile(pos),
                    None => self.violation(format!("EPOSMISMATCH without a position: {:?}", reply_json(&reply.body))),
                }
            }
            (status, code) => self.violation(format!("upload answered {status} {code}")),
        }
    }

    async fn resync(&mut self, addr: SocketAddr) {
        let request = get_pos_request(addr, &self.authorization());
        let Exchange::Reply(reply) = self.exchange(addr, &request).await else { return };
        if reply.status != 200 {
            self.violation(format!("GET /pos answered {}", reply.status));
            return;
        }
        self.tally.resyncs += 1;
        let pos = positions_in(&reply.body).get(&self.db).copied().unwrap_or_default();
        self.reconcile(pos);
    }

    /// Takes the stored position the server reported after a failure: the acknowledged
    /// one, or one of the uploads in doubt (then it is the new acknowledged state).
    fn reconcile(&mut self, pos: Position) {
        self.failed = false;
        if pos.txid.0 < self.max_hwm {
            self.violation(format!("stored position {pos} is behind the HWM {} returned earlier", self.max_hwm));
        }
        if pos == position(&self.model) {
            self.tally.not_landed += self.in_doubt.len() as u64;
            self.in_doubt.clear();
        } else if let Some(i) = self.in_doubt.iter().position(|c| position(c) == pos) {
            let landed = self.in_doubt.swap_remove(i);
            self.tally.landed += 1;
            self.tally.not_landed += self.in_doubt.len() as u64;
            self.in_doubt.clear();
            self.adopt(landed);
        } else {
            let doubt: Vec<String> = self.in_doubt.iter().map(|c| position(c).to_string()).collect();
            self.violation(format!(
                "stored position {pos} is neither the acknowledged {} nor an upload whose reply was lost {doubt:?}",
                position(&self.model)
            ));
        }
    }

    /// The next upload: one SQLite transaction on the acknowledged database (the model's
    /// image, written to the scratch file), as an LTX file of the pages it changed. The
    /// model moves forward only when the upload is acknowledged (`adopt`).
    fn propose(&mut self, compress: bool) -> (Vec<u8>, ModelDb) {
        let _ = std::fs::remove_file(&self.scratch);
        if self.model.txid != 0 {
            std::fs::write(&self.scratch, &self.model.image).expect("write the scratch database");
        }
        let db = rusqlite::Connection::open(&self.scratch).expect("open the scratch database");
        let rng = &mut self.rng;
        let blob = |rng: &mut Rng| {
            let mut body = vec![0u8; 40 + rng.below(360) as usize];
            rng.fill(&mut body);
            body
        };
        if self.model.txid == 0 {
            db.execute_batch(&format!(
                "PRAGMA page_size={PAGE_SIZE}; PRAGMA auto_vacuum=FULL; PRAGMA journal_mode=DELETE;
                 CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB NOT NULL);"
            ))
            .expect("schema");
        }
        db.execute_batch("PRAGMA synchronous=OFF; BEGIN").expect("begin");
        let rows: i64 = db.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).expect("count");
        let pages: i64 = db.query_row("PRAGMA page_count", [], |r| r.get(0)).expect("page_count");
        // The row at a random position (rows > 0).
        let pick = |rng: &mut Rng| rng.below(rows as u64) as i64;
        let row_at = "(SELECT id FROM t ORDER BY id LIMIT 1 OFFSET ?1)";
        for _ in 0..1 + rng.below(3) {
            let roll = rng.below(100);
            if rows == 0 || (pages < MAX_PAGES && roll < 30) {
                db.execute("INSERT INTO t(body) VALUES (?1)", [blob(rng)]).expect("insert");
            } else if pages >= MAX_PAGES || roll < 45 {
                db.execute(&format!("DELETE FROM t WHERE id = {row_at}"), [pick(rng)]).expect("delete");
            } else {
                db.execute(
                    &format!("UPDATE t SET body = ?2 WHERE id = {row_at}"),
                    rusqlite::params![pick(rng), blob(rng)],
                )
                .expect("update");
            }
        }
        db.execute_batch("COMMIT").expect("commit");
        drop(db);
        let image = std::fs::read(&self.scratch).expect("read the scratch database");
        let timestamp_ms = self.model.next_timestamp(&mut self.rng);
        self.model.change_to_at(image, timestamp_ms, compress)
    }

    fn adopt(&mut self, next: ModelDb) {
        let image = next.txid.is_multiple_of(IMAGE_EVERY).then(|| next.image.clone());
        self.points.insert(next.txid, Point { checksum: next.checksum, commit: next.commit(), image });
        self.model = next;
    }

    /// The model of a stored position: the acknowledged one or one in doubt.
    fn model_at(&self, pos: Position) -> Option<&ModelDb> {
        std::iter::once(&self.model).chain(&self.in_doubt).find(|m| position(m) == pos)
    }
}

/// How a request went.
enum Exchange {
    /// No connection: the request never left.
    NotSent,
    /// Sent, but no reply came (the server died): it may or may not have been done.
    NoReply,
    Reply(Reply),
}

fn reply_json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

fn error_code(body: &[u8]) -> String {
    reply_json(body)["code"].as_str().unwrap_or("-").to_string()
}

fn position_of(value: &serde_json::Value) -> Option<Position> {
    let hex = |field: &str| value[field].as_str().and_then(|t| u64::from_str_radix(t, 16).ok());
    Some(Position { txid: TxId(hex("TXID")?), checksum: Checksum(hex("PostApplyChecksum")?) })
}

/// A `GET /pos` body: database name to position.
fn positions_in(body: &[u8]) -> BTreeMap<String, Position> {
    let value = reply_json(body);
    let Some(map) = value.as_object() else { return BTreeMap::new() };
    map.iter().filter_map(|(db, pos)| Some((db.clone(), position_of(pos)?))).collect()
}

/// Whether `bytes` is the database of `point`: its size and checksum, and its image where
/// the client kept it.
fn matches_point(bytes: &[u8], point: &Point) -> bool {
    bytes.len() == (point.commit * PAGE_SIZE) as usize
        && database_checksum(bytes, PAGE_SIZE) == point.checksum
        && point.image.as_ref().is_none_or(|image| image == bytes)
}

/// Checks a freshly restarted server against every primary; returns what is wrong and the
/// restores done.
fn check_after_restart(addr: SocketAddr, primaries: &[Primary], rng: &mut Rng, retention: bool) -> (Vec<String>, u64) {
    let mut wrong = Vec::new();
    let mut restores = 0;
    let mut stored: BTreeMap<(String, String), Position> = BTreeMap::new();
    for cluster in 0..CLUSTERS {
        let auth = format!("cluster c{cluster}");
        let reply = request(addr, "GET", "/pos", &[("Authorization", &auth)], Body::None).expect("reply");
        assert_eq!(reply.status, 200, "GET /pos after a restart");
        for (db, pos) in positions_in(&reply.body) {
            stored.insert((format!("c{cluster}"), db), pos);
        }
    }
    for p in primaries {
        let name = format!("{}/{}", p.cluster, p.db);
        let pos = stored.get(&(p.cluster.clone(), p.db.clone())).copied().unwrap_or_default();
        if pos.txid.0 < p.max_hwm {
            wrong.push(format!("{name}: stored position {pos} is behind the HWM {} returned earlier", p.max_hwm));
        }
        let Some(model) = p.model_at(pos) else {
            wrong.push(format!(
                "{name}: stored position {pos} is neither the acknowledged {} nor an upload in doubt",
                position(&p.model)
            ));
            continue;
        };
        if pos.txid.0 == 0 {
            continue;
        }
        let auth = format!("cluster {}", p.cluster);
        let snapshot = |txid: u64| {
            let path = format!("/db/snapshot?db={}&txid={txid}&format=sqlite", p.db);
            request(addr, "GET", &path, &[("Authorization", &auth)], Body::None).expect("reply")
        };
        let reply = snapshot(pos.txid.0);
        restores += 1;
        if reply.status != 200 || reply.body != model.image {
            wrong.push(format!("{name}: the stored state {pos} does not restore to the model ({})", reply.status));
        }
        // Two earlier points the client saw acknowledged.
        for _ in 0..2 {
            let earlier = p.points.range(..pos.txid.0).count();
            if earlier == 0 {
                break;
            }
            let (&txid, point) = p.points.range(..pos.txid.0).nth(rng.below(earlier as u64) as usize).expect("point");
            let reply = snapshot(txid);
            restores += 1;
            match (reply.status, error_code(&reply.body).as_str()) {
                (200, _) if matches_point(&reply.body, point) => {}
                (404, "ENOTXID") if retention => {}
                (status, code) => {
                    wrong.push(format!("{name}: TXID {txid} restored wrong or refused ({status} {code})"))
                }
            }
        }
    }
    (wrong, restores)
}

/// Points of the other databases restored by [`check_every_point`], at random, besides
/// their latest (the first database of each cluster has every point restored).
const SAMPLE_POINTS: usize = 64;

/// Opens the vault in-process (the server is stopped or killed) and restores the points the
/// primaries know: every one of the first database of each cluster, the latest and a random
/// sample of the others (restoring each of tens of thousands of points one by one would
/// take minutes). Each must be the model's, or, with retention on and for a point older
/// than the stored state, no longer a restore point. Returns what is wrong, the points
/// restored and the points retention removed.
fn check_every_point(
    vault_dir: &Path,
    primaries: &[Primary],
    retention: bool,
    rng: &mut Rng,
) -> (Vec<String>, u64, u64) {
    let config = VaultConfig { background_compaction: false, ..VaultConfig::default().retention_off() };
    let vault = Vault::open(vault_dir, config).expect("the vault opens after the kill");
    let (mut wrong, mut restored, mut expired) = (Vec::new(), 0, 0);
    for (i, p) in primaries.iter().enumerate() {
        let name = format!("{}/{}", p.cluster, p.db);
        let stored = vault.position(&p.cluster, &p.db).map(|(pos, _)| pos).unwrap_or_default();
        if p.model_at(stored).is_none() {
            wrong.push(format!("{name}: stored position {stored} is neither acknowledged nor in doubt"));
        }
        let every = i < CLUSTERS;
        let latest = p.points.keys().next_back().copied();
        let chosen: Vec<(&u64, &Point)> = p
            .points
            .iter()
            .filter(|&(&txid, _)| {
                every || Some(txid) == latest || rng.below(p.points.len() as u64) < SAMPLE_POINTS as u64
            })
            .collect();
        for (&txid, point) in chosen {
            let mut out = Vec::new();
            match vault.write_snapshot(&p.cluster, &p.db, Target::TxId(TxId(txid)), SnapshotFormat::Sqlite, &mut out) {
                Ok(_) if matches_point(&out, point) => restored += 1,
                Ok(_) => wrong.push(format!("{name}: TXID {txid} restores to other bytes than were acknowledged")),
                Err(Error::NoSuchPoint(_)) if retention && txid < stored.txid.0 => expired += 1,
                Err(e) => wrong.push(format!("{name}: TXID {txid}: {e}")),
            }
        }
    }
    vault.close().expect("close");
    (wrong, restored, expired)
}

/// Runs `ltxvault verify` over `vault_dir` (offline: nothing else may hold the vault) with
/// the soak's configuration and retention off (a verification deletes nothing), and fails
/// the test, with its report, unless it passes. Returns how long it took.
fn verify(vault_dir: &Path, config: &str, seed: u64, when: &str) -> Duration {
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ltxvault"))
        .args(["verify", "--config", config, "--retention", "off", "--seed", &seed.to_string(), "--data"])
        .arg(vault_dir)
        .output()
        .expect("run ltxvault verify");
    assert!(
        out.status.success(),
        "ltxvault verify failed {when} (seed {seed}):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

/// A copy of `vault_dir` at `image` (replacing the last one), taken while no process has
/// the vault open: the files exactly as the kill left them (the page cache is what the
/// next process reads, as it is for the restarted server).
fn crash_image(vault_dir: &Path, image: &Path) {
    if image.exists() {
        std::fs::remove_dir_all(image).expect("remove the last crash image");
    }
    let status = std::process::Command::new("cp").arg("-a").arg(vault_dir).arg(image).status().expect("cp -a");
    assert!(status.success(), "cp -a {} {}", vault_dir.display(), image.display());
}

fn assert_none(wrong: &[String], when: &str, seed: u64, serve_log: &Path) {
    if !wrong.is_empty() {
        let log = std::fs::read_to_string(serve_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "{when} (seed {seed}; LTXVAULT_SEED={seed} replays it):\n{}\n--- server log, last lines (newest first):\n{}",
            wrong.join("\n"),
            tail.join("\n")
        );
    }
}

#[test]
fn kill_9_under_load_loses_nothing_acknowledged() {
    let seed = seed("kill_9_under_load", 9);
    let kills: usize = std::env::var("LTXVAULT_SOAK_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let log = dir.path().join("serve.log");
    let config = dir.path().join("vault.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let config = config.to_str().expect("UTF-8 path").to_string();
    let args = |retention: bool| -> Vec<String> {
        vec!["--config".into(), config.clone(), "--retention".into(), if retention { "on" } else { "off" }.into()]
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut rng = Rng::new(seed);
    let scratch = dir.path().join("primaries");
    std::fs::create_dir(&scratch).expect("scratch dir");
    let mut primaries: Vec<Primary> = (0..PRIMARIES).map(|i| Primary::new(i, seed, &scratch)).collect();
    let started = Instant::now();
    let retention_from = kills / 2;
    let mut bytes_before_retention = 0;
    let (mut kills_in_recovery, mut restores, mut slowest_open) = (0, 0u64, Duration::ZERO);
    let mut slowest_first_ack = Duration::ZERO;
    let (mut exhaustive_restored, mut exhaustive_expired) = (0, 0);
    let image = dir.path().join("crash-image");
    let (mut verified, mut verify_time) = (0, Duration::ZERO);

    for kill in 0..kills {
        let retention = kill >= retention_from;
        if kill == retention_from {
            bytes_before_retention = primaries.iter().map(|p| p.tally.bytes).sum::<u64>();
        }
        if kill == retention_from && kill > 0 {
            // End of the first half: the server was just killed; every point must restore.
            let at = Instant::now();
            let (wrong, restored, _) = check_every_point(&vault_dir, &primaries, false, &mut rng);
            assert_none(&wrong, "after the first half, retention off", seed, &log);
            exhaustive_restored += restored;
            eprintln!("after {kill} kills: {restored} points restored in {:.1} s", at.elapsed().as_secs_f64());
        }
        let args = args(retention);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Now and then the kill comes while the server is still recovering.
        if kill > 0 && rng.chance(10) {
            let mut serve = Serve::spawn(&vault_dir, &log, &args);
            std::thread::sleep(Duration::from_millis(rng.below(60)));
            serve.kill();
            kills_in_recovery += 1;
        }
        let mut serve = Serve::spawn(&vault_dir, &log, &args);
        let opened = serve
            .wait_listening(Duration::from_secs(60))
            .unwrap_or_else(|why| panic!("after kill {kill} (seed {seed}) the vault did not open again: {why}"));
        slowest_open = slowest_open.max(opened);
        let (wrong, n) = check_after_restart(serve.addr, &primaries, &mut rng, retention);
        assert_none(&wrong, &format!("after kill {kill}"), seed, &log);
        restores += n;

        // Load from every primary, then SIGKILL at a random moment.
        let acked_before: u64 = primaries.iter().map(|p| p.tally.acked).sum();
        let run = Duration::from_millis(150 + rng.below(1_350));
        let addr = serve.addr;
        primaries = runtime.block_on(async {
            let stop = Arc::new(AtomicBool::new(false));
            let acks = Arc::new(AtomicU64::new(0));
            let tasks: Vec<_> =
                primaries.drain(..).map(|p| tokio::spawn(p.run(addr, stop.clone(), acks.clone()))).collect();
            // The clients must get going again: on a busy machine the first acknowledgement
            // after a restart can take longer than a short run, so the kill waits for one
            // (a server that acknowledges nothing for 20 s fails the test below).
            let begun = tokio::time::Instant::now();
            let mut first_ack = None;
            while begun.elapsed() < run || (first_ack.is_none() && begun.elapsed() < Duration::from_secs(20)) {
                if first_ack.is_none() && acks.load(Ordering::SeqCst) > 0 {
                    first_ack = Some(begun.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            slowest_first_ack = slowest_first_ack.max(first_ack.unwrap_or(begun.elapsed()));
            serve.kill();
            stop.store(true, Ordering::SeqCst);
            let mut back = Vec::with_capacity(tasks.len());
            for task in tasks {
                back.push(task.await.expect("primary task"));
            }
            back
        });
        let wrong: Vec<String> = primaries.iter_mut().flat_map(|p| p.violations.drain(..)).collect();
        assert_none(&wrong, &format!("during the load before kill {kill}"), seed, &log);
        crash_image(&vault_dir, &image);
        verify_time += verify(&image, &config, seed ^ kill as u64, &format!("on the vault as kill {kill} left it"));
        verified += 1;
        let acked_after: u64 = primaries.iter().map(|p| p.tally.acked).sum();
        assert!(
            acked_after > acked_before,
            "run {kill} (seed {seed}): no upload was acknowledged within 20 s; the clients did not resume"
        );
        if kill % 10 == 9 {
            eprintln!(
                "{} kills in {:.0} s: {acked_after} uploads acknowledged, slowest reopen {} ms",
                kill + 1,
                started.elapsed().as_secs_f64(),
                slowest_open.as_millis()
            );
        }
    }

    // A last restart, its check, a clean stop, and every point once more.
    let retention = kills > retention_from;
    let args = args(retention);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut serve = Serve::start(&vault_dir, &log, &args);
    let (wrong, n) = check_after_restart(serve.addr, &primaries, &mut rng, retention);
    assert_none(&wrong, "after the last kill", seed, &log);
    restores += n;
    assert!(serve.stop().success(), "the server stops cleanly after the soak:\n{}", serve.log_tail(20));
    let (wrong, restored, expired) = check_every_point(&vault_dir, &primaries, retention, &mut rng);
    assert_none(&wrong, "at the end", seed, &log);
    exhaustive_restored += restored;
    exhaustive_expired += expired;
    verify_time += verify(&vault_dir, &config, seed, "after the clean stop");
    verified += 1;

    // Nothing the server logged is an error: a kill may cut off requests and passes, but a
    // restarted server finds nothing wrong (a compaction refusing a level that retention
    // had emptied once did, every second, for good).
    let errors: Vec<String> = std::fs::read_to_string(&log)
        .expect("server log")
        .lines()
        .filter(|line| line.contains("ERROR"))
        .map(str::to_string)
        .collect();
    assert!(errors.is_empty(), "the server logged errors (seed {seed}):\n{}", errors.join("\n"));

    // Retention kept up through the kills: the log holds what the last seconds need, not
    // the history (a retention pass killed half way, or log records loaded again at a
    // reopen after their L1 files had gone, once pinned every segment for good).
    let log_bytes: u64 = std::fs::read_dir(vault_dir.join("l0"))
        .expect("list the log")
        .map(|e| e.expect("entry").metadata().expect("stat").len())
        .sum();
    let bytes_with_retention = primaries.iter().map(|p| p.tally.bytes).sum::<u64>() - bytes_before_retention;
    if retention {
        assert!(
            log_bytes <= bytes_with_retention / 2,
            "the log holds {log_bytes} bytes after {bytes_with_retention} bytes were uploaded with retention on: \
             retention did not keep up (seed {seed})"
        );
    }

    let mut tally = Tally::default();
    for p in &primaries {
        tally.add(&p.tally);
    }
    eprintln!(
        "kill -9 soak (seed {seed}): {kills} kills under load (+{kills_in_recovery} during recovery) in {:.0} s; \
         {} uploads acknowledged, {} cut off by a kill ({} landed, {} did not), {} GET /pos resyncs, {} EPOSMISMATCH \
         resyncs; {restores} restores checked after restarts, {exhaustive_restored} acknowledged points restored \
         in-process, {exhaustive_expired} removed by retention; log {} MiB at the end; slowest reopen {} ms, \
         slowest first acknowledgement after a restart {} ms; {verified} runs of ltxvault verify passed ({:.1} s); \
         nothing lost",
        started.elapsed().as_secs_f64(),
        tally.acked,
        tally.cut_off,
        tally.landed,
        tally.not_landed,
        tally.resyncs,
        tally.pos_mismatch,
        log_bytes >> 20,
        slowest_open.as_millis(),
        slowest_first_ack.as_millis(),
        verify_time.as_secs_f64()
    );
}
