//! The engine's metrics, owned by the [`Vault`](crate::Vault) and readable without a server
//! (`Vault::metrics`, `Vault::metrics_text`): the server's `GET /metrics` serves them, the
//! CLI and the benches can read the same numbers.
//!
//! ```text
//!  hot paths (push)                         scrape (pull)
//!  ─────────────────────────────────        ──────────────────────────────────────────
//!  ingest: Counter::inc, Histogram::observe  Vault::gauges() walks the catalog once
//!  log writer: batch size, write+sync time   (queue depth, HWM lag, compaction lag,
//!  compactor: bytes/pieces written           stored bytes, poisoned, free space)
//!  restores: count, duration                 Metrics::encode: sets the gauges and
//!                                            writes every metric, Prometheus text 0.0.4
//! ```
//!
//! Everything the hot paths touch is an atomic: counters are `prometheus-client`'s
//! (one `fetch_add`), histograms are [`Histogram`] below (one `fetch_add` on a bucket and
//! one on the sum; the crate's own histogram takes a mutex per observation). The per-cluster
//! ingest counters are looked up once per database and kept in its catalog state, so an
//! upload touches no map. Gauges that describe the vault's state are computed at scrape
//! time from the catalog instead of being kept up to date on every change.
//!
//! Labels are bounded: `cluster` (never the database), `level`, the restore `kind`. A
//! metric is added with a field and one line in [`Metrics::new`] (see `add`); a gauge
//! computed from the vault's state also gets a field in [`Gauges`] and a line in
//! [`Metrics::set_gauges`].

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry, Unit};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds, in microseconds, for request-like latencies (an upload's, an HTTP
/// request's): 100 µs to 10 s.
pub const LATENCY_BUCKETS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];
/// Upper bounds, in microseconds, for one group commit's write and fdatasync: 50 µs to 1 s.
pub const SYNC_BUCKETS_US: &[u64] =
    &[50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000];
/// Upper bounds, in microseconds, for restores: 1 ms to 1 h.
pub const RESTORE_BUCKETS_US: &[u64] = &[
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    3_600_000_000,
];
/// Upper bounds for the records of one group commit: 1 to 4096 (the writer's batch limit).
pub const BATCH_RECORD_BUCKETS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
/// Upper bounds for the bytes of one group commit: 4 KiB to 16 MiB (the default batch limit).
pub const BATCH_BYTE_BUCKETS: &[u64] = &[4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20];

const _: () = assert!(BATCH_RECORD_BUCKETS[BATCH_RECORD_BUCKETS.len() - 1] == 4096);

/// A histogram with fixed buckets whose observations are lock-free: values are whole
/// numbers of a base unit (microseconds, records, bytes) and each observation is one
/// `fetch_add` on its bucket and one on the sum. Clones share the counts.
#[derive(Clone)]
pub struct Histogram(Arc<HistogramInner>);

struct HistogramInner {
    /// Upper bounds in the base unit, ascending; a last, implicit bucket is +Inf.
    bounds: &'static [u64],
    /// One count per bound, then the +Inf bucket (not cumulative).
    counts: Box<[AtomicU64]>,
    /// Sum of the observed values in the base unit.
    sum: AtomicU64,
    /// Base units per exported unit (1e6 for microseconds exported as seconds). A divisor,
    /// not a factor: 100 / 1e6 is the double nearest 0.0001, 100 * 1e-6 is not.
    divisor: f64,
}

impl Histogram {
    /// Observes microseconds, exported as seconds.
    pub fn seconds(bounds_us: &'static [u64]) -> Histogram {
        Histogram::new(bounds_us, 1e6)
    }

    /// Observes plain numbers (records, bytes), exported as they are.
    pub fn numbers(bounds: &'static [u64]) -> Histogram {
        Histogram::new(bounds, 1.0)
    }

