//! The engine's one face: open a vault directory, ingest uploads, read positions, restore,
//! and the operations built on them (`ops`: snapshots, restore in place, SQLite uploads,
//! clones; `delete`: deleting a database; `verify`: checking every stored byte; `drill`:
//! restore drills and their schedule). The server and the CLI call this and never reach
//! past it.
//!
//! ```text
//! <dir>/LOCK                      exclusive lock; names the holder (pid, command, endpoint)
//! <dir>/l0/<segment id>.seg       the shared L0 log (see `segment`)
//! <dir>/sums/<hash>.sums          page-checksum map per database (see `catalog::pagesums`)
//! <dir>/levels/<hash>/            level files and images per database (see `compact`)
//! <dir>/tmp/                      scratch files of running operations; emptied at open
//! <dir>/drills.json               the last restore drill of every database (see `drill`)
//! ```

mod delete;
pub mod drill;
mod observe;
mod ops;
pub mod verify;

pub use drill::{DrillPoint, DrillResult, PointChoice};
pub use observe::Health;
pub use ops::{CloneReport, InPlace, Point, SnapshotFormat, SnapshotInfo};
pub use verify::{Problem, StorageCheck, StorageReport, Subject};

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{Receiver, SendTimeoutError, Sender};
use xxhash_rust::xxh3::Xxh3;

use crate::catalog::pagesums::{CleanPoint, PageSums};
use crate::catalog::{Catalog, DbKey, DbState, Position, Run, Source, lock, stored_bytes};
use crate::clock::{Clock, SystemClock};
use crate::compact::{
    Compactor, DEFAULT_GRACE_MS, DEFAULT_LEVEL_INTERVALS_MS, DEFAULT_RETENTION_MS, load_level_file,
    parse_level_file_name, read_db_name,
};
use crate::error::{Error, Result};
use crate::ingest::{
    DurableEnd, LogWriter, Payload, Poison, WriteRequest, WriterLimits, Written, apply_to_sums, checksum_after,
    payload_checksum,
};
use crate::io::engine::{IoChoice, IoEngine, open_engine};
use crate::io::{FaultPlan, Fs, MappedFile, TempFile};
use crate::ltx::{Checksum, Decoder, Header, PageNo, Trailer, TxId, database_file_checksum, page_checksum};
use crate::metrics::{Metrics, RestoreKind};
use crate::names;
use crate::quota::{ClusterUsage, Quotas};
use crate::restore::{self, Plan, Target};
use crate::segment::format::{KIND_LTX, KIND_TOMBSTONE, RecordHeader};
use crate::segment::{Location, Segments, recover};

/// Settings of a vault.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// I/O engine for the log writer.
    pub io: IoChoice,
    /// Size of a log segment file.
    pub segment_bytes: u64,
    /// Uploads that may wait in the ingest queue.
    pub queue_capacity: usize,
    /// Most bytes one group commit writes.
    pub max_batch_bytes: u64,
    /// Largest upload accepted.
    pub max_upload_bytes: u64,
    /// How long an upload waits for room in a full queue before `Busy`.
    pub enqueue_timeout: Duration,
    /// Window of each compaction level in ms: L1, L2, L3 (an L3 window is the span one
    /// database image closes, a day by default).
    pub level_intervals_ms: Vec<i64>,
    /// How long each level keeps its restore points, in ms: L0, L1, L2, L3. `None` keeps a
    /// level forever. See `retention` for what is deleted and when.
    pub retention_ms: Vec<Option<i64>>,
    /// Time between two retention passes of the background thread.
    pub retention_every: Duration,
    /// How long past a window's end a quiet database's window stays open.
    pub compaction_grace_ms: i64,
    /// Run the background threads of a serving vault: one compactor per level, retention,
    /// and the restore drill schedule (when `drill_every` is set). Off, each runs only
    /// when called ([`Vault::compact_now`], [`Vault::retain_now`], [`Vault::drill`]).
    pub background_compaction: bool,
    /// Tests only: asked before every durable file-system operation of this vault whether
    /// it fails (see `io::fs`). `None` in production.
    pub faults: Option<Arc<dyn FaultPlan>>,
    /// Free space the vault's file system must keep for the vault to call itself ready
    /// ([`Vault::health`], `GET /readyz`). Writes are not refused below it; it is the
    /// alarm before the disk fills.
    pub min_free_bytes: u64,
    /// How often the schedule drills each database (give or take a tenth); `None` turns
    /// the schedule off. See `drill`.
    pub drill_every: Option<Duration>,
    /// How many bytes each cluster may store; uploads past it are refused (see `quota`).
    pub quotas: Quotas,
}

impl VaultConfig {
    /// Keeps every level forever (`--retention off`).
    pub fn retention_off(mut self) -> Self {
        self.retention_ms = vec![None; DEFAULT_RETENTION_MS.len()];
        self
    }
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            io: IoChoice::Auto,
            segment_bytes: 64 << 20,
            queue_capacity: 1024,
            max_batch_bytes: 16 << 20,
            max_upload_bytes: 1 << 30,
            enqueue_timeout: Duration::from_secs(10),
            level_intervals_ms: DEFAULT_LEVEL_INTERVALS_MS.to_vec(),
            retention_ms: DEFAULT_RETENTION_MS.to_vec(),
            retention_every: Duration::from_secs(60),
            compaction_grace_ms: DEFAULT_GRACE_MS,
            background_compaction: true,
            faults: None,
            min_free_bytes: 1 << 30,
            drill_every: Some(Duration::from_secs(86_400)),
            quotas: Quotas::default(),
        }
    }
}

/// What an accepted upload returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The database's new position.
    pub position: Position,
    /// The highest TXID durable in the vault for this database.
    pub hwm: TxId,
}

/// What the vault knows about one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbInfo {
    /// Cluster name.
    pub cluster: String,
    /// Database name.
    pub db: String,
    /// Durable position.
    pub position: Position,
    /// High-water mark.
    pub hwm: TxId,
    /// Page size.
    pub page_size: u32,
    /// Size in pages at the position.
    pub commit: u32,
    /// Stored runs (uploads) and their payload bytes.
    pub runs: usize,
    /// Payload bytes stored.
    pub bytes: u64,
    /// Oldest and newest restorable TXIDs with their timestamps (ms).
    pub oldest: Option<(TxId, i64)>,
    /// See `oldest`.
    pub newest: Option<(TxId, i64)>,
    /// What each level holds: L0, L1, L2, L3.
    pub levels: Vec<LevelInfo>,
    /// The last restore drill, if the database has had one.
    pub drill: Option<DrillResult>,
}

/// What one level holds for a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelInfo {
    /// 0 for the log, then 1, 2, 3.
    pub level: u8,
    /// Stored pieces (uploads, level files or images).
    pub pieces: usize,
    /// Bytes on disk.
    pub bytes: u64,
    /// Oldest restore point this level gives: TXID and timestamp (ms).
    pub oldest: Option<(TxId, i64)>,
    /// Newest restore point this level gives.
    pub newest: Option<(TxId, i64)>,
}

/// Result of a restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreSummary {
    /// The position restored.
    pub position: Position,
    /// Pages in the result.
    pub commit: u32,
    /// Page size.
    pub page_size: u32,
    /// Runs read.
    pub inputs: usize,
}

/// An open vault. Dropping it stops the writer after it has written what was queued.
pub struct Vault {
    dir: PathBuf,
    config: VaultConfig,
    catalog: Arc<Catalog>,
    segments: Arc<Segments>,
    fs: Fs,
    compactor: Arc<Compactor>,
    compactor_threads: Vec<JoinHandle<()>>,
    /// Restores hold it shared while they read; retention holds it to delete.
    gate: Arc<RwLock<()>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    queue: Option<Sender<WriteRequest>>,
    writer: Option<JoinHandle<()>>,
    poison: Arc<Poison>,
    clock: Arc<dyn Clock>,
    engine_note: String,
    /// Numbers the scratch files under `<dir>/tmp/`.
    scratch_seq: AtomicU64,
    metrics: Arc<Metrics>,
    /// Where the durable log ends (moved by the writer).
    durable_end: Arc<DurableEnd>,
    /// Restore drills: the last result per database, one at a time.
    drills: Arc<drill::Drills>,
    /// `<dir>/LOCK`, locked while the vault is open; says who holds it (see [`LockHolder`]).
    lock: File,
}

