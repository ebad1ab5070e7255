//! Restore drills: proof that the backups restore. A drill restores a database at several
//! points into scratch files under `<vault>/tmp/` and checks each result twice, once
//! against the database checksum the vault recorded for the point (every restore does
//! that) and once with SQLite's own `PRAGMA integrity_check`, which reads every page as
//! SQLite would:
//!
//! ```text
//!  points: the latest, and one at random (seeded) from each level's pieces, L0..L3
//!  for each point:  gate (shared) ─► plan ─► merge into tmp/.drill-N ─► checksum = recorded?
//!                   gate released ─► SQLite opens it immutable ─► integrity_check = "ok"?
//!  result: when, how long, the seed, every point with ok or why not  ─► kept per database
//! ```
//!
//! The vault keeps the last result per database in memory and in `<vault>/drills.json`, a
//! checksummed JSON file ([`crate::sealed`]) replaced atomically (temporary file, fsync,
//! rename, directory fsync) after every drill, so `ltxvault info` shows it while no server
//! runs:
//!
//! ```text
//! {"format": "ltxvault-drills-v1", "xxh3": "<16 hex of the compact JSON of data>",
//!  "data": {"databases": [{"cluster": "c", "db": "d", "result": {...DrillResult...}}]}}
//! ```
//!
//! One drill runs at a time per vault, whoever asks (`ltxvault verify`, the schedule). The
//! schedule (a thread of a serving vault, see [`drill_loop`]) drills each database every
//! `drill.every` (a day by default), give or take a tenth so that databases added together
//! drift apart; a database never drilled gets its first drill at a random time within the
//! first interval, one overdue (after a restart) within a tenth of it. A drill reads like a
//! restore (it holds the restore gate only while it merges), so ingest never waits on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Vault, write_scratch};
use crate::catalog::{Catalog, DbKey, Run, lock};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::io::Fs;
use crate::ltx::{Checksum, TxId};
use crate::restore::Target;
use crate::segment::Segments;

/// The file that keeps the last drill of every database.
pub const DRILLS_FILE: &str = "drills.json";
const FORMAT: &str = "ltxvault-drills-v1";
/// Largest drills file read; one entry takes well under 4 KiB.
const MAX_FILE_BYTES: u64 = 64 << 20;
/// Longest detail kept for a point or a result.
const MAX_DETAIL_BYTES: usize = 1024;

/// Why a point was drilled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "level")]
pub enum PointChoice {
    /// The database's latest point.
    Latest,
    /// A point picked at random among the pieces of this level (0 = the log).
    Level(u8),
}

impl std::fmt::Display for PointChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointChoice::Latest => f.write_str("latest"),
            PointChoice::Level(level) => write!(f, "random L{level}"),
        }
    }
}

/// One restored point of a drill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillPoint {
    /// Why this point.
    pub choice: PointChoice,
    /// Its TXID.
    #[serde(with = "hex_txid")]
    pub txid: TxId,
    /// Its timestamp (ms).
    pub timestamp_ms: i64,
    /// The database checksum recorded for it (what the restore was checked against).
    #[serde(with = "hex_checksum")]
    pub checksum: Checksum,
    /// Pages restored.
    pub commit: u32,
    /// Whether the restore matched the checksum and SQLite found the file intact.
    pub ok: bool,
    /// Why not, when not.
    pub detail: String,
}

/// The outcome of one drill of one database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillResult {
    /// When it started (ms since the epoch, the vault's clock).
    pub started_ms: i64,
    /// How long it took (ms).
    pub duration_ms: u64,
    /// The seed of the random choice of points: `ltxvault verify --seed N --cluster C --db D`
    /// picks the same points while the history is unchanged.
    pub seed: u64,
    /// Every point drilled, in order.
    pub points: Vec<DrillPoint>,
    /// Whether every point restored and passed both checks.
    pub ok: bool,
    /// A line for people: the first failure, or what was proved.
    pub detail: String,
}