    fn new(bounds: &'static [u64], divisor: f64) -> Histogram {
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "histogram bounds must ascend");
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram(Arc::new(HistogramInner { bounds, counts, sum: AtomicU64::new(0), divisor }))
    }

    /// Counts one value (in the base unit).
    pub fn observe(&self, value: u64) {
        let inner = &*self.0;
        let bucket = inner.bounds.partition_point(|&bound| bound < value);
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        inner.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Counts a duration (for a histogram made with [`Histogram::seconds`]).
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Sum of the observations, in the exported unit.
    pub fn sum(&self) -> f64 {
        self.0.sum.load(Ordering::Relaxed) as f64 / self.0.divisor
    }

    /// (upper bound in the exported unit, count in that bucket alone), +Inf last.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let inner = &*self.0;
        let bounds = inner.bounds.iter().map(|&b| b as f64 / inner.divisor).chain(std::iter::once(f64::INFINITY));
        bounds.zip(inner.counts.iter().map(|c| c.load(Ordering::Relaxed))).collect()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram").field("count", &self.count()).field("sum", &self.sum()).finish()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let buckets = self.buckets();
        // The count is the buckets' total, so that it equals the +Inf bucket even while
        // observations land during the scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram(self.sum(), count, &buckets, None::<&std::collections::HashMap<usize, NoExemplar>>)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

type NoExemplar = Exemplar<NoLabelSet, f64>;

/// A family of histograms, one per label set, all with the same buckets.
pub type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// `{cluster="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    /// The cluster.
    pub cluster: String,
}

/// `{level="..."}`: 0 for the log, then 1, 2, 3.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabel {
    /// The level.
    pub level: u8,
}

/// `{cluster="...",level="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLevelLabels {
    /// The cluster.
    pub cluster: String,
    /// The level.
    pub level: u8,
}

/// `{cluster="...",db="..."}`: the one exception to "no database labels", for the
/// results the issue asks per database (the restore drills' last result); one series per
/// database, so keep it to a few gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DbLabels {
    /// The cluster.
    pub cluster: String,
    /// The database.
    pub db: String,
}

/// `{kind="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What kind of restore.
    pub kind: &'static str,
}

/// `{kind="...",outcome="ok|error"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestoreLabels {
    /// What kind of restore.
    pub kind: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// What can find damaged data: the L3 compactor's image check, a restore's checks, a
/// restore drill, `verify`'s re-read of every stored byte.
pub const FOUND_BY: [&str; 4] = ["compaction", "restore", "drill", "verify"];

/// `{found_by="compaction|restore|drill|verify"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FoundByLabel {
    /// The work that found it.
    pub found_by: &'static str,
}

/// What a restore was for; the `kind` label of the restore metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreKind {
    /// A restore to a file (`ltxvault restore`, `Vault::restore`).
    Restore,
    /// A snapshot streamed out (`GET /db/snapshot`, `export`).
    Snapshot,
    /// A restore in place: the database goes back to a point by a new transaction.
    InPlace,
    /// A database cloned at a point into another name.
    Clone,
}

impl RestoreKind {
    /// Every kind, in label order.
    pub const ALL: [RestoreKind; 4] =
        [RestoreKind::Restore, RestoreKind::Snapshot, RestoreKind::InPlace, RestoreKind::Clone];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreKind::Restore => "restore",
            RestoreKind::Snapshot => "snapshot",
            RestoreKind::InPlace => "in_place",
            RestoreKind::Clone => "clone",
        }
    }
}

/// The ingest counters of one cluster. Cloned into every database's catalog state, so an
/// upload adds to them without a lookup.
#[derive(Clone, Debug)]
pub struct ClusterCounters {
    /// Transactions made durable.
    pub uploads: Counter,
    /// Their bytes.
    pub bytes: Counter,
}

/// What the vault's state looks like at one instant: computed by `Vault::gauges` at scrape
/// time, written out by [`Metrics::encode`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gauges {
    /// Uploads waiting in the ingest queue for the log writer.
    pub queue_depth: u64,
    /// The queue's capacity.
    pub queue_capacity: u64,
    /// Whether a failed write has poisoned the vault.
    pub poisoned: bool,
    /// Per cluster.
    pub clusters: BTreeMap<String, ClusterGauges>,
    /// Per compaction level, index 0 = L1.
    pub compaction: Vec<CompactionGauges>,
    /// Bytes of the log's segment files on disk (preallocated space included).
    pub log_segment_bytes: Option<u64>,
    /// Bytes free for the vault's user on its file system.
    pub free_bytes: Option<u64>,
}