impl Vault {
    /// Opens (creating if needed) the vault in `dir` with the system clock.
    pub fn open(dir: &Path, config: VaultConfig) -> Result<Vault> {
        Vault::open_with_clock(dir, config, Arc::new(SystemClock))
    }

    /// Opens the vault with an injected clock.
    pub fn open_with_clock(dir: &Path, config: VaultConfig, clock: Arc<dyn Clock>) -> Result<Vault> {
        Vault::open_with(dir, config, clock, None)
    }

    /// Opens the vault with an injected clock and, optionally, an I/O engine for the log
    /// writer instead of the one `config.io` selects (tests use this to inject faults).
    pub fn open_with(
        dir: &Path,
        config: VaultConfig,
        clock: Arc<dyn Clock>,
        engine: Option<Box<dyn IoEngine>>,
    ) -> Result<Vault> {
        let fs = Fs::new(config.faults.clone());
        fs.make_dir(dir)?;
        warn_if_shared(dir);
        let lock_file = take_lock(&fs, dir)?;
        let log_dir = dir.join("l0");
        let sums_dir = dir.join("sums");
        fs.make_dir(&log_dir)?;
        fs.make_dir(&sums_dir)?;

        // Scratch files of operations a crash or a close interrupted.
        let scratch_dir = dir.join("tmp");
        fs.remove_dir_all(&scratch_dir)?;
        fs.make_dir(&scratch_dir)?;

        let metrics = Arc::new(Metrics::new(config.level_intervals_ms.len()));
        let recovered = recover(&fs, &log_dir)?;
        let segments = Arc::new(Segments::new(&fs, &log_dir));
        let catalog = Arc::new(Catalog::default());
        let levels_dir = dir.join("levels");
        fs.make_dir(&levels_dir)?;
        let tombstones = delete::recover_tombstones(&fs, dir, &recovered.records, &catalog)?;
        load_levels(&fs, &levels_dir, &catalog, &sums_dir, &metrics)?;
        for (i, found) in recovered.records.iter().enumerate() {
            let h = &found.header;
            let key = DbKey { cluster: h.cluster.clone(), db: h.db.clone() };
            // A tombstone, or a record of the history it deleted.
            if h.kind == KIND_TOMBSTONE || tombstones.get(&key).is_some_and(|&at| i < at) {
                continue;
            }
            let state = catalog.get_or_create(&key, || new_state(&fs, &sums_dir, &key, &metrics))?;
            let mut state = lock(&state);
            let continues = match state.runs.last() {
                Some(last) => h.min_txid.follows(last.max_txid) && h.pre_apply == last.post_apply,
                // The first record kept in the log starts the history, or continues a level
                // piece (retention deleted the records before it).
                None => {
                    h.min_txid == TxId(1)
                        || state
                            .levels
                            .iter()
                            .flatten()
                            .any(|p| h.min_txid.follows(p.max_txid) && h.pre_apply == p.post_apply)
                }
            };
            if !continues {
                // A record of expired history that shares a kept segment with newer
                // records of other databases: the levels hold it already.
                let covered = state.levels.iter().flatten().any(|p| p.max_txid >= h.max_txid);
                if state.runs.is_empty() && covered {
                    continue;
                }
                return Err(Error::Corrupt {
                    file: crate::segment::segment_path(&log_dir, found.location.segment),
                    offset: found.location.offset,
                    reason: format!(
                        "record for {}/{} at TXID {}..{} does not continue the stored history (at {})",
                        h.cluster, h.db, h.min_txid, h.max_txid, state.durable
                    ),
                });
            }
            state.page_size = h.page_size;
            state.add_durable(run_of(h, found.location));
            state.pending = state.durable;
            state.pending_commit = h.commit;
            state.pending_timestamp_ms = h.effective_ms;
        }
        for key in catalog.keys() {
            if let Some(state) = catalog.get(&key) {
                let mut state = lock(&state);
                settle_position(&mut state);
                rebuild_sums_if_needed(&segments, &key, &mut state)?;
                state.stored_bytes =
                    state.runs.iter().chain(state.levels.iter().flatten()).map(|r| stored_bytes(&key, r)).sum();
                catalog.usage.add(&key.cluster, state.stored_bytes);
            }
        }
        let (engine, note) = match engine {
            Some(engine) => (engine, None),
            None => open_engine(config.io)?,
        };
        let engine_note = match note {
            Some(note) => {
                tracing::warn!(engine = engine.name(), reason = %note, "io_uring is not available; the log writer uses the std engine");
                format!("{} ({note})", engine.name())
            }
            None => engine.name().to_string(),
        };
        if recovered.torn_bytes > 0 {
            tracing::warn!(
                bytes = recovered.torn_bytes,
                "cut a torn, never acknowledged tail off the last log segment"
            );
        }
        tracing::info!(
            dir = %dir.display(),
            records = recovered.records.len(),
            databases = catalog.keys().len(),
            engine = engine.name(),
            "vault open"
        );
        let durable_end =
            Arc::new(DurableEnd::new(recovered.active.map(|segment| Location { segment, offset: recovered.tail })));
        let active = match recovered.active {
            Some(id) => {
                let path = crate::segment::segment_path(&log_dir, id);
                let file = fs.open_rw(&path, false)?;
                let size = file.metadata().map_err(|e| Error::io(format!("stat {}", path.display()), e))?.len();
                Some((id, file, size, recovered.tail))
            }
            None => None,
        };
        let poison = Arc::new(Poison::default());
        let writer = LogWriter {
            dir: log_dir,
            engine,
            fs: fs.clone(),
            limits: WriterLimits {
                segment_bytes: config.segment_bytes,
                max_batch_bytes: config.max_batch_bytes,
                max_batch_records: 4096,
            },
            poison: poison.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            active,
            next_seq: recovered.next_seq,
            spare: None,
            durable_end: durable_end.clone(),
            disk_full: false,
        };
        let compactor = Arc::new(Compactor {
            fs: fs.clone(),
            catalog: catalog.clone(),
            segments: segments.clone(),
            levels_dir,
            intervals_ms: config.level_intervals_ms.clone(),
            grace_ms: config.compaction_grace_ms,
            clock: clock.clone(),
            passes: config.level_intervals_ms.iter().map(|_| Mutex::new(())).collect(),
            metrics: metrics.clone(),
        });
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let mut compactor_threads = Vec::new();
        if config.background_compaction {
            for level in 1..=config.level_intervals_ms.len() as u8 {
                let (compactor, stop) = (compactor.clone(), stop.clone());
                let handle = std::thread::Builder::new()
                    .name(format!("ltxvault-compact-l{level}"))
                    .spawn(move || compaction_loop(&compactor, level, &stop))
                    .map_err(|e| Error::io("start a compactor thread", e))?;
                compactor_threads.push(handle);
            }
        }
        let gate = Arc::new(RwLock::new(()));
        let drill_results = drill::load(dir).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the drill results file is damaged; starting without earlier results (verify reports it)");
            Default::default()
        });
        let drills = Arc::new(drill::Drills {
            catalog: catalog.clone(),
            segments: segments.clone(),
            metrics: metrics.clone(),
            fs: fs.clone(),
            gate: gate.clone(),
            clock: clock.clone(),
            vault_dir: dir.to_path_buf(),
            results: Mutex::new(drill_results),
            running: Mutex::new(()),
            file_lock: Mutex::new(()),
            scratch_seq: AtomicU64::new(0),
        });
        if config.background_compaction
            && let Some(every) = config.drill_every
        {
            let (drills, stop, poison) = (drills.clone(), stop.clone(), poison.clone());
            let handle = std::thread::Builder::new()
                .name("ltxvault-drill".into())
                .spawn(move || drill::drill_loop(&drills, every, &stop, &poison))
                .map_err(|e| Error::io("start the drill thread", e))?;
            compactor_threads.push(handle);
        }
        if config.background_compaction {
            let retention = Retention {
                catalog: catalog.clone(),
                segments: segments.clone(),
                retention_ms: config.retention_ms.clone(),
                clock: clock.clone(),
                gate: gate.clone(),
            };
            let (stop, every) = (stop.clone(), config.retention_every);
            let handle = std::thread::Builder::new()
                .name("ltxvault-retention".into())
                .spawn(move || retention_loop(&retention, every, &stop))
                .map_err(|e| Error::io("start the retention thread", e))?;
            compactor_threads.push(handle);
        }
        let (tx, rx) = crossbeam::channel::bounded(config.queue_capacity);
        let writer = std::thread::Builder::new()
            .name("ltxvault-l0-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::io("start the log writer thread", e))?;
        Ok(Vault {
            dir: dir.to_path_buf(),
            config,
            catalog,
            segments,
            fs,
            compactor,
            compactor_threads,
            gate,
            stop,
            queue: Some(tx),
            writer: Some(writer),
            poison,
            clock,
            engine_note,
            scratch_seq: AtomicU64::new(0),
            metrics,
            durable_end,
            drills,
            lock: lock_file,
        })
    }

    /// A new scratch file under `<dir>/tmp/`, removed when dropped (and at the next open,
    /// should the process die first).
    fn scratch_file(&self, what: &str) -> Result<TempFile> {
        let n = self.scratch_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.fs.temp_file(&self.dir.join("tmp").join(format!("{what}-{n}")))
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file-system seam the vault writes through (with the configured fault plan).
    pub(crate) fn fs(&self) -> &Fs {
        &self.fs
    }

    /// The settings the vault runs with.
    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// Which I/O engine the log writer uses (and why, if it fell back).
    pub fn io_engine(&self) -> &str {
        &self.engine_note
    }

    /// Runs one retention pass now, in the calling thread (the background thread does the
    /// same every `retention_every`): deletes what no promised restore point needs; see
    /// `retention`.
    pub fn retain_now(&self) -> Result<RetentionReport> {
        Retention {
            catalog: self.catalog.clone(),
            segments: self.segments.clone(),
            retention_ms: self.config.retention_ms.clone(),
            clock: self.clock.clone(),
            gate: self.gate.clone(),
        }
        .run()
    }

    /// Corruption found since the vault opened: by the compactors (an image whose database
    /// checksum does not match the one recorded for its last transaction), by restore
    /// drills (a restore that does not match its recorded checksum) and by
    /// [`Vault::verify_storage`] (each problem it reports).
    pub fn corruptions(&self) -> u64 {
        self.metrics.corruptions()
    }

    /// The vault's metrics (see `metrics`); [`Vault::metrics_text`] writes them out.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What `cluster` stores against its quota (see `quota` for what counts). Kept up to
    /// date as uploads, compaction, retention and deletions change it; free to call.
    pub fn usage(&self, cluster: &str) -> ClusterUsage {
        ClusterUsage { bytes: self.catalog.usage.bytes(cluster), quota: self.config.quotas.limit(cluster) }
    }

    /// [`Vault::usage`] of every cluster that stores anything, by name.
    pub fn usages(&self) -> Vec<(String, ClusterUsage)> {
        self.catalog
            .usage
            .all()
            .into_iter()
            .map(|(cluster, bytes)| {
                let quota = self.config.quotas.limit(&cluster);
                (cluster, ClusterUsage { bytes, quota })
            })
            .collect()
    }

    /// Why the vault is poisoned, if it is.
    pub fn poisoned(&self) -> Option<String> {
        self.poison.reason()
    }

    /// Accepts one LTX file for `cluster`/`db`: validates it completely, checks that it
    /// continues the stored position, and returns only once it is durable. A refused
    /// upload changes nothing and reports the stored position.
    pub fn ingest(&self, cluster: &str, db: &str, payload: impl Into<Payload>) -> Result<Ack> {
        self.ingest_with_limit(cluster, db, payload.into(), Some(self.config.max_upload_bytes))
    }

    /// [`Vault::ingest`] with an upload size limit, or without one for the transactions
    /// the vault writes itself (a restore in place, an uploaded SQLite file, a clone): they
    /// carry every page of a database, whose size the limit is not about.
    fn ingest_with_limit(&self, cluster: &str, db: &str, payload: Payload, limit: Option<u64>) -> Result<Ack> {
        let started = std::time::Instant::now();
        if let Some(reason) = self.poison.reason() {
            return Err(Error::Poisoned(reason));
        }
        names::validate("cluster", cluster)?;
        names::validate("database", db)?;
        let bytes = payload.bytes();
        if let Some(limit) = limit
            && bytes.len() as u64 > limit
        {
            return Err(Error::TooLarge { size: bytes.len() as u64, limit });
        }
        // Decode and verify the whole file before touching any state.
        let mut decoder = Decoder::new(bytes)?;
        let header = *decoder.header();
        let mut pages = Vec::new();
        while let Some(page) = decoder.next_page()? {
            pages.push((page.pgno, page_checksum(page.pgno, page.data)));
        }
        let trailer = decoder.trailer().unwrap_or_default();

        let key = DbKey { cluster: cluster.to_string(), db: db.to_string() };
        let sums_dir = self.dir.join("sums");
        // A database the vault does not hold starts with a snapshot: anything else is
        // refused before a state (and its page-checksum map file) exists for the name.
        let make = || {
            if !header.is_snapshot() {
                return Err(Error::PositionMismatch { position: Position::default(), reason: not_a_snapshot(&header) });
            }
            new_state(&self.fs, &sums_dir, &key, &self.metrics)
        };
        // A database deleted between fetching its state and locking it is fetched again:
        // the deletion took it out of the catalog before it let go of the lock. One upload
        // of a database is in flight at a time; another waits for its answer.
        let (state, done, accepted, flight) = loop {
            let state = self.catalog.get_or_create(&key, make)?;
            let queued = {
                let mut guard = lock(&state);
                if let Some(busy) = guard.in_flight.clone() {
                    drop(guard);
                    // Returns once the upload in flight has been answered.
                    let _ = busy.recv();
                    continue;
                }
                if guard.deleted {
                    None
                } else {
                    match self.enqueue_upload(&mut guard, &key, &header, &trailer, &pages, &payload) {
                        Ok((done, accepted)) => Some((done, accepted, InFlight::start(&mut guard, state.clone()))),
                        Err(e) => {
                            self.forget_if_empty(&mut guard, &key);
                            return Err(e);
                        }
                    }
                }
            };
            if let Some((done, accepted, flight)) = queued {
                break (state, done, accepted, flight);
            }
        };
        let written = done.recv().map_err(|_| {
            self.poison.poison("the log writer stopped without answering".into());
            Error::Poisoned("the log writer stopped without answering".into())
        })?;
        let mut state = lock(&state);
        let answer = match written {
            Ok((loc, _)) => {
                // The record is durable: the page-checksum map follows it (room for it was
                // reserved before queueing; a failure here, which does no I/O, poisons: the
                // map would be wrong), then readers see it.
                if let Err(e) =
                    apply_to_sums(&mut state.sums, accepted.old_commit, header.commit, &pages, header.page_size)
                {
                    self.poison.poison(format!("page checksum map of {cluster}/{db}: {e}"));
                    return Err(e);
                }
                state.add_durable(Run {
                    min_txid: header.min_txid,
                    max_txid: header.max_txid,
                    timestamp_ms: accepted.effective_ms,
                    commit: header.commit,
                    pre_apply: accepted.pre_apply,
                    post_apply: accepted.post_apply,
                    bytes: bytes.len() as u64,
                    source: Source::Log(loc),
                    level: 0,
                });
                state.counters.uploads.inc();
                state.counters.bytes.inc_by(bytes.len() as u64);
                self.metrics.ingest_latency.observe_duration(started.elapsed());
                Ok(Ack { position: Position { txid: header.max_txid, checksum: accepted.post_apply }, hwm: state.hwm })
            }
            Err(refusal) => {
                // Not written (a full disk), or the vault is poisoned. Nothing of this
                // database was queued after it (one in flight), so putting the pending state
                // and the quota charge back is all it takes for the next upload to be
                // checked against what is durable; a database this upload would have
                // created leaves the catalog again.
                let Rewind { page_size, pending, pending_commit, pending_timestamp_ms } = accepted.rewind;
                state.page_size = page_size;
                state.pending = pending;
                state.pending_commit = pending_commit;
                state.pending_timestamp_ms = pending_timestamp_ms;
                state.stored_bytes -= accepted.footprint;
                self.catalog.usage.sub(&key.cluster, accepted.footprint);
                self.forget_if_empty(&mut state, &key);
                Err(Error::from(refusal))
            }
        };
        flight.finish(&mut state);
        answer
    }

    /// Under the database's lock: checks that a decoded upload continues the pending
    /// position (contiguity, pre-apply checksum, page size, post-apply checksum), queues its
    /// record for the log writer and moves the pending state forward. Returns the channel
    /// the writer answers on and what the record says.
    fn enqueue_upload(
        &self,
        state: &mut DbState,
        key: &DbKey,
        header: &Header,
        trailer: &Trailer,
        pages: &[(PageNo, Checksum)],
        payload: &Payload,
    ) -> Result<(Receiver<Written>, Accepted)> {
        let position = state.pending;
        let mismatch = |reason: String| Error::PositionMismatch { position, reason };
        if position.txid == TxId::ZERO {
            if !header.is_snapshot() {
                return Err(mismatch(not_a_snapshot(header)));
            }
        } else {
            if !header.min_txid.follows(position.txid) {
                return Err(mismatch(format!(
                    "upload covers TXID {}..{}, the next TXID is {}",
                    header.min_txid,
                    header.max_txid,
                    position.txid.0.saturating_add(1)
                )));
            }
            if header.has_checksums() && header.pre_apply_checksum != position.checksum {
                return Err(mismatch(format!(
                    "pre-apply checksum {} does not match the stored checksum {}",
                    header.pre_apply_checksum, position.checksum
                )));
            }
            if header.page_size != state.page_size {
                return Err(Error::PageSizeMismatch { expected: state.page_size, got: header.page_size });
            }
        }
        let (old, old_commit) = if header.is_snapshot() {
            (Checksum::EMPTY_DATABASE, 0)
        } else {
            (position.checksum, state.pending_commit)
        };
        let computed = checksum_after(&state.sums, old, old_commit, header.commit, pages, header.page_size);
        if header.has_checksums() && trailer.post_apply_checksum != computed {
            return Err(Error::BadChecksum { claimed: trailer.post_apply_checksum, computed });
        }
        let effective_ms = header.timestamp_ms.max(state.pending_timestamp_ms);
        let bytes = payload.bytes();
        let record = RecordHeader {
            kind: KIND_LTX,
            seq: 0,
            batch_offset: 0,
            cluster: key.cluster.clone(),
            db: key.db.clone(),
            min_txid: header.min_txid,
            max_txid: header.max_txid,
            timestamp_ms: header.timestamp_ms,
            effective_ms,
            received_ms: self.clock.now_ms(),
            pre_apply: record_pre_apply(header, position),
            post_apply: computed,
            commit: header.commit,
            page_size: header.page_size,
            payload_len: bytes.len() as u64,
            payload_xxh3: payload_checksum(bytes),
        };
        // What can fail about the page-checksum map's change, which follows the record once
        // it is durable, is done now, while a failure still changes nothing: its clean flag,
        // and the growth of its file (a full disk refuses the upload here).
        state.sums.reserve(header.commit)?;
        // Checked last, so that an upload that does not fit the history says so, and
        // charged now, so that uploads racing this one see it.
        let footprint = record.record_len();
        self.catalog.usage.charge(&key.cluster, footprint, self.config.quotas.limit(&key.cluster))?;
        let done = self.send_to_writer(record, payload.clone()).inspect_err(|_| {
            self.catalog.usage.sub(&key.cluster, footprint);
        })?;
        state.stored_bytes += footprint;
        // From here on the record will be written, refused for want of space (then the
        // caller puts `rewind` back), or the vault poisoned: move the pending state.
        let rewind = Rewind {
            page_size: state.page_size,
            pending: state.pending,
            pending_commit: state.pending_commit,
            pending_timestamp_ms: state.pending_timestamp_ms,
        };
        if header.is_snapshot() {
            state.page_size = header.page_size;
        }
        state.pending = Position { txid: header.max_txid, checksum: computed };
        state.pending_commit = header.commit;
        state.pending_timestamp_ms = effective_ms;
        let accepted = Accepted {
            pre_apply: record_pre_apply(header, position),
            post_apply: computed,
            effective_ms,
            old_commit,
            footprint,
            rewind,
        };
        Ok((done, accepted))
    }

    /// After a refused upload: a state that holds nothing (made for this upload) leaves the
    /// catalog and takes its page-checksum map file with it, so that refused uploads under
    /// names the vault does not hold leave nothing behind. In the order of a deletion: the
    /// file goes first, then the state is marked deleted (an upload that fetched it
    /// meanwhile fetches again) and leaves the catalog. The removal is not synced: an empty
    /// map that comes back after a crash is a stray file, never read.
    fn forget_if_empty(&self, state: &mut DbState, key: &DbKey) {
        let empty = state.pending.txid == TxId::ZERO
            && state.durable.txid == TxId::ZERO
            && state.runs.is_empty()
            && state.levels.iter().all(Vec::is_empty);
        if state.deleted || !empty {
            return;
        }
        let path = sums_path(&self.dir.join("sums"), key);
        if let Err(e) = self.fs.remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove the page-checksum map of a refused new database");
            return;
        }
        state.deleted = true;
        self.catalog.remove(key);
    }

    /// Queues one record for the log writer, waiting up to the configured time for room;
    /// returns the channel the writer answers on once the record is durable (or failed).
    fn send_to_writer(&self, header: RecordHeader, payload: Payload) -> Result<Receiver<Written>> {
        let (done_tx, done_rx) = crossbeam::channel::bounded(1);
        let queue = self.queue.as_ref().ok_or_else(|| Error::Poisoned("the vault is closing".into()))?;
        let request = WriteRequest { header, payload, done: done_tx };
        match queue.send_timeout(request, self.config.enqueue_timeout) {
            Ok(()) => Ok(done_rx),
            Err(SendTimeoutError::Timeout(_)) => Err(Error::Busy(self.config.enqueue_timeout.as_millis() as u64)),
            Err(SendTimeoutError::Disconnected(_)) => Err(Error::Poisoned("the log writer has stopped".into())),
        }
    }

    /// The durable position and HWM of a database, if the vault has it.
    pub fn position(&self, cluster: &str, db: &str) -> Option<(Position, TxId)> {
        let state = self.catalog.get(&DbKey { cluster: cluster.into(), db: db.into() })?;
        let state = lock(&state);
        (state.durable.txid != TxId::ZERO && !state.deleted).then_some((state.durable, state.hwm))
    }

    /// The durable runs of a database, oldest first (empty if the vault does not have it).
    pub fn runs(&self, cluster: &str, db: &str) -> Vec<Run> {
        self.catalog
            .get(&DbKey { cluster: cluster.into(), db: db.into() })
            .map(|state| lock(&state).runs.clone())
            .unwrap_or_default()
    }

    /// Hands the stored LTX bytes of one run to `f`: an L0 record's payload (its record
    /// checksums verified) or a level file. Decode them to verify the file itself. An L3
    /// image is not LTX and is refused.
    pub fn read_run<T>(&self, run: &Run, f: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
        match &run.source {
            Source::Log(location) => self.segments.with_record(*location, |_, payload| f(payload)),
            Source::File(path) => f(&MappedFile::open(path)?),
            Source::Image(path) => Err(Error::Invalid(format!("{} is a database image, not LTX", path.display()))),
        }
    }

    /// Every database of a cluster (or of all clusters), with what the vault knows.
    pub fn databases(&self, cluster: Option<&str>) -> Vec<DbInfo> {
        let states: Vec<(DbKey, Arc<Mutex<DbState>>)> = match cluster {
            Some(cluster) => self.catalog.cluster(cluster),
            None => {
                self.catalog.keys().into_iter().filter_map(|key| Some((key.clone(), self.catalog.get(&key)?))).collect()
            }
        };
        let mut out = Vec::with_capacity(states.len());
        let mut drills = self.drills.results();
        for (key, state) in states {
            let state = lock(&state);
            if state.durable.txid == TxId::ZERO || state.deleted {
                continue;
            }
            let drill = drills.remove(&key);
            let point = |r: &Run| (r.max_txid, r.timestamp_ms);
            let pieces = || state.runs.iter().chain(state.levels.iter().flatten());
            out.push(DbInfo {
                cluster: key.cluster,
                db: key.db,
                position: state.durable,
                hwm: state.hwm,
                page_size: state.page_size,
                commit: state.durable_commit,
                runs: state.runs.len(),
                bytes: state.runs.iter().map(|r| r.bytes).sum(),
                oldest: pieces().min_by_key(|r| r.max_txid).map(point),
                newest: pieces().max_by_key(|r| r.max_txid).map(point),
                levels: std::iter::once(&state.runs)
                    .chain(state.levels.iter())
                    .enumerate()
                    .map(|(level, runs)| LevelInfo {
                        level: level as u8,
                        pieces: runs.len(),
                        bytes: runs.iter().map(|r| r.bytes).sum(),
                        oldest: runs.first().map(point),
                        newest: runs.last().map(point),
                    })
                    .collect(),
                drill,
            });
        }
        out
    }

    /// The position of every database of a cluster, by name: what `GET /pos` answers, at a
    /// cost that grows with the cluster's databases only (not with their history or with
    /// other clusters).
    pub fn positions(&self, cluster: &str) -> Vec<(String, Position)> {
        self.catalog
            .cluster(cluster)
            .into_iter()
            .filter_map(|(key, state)| {
                let state = lock(&state);
                (state.durable.txid != TxId::ZERO && !state.deleted).then_some((key.db, state.durable))
            })
            .collect()
    }

    /// Restores the latest durable state of a database to `out`; see [`Vault::restore`].
    pub fn restore_latest(&self, cluster: &str, db: &str, out: &Path, force: bool) -> Result<RestoreSummary> {
        self.restore(cluster, db, Target::Latest, out, force)
    }

    /// Plans a restore without writing anything: the point it resolves to and the inputs.
    pub fn plan_restore(&self, cluster: &str, db: &str, target: Target) -> Result<(Plan, u32)> {
        plan_in(&self.catalog, cluster, db, target)
    }

    /// Runs one compaction pass of every level now, in the calling thread (tests and
    /// imports use it; the compactor threads do the same on their own). Returns the level
    /// files written.
    pub fn compact_now(&self) -> Result<usize> {
        let mut written = 0;
        for level in 1..=self.config.level_intervals_ms.len() as u8 {
            written += self.compactor.run_level(level)?;
        }
        Ok(written)
    }

    /// The level runs of a database (index 0 = L1).
    pub fn level_runs(&self, cluster: &str, db: &str) -> Vec<Vec<Run>> {
        self.catalog
            .get(&DbKey { cluster: cluster.into(), db: db.into() })
            .map(|state| lock(&state).levels.clone())
            .unwrap_or_default()
    }

    /// Restores a database to `target` as a plain SQLite file at `out` (a new file unless
    /// `force`): merges the planned runs onto a temporary file, checks the result's
    /// database checksum against the one recorded for that point, syncs, and renames it
    /// into place. On any error nothing is left at `out`.
    pub fn restore(&self, cluster: &str, db: &str, target: Target, out: &Path, force: bool) -> Result<RestoreSummary> {
        self.restore_with_progress(cluster, db, target, out, force, &mut |_, _| {})
    }

    /// [`Vault::restore`], telling `progress` (pages written, pages in the result) as it
    /// goes.
    pub fn restore_with_progress(
        &self,
        cluster: &str,
        db: &str,
        target: Target,
        out: &Path,
        force: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RestoreSummary> {
        let started = std::time::Instant::now();
        let result = self.restore_to_file(cluster, db, target, out, force, progress);
        self.metrics.restore_done(RestoreKind::Restore, started.elapsed(), &result);
        result
    }

    fn restore_to_file(
        &self,
        cluster: &str,
        db: &str,
        target: Target,
        out: &Path,
        force: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RestoreSummary> {
        // Retention waits until this restore has read its inputs.
        let _reading = self.gate.read().unwrap_or_else(|e| e.into_inner());
        let (plan, page_size) = self.plan_restore(cluster, db, target)?;
        if !force && out.exists() {
            return Err(Error::Invalid(format!("{} exists; pass --force to replace it", out.display())));
        }
        let temp = self.fs.temp_file(out)?;
        temp.take_mode_of_target()?;
        write_restore(&self.segments, &plan, page_size, temp.file(), temp.path(), crate::io::Sync::Data, progress)?;
        temp.commit_or_discard()?;
        Ok(RestoreSummary {
            position: Position { txid: plan.txid, checksum: plan.checksum },
            commit: plan.commit,
            page_size,
            inputs: plan.inputs.len(),
        })
    }

    /// Stops the writer after it has written everything queued, and records every
    /// page-checksum map as clean so the next open need not rebuild them.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Stops the threads and marks the maps clean, once: `close` runs it and `Drop` finds
    /// nothing left to do.
    fn shutdown(&mut self) -> Result<()> {
        let Some(writer) = self.writer.take() else { return Ok(()) };
        {
            let (flag, wake) = &*self.stop;
            *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
            wake.notify_all();
        }
        for handle in self.compactor_threads.drain(..) {
            if handle.join().is_err() {
                self.poison.poison("a compactor thread panicked".into());
            }
        }
        self.queue.take();
        if writer.join().is_err() {
            self.poison.poison("the log writer panicked".into());
        }
        if self.poison.reason().is_some() {
            return Ok(());
        }
        for key in self.catalog.keys() {
            if let Some(state) = self.catalog.get(&key) {
                let mut state = lock(&state);
                let (position, page_size) = (state.durable, state.page_size);
                if state.pending == position {
                    state.sums.mark_clean(position.txid, position.checksum, page_size)?;
                }
            }
        }
        Ok(())
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn run_of(h: &RecordHeader, location: Location) -> Run {
    Run {
        min_txid: h.min_txid,
        max_txid: h.max_txid,
        timestamp_ms: h.effective_ms,
        commit: h.commit,
        pre_apply: h.pre_apply,
        post_apply: h.post_apply,
        bytes: h.payload_len,
        source: Source::Log(location),
        level: 0,
    }
}

/// A fresh state for a database, with its page-checksum map opened.
fn new_state(fs: &Fs, sums_dir: &Path, key: &DbKey, metrics: &Metrics) -> Result<DbState> {
    let (sums, clean_point) = PageSums::open(fs, &sums_path(sums_dir, key), &key.cluster, &key.db)?;
    if let Some(damage) = sums.damage_at_open() {
        tracing::error!(file = %sums.path().display(), damage, "damaged page-checksum map: rebuilding it (the disk may be failing; run `ltxvault verify`)");
    }
    Ok(DbState {
        levels: vec![Vec::new(); DEFAULT_LEVEL_INTERVALS_MS.len()],
        clean_point,
        stored_bytes: 0,
        page_size: 0,
        pending: Position::default(),
        pending_commit: 0,
        pending_timestamp_ms: i64::MIN,
        durable: Position::default(),
        durable_commit: 0,
        hwm: TxId::ZERO,
        runs: Vec::new(),
        sums,
        deleted: false,
        counters: metrics.cluster_counters(&key.cluster),
        in_flight: None,
    })
}

/// Why the first upload of a database was refused.
fn not_a_snapshot(header: &Header) -> String {
    format!(
        "the vault has no data for this database, so the first upload must be a snapshot (min TXID 1), not min TXID {}",
        header.min_txid
    )
}

/// The page-checksum map of a database: named by a hash of its names.
fn sums_path(sums_dir: &Path, key: &DbKey) -> PathBuf {
    let mut hash = Xxh3::new();
    hash.update(key.cluster.as_bytes());
    hash.update(&[0]);
    hash.update(key.db.as_bytes());
    sums_dir.join(format!("{:016x}.sums", hash.digest()))
}

/// After recovery: if the level files reach further than the log (retention deleted every
/// record of a quiet database), the newest level piece is the position.
fn settle_position(state: &mut DbState) {
    let Some(newest) = state.levels.iter().flatten().max_by_key(|p| p.max_txid).cloned() else { return };
    if newest.max_txid <= state.durable.txid {
        return;
    }
    state.durable = Position { txid: newest.max_txid, checksum: newest.post_apply };
    state.durable_commit = newest.commit;
    state.hwm = state.hwm.max(newest.max_txid);
    state.pending = state.durable;
    state.pending_commit = newest.commit;
    state.pending_timestamp_ms = newest.timestamp_ms;
}

/// Checks that the page-checksum map is clean at the recovered position; otherwise
/// rebuilds it: from the log when it still holds the history from TXID 1 (verifying every
/// run's post-apply checksum on the way), else from a restore of the latest point.
fn rebuild_sums_if_needed(segments: &Segments, key: &DbKey, state: &mut DbState) -> Result<()> {
    let page_size = state.page_size;
    let expected = CleanPoint {
        txid: state.durable.txid,
        checksum: state.durable.checksum,
        page_size,
        entries: state.durable_commit,
    };
    if state.clean_point == Some(expected) {
        return Ok(());
    }
    state.sums.ensure_dirty()?;
    state.sums.resize(0)?;
    if state.runs.first().is_none_or(|r| r.min_txid != TxId(1)) {
        state.clean_point = None;
        return rebuild_sums_from_restore(segments, key, state);
    }
    let mut checksum = Checksum::EMPTY_DATABASE;
    let mut commit = 0;
    for run in state.runs.clone() {
        // The runs of `state.runs` are the log's (level 0).
        let Some(location) = run.location() else { continue };
        let pages = segments.with_record(location, |_, payload| {
            let mut decoder = Decoder::new(payload)?;
            let mut pages = Vec::new();
            while let Some(page) = decoder.next_page()? {
                pages.push((page.pgno, page_checksum(page.pgno, page.data)));
            }
            Ok(pages)
        })?;
        if run.min_txid == TxId(1) {
            checksum = Checksum::EMPTY_DATABASE;
            commit = 0;
        }
        let after = checksum_after(&state.sums, checksum, commit, run.commit, &pages, page_size);
        if after != run.post_apply {
            return Err(Error::Corrupt {
                file: crate::segment::segment_path(Path::new("l0"), location.segment),
                offset: location.offset,
                reason: format!(
                    "replaying {}/{} TXID {}..{} gives database checksum {after}, the log recorded {}",
                    key.cluster, key.db, run.min_txid, run.max_txid, run.post_apply
                ),
            });
        }
        apply_to_sums(&mut state.sums, commit, run.commit, &pages, page_size)?;
        checksum = after;
        commit = run.commit;
    }
    state.clean_point = None;
    Ok(())
}

/// Rebuilds the page-checksum map from the database itself: restores the latest point to a
/// temporary file next to the map (checked against the recorded checksum like any restore),
/// then takes every page's checksum from it.
fn rebuild_sums_from_restore(segments: &Segments, key: &DbKey, state: &mut DbState) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let page_size = state.page_size;
    let plan = restore::plan(&pieces_of(state), Target::Latest)?;
    let scratch = state.sums.path().with_extension("rebuild");
    let temp = segments.fs().temp_file(&scratch)?;
    write_scratch(segments, &plan, page_size, &temp)?;
    tracing::info!(cluster = %key.cluster, db = %key.db, txid = %plan.txid, "rebuilt the page-checksum map from a restore");
    let lock_page = crate::ltx::PageNo::lock_page(page_size);
    state.sums.resize(plan.commit)?;
    let ps = page_size as usize;
    let mut buf = vec![0u8; (1 << 20) / ps * ps];
    let mut pgno = 1u32;
    while pgno <= plan.commit {
        let pages = ((plan.commit - pgno + 1) as usize).min(buf.len() / ps);
        let chunk = &mut buf[..pages * ps];
        temp.file()
            .read_exact_at(chunk, u64::from(pgno - 1) * u64::from(page_size))
            .map_err(|e| Error::io(format!("read {}", temp.path().display()), e))?;
        for page in chunk.chunks_exact(ps) {
            let p = crate::ltx::PageNo(pgno);
            if p != lock_page {
                state.sums.set(p, page_checksum(p, page));
            }
            pgno += 1;
        }
    }
    let sum = state.sums.database_checksum(page_size);
    if sum != plan.checksum {
        return Err(Error::Corrupt {
            file: state.sums.path().to_path_buf(),
            offset: 0,
            reason: format!("rebuilt page-checksum map sums to {sum}, the vault recorded {}", plan.checksum),
        });
    }
    Ok(())
}

/// [`write_restore`] onto a scratch file that lives only as long as the operation that
/// reads it: no sync, no progress.
fn write_scratch(segments: &Segments, plan: &Plan, page_size: u32, scratch: &TempFile) -> Result<()> {
    write_restore(segments, plan, page_size, scratch.file(), scratch.path(), crate::io::Sync::None, &mut |_, _| {})
}

/// Writes the planned restore onto `file` (empty; at `path`) and checks the result's
/// database checksum against the plan's. `sync` is how durable the result must be: a
/// restore the caller keeps is synced while its checksum is read back, a scratch file that
/// lives only as long as the operation needs none.
fn write_restore(
    segments: &Segments,
    plan: &Plan,
    page_size: u32,
    file: &File,
    path: &Path,
    sync: crate::io::Sync,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let (base, rest) = match plan.inputs.split_first() {
        Some((first @ Run { source: Source::Image(image), .. }, rest)) => {
            let opened = File::open(image).map_err(|e| Error::io(format!("open {}", image.display()), e))?;
            (Some((opened, u64::from(first.commit) * u64::from(page_size))), rest)
        }
        _ => (None, &plan.inputs[..]),
    };
    let mut maps = Vec::with_capacity(rest.len());
    for piece in rest {
        maps.push(match &piece.source {
            Source::Log(location) => segments.payload(*location)?,
            Source::File(level_file) => {
                let map = Arc::new(MappedFile::open(level_file)?);
                let len = map.len();
                (map, 0..len)
            }
            Source::Image(image) => {
                return Err(Error::Invalid(format!("{} is an image past the start of a plan", image.display())));
            }
        });
    }
    let total = u64::from(plan.commit);
    let base = base.as_ref().map(|(file, bytes)| restore::Base { file, bytes: *bytes });
    let fs = segments.fs();
    restore::execute(fs, file, path, base, &maps, page_size, &mut |done| progress(done.min(total), total))?;
    progress(total, total);
    // Sync while the checksum pass reads the result back from the page cache: the disk and
    // the CPU work at once. The caller's commit syncs again, which then finds nothing to do.
    let (synced, result) = std::thread::scope(|scope| {
        let sync = scope.spawn(|| fs.sync(file, sync, path));
        let result = database_file_checksum(path, page_size);
        (sync.join().unwrap_or_else(|_| Err(Error::Invalid("the sync thread panicked".into()))), result)
    });
    synced?;
    let result = result?;
    if result != plan.checksum {
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            reason: format!(
                "restored database has checksum {result}, the vault recorded {} for TXID {}",
                plan.checksum, plan.txid
            ),
        });
    }
    Ok(())
}