/// The drills of a vault: the last result per database, one drill at a time.
pub(crate) struct Drills {
    pub catalog: Arc<Catalog>,
    pub segments: Arc<Segments>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The vault's file system (and its fault plan, in tests).
    pub fs: Fs,
    pub gate: Arc<RwLock<()>>,
    pub clock: Arc<dyn Clock>,
    pub vault_dir: PathBuf,
    pub results: Mutex<BTreeMap<DbKey, DrillResult>>,
    /// Held for the whole of a drill: one at a time.
    pub running: Mutex<()>,
    /// Held while the file is written. Never held while waiting for the restore gate, so
    /// a deletion (which holds the gate) can forget its database's result.
    pub file_lock: Mutex<()>,
    /// Numbers the drills' scratch files.
    pub scratch_seq: AtomicU64,
}

impl Drills {
    /// Drills `key` with the points `seed` picks. `Ok(None)` when `stopping` said to stop
    /// between two points (nothing is recorded); [`Error::NotFound`] for a database the
    /// vault does not have. Every other failure is a failed point of the result, which is
    /// recorded (memory and file) before it is returned.
    pub fn drill(
        &self,
        key: &DbKey,
        seed: u64,
        stopping: &dyn Fn() -> bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Option<DrillResult>> {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let started_ms = self.clock.now_ms();
        let points = self.choose_points(key, seed)?;
        let mut done = Vec::with_capacity(points.len());
        for (i, (choice, txid)) in points.iter().enumerate() {
            if stopping() {
                return Ok(None);
            }
            progress(i as u64, points.len() as u64);
            match self.drill_point(key, *choice, *txid) {
                Ok(point) => done.push(point),
                // Deleted while we drilled: nothing to record.
                Err(e @ Error::NotFound { .. }) => return Err(e),
                Err(e) => {
                    if is_damage(&e) {
                        self.metrics.corruption_found("drill");
                    }
                    done.push(DrillPoint {
                        choice: *choice,
                        txid: *txid,
                        timestamp_ms: 0,
                        checksum: Checksum::NONE,
                        commit: 0,
                        ok: false,
                        detail: bounded(format!("restore failed: {e}")),
                    });
                }
            }
        }
        progress(points.len() as u64, points.len() as u64);
        let failed: Vec<&DrillPoint> = done.iter().filter(|p| !p.ok).collect();
        let detail = match failed.first() {
            None => format!("{} point(s) restored: checksums match the recorded ones, integrity_check ok", done.len()),
            Some(first) => bounded(format!(
                "{} of {} point(s) failed; TXID {}: {}",
                failed.len(),
                done.len(),
                first.txid,
                first.detail
            )),
        };
        let result = DrillResult {
            started_ms,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            seed,
            ok: failed.is_empty(),
            points: done,
            detail,
        };
        if result.ok {
            tracing::info!(cluster = %key.cluster, db = %key.db, points = result.points.len(), duration_ms = result.duration_ms, seed, "restore drill passed");
        } else {
            tracing::error!(cluster = %key.cluster, db = %key.db, seed, detail = %result.detail, "restore drill FAILED");
        }
        // A database deleted meanwhile has forgotten its result; do not bring it back.
        if !self.is_live(key) {
            return Err(Error::NotFound { cluster: key.cluster.clone(), db: key.db.clone() });
        }
        self.results.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), result.clone());
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "could not write the drill results file; the result is kept in memory");
        }
        Ok(Some(result))
    }

    /// The latest point, then one point picked with `seed` from each level that has
    /// pieces; a TXID picked twice is drilled once.
    fn choose_points(&self, key: &DbKey, seed: u64) -> Result<Vec<(PointChoice, TxId)>> {
        let not_found = || Error::NotFound { cluster: key.cluster.clone(), db: key.db.clone() };
        let state = self.catalog.get(key).ok_or_else(not_found)?;
        let levels: Vec<Vec<TxId>> = {
            let state = lock(&state);
            if state.deleted || state.durable.txid == TxId::ZERO {
                return Err(not_found());
            }
            std::iter::once(&state.runs)
                .chain(state.levels.iter())
                .map(|pieces| pieces.iter().map(|r: &Run| r.max_txid).collect())
                .collect()
        };
        let latest = levels.iter().flatten().max().copied().ok_or_else(not_found)?;
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut points = vec![(PointChoice::Latest, latest)];
        for (level, pieces) in levels.iter().enumerate() {
            if pieces.is_empty() {
                continue;
            }
            let txid = pieces[rng.usize(..pieces.len())];
            if points.iter().all(|(_, t)| *t != txid) {
                points.push((PointChoice::Level(level as u8), txid));
            }
        }
        Ok(points)
    }

    /// Restores one point into a scratch file (checked against its recorded checksum) and
    /// runs SQLite's integrity check on it. `Err` when the restore fails; a restore that
    /// SQLite finds damaged is a point that is not ok.
    fn drill_point(&self, key: &DbKey, choice: PointChoice, txid: TxId) -> Result<DrillPoint> {
        let n = self.scratch_seq.fetch_add(1, Ordering::Relaxed);
        let scratch = self.fs.temp_file(&self.vault_dir.join("tmp").join(format!("drill-{n}")))?;
        let plan = {
            // Retention waits until this restore has read its inputs.
            let _reading = self.gate.read().unwrap_or_else(|e| e.into_inner());
            let (plan, page_size) = super::plan_in(&self.catalog, &key.cluster, &key.db, Target::TxId(txid))?;
            write_scratch(&self.segments, &plan, page_size, &scratch)?;
            plan
        };
        let checked = if plan.commit == 0 { Ok(()) } else { integrity_check(scratch.path()) };
        Ok(DrillPoint {
            choice,
            txid: plan.txid,
            timestamp_ms: plan.timestamp_ms,
            checksum: plan.checksum,
            commit: plan.commit,
            ok: checked.is_ok(),
            detail: checked.err().map(bounded).unwrap_or_default(),
        })
    }

    /// The last result of every database the vault has.
    pub fn results(&self) -> BTreeMap<DbKey, DrillResult> {
        self.results.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets a deleted database's result.
    pub fn forget(&self, key: &DbKey) {
        let removed = self.results.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        if removed.is_some()
            && let Err(e) = self.save()
        {
            tracing::error!(error = %e, "could not write the drill results file");
        }
    }

    fn path(&self) -> PathBuf {
        self.vault_dir.join(DRILLS_FILE)
    }

    fn is_live(&self, key: &DbKey) -> bool {
        self.catalog.get(key).is_some_and(|s| !lock(&s).deleted)
    }

    /// Writes the results of the databases the vault still has.
    fn save(&self) -> Result<()> {
        let _writing = self.file_lock.lock().unwrap_or_else(|e| e.into_inner());
        let results = self.results();
        let entries: Vec<StoredEntry> = results
            .into_iter()
            .filter(|(key, _)| self.is_live(key))
            .map(|(key, result)| StoredEntry { cluster: key.cluster, db: key.db, result })
            .collect();
        write_file(&self.fs, &self.path(), &Stored { databases: entries })
    }
}

