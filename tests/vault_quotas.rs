//! Per-cluster quotas. The count a cluster's quota is checked against must equal what its
//! databases occupy on disk (log records, level files, images) through uploads, compaction,
//! retention, deletion and a reopen; an upload that would pass the quota is refused and
//! changes nothing, while every other operation, and every other cluster, goes on.

mod common;

use std::collections::BTreeMap;

use common::{ModelDb, Rng, seed};
use ltxvault::clock::ManualClock;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::TxId;
use ltxvault::quota::Quotas;
use ltxvault::restore::Target;
use ltxvault::{Error, Vault, VaultConfig};

const START: i64 = 1_800_000_000_000;
const MINUTE: i64 = 60_000;

fn config(quotas: Quotas) -> VaultConfig {
    VaultConfig {
        io: IoChoice::Std,
        background_compaction: false,
        segment_bytes: 256 << 10,
        // L0 keeps an hour, the levels a day: a retention pass a day later drops pieces.
        retention_ms: vec![Some(60 * MINUTE), Some(24 * 60 * MINUTE), Some(24 * 60 * MINUTE), None],
        quotas,
        ..VaultConfig::default()
    }
}

/// The payload size of every upload, by (cluster, db, max TXID): what the test sent.
type Sent = BTreeMap<(String, String, u64), u64>;

/// A database the test writes to, with the model of its contents.
struct Db {
    cluster: &'static str,
    name: &'static str,
    model: ModelDb,
}

impl Db {
    fn new(cluster: &'static str, name: &'static str) -> Db {
        let mut model = ModelDb::new(512);
        model.timestamp_ms = START;
        Db { cluster, name, model }
    }

    /// Proposes the next upload and sends it; the model moves only if it is accepted.
    fn upload(&mut self, vault: &Vault, rng: &mut Rng, sent: &mut Sent) -> Result<(), Error> {
        let compress = rng.chance(50);
        let (bytes, next) = self.model.propose(rng, compress);
        let len = bytes.len() as u64;
        vault.ingest(self.cluster, self.name, bytes)?;
        sent.insert((self.cluster.into(), self.name.into(), next.txid), len);
        self.model = next;
        Ok(())
    }
}

/// What a cluster occupies, measured rather than counted: for each of its databases the
/// log records the catalog still holds (their length from the segment format: a 112-byte
/// fixed header, the names, the payload as sent, padded to 8 bytes), plus the size on disk
/// of every file in its level directories (found by their NAME files).
fn measured(vault: &Vault, cluster: &str, sent: &Sent) -> u64 {
    let mut total = 0;
    let levels = vault.dir().join("levels");
    for entry in std::fs::read_dir(&levels).expect("levels/") {
        let dir = entry.expect("entry").path();
        let name = std::fs::read_to_string(dir.join("NAME")).expect("NAME");
        let mut lines = name.lines();
        if lines.next() != Some(cluster) {
            continue;
        }
        for file in std::fs::read_dir(&dir).expect("level dir") {
            let file = file.expect("entry");
            if file.file_name() != "NAME" {
                total += file.metadata().expect("stat").len();
            }
        }
    }
    for info in vault.databases(Some(cluster)) {
        for run in vault.runs(cluster, &info.db) {
            let payload = sent[&(cluster.to_string(), info.db.clone(), run.max_txid.0)];
            assert_eq!(run.bytes, payload, "the log holds the upload as sent");
            total += (112 + cluster.len() as u64 + info.db.len() as u64 + payload).div_ceil(8) * 8;
        }
    }
    total
}

fn assert_counts(vault: &Vault, clusters: &[&str], sent: &Sent, when: &str) {
    for &cluster in clusters {
        assert_eq!(vault.usage(cluster).bytes, measured(vault, cluster, sent), "cluster {cluster} {when}");
    }
}