/// The vault directory is made 0700; one the operator made beforehand keeps its mode, but
/// if others may enter it that deserves a word (the files inside are 0600 regardless).
fn warn_if_shared(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(dir)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the vault directory is open to other users; `chmod 700` it"
        );
    }
}

/// Who holds a vault's lock, as its `LOCK` file says: one `key value` line each.
///
/// ```text
/// pid 12345
/// command ltxvault serve
/// endpoint http://127.0.0.1:2200      (only a process that serves the vault over HTTP)
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockHolder {
    /// Its process id.
    pub pid: Option<u32>,
    /// Its program and command (`ltxvault serve`); never its arguments, which may be secret.
    pub command: Option<String>,
    /// Where it serves the vault, for clients on this machine (`http://127.0.0.1:2200`).
    pub endpoint: Option<String>,
}

impl LockHolder {
    /// This process.
    fn me(endpoint: Option<String>) -> LockHolder {
        let mut args = std::env::args();
        let program = args
            .next()
            .map(|p| Path::new(&p).file_name().map_or_else(|| p.clone(), |name| name.to_string_lossy().into_owned()));
        let subcommand = args.next().filter(|a| !a.starts_with('-') && a.bytes().all(|b| b.is_ascii_graphic()));
        let command = program.map(|p| subcommand.map_or_else(|| p.clone(), |sub| format!("{p} {sub}")));
        LockHolder { pid: Some(std::process::id()), command, endpoint }
    }