impl Vault {
    /// Drills a database now, in the calling thread: restores its latest point and one
    /// point picked with `seed` from each level into scratch files, checks each against
    /// its recorded checksum and with SQLite's `PRAGMA integrity_check`, and records the
    /// result (see [`Vault::drill_results`]). Waits for a drill already running. A failed
    /// restore is a failed point of the result, not an error; [`Error::NotFound`] for a
    /// database the vault does not have.
    pub fn drill(&self, cluster: &str, db: &str, seed: u64) -> Result<DrillResult> {
        self.drill_with_progress(cluster, db, seed, &mut |_, _| {})
    }

    /// [`Vault::drill`], telling `progress` (points done, points) as it goes.
    pub fn drill_with_progress(
        &self,
        cluster: &str,
        db: &str,
        seed: u64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<DrillResult> {
        if let Some(reason) = self.poison.reason() {
            return Err(Error::Poisoned(reason));
        }
        let key = DbKey { cluster: cluster.to_string(), db: db.to_string() };
        let result = self.drills.drill(&key, seed, &|| false, progress)?;
        result.ok_or_else(|| Error::Invalid("the drill was stopped".into()))
    }

    /// The last drill of every database the vault has (from this process, or from the
    /// drills file of an earlier one), sorted by cluster and name.
    pub fn drill_results(&self) -> Vec<(String, String, DrillResult)> {
        self.drills
            .results()
            .into_iter()
            .filter(|(key, _)| self.position(&key.cluster, &key.db).is_some())
            .map(|(key, result)| (key.cluster, key.db, result))
            .collect()
    }
}

/// Whether an error says stored bytes failed a check (rather than, say, a full disk).
fn is_damage(error: &Error) -> bool {
    match error {
        Error::Corrupt { .. } | Error::Format(_) => true,
        Error::InFile { source, .. } => is_damage(source),
        _ => false,
    }
}

/// A fresh seed for a drill, from the operating system.
pub fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No entropy source: the time is random enough to pick restore points.
        return std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    }
    u64::from_le_bytes(bytes)
}