#[test]
fn the_count_follows_uploads_compaction_retention_deletion_and_reopen() {
    let mut rng = Rng::new(seed("the_count_follows_uploads_compaction_retention_deletion_and_reopen", 6));
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(START);
    let vault = Vault::open_with_clock(&vault_dir, config(Quotas::default()), clock.clone()).expect("open");
    let mut dbs = [Db::new("a", "one"), Db::new("a", "two"), Db::new("b", "one")];
    let mut sent = Sent::new();
    for round in 0..90 {
        for db in &mut dbs {
            db.model.timestamp_ms += 20_000;
            db.upload(&vault, &mut rng, &mut sent).expect("upload");
        }
        clock.set_ms(START + round * 60_000);
    }
    assert_counts(&vault, &["a", "b"], &sent, "after uploads");
    assert!(vault.usage("a").bytes > vault.usage("b").bytes, "two databases store more than one");

    clock.set_ms(START + 2 * 60 * MINUTE);
    assert!(vault.compact_now().expect("compact") > 0, "compaction wrote level files");
    assert_counts(&vault, &["a", "b"], &sent, "after compaction");
    let before = vault.usage("a").bytes;

    clock.set_ms(START + 26 * 60 * MINUTE);
    let report = vault.retain_now().expect("retention");
    assert!(report.pieces > 0, "retention dropped pieces: {report:?}");
    assert_counts(&vault, &["a", "b"], &sent, "after retention");
    assert!(vault.usage("a").bytes < before, "retention gave bytes back");

    vault.delete_database("a", "two").expect("delete");
    assert_counts(&vault, &["a", "b"], &sent, "after a deletion");
    let counted: BTreeMap<String, u64> = vault.usages().into_iter().map(|(c, u)| (c, u.bytes)).collect();
    assert_eq!(counted.len(), 2, "{counted:?}");
    vault.close().expect("close");

    let vault = Vault::open_with_clock(&vault_dir, config(Quotas::default()), clock.clone()).expect("reopen");
    let recounted: BTreeMap<String, u64> = vault.usages().into_iter().map(|(c, u)| (c, u.bytes)).collect();
    assert_eq!(recounted, counted, "the count rebuilt at open is the one kept before");
    assert_counts(&vault, &["a", "b"], &sent, "after a reopen");
    vault.delete_database("b", "one").expect("delete");
    assert_eq!(vault.usage("b").bytes, 0, "a cluster without databases stores nothing");
    vault.close().expect("close");
}