/// Gauges of one cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterGauges {
    /// Databases with data.
    pub databases: u64,
    /// Largest distance, in TXIDs, between what a database has accepted into the log queue
    /// and its HWM (what is durable).
    pub hwm_lag_txids: u64,
    /// Bytes of stored pieces per level: index 0 the log's uploads, then L1, L2, L3.
    pub stored_bytes: Vec<u64>,
    /// Databases whose last restore drill failed.
    pub drills_failed: u64,
    /// Databases never drilled (since the drill results file began).
    pub drills_missing: u64,
    /// Seconds since the oldest of the databases' last drills started (0 when none ran).
    pub oldest_drill_age_seconds: f64,
}

/// Gauges of one compaction level.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompactionGauges {
    /// Seconds since the end of the window of the oldest piece of the level below that this
    /// level has not taken in yet (largest over the databases; 0 when none is waiting or its
    /// window is still open).
    pub lag_seconds: f64,
    /// Pieces of the level below this level has not taken in yet (all databases; those of
    /// open windows included).
    pub backlog_pieces: u64,
}

/// The engine's metrics and the registry they are written from.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Metric sets of other parts, by type (see [`Metrics::extension`]).
    extensions: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    uploads: Family<ClusterLabel, Counter>,
    ingested_bytes: Family<ClusterLabel, Counter>,
    /// From `Vault::ingest` to the acknowledgement (the upload is durable).
    pub ingest_latency: Histogram,
    /// Records per group commit.
    pub batch_records: Histogram,
    /// Bytes per group commit.
    pub batch_bytes: Histogram,
    /// One group commit's gather write and fdatasync.
    pub log_sync: Histogram,
    compaction_written_bytes: Family<LevelLabel, Counter>,
    compaction_written_pieces: Family<LevelLabel, Counter>,
    compaction_failures: Family<LevelLabel, Counter>,
    restores: Family<RestoreLabels, Counter>,
    restore_duration: HistogramFamily<KindLabel>,
    corruptions: Family<FoundByLabel, Counter>,
    // Set from `Gauges` at each scrape.
    queue_depth: Gauge,
    queue_capacity: Gauge,
    poisoned: Gauge,
    databases: Family<ClusterLabel, Gauge>,
    hwm_lag: Family<ClusterLabel, Gauge>,
    drills_failed: Family<ClusterLabel, Gauge>,
    drills_missing: Family<ClusterLabel, Gauge>,
    oldest_drill_age: Family<ClusterLabel, Gauge<f64, AtomicU64>>,
    stored_bytes: Family<ClusterLevelLabels, Gauge>,
    compaction_lag: Family<LevelLabel, Gauge<f64, AtomicU64>>,
    compaction_backlog: Family<LevelLabel, Gauge>,
    log_segment_bytes: Gauge,
    free_bytes: Gauge,
}