/// When a database's next drill is due (ms): `every_ms` after `last_started_ms`, give or
/// take a tenth; for a database never drilled, at a random time within the first interval;
/// for one overdue, within a tenth of an interval from now.
pub fn next_due(last_started_ms: Option<i64>, now_ms: i64, every_ms: i64, rng: &mut fastrand::Rng) -> i64 {
    let every_ms = every_ms.max(1);
    let tenth = (every_ms / 10).max(1);
    match last_started_ms {
        None => now_ms + rng.i64(0..every_ms),
        Some(last) => {
            let due = last + every_ms - tenth + rng.i64(0..2 * tenth);
            if due < now_ms { now_ms + rng.i64(0..tenth) } else { due }
        }
    }
}

/// The schedule's thread: drills the database whose drill is due first, one at a time,
/// until stopped (checked between points, and while idle). Skips while the vault is
/// poisoned.
pub(crate) fn drill_loop(
    drills: &Drills,
    every: Duration,
    stop: &(Mutex<bool>, Condvar),
    poison: &crate::ingest::Poison,
) {
    let (flag, wake) = stop;
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1);
    let mut rng = fastrand::Rng::with_seed(random_seed());
    let mut due: BTreeMap<DbKey, i64> = BTreeMap::new();
    let stopping = || *flag.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = drills.clock.now_ms();
        let live: Vec<DbKey> = drills
            .catalog
            .keys()
            .into_iter()
            .filter(|key| {
                drills.catalog.get(key).is_some_and(|s| {
                    let s = lock(&s);
                    !s.deleted && s.durable.txid != TxId::ZERO
                })
            })
            .collect();
        due.retain(|key, _| live.binary_search(key).is_ok());
        let last = drills.results();
        for key in live {
            due.entry(key.clone())
                .or_insert_with(|| next_due(last.get(&key).map(|r| r.started_ms), now, every_ms, &mut rng));
        }
        let next = due.iter().min_by_key(|(_, at)| **at).map(|(key, at)| (key.clone(), *at));
        if let Some((key, at)) = &next
            && *at <= now
            && poison.reason().is_none()
        {
            let seed = rng.u64(..);
            match drills.drill(key, seed, &stopping, &mut |_, _| {}) {
                Ok(Some(result)) => {
                    due.insert(
                        key.clone(),
                        next_due(Some(result.started_ms), drills.clock.now_ms(), every_ms, &mut rng),
                    );
                }
                Ok(None) => return,
                Err(e) => {
                    if !matches!(e, Error::NotFound { .. }) {
                        tracing::error!(cluster = %key.cluster, db = %key.db, error = %e, "restore drill could not run");
                    }
                    due.remove(key);
                }
            }
            continue;
        }
        // Sleep until the next drill is due, but look again at least every second: new
        // databases, and a clock that tests move by hand.
        let wait_ms = next.map_or(1_000, |(_, at)| (at - now).clamp(10, 1_000));
        let stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
        let (stopped, _) = wake
            .wait_timeout(stopped, Duration::from_millis(wait_ms.unsigned_abs()))
            .unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
    }
}