#[test]
fn uploads_past_the_quota_are_refused_and_nothing_else_is() {
    let mut rng = Rng::new(seed("uploads_past_the_quota_are_refused_and_nothing_else_is", 7));
    let dir = tempfile::tempdir().expect("tempdir");
    let quota = 24 << 10;
    let quotas = Quotas { default: None, clusters: BTreeMap::from([("a".to_string(), Some(quota))]) };
    let clock = ManualClock::new(START);
    let vault = Vault::open_with_clock(&dir.path().join("vault"), config(quotas), clock.clone()).expect("open");
    let (mut small, mut other) = (Db::new("a", "one"), Db::new("b", "one"));
    let mut sent = Sent::new();

    // Upload to the limited cluster until it is refused.
    let err = loop {
        small.model.timestamp_ms += 20_000;
        match small.upload(&vault, &mut rng, &mut sent) {
            Ok(()) => assert!(vault.usage("a").bytes <= quota, "a cluster never goes past its quota by uploads"),
            Err(e) => break e,
        }
        assert!(small.model.txid < 10_000, "the quota never refused an upload");
    };
    let Error::QuotaExceeded { ref cluster, used, quota: limit, needed } = err else { panic!("{err}") };
    assert_eq!((cluster.as_str(), limit), ("a", quota));
    assert!(used <= quota && used + needed > quota, "{err}");
    assert_eq!(used, vault.usage("a").bytes);
    let message = err.to_string();
    for part in ["cluster \"a\"", &used.to_string(), &quota.to_string(), "quotas.clusters.a"] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }

    // The refused upload changed nothing: position, count, contents.
    let (position, _) = vault.position("a", "one").expect("position");
    assert_eq!(position.txid, TxId(small.model.txid));
    assert_eq!(vault.usage("a").bytes, used);
    let out = dir.path().join("out.db");
    vault.restore("a", "one", Target::Latest, &out, true).expect("restore");
    assert!(std::fs::read(&out).expect("read") == small.model.image, "the latest state is the last accepted one");
    small.model.timestamp_ms += 1;
    assert!(matches!(small.upload(&vault, &mut rng, &mut sent), Err(Error::QuotaExceeded { .. })), "still refused");

    // Another cluster keeps uploading, far past the other's quota.
    for _ in 0..60 {
        other.model.timestamp_ms += 20_000;
        other.upload(&vault, &mut rng, &mut sent).expect("another cluster uploads");
    }
    assert!(vault.usage("b").bytes > quota);

    // Reads, restores to any point, clones out of the cluster and compaction go on; every
    // way of writing into it is refused.
    vault.restore("a", "one", Target::TxId(TxId(1)), &out, true).expect("restore an old point");
    vault.clone_database(("a", "one"), ("b", "copy"), Target::Latest).expect("a clone out of the cluster");
    let sqlite_file = dir.path().join("upload.db");
    let conn = rusqlite::Connection::open(&sqlite_file).expect("sqlite");
    conn.execute_batch("PRAGMA page_size = 512; CREATE TABLE t (x); INSERT INTO t VALUES (42);").expect("sql");
    drop(conn);
    let refused = [
        vault.clone_database(("b", "one"), ("a", "copy"), Target::Latest).map(|_| ()),
        vault.restore_in_place("a", "one", Target::TxId(TxId(1)), false).map(|_| ()),
        vault.upload_sqlite("a", "one", &sqlite_file).map(|_| ()),
        vault.upload_sqlite("a", "new", &sqlite_file).map(|_| ()),
    ];
    for (i, result) in refused.into_iter().enumerate() {
        assert!(matches!(result, Err(Error::QuotaExceeded { .. })), "write {i}: {result:?}");
    }
    assert_eq!(vault.position("a", "one").expect("position").0, position, "no refused write moved it");
    assert!(vault.position("a", "copy").is_none() && vault.position("a", "new").is_none());
    assert_eq!(vault.usage("a").bytes, used);
    clock.set_ms(START + 60 * MINUTE);
    assert!(vault.compact_now().expect("compaction is not limited") > 0);
    // (Cluster b holds a clone, whose upload the test did not make.)
    assert_counts(&vault, &["a"], &sent, "after compaction");

    // Deleting gives the bytes back: the cluster takes uploads again.
    vault.delete_database("a", "one").expect("delete");
    assert_eq!(vault.usage("a").bytes, 0);
    let mut fresh = Db::new("a", "one");
    fresh.upload(&vault, &mut rng, &mut sent).expect("an upload after the deletion");
    vault.close().expect("close");
}

#[test]
fn measured_sizes_include_images() {
    // A guard for `measured`: it must see L3 images too, or the first test would pass
    // without counting them. Images appear once a day has passed.
    let mut rng = Rng::new(seed("measured_sizes_include_images", 8));
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(START);
    let vault =
        Vault::open_with_clock(&dir.path().join("vault"), config(Quotas::default()), clock.clone()).expect("open");
    let mut db = Db::new("a", "one");
    let mut sent = Sent::new();
    for _ in 0..30 {
        db.model.timestamp_ms += 2 * 60 * MINUTE;
        db.upload(&vault, &mut rng, &mut sent).expect("upload");
    }
    clock.set_ms(db.model.timestamp_ms + 2 * 24 * 60 * MINUTE);
    vault.compact_now().expect("compact");
    let images = vault.level_runs("a", "one").get(2).map_or(0, Vec::len);
    assert!(images > 0, "a day of history made an image");
    assert_eq!(vault.usage("a").bytes, measured(&vault, "a", &sent));
    vault.close().expect("close");
}