/// Registers `metric` under `name` (the `ltxvault_` prefix, the unit and, for counters,
/// `_total` are added) and returns it: one line per metric in [`Metrics::new`].
fn add<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, metric: M) -> M {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

impl Metrics {
    /// Metrics for a vault with `levels` compaction levels (L1..=L`levels`).
    pub fn new(levels: usize) -> Metrics {
        let r = &mut Registry::with_prefix("ltxvault");
        let seconds = || Some(Unit::Seconds);
        let bytes = || Some(Unit::Bytes);
        let metrics = Metrics {
            uploads: add(
                r,
                "ingest_uploads",
                "Transactions made durable in the log (uploads, and the transactions restores in place, SQLite uploads and clones write)",
                None,
                Family::default(),
            ),
            ingested_bytes: add(
                r,
                "ingest",
                "Bytes of the transactions made durable in the log",
                bytes(),
                Family::default(),
            ),
            ingest_latency: add(
                r,
                "ingest_latency",
                "Time from the vault taking an upload to its acknowledgement (validated, written, fdatasynced)",
                seconds(),
                Histogram::seconds(LATENCY_BUCKETS_US),
            ),
            batch_records: add(
                r,
                "log_batch_records",
                "Records written by one group commit (one write, one fdatasync)",
                None,
                Histogram::numbers(BATCH_RECORD_BUCKETS),
            ),
            batch_bytes: add(
                r,
                "log_batch",
                "Bytes written by one group commit",
                bytes(),
                Histogram::numbers(BATCH_BYTE_BUCKETS),
            ),
            log_sync: add(
                r,
                "log_sync",
                "Time of one group commit's gather write and fdatasync",
                seconds(),
                Histogram::seconds(SYNC_BUCKETS_US),
            ),
            compaction_written_bytes: add(
                r,
                "compaction_written",
                "Bytes of level files and images written by compaction, per level",
                bytes(),
                Family::default(),
            ),
            compaction_written_pieces: add(
                r,
                "compaction_written_pieces",
                "Level files and images written by compaction, per level",
                None,
                Family::default(),
            ),
            compaction_failures: add(
                r,
                "compaction_failures",
                "Compactions of one database that failed (the level is not advanced), per level",
                None,
                Family::default(),
            ),
            restores: add(
                r,
                "restores",
                "Restores finished, by kind and outcome (a request for a database or point that does not exist is not counted)",
                None,
                Family::default(),
            ),
            restore_duration: add(
                r,
                "restore_duration",
                "Time of successful restores, by kind (a snapshot's until its last byte is handed to the client)",
                seconds(),
                Family::new_with_constructor(|| Histogram::seconds(RESTORE_BUCKETS_US)),
            ),
            corruptions: add(
                r,
                "corruptions",
                "Stored data found damaged: by compaction (an image whose checksum does not match) or by a restore (a check of an input or of the result failed)",
                None,
                Family::default(),
            ),
            queue_depth: add(
                r,
                "ingest_queue_depth",
                "Uploads waiting in the ingest queue for the log writer",
                None,
                Gauge::default(),
            ),
            queue_capacity: add(
                r,
                "ingest_queue_capacity",
                "Capacity of the ingest queue (ingest.queue_capacity)",
                None,
                Gauge::default(),
            ),
            poisoned: add(
                r,
                "poisoned",
                "1 when a failed write has poisoned the vault (every write is refused until it is reopened), else 0",
                None,
                Gauge::default(),
            ),
            databases: add(r, "databases", "Databases with data, per cluster", None, Family::default()),
            hwm_lag: add(
                r,
                "hwm_lag_txids",
                "Largest number of TXIDs a database of the cluster has accepted into the log queue beyond its HWM (what is durable)",
                None,
                Family::default(),
            ),
            drills_failed: add(
                r,
                "drill_failed_databases",
                "Databases of the cluster whose last restore drill failed (`ltxvault info` says why)",
                None,
                Family::default(),
            ),
            drills_missing: add(
                r,
                "drill_missing_databases",
                "Databases of the cluster with no restore drill yet",
                None,
                Family::default(),
            ),
            oldest_drill_age: add(
                r,
                "drill_oldest_age_seconds",
                "Seconds since the oldest last restore drill of a database of the cluster started",
                None,
                Family::default(),
            ),
            stored_bytes: add(
                r,
                "stored",
                "Bytes stored per cluster and level: level 0 the uploads in the log, 1 and 2 level files, 3 images",
                bytes(),
                Family::default(),
            ),
            compaction_lag: add(
                r,
                "compaction_lag",
                "Per level: time since the end of the window of the oldest piece of the level below not yet compacted into it (largest over the databases; 0 when nothing waits or its window is open)",
                seconds(),
                Family::default(),
            ),
            compaction_backlog: add(
                r,
                "compaction_backlog_pieces",
                "Per level: pieces of the level below not yet compacted into it, open windows included",
                None,
                Family::default(),
            ),
            log_segment_bytes: add(
                r,
                "log_segments",
                "Bytes of the log's segment files on disk, preallocated space included",
                bytes(),
                Gauge::default(),
            ),
            free_bytes: add(
                r,
                "filesystem_free",
                "Bytes free for the vault on its file system (statvfs f_bavail)",
                bytes(),
                Gauge::default(),
            ),
            registry: Mutex::new(Registry::default()),
            extensions: Mutex::default(),
        };
        // The series every scrape should show even at zero.
        for level in 1..=levels as u8 {
            let label = LevelLabel { level };
            let _ = metrics.compaction_written_bytes.get_or_create(&label);
            let _ = metrics.compaction_written_pieces.get_or_create(&label);
            let _ = metrics.compaction_failures.get_or_create(&label);
        }
        for kind in RestoreKind::ALL {
            for outcome in ["ok", "error"] {
                let _ = metrics.restores.get_or_create(&RestoreLabels { kind: kind.as_str(), outcome });
            }
        }
        for found_by in FOUND_BY {
            let _ = metrics.corruptions.get_or_create(&FoundByLabel { found_by });
        }
        *metrics.registry.lock().unwrap_or_else(|e| e.into_inner()) = std::mem::take(r);
        metrics
    }

    /// Registers another metric (under the `ltxvault_` prefix) to be written with these.
    /// Keep the returned clone's twin to update it: `prometheus-client` metrics share their
    /// value between clones.
    pub fn register(&self, name: &str, help: &str, unit: Option<Unit>, metric: impl Metric + Clone) {
        add(&mut self.registry.lock().unwrap_or_else(|e| e.into_inner()), name, help, unit, metric);
    }

    /// The metric set `T` of another part (the server's, a scheduler's), made and
    /// registered by `make` on the first call and shared by every later one: a part that
    /// starts twice over one vault (a server restarted in the same process) must not
    /// register its metrics twice.
    pub fn extension<T: Send + Sync + 'static>(&self, make: impl FnOnce(&Metrics) -> T) -> Arc<T> {
        let mut extensions = self.extensions.lock().unwrap_or_else(|e| e.into_inner());
        let entry = extensions.entry(TypeId::of::<T>()).or_insert_with(|| Arc::new(make(self)));
        // The entry under T's TypeId was made from a T.
        Arc::clone(entry).downcast::<T>().unwrap_or_else(|_| unreachable!("extensions are keyed by their type"))
    }

    /// The ingest counters of `cluster` (created at zero the first time).
    pub fn cluster_counters(&self, cluster: &str) -> ClusterCounters {
        let label = ClusterLabel { cluster: cluster.to_string() };
        ClusterCounters {
            uploads: self.uploads.get_or_create_owned(&label),
            bytes: self.ingested_bytes.get_or_create_owned(&label),
        }
    }

    /// A compaction of `level` wrote a piece of `bytes`.
    pub fn compacted(&self, level: u8, bytes: u64) {
        let label = LevelLabel { level };
        self.compaction_written_bytes.get_or_create(&label).inc_by(bytes);
        self.compaction_written_pieces.get_or_create(&label).inc();
    }

    /// A compaction of `level` failed for one database.
    pub fn compaction_failed(&self, level: u8) {
        self.compaction_failures.get_or_create(&LevelLabel { level }).inc();
    }

    /// Damaged data was found by `found_by` (one of [`FOUND_BY`]).
    pub fn corruption_found(&self, found_by: &'static str) {
        self.corruptions_found(found_by, 1);
    }

    /// `n` pieces of damaged data were found by `found_by` (one of [`FOUND_BY`]).
    pub fn corruptions_found(&self, found_by: &'static str, n: u64) {
        self.corruptions.get_or_create(&FoundByLabel { found_by }).inc_by(n);
    }

    /// Damaged data found since the vault opened, by any work.
    pub fn corruptions(&self) -> u64 {
        FOUND_BY.iter().map(|&found_by| self.corruptions.get_or_create(&FoundByLabel { found_by }).get()).sum()
    }

    /// Counts a finished restore of `kind` that took `elapsed`: successful ones also go
    /// into the duration histogram. A restore that failed because the data is damaged is
    /// also a corruption found by a restore.
    pub fn restore_done<T>(&self, kind: RestoreKind, elapsed: Duration, result: &crate::Result<T>) {
        let outcome = match result {
            Ok(_) => {
                self.restore_duration.get_or_create(&KindLabel { kind: kind.as_str() }).observe_duration(elapsed);
                "ok"
            }
            Err(e) if !restore_was_attempted(e) => return,
            Err(e) => {
                if is_damage(e) {
                    self.corruption_found("restore");
                }
                "error"
            }
        };
        self.restores.get_or_create(&RestoreLabels { kind: kind.as_str(), outcome }).inc();
    }

    /// Restores of `kind` with `outcome` (`ok` or `error`) so far.
    pub fn restores(&self, kind: RestoreKind, outcome: &'static str) -> u64 {
        self.restores.get_or_create(&RestoreLabels { kind: kind.as_str(), outcome }).get()
    }

    /// Writes every metric in the Prometheus text format (0.0.4), the state gauges set
    /// from `gauges` first.
    pub fn encode(&self, gauges: &Gauges) -> String {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Under the registry's lock, so that two scrapes do not interleave their gauges.
        self.set_gauges(gauges);
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }

    fn set_gauges(&self, g: &Gauges) {
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.queue_depth.set(as_i64(g.queue_depth));
        self.queue_capacity.set(as_i64(g.queue_capacity));
        self.poisoned.set(i64::from(g.poisoned));
        // Clusters come and go: start from empty families so a deleted one disappears.
        self.databases.clear();
        self.hwm_lag.clear();
        self.drills_failed.clear();
        self.drills_missing.clear();
        self.oldest_drill_age.clear();
        self.stored_bytes.clear();
        for (cluster, c) in &g.clusters {
            let label = ClusterLabel { cluster: cluster.clone() };
            self.databases.get_or_create(&label).set(as_i64(c.databases));
            self.hwm_lag.get_or_create(&label).set(as_i64(c.hwm_lag_txids));
            self.drills_failed.get_or_create(&label).set(as_i64(c.drills_failed));
            self.drills_missing.get_or_create(&label).set(as_i64(c.drills_missing));
            self.oldest_drill_age.get_or_create(&label).set(c.oldest_drill_age_seconds);
            for (level, &bytes) in c.stored_bytes.iter().enumerate() {
                let label = ClusterLevelLabels { cluster: cluster.clone(), level: level as u8 };
                self.stored_bytes.get_or_create(&label).set(as_i64(bytes));
            }
        }
        for (index, level) in g.compaction.iter().enumerate() {
            let label = LevelLabel { level: index as u8 + 1 };
            self.compaction_lag.get_or_create(&label).set(level.lag_seconds);
            self.compaction_backlog.get_or_create(&label).set(as_i64(level.backlog_pieces));
        }
        if let Some(bytes) = g.log_segment_bytes {
            self.log_segment_bytes.set(as_i64(bytes));
        }
        if let Some(bytes) = g.free_bytes {
            self.free_bytes.set(as_i64(bytes));
        }
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Whether a restore that failed with `e` got as far as reading data: a database or point
/// that does not exist, or a bad request, is the caller's mistake and not a restore.
fn restore_was_attempted(e: &crate::Error) -> bool {
    use crate::Error;
    match e {
        Error::InFile { source, .. } => restore_was_attempted(source),
        Error::NotFound { .. }
        | Error::NoSuchPoint(_)
        | Error::Invalid(_)
        | Error::InvalidName(_)
        | Error::AlreadyExists { .. } => false,
        _ => true,
    }
}

/// Whether `e`, met while reading stored data back, says the data is damaged.
fn is_damage(e: &crate::Error) -> bool {
    use crate::Error;
    match e {
        Error::InFile { source, .. } => is_damage(source),
        Error::Corrupt { .. } | Error::Format(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_hold_values_up_to_their_bound() {
        let h = Histogram::numbers(&[1, 4, 16]);
        for v in [0, 1, 2, 4, 5, 16, 17, 1000] {
            h.observe(v);
        }
        assert_eq!(h.buckets(), vec![(1.0, 2), (4.0, 2), (16.0, 2), (f64::INFINITY, 2)]);
        assert_eq!(h.count(), 8);
        assert_eq!(h.sum(), (1 + 2 + 4 + 5 + 16 + 17 + 1000) as f64);
    }

    #[test]
    fn the_text_format_has_cumulative_buckets_units_and_totals() {
        let metrics = Metrics::new(3);
        metrics.ingest_latency.observe_duration(Duration::from_micros(300));
        metrics.ingest_latency.observe_duration(Duration::from_secs(60));
        let c = metrics.cluster_counters("c1");
        c.uploads.inc();
        c.bytes.inc_by(4096);
        metrics.compacted(2, 1000);
        metrics.restore_done(RestoreKind::InPlace, Duration::from_millis(3), &Ok(()));
        metrics.restore_done::<()>(RestoreKind::Restore, Duration::ZERO, &Err(crate::Error::NoSuchPoint("x".into())));
        metrics.restore_done::<()>(
            RestoreKind::Snapshot,
            Duration::ZERO,
            &Err(crate::Error::Corrupt { file: "f".into(), offset: 0, reason: "r".into() }),
        );
        let gauges = Gauges {
            queue_depth: 3,
            poisoned: true,
            clusters: [(
                "c1".to_string(),
                ClusterGauges {
                    databases: 2,
                    hwm_lag_txids: 1,
                    stored_bytes: vec![10, 0, 0, 7],
                    ..ClusterGauges::default()
                },
            )]
            .into(),
            compaction: vec![CompactionGauges { lag_seconds: 1.5, backlog_pieces: 4 }],
            ..Gauges::default()
        };
        let text = metrics.encode(&gauges);
        for line in [
            "# TYPE ltxvault_ingest_latency_seconds histogram",
            "ltxvault_ingest_latency_seconds_bucket{le=\"0.00025\"} 0",
            "ltxvault_ingest_latency_seconds_bucket{le=\"0.0005\"} 1",
            "ltxvault_ingest_latency_seconds_bucket{le=\"0.0001\"} 0",
            "ltxvault_ingest_latency_seconds_bucket{le=\"10\"} 1",
            "ltxvault_ingest_latency_seconds_bucket{le=\"+Inf\"} 2",
            "ltxvault_ingest_latency_seconds_count 2",
            "ltxvault_ingest_uploads_total{cluster=\"c1\"} 1",
            "ltxvault_ingest_bytes_total{cluster=\"c1\"} 4096",
            "ltxvault_compaction_written_bytes_total{level=\"2\"} 1000",
            "ltxvault_compaction_written_pieces_total{level=\"1\"} 0",
            "ltxvault_restores_total{kind=\"in_place\",outcome=\"ok\"} 1",
            "ltxvault_restores_total{kind=\"restore\",outcome=\"error\"} 0",
            "ltxvault_restores_total{kind=\"snapshot\",outcome=\"error\"} 1",
            "ltxvault_restore_duration_seconds_count{kind=\"in_place\"} 1",
            "ltxvault_corruptions_total{found_by=\"restore\"} 1",
            "ltxvault_ingest_queue_depth 3",
            "ltxvault_poisoned 1",
            "ltxvault_databases{cluster=\"c1\"} 2",
            "ltxvault_stored_bytes{cluster=\"c1\",level=\"3\"} 7",
            "ltxvault_compaction_lag_seconds{level=\"1\"} 1.5",
            "ltxvault_compaction_backlog_pieces{level=\"1\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
        assert_eq!(metrics.corruptions(), 1);
        // A cluster gone from the state is gone from the next scrape.
        let text = metrics.encode(&Gauges::default());
        assert!(!text.contains("ltxvault_databases{cluster=\"c1\"}"), "{text}");
        assert!(text.contains("ltxvault_ingest_uploads_total{cluster=\"c1\"} 1"), "counters stay: {text}");
    }
}
