//! The in-memory index of the vault: for every database its position, HWM, page size and
//! the ordered runs of stored history, each with its TXID and time range and location.
//! Rebuilt at open from the log (see `segment::recover`).

pub mod pagesums;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::ltx::{Checksum, TxId};
use crate::segment::Location;
use pagesums::PageSums;

/// A replication position: the last TXID and the database checksum after it. The zero
/// position means "no data".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Last TXID applied.
    pub txid: TxId,
    /// Database checksum after it.
    pub checksum: Checksum,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.txid, self.checksum)
    }
}

/// Where a run is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A record of the L0 log.
    Log(Location),
    /// A level file (LTX).
    File(PathBuf),
    /// An L3 database image: the database's bytes, then a footer (see `image`).
    Image(PathBuf),
}

/// One stored piece of history, of any level: an upload in the L0 log, or an L1/L2 file
/// that compacts a window of the level below. The unit restores and compactions read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// 0 for an upload in the log, 1 or 2 for a compaction level, 3 for a database image.
    pub level: u8,
    /// First TXID.
    pub min_txid: TxId,
    /// Last TXID.
    pub max_txid: TxId,
    /// Effective (monotonic) timestamp of the last transaction, ms.
    pub timestamp_ms: i64,
    /// Database size in pages after the run.
    pub commit: u32,
    /// Database checksum before the run (none for a snapshot).
    pub pre_apply: Checksum,
    /// Database checksum after the run.
    pub post_apply: Checksum,
    /// Stored bytes (payload or file).
    pub bytes: u64,
    /// Where it is.
    pub source: Source,
}

impl Run {
    /// The log record of a level-0 run.
    pub fn location(&self) -> Option<Location> {
        match &self.source {
            Source::Log(location) => Some(*location),
            Source::File(_) | Source::Image(_) => None,
        }
    }

    /// The file of a level run.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            Source::File(path) | Source::Image(path) => Some(path),
            Source::Log(_) => None,
        }
    }
}

#[cfg(test)]
impl Run {
    /// A level-`level` run of TXIDs `min..=max` ending at `ts`, for unit tests: 10 bytes in
    /// the log, checksums made up from the TXIDs.
    pub(crate) fn for_test(level: u8, min: u64, max: u64, ts: i64) -> Run {
        Run {
            level,
            min_txid: TxId(min),
            max_txid: TxId(max),
            timestamp_ms: ts,
            commit: 1,
            pre_apply: Checksum(Checksum::FLAG | (min - 1)),
            post_apply: Checksum(Checksum::FLAG | max),
            bytes: 10,
            source: Source::Log(Location { segment: 1, offset: min }),
        }
    }
}

/// Identifies a database: cluster and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DbKey {
    /// Cluster name.
    pub cluster: String,
    /// Database name.
    pub db: String,
}

/// The state of one database. `pending` runs ahead of `durable` while uploads wait for
/// their fsync; validation uses `pending`, readers see `durable`.
pub struct DbState {
    /// Page size, 0 before the first upload.
    pub page_size: u32,
    /// Position including uploads accepted into the log queue.
    pub pending: Position,
    /// Commit (pages) at `pending`.
    pub pending_commit: u32,
    /// Effective timestamp at `pending`.
    pub pending_timestamp_ms: i64,
    /// Position of the durable history.
    pub durable: Position,
    /// Commit at `durable`.
    pub durable_commit: u32,
    /// Highest TXID durable in the vault; never goes backwards.
    pub hwm: TxId,
    /// Durable runs, ordered by TXID.
    pub runs: Vec<Run>,
    /// The page-checksum map at `pending`.
    pub sums: PageSums,
    /// Compaction levels: index 0 holds L1 runs, index 1 L2 runs, index 2 L3 images, each
    /// ordered by TXID.
    pub levels: Vec<Vec<Run>>,
    /// What the map vouched for when it was opened (used once, at vault open).
    pub clean_point: Option<pagesums::CleanPoint>,
    /// Bytes the database occupies, as its cluster's quota counts them (see `quota`):
    /// every piece in `runs` and `levels` plus the records queued for the log. Changed
    /// together with the cluster's count in `Catalog::usage`, under this state's lock.
    pub stored_bytes: u64,
    /// Set by `Vault::delete_database`, under this state's lock, just before the state
    /// leaves the catalog: a thread that fetched the state earlier and locks it only now
    /// must not use it (ingest fetches the database again, readers report it missing).
    pub deleted: bool,
    /// The ingest counters of the database's cluster, so an upload adds to them without a
    /// lookup.
    pub counters: crate::metrics::ClusterCounters,
    /// Set while an upload of this database is between the log queue and its answer;
    /// another upload waits until it is cleared (a receive on it returns once the first is
    /// answered). One record in flight per database is what lets the writer refuse a record
    /// (a full disk) cleanly: nothing of the database was queued after it, so nothing
    /// depends on it, and putting the pending state back undoes it.
    pub in_flight: Option<crossbeam::channel::Receiver<()>>,
}