/// Runs SQLite's `PRAGMA integrity_check` on the database file at `path`, opened
/// read-only and immutable (no locks, no `-wal` or `-shm` files: the scratch file is
/// ours alone and a WAL-mode header needs no WAL here). `Err` says what SQLite found.
pub fn integrity_check(path: &Path) -> std::result::Result<(), String> {
    use rusqlite::OpenFlags;
    let uri = format!("file:{}?immutable=1", uri_path(path));
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection =
        rusqlite::Connection::open_with_flags(&uri, flags).map_err(|e| format!("SQLite cannot open it: {e}"))?;
    let mut statement =
        connection.prepare("PRAGMA integrity_check(20)").map_err(|e| format!("integrity_check failed: {e}"))?;
    let rows = statement
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
        .map_err(|e| format!("integrity_check failed: {e}"))?;
    if rows.len() == 1 && rows[0] == "ok" { Ok(()) } else { Err(format!("integrity_check: {}", rows.join("; "))) }
}

/// `path` for a `file:` URI: every byte but unreserved ones and `/` percent-encoded (SQLite
/// decodes `%HH` in the path).
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` cut to [`MAX_DETAIL_BYTES`] (at a character boundary).
fn bounded(text: String) -> String {
    if text.len() <= MAX_DETAIL_BYTES {
        return text;
    }
    let mut end = MAX_DETAIL_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    databases: Vec<StoredEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredEntry {
    cluster: String,
    db: String,
    result: DrillResult,
}

/// Reads the drills file of `vault_dir`: nothing when there is none; an error naming the
/// file when it fails a check.
pub fn load(vault_dir: &Path) -> Result<BTreeMap<DbKey, DrillResult>> {
    let path = vault_dir.join(DRILLS_FILE);
    let corrupt = |reason: String| Error::Corrupt { file: path.clone(), offset: 0, reason };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_FILE_BYTES + 1), &mut bytes)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(corrupt(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let stored: Stored = crate::sealed::unseal(FORMAT, &bytes).map_err(corrupt)?;
    Ok(stored.databases.into_iter().map(|e| (DbKey { cluster: e.cluster, db: e.db }, e.result)).collect())
}

fn write_file(fs: &Fs, path: &Path, stored: &Stored) -> Result<()> {
    let bytes = crate::sealed::seal(FORMAT, stored)?;
    let temp = fs.temp_file(path)?;
    temp.write_all_at(&bytes, 0)?;
    temp.commit()
}

/// TXIDs as 16 hex digits in the drills file, as everywhere else.
mod hex_txid {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ltx::TxId;

    pub fn serialize<S: Serializer>(txid: &TxId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&txid.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TxId, D::Error> {
        let text = String::deserialize(deserializer)?;
        TxId::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("bad TXID {text:?}")))
    }
}

/// Checksums as 16 hex digits in the drills file.
mod hex_checksum {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ltx::Checksum;

    pub fn serialize<S: Serializer>(checksum: &Checksum, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&checksum.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Checksum, D::Error> {
        let text = String::deserialize(deserializer)?;
        Checksum::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("bad checksum {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(ok: bool) -> DrillResult {
        DrillResult {
            started_ms: 1_800_000_000_000,
            duration_ms: 12,
            seed: u64::MAX - 3,
            points: vec![
                DrillPoint {
                    choice: PointChoice::Latest,
                    txid: TxId(300),
                    timestamp_ms: 1_799_000_000_000,
                    checksum: Checksum(Checksum::FLAG | 77),
                    commit: 9,
                    ok: true,
                    detail: String::new(),
                },
                DrillPoint {
                    choice: PointChoice::Level(2),
                    txid: TxId(120),
                    timestamp_ms: 1_798_000_000_000,
                    checksum: Checksum(Checksum::FLAG | 5),
                    commit: 7,
                    ok,
                    detail: if ok { String::new() } else { "integrity_check: page 3 …".into() },
                },
            ],
            ok,
            detail: "two points".into(),
        }
    }

    #[test]
    fn the_file_round_trips_and_refuses_a_changed_byte() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty(), "no file: no results");
        let stored = Stored {
            databases: vec![
                StoredEntry { cluster: "c".into(), db: "a.db".into(), result: result(true) },
                StoredEntry { cluster: "c".into(), db: "b.db".into(), result: result(false) },
            ],
        };
        write_file(&Fs::default(), &dir.path().join(DRILLS_FILE), &stored).unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[&DbKey { cluster: "c".into(), db: "b.db".into() }], result(false));

        let path = dir.path().join(DRILLS_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = text.replacen("\"ok\": false", "\"ok\": true ", 1);
        assert_ne!(changed, text);
        std::fs::write(&path, changed).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("xxh3") && err.contains(DRILLS_FILE), "{err}");
        std::fs::write(&path, "{").unwrap();
        assert!(load(dir.path()).unwrap_err().to_string().contains("not a valid file"));
    }

    #[test]
    fn drills_fall_due_about_every_interval() {
        let mut rng = fastrand::Rng::with_seed(7);
        let (now, every) = (1_000_000, 86_400_000);
        for _ in 0..1000 {
            let first = next_due(None, now, every, &mut rng);
            assert!((now..now + every).contains(&first), "{first}");
            let next = next_due(Some(now), now, every, &mut rng);
            assert!((now + every - every / 10..now + every + every / 10).contains(&next), "{next}");
            let overdue = next_due(Some(now - 3 * every), now, every, &mut rng);
            assert!((now..now + every / 10).contains(&overdue), "{overdue}");
        }
        // Jittered: not every database the same.
        let spread: std::collections::BTreeSet<i64> =
            (0..50).map(|_| next_due(Some(now), now, every, &mut rng)).collect();
        assert!(spread.len() > 40);
    }

    #[test]
    fn paths_become_file_uris() {
        assert_eq!(uri_path(Path::new("/v/tmp/.drill-1.tmp-9")), "/v/tmp/.drill-1.tmp-9");
        assert_eq!(uri_path(Path::new("a b/x?y#z%")), "a%20b/x%3Fy%23z%25");
    }

    #[test]
    fn integrity_check_passes_a_good_database_and_names_the_damage_in_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd name?.db");
        {
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE t(x INTEGER PRIMARY KEY, y TEXT); CREATE INDEX ty ON t(y);",
            )
            .unwrap();
            for i in 0..500 {
                db.execute("INSERT INTO t(y) VALUES (?1)", [format!("row {i:05} {}", "x".repeat(100))]).unwrap();
            }
            db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        }
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        let before = files();
        assert_eq!(integrity_check(&path), Ok(()));
        assert_eq!(files(), before, "an immutable open leaves no -wal or -shm behind");
        // An index page whose entries are scrambled: the checksum of a restore would not
        // see this if the vault had recorded it so, SQLite does.
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096 * 3;
        for b in &mut bytes[page + 200..page + 1200] {
            *b = b.wrapping_mul(31).wrapping_add(7);
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = integrity_check(&path).unwrap_err();
        assert!(err.contains("integrity_check") || err.contains("malformed"), "{err}");
        std::fs::write(&path, b"not a database at all, just some text that goes on").unwrap();
        assert!(integrity_check(&path).is_err());
    }
}