    /// The `LOCK` file's text.
    fn encode(&self) -> String {
        let mut text = String::new();
        if let Some(pid) = self.pid {
            text.push_str(&format!("pid {pid}\n"));
        }
        for (key, value) in [("command", &self.command), ("endpoint", &self.endpoint)] {
            if let Some(value) = value {
                // One line per key: a value never carries a line break.
                text.push_str(&format!("{key} {}\n", value.replace(['\n', '\r'], " ")));
            }
        }
        text
    }

    /// Reads what a `LOCK` file says; lines it does not know are skipped (another version
    /// may write more).
    pub fn decode(text: &str) -> LockHolder {
        let mut holder = LockHolder::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(' ') else { continue };
            let value = value.trim();
            match key {
                "pid" => holder.pid = value.parse().ok(),
                "command" => holder.command = Some(value.to_string()),
                "endpoint" => holder.endpoint = Some(value.to_string()),
                _ => {}
            }
        }
        holder
    }
}

impl std::fmt::Display for LockHolder {
    /// `process 12345 (ltxvault serve)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, &self.command) {
            (Some(pid), Some(command)) => write!(f, "process {pid} ({command})"),
            (Some(pid), None) => write!(f, "process {pid}"),
            (None, Some(command)) => write!(f, "another process ({command})"),
            (None, None) => write!(f, "another process"),
        }
    }
}