impl DbState {
    /// Records a durable run (from an acknowledged write or from recovery), keeping runs
    /// ordered, and moves `durable` and the HWM forward.
    pub fn add_durable(&mut self, run: Run) {
        if run.max_txid > self.durable.txid {
            self.durable = Position { txid: run.max_txid, checksum: run.post_apply };
            self.durable_commit = run.commit;
        }
        self.hwm = self.hwm.max(run.max_txid);
        let at = self.runs.partition_point(|r| r.min_txid < run.min_txid);
        self.runs.insert(at, run);
    }
}

/// The bytes a stored piece of `key`'s history occupies: a log record's whole length
/// (header, names, payload, padding), a level file's or an image's size.
pub fn stored_bytes(key: &DbKey, run: &Run) -> u64 {
    match run.source {
        Source::Log(_) => crate::segment::format::align_up(
            (crate::segment::format::RECORD_FIXED_SIZE + key.cluster.len() + key.db.len()) as u64 + run.bytes,
        ),
        Source::File(_) | Source::Image(_) => run.bytes,
    }
}

/// All databases, by cluster and name, and the deletions the log still remembers.
#[derive(Default)]
pub struct Catalog {
    /// Bytes each cluster stores (see `quota`).
    pub usage: crate::quota::Usage,
    dbs: RwLock<BTreeMap<DbKey, Arc<Mutex<DbState>>>>,
    /// For every database deleted while its records may still sit in the log: the sequence
    /// number of its newest tombstone record. Records of the database with a lower
    /// sequence number belong to the deleted history.
    tombstones: RwLock<BTreeMap<DbKey, u64>>,
}

impl Catalog {
    /// The database's state, if it exists.
    pub fn get(&self, key: &DbKey) -> Option<Arc<Mutex<DbState>>> {
        self.dbs.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// The database's state, created by `make` if it does not exist yet.
    pub fn get_or_create(
        &self,
        key: &DbKey,
        make: impl FnOnce() -> crate::Result<DbState>,
    ) -> crate::Result<Arc<Mutex<DbState>>> {
        if let Some(db) = self.get(key) {
            return Ok(db);
        }
        let mut dbs = self.dbs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = dbs.get(key) {
            return Ok(db.clone());
        }
        let db = Arc::new(Mutex::new(make()?));
        dbs.insert(key.clone(), db.clone());
        Ok(db)
    }

    /// The databases of one cluster, sorted by name: a range of the map, so its cost does
    /// not grow with the other clusters.
    pub fn cluster(&self, cluster: &str) -> Vec<(DbKey, Arc<Mutex<DbState>>)> {
        let start = DbKey { cluster: cluster.to_string(), db: String::new() };
        self.dbs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range(start..)
            .take_while(|(key, _)| key.cluster == cluster)
            .map(|(key, state)| (key.clone(), state.clone()))
            .collect()
    }

    /// Every database key, sorted.
    pub fn keys(&self) -> Vec<DbKey> {
        self.dbs.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    /// Forgets a database (its deletion is durable). The next `get_or_create` makes a new,
    /// empty state.
    pub fn remove(&self, key: &DbKey) {
        self.dbs.write().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Records a database's tombstone: log records of it with a lower sequence number are
    /// deleted history.
    pub fn set_tombstone(&self, key: &DbKey, seq: u64) {
        let mut tombstones = self.tombstones.write().unwrap_or_else(|e| e.into_inner());
        let entry = tombstones.entry(key.clone()).or_insert(seq);
        *entry = (*entry).max(seq);
    }

    /// Whether the log record of `key` with sequence number `seq` belongs to a deleted
    /// history.
    pub fn is_deleted_record(&self, key: &DbKey, seq: u64) -> bool {
        self.tombstones.read().unwrap_or_else(|e| e.into_inner()).get(key).is_some_and(|&tombstone| seq < tombstone)
    }
}

/// Locks a database's state. A poisoned mutex (a panic while it was held) is taken as is:
/// the vault poisons itself on worker panics, and the state is only read afterwards.
pub fn lock(db: &Mutex<DbState>) -> MutexGuard<'_, DbState> {
    db.lock().unwrap_or_else(|e| e.into_inner())
}