impl Vault {
    /// Records in the vault's `LOCK` file that this process serves the vault at `endpoint`
    /// (a URL for clients on this machine), so that a command refused the lock can say
    /// where to go instead. Informational: not synced.
    pub fn advertise_endpoint(&self, endpoint: &str) -> Result<()> {
        write_lock_holder(&self.fs, &self.lock, &self.dir, &LockHolder::me(Some(endpoint.to_string())))
    }
}

/// Replaces the text of the (held) `LOCK` file.
fn write_lock_holder(fs: &Fs, file: &File, dir: &Path, holder: &LockHolder) -> Result<()> {
    let text = holder.encode();
    let path = dir.join("LOCK");
    // Written over the old text, then cut to length: a reader never sees an empty file.
    fs.write_all_at(file, text.as_bytes(), 0, &path)?;
    fs.set_len(file, text.len() as u64, &path)
}

/// Takes the vault's exclusive lock, or says who holds it.
fn take_lock(fs: &Fs, dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let mut file = fs.open_rw(&path, true)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = LockHolder::decode(&text);
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
                holder: holder.to_string(),
                endpoint: holder.endpoint,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(format!("lock {}", path.display()), e)),
    }
    write_lock_holder(fs, &file, dir, &LockHolder::me(None))?;
    Ok(file)
}

/// Plans a restore of `cluster`/`db` at `target` from the catalog: the plan and the page
/// size.
fn plan_in(catalog: &Catalog, cluster: &str, db: &str, target: Target) -> Result<(Plan, u32)> {
    let not_found = || Error::NotFound { cluster: cluster.into(), db: db.into() };
    let state = catalog.get(&DbKey { cluster: cluster.into(), db: db.into() }).ok_or_else(not_found)?;
    let (pieces, page_size) = {
        let state = lock(&state);
        if state.deleted {
            return Err(not_found());
        }
        (pieces_of(&state), state.page_size)
    };
    if pieces.is_empty() {
        return Err(not_found());
    }
    Ok((restore::plan(&pieces, target)?, page_size))
}

/// Every stored run of a database's history, all levels.
fn pieces_of(state: &DbState) -> Vec<Run> {
    state.runs.iter().chain(state.levels.iter().flatten()).cloned().collect()
}

/// Loads every level file into the catalog (header and trailer checked against the
/// checksum in the file name; pages are verified when the file is read). Temporary files of
/// an interrupted compaction are removed, and so is a database directory that a failed or
/// interrupted `ensure_db_dir` left without its NAME and without level files; a level
/// whose files do not follow each other fails the open.
fn load_levels(fs: &Fs, levels_dir: &Path, catalog: &Catalog, sums_dir: &Path, metrics: &Metrics) -> Result<()> {
    let entries = std::fs::read_dir(levels_dir).map_err(|e| Error::io(format!("list {}", levels_dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("list {}", levels_dir.display()), e))?;
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        if !dir.join("NAME").exists() && unnamed_dir_is_unused(&dir)? {
            tracing::warn!(dir = %dir.display(), "removing a level directory whose creation did not finish");
            fs.remove_dir_all(&dir)?;
            continue;
        }
        let (cluster, db) = read_db_name(&dir)?;
        let key = DbKey { cluster, db };
        let mut found: Vec<Run> = Vec::new();
        let mut page_sizes: Vec<u32> = Vec::new();
        let files = std::fs::read_dir(&dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        for file in files {
            let file = file.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
            let name = file.file_name().to_string_lossy().into_owned();
            if is_temporary(&name) {
                let _ = fs.remove_file(&file.path());
                continue;
            }
            if let Some((max, sum)) = crate::image::parse_image_file_name(&name) {
                let (run, page_size) = crate::image::load_image(&file.path(), sum)?;
                page_sizes.push(page_size);
                if run.max_txid != max {
                    return Err(Error::Corrupt {
                        file: file.path(),
                        offset: 0,
                        reason: format!("file name says TXID {max}, the footer {}", run.max_txid),
                    });
                }
                found.push(run);
                continue;
            }
            let Some((level, min, max, ends)) = parse_level_file_name(&name) else { continue };
            let (run, page_size) = load_level_file(&file.path(), level, ends)?;
            page_sizes.push(page_size);
            if (run.min_txid, run.max_txid) != (min, max) {
                return Err(Error::Corrupt {
                    file: file.path(),
                    offset: 0,
                    reason: format!("file name says TXID {min}..{max}, the header {}..{}", run.min_txid, run.max_txid),
                });
            }
            found.push(run);
        }
        found.sort_by_key(|r| (r.level, r.min_txid, r.max_txid));
        let state = catalog.get_or_create(&key, || new_state(fs, sums_dir, &key, metrics))?;
        let mut state = lock(&state);
        page_sizes.dedup();
        match page_sizes[..] {
            [] => {}
            [page_size] => state.page_size = page_size,
            _ => {
                return Err(Error::Corrupt {
                    file: dir.clone(),
                    offset: 0,
                    reason: format!(
                        "level files of {}/{} disagree on the page size: {page_sizes:?}",
                        key.cluster, key.db
                    ),
                });
            }
        }
        for run in found {
            let index = usize::from(run.level).saturating_sub(1);
            if index >= state.levels.len() {
                continue;
            }
            let list = &mut state.levels[index];
            let extends = |last: &Run| match run.source {
                Source::Image(_) => run.max_txid > last.max_txid,
                _ => run.min_txid.follows(last.max_txid),
            };
            if let Some(last) = list.last()
                && !extends(last)
            {
                return Err(Error::Corrupt {
                    file: run.path().map(Path::to_path_buf).unwrap_or_default(),
                    offset: 0,
                    reason: format!(
                        "L{} file starts at TXID {}, the previous ends at {}",
                        run.level, run.min_txid, last.max_txid
                    ),
                });
            }
            list.push(run);
        }
    }
    Ok(())
}

/// Whether a file name is one of [`TempFile`]'s temporary names.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Whether a database directory without a NAME holds nothing but temporary files: what
/// `ensure_db_dir` leaves when it fails between creating the directory and installing the
/// NAME (no level file is ever written before the NAME is in place).
fn unnamed_dir_is_unused(dir: &Path) -> Result<bool> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        if !is_temporary(&entry.file_name().to_string_lossy()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What a retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Pieces of history dropped from the catalog (log records, level files, images).
    pub pieces: usize,
    /// Level files and images deleted.
    pub files: usize,
    /// Log segments deleted.
    pub segments: usize,
    /// Bytes of the pieces dropped.
    pub bytes: u64,
}

/// The parts of the vault a retention pass works on.
struct Retention {
    catalog: Arc<Catalog>,
    segments: Arc<Segments>,
    retention_ms: Vec<Option<i64>>,
    clock: Arc<dyn Clock>,
    gate: Arc<RwLock<()>>,
}

impl Retention {
    /// One pass: per database, drops the expired pieces from the catalog and deletes their
    /// files oldest first (so a crash part way leaves each level contiguous); then deletes
    /// the log segments before the first kept record of every database, oldest first,
    /// never the newest segment (the writer's).
    fn run(&self) -> Result<RetentionReport> {
        let _deleting = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now_ms();
        let mut report = RetentionReport::default();
        let mut first_error = None;
        for key in self.catalog.keys() {
            let Some(state) = self.catalog.get(&key) else { continue };
            let doomed: Vec<Run> = {
                let mut state = lock(&state);
                let lists: Vec<&[Run]> =
                    std::iter::once(&state.runs[..]).chain(state.levels.iter().map(|l| &l[..])).collect();
                let counts = crate::retention::expired(&lists, &self.retention_ms, now);
                let mut doomed: Vec<Run> = state.runs.drain(..counts[0]).collect();
                for (list, &n) in state.levels.iter_mut().zip(&counts[1..]) {
                    doomed.extend(list.drain(..n));
                }
                let freed: u64 = doomed.iter().map(|run| stored_bytes(&key, run)).sum();
                state.stored_bytes = state.stored_bytes.saturating_sub(freed);
                self.catalog.usage.sub(&key.cluster, freed);
                doomed
            };
            if let Err(e) = self.delete_pieces(&state, doomed, &mut report) {
                tracing::error!(cluster = %key.cluster, db = %key.db, error = %e, "retention could not delete a file; it stays until the next pass");
                first_error.get_or_insert(e);
            }
        }
        let ids = self.segments.ids()?;
        let newest = ids.last().copied().unwrap_or(0);
        for id in ids.into_iter().take_while(|&id| id < newest) {
            if !self.segment_is_expired(id)? {
                break;
            }
            self.segments.delete(id)?;
            report.segments += 1;
        }
        if report.segments > 0 {
            self.segments.fs().sync_dir(self.segments.dir())?;
        }
        if report.pieces > 0 {
            tracing::info!(
                pieces = report.pieces,
                files = report.files,
                segments = report.segments,
                bytes = report.bytes,
                "retention pass"
            );
        }
        first_error.map_or(Ok(report), Err)
    }

    /// Deletes the files of pieces already taken out of a database's catalog entry (in
    /// catalog order, oldest first per level) and syncs their directories. When a deletion
    /// fails, that piece and every later one go back to the front of their levels, so the
    /// catalog keeps describing what is on disk and the next pass tries again.
    fn delete_pieces(&self, state: &Mutex<DbState>, doomed: Vec<Run>, report: &mut RetentionReport) -> Result<()> {
        let fs = self.segments.fs();
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (i, run) in doomed.iter().enumerate() {
            if let Some(path) = run.path() {
                if let Err(e) = fs.remove_file(path) {
                    let mut state = lock(state);
                    for back in doomed[i..].iter().rev() {
                        let index = usize::from(back.level).saturating_sub(1);
                        if back.level > 0
                            && let Some(list) = state.levels.get_mut(index)
                        {
                            list.insert(0, back.clone());
                        }
                    }
                    return Err(e);
                }
                report.files += 1;
                if let Some(dir) = path.parent()
                    && !dirs.iter().any(|d| d == dir)
                {
                    dirs.push(dir.to_path_buf());
                }
            }
            report.pieces += 1;
            report.bytes += run.bytes;
        }
        for dir in dirs {
            fs.sync_dir(&dir)?;
        }
        Ok(())
    }
}

impl Retention {
    /// Whether every record of sealed segment `id` is history the catalog no longer keeps
    /// in the log: its database's first kept log record comes after it and a level piece
    /// covers it. Decided from the records themselves, not from the catalog's runs alone,
    /// so a record whose upload is durable but not yet in the catalog (acknowledged a
    /// moment from now) keeps its segment.
    fn segment_is_expired(&self, id: u64) -> Result<bool> {
        for record in self.segments.record_headers(id)? {
            let key = DbKey { cluster: record.cluster.clone(), db: record.db.clone() };
            // A deleted history's records are expired. A tombstone hides only records before
            // it, and those go with its segment or before it (segments go oldest first).
            if record.kind == KIND_TOMBSTONE || self.catalog.is_deleted_record(&key, record.seq) {
                continue;
            }
            let Some(state) = self.catalog.get(&key) else { return Ok(false) };
            let state = lock(&state);
            let after_log = state.runs.first().is_none_or(|first| first.min_txid > record.max_txid);
            let covered = state.levels.iter().flatten().any(|piece| piece.max_txid >= record.max_txid);
            if !(after_log && covered) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The retention thread: a pass every `every`, until stopped.
fn retention_loop(retention: &Retention, every: Duration, stop: &(Mutex<bool>, Condvar)) {
    let (flag, wake) = stop;
    loop {
        let stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
        let (stopped, _) = wake.wait_timeout(stopped, every).unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
        drop(stopped);
        if let Err(e) = retention.run() {
            tracing::error!(error = %e, "retention pass failed; will retry");
        }
    }
}

/// Pause of a compactor thread between passes.
const COMPACTION_EVERY: Duration = Duration::from_secs(1);
/// Longest pause after failed passes (the pause doubles from [`COMPACTION_EVERY`] with
/// every failure in a row).
const COMPACTION_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A compactor thread: one pass of its level, then sleep until woken or a second passes.
/// After a failed pass (the level stays where it was) the pause doubles, up to 30 s, until
/// a pass succeeds: a full or failing disk is not hammered, and ingest, which compaction
/// never poisons, has the first claim on what space there is. Other failures are logged
/// per database by `run_level` and once per pass here; a full disk is said once when it
/// starts and once when it ends.
fn compaction_loop(compactor: &Compactor, level: u8, stop: &(Mutex<bool>, Condvar)) {
    let (flag, wake) = stop;
    let mut pause = COMPACTION_EVERY;
    let mut disk_full = false;
    loop {
        pause = match compactor.run_level(level) {
            Ok(_) => {
                if std::mem::take(&mut disk_full) {
                    tracing::info!(level, "the vault's disk has room again: compaction resumed");
                }
                COMPACTION_EVERY
            }
            Err(e) => {
                let next = (pause * 2).min(COMPACTION_BACKOFF_MAX);
                if !e.is_no_space() {
                    tracing::warn!(level, retry_in_s = next.as_secs(), "compaction pass failed; backing off");
                } else if !std::mem::replace(&mut disk_full, true) {
                    tracing::warn!(level, error = %e, "the vault's disk is full: compaction paused, retrying at growing intervals (up to 30 s)");
                }
                next
            }
        };
        let stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
        let (stopped, _) = wake.wait_timeout(stopped, pause).unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
    }
}

/// What a queued upload's record says, for the run the acknowledgement adds, and what
/// undoes its move of the pending state if the writer refuses it.
struct Accepted {
    pre_apply: Checksum,
    post_apply: Checksum,
    effective_ms: i64,
    /// The database's size before the upload, for the page-checksum map.
    old_commit: u32,
    /// What the record was charged against the cluster's quota.
    footprint: u64,
    rewind: Rewind,
}

/// The pending state of a database before an upload was queued.
struct Rewind {
    page_size: u32,
    pending: Position,
    pending_commit: u32,
    pending_timestamp_ms: i64,
}

/// A database's one upload in flight (see `DbState::in_flight`): set while its record is
/// queued; cleared by [`InFlight::finish`] once the answer is applied, or, on an early
/// return or a panic, when dropped. Whoever waits for it is woken when it goes.
struct InFlight {
    state: Arc<Mutex<DbState>>,
    _turn: Sender<()>,
    finished: bool,
}

impl InFlight {
    fn start(guard: &mut DbState, state: Arc<Mutex<DbState>>) -> InFlight {
        let (turn, waiters) = crossbeam::channel::bounded(0);
        guard.in_flight = Some(waiters);
        InFlight { state, _turn: turn, finished: false }
    }

    /// Clears the mark under the lock the caller holds; waiters wake when `self` drops.
    fn finish(mut self, state: &mut DbState) {
        state.in_flight = None;
        self.finished = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.finished {
            lock(&self.state).in_flight = None;
        }
    }
}

/// The database checksum before an upload, as the vault records it: none for a snapshot,
/// otherwise the stored position's (the upload's own may be absent: Litestream files carry
/// no checksums).
fn record_pre_apply(header: &Header, position: Position) -> Checksum {
    if header.is_snapshot() { Checksum::NONE } else { position.checksum }
}
