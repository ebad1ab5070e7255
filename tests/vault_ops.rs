//! The operations the HTTP server needs from the engine, through `Vault` only: deleted
//! databases (Commit 0) and their re-creation, snapshots of any point streamed out, restore
//! in place, plain SQLite uploads, deleting a database, clones. The LiteFS backup protocol's
//! conformance scenarios (spec §12) are replayed with its own test vectors (§11, page size
//! 512) where they apply. Every vault runs on a manual clock without background threads.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{ModelDb, Rng, seed};
use ltxvault::catalog::Position;
use ltxvault::clock::{Clock, ManualClock};
use ltxvault::io::engine::{IoChoice, IoEngine, open_engine};
use ltxvault::ltx::{Checksum, Decoder, Encoder, Format, Header, PageNo, TxId, database_checksum};
use ltxvault::restore::Target;
use ltxvault::vault::SnapshotFormat;
use ltxvault::{Error, Vault, VaultConfig};

const DAY: i64 = 86_400_000;

fn config() -> VaultConfig {
    VaultConfig { io: IoChoice::Std, background_compaction: false, ..VaultConfig::default() }
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Vault {
    Vault::open_with_clock(dir, config(), clock.clone()).expect("open the vault")
}

/// An uncompressed LTX v1 file with pages of 512 bytes, each filled with one byte value:
/// the shape of the spec's test vectors.
fn ltx(commit: u32, txids: (u64, u64), pre: u64, pages: &[(u32, u8)], post: u64, timestamp_ms: i64) -> Vec<u8> {
    let header = Header {
        page_size: 512,
        commit,
        min_txid: TxId(txids.0),
        max_txid: TxId(txids.1),
        timestamp_ms,
        pre_apply_checksum: Checksum(pre),
        ..Header::default()
    };
    let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress: false }).expect("header");
    for &(pgno, fill) in pages {
        enc.write_page(PageNo(pgno), &[fill; 512]).expect("page");
    }
    enc.finish(Checksum(post)).expect("finish").0
}

const F1_SUM: u64 = 0xe4e4aaa102377eee;
const F2_SUM: u64 = 0xad2dffe333333333;
const F3_SUM: u64 = 0x8b87423eeeeeeeee;
const EMPTY: u64 = 0x8000000000000000;

fn f1(ts: i64) -> Vec<u8> {
    ltx(1, (1, 1), 0, &[(1, 1)], F1_SUM, ts)
}
fn f2(ts: i64) -> Vec<u8> {
    ltx(2, (2, 2), F1_SUM, &[(2, 2)], F2_SUM, ts)
}
fn f3(ts: i64) -> Vec<u8> {
    ltx(2, (3, 4), F2_SUM, &[(1, 3)], F3_SUM, ts)
}
/// The deletion: Commit 0, no pages.
fn f4(ts: i64) -> Vec<u8> {
    ltx(0, (5, 5), F3_SUM, &[], EMPTY, ts)
}
/// An empty snapshot: MinTXID 1, MaxTXID 3, Commit 0.
fn f5(ts: i64) -> Vec<u8> {
    ltx(0, (1, 3), 0, &[], EMPTY, ts)
}

fn pos(txid: u64, checksum: u64) -> Position {
    Position { txid: TxId(txid), checksum: Checksum(checksum) }
}

/// A database of 512-byte pages, each filled with one byte value.
fn pages_of(fills: &[u8]) -> Vec<u8> {
    fills.iter().flat_map(|&f| [f; 512]).collect()
}

/// Decodes an LTX file completely (verifying it) into its header, pages and post-apply
/// checksum; also returns the file checksum.
fn decode(bytes: &[u8]) -> (Header, Vec<(u32, Vec<u8>)>, Checksum, Checksum) {
    let mut dec = Decoder::new(bytes).expect("an LTX header");
    let header = *dec.header();
    let mut pages = Vec::new();
    while let Some(page) = dec.next_page().expect("a valid LTX file") {
        pages.push((page.pgno.0, page.data.to_vec()));
    }
    let trailer = dec.trailer().expect("verified to the end");
    (header, pages, trailer.post_apply_checksum, trailer.file_checksum)
}

fn snapshot(vault: &Vault, cluster: &str, db: &str, target: Target, format: SnapshotFormat) -> Vec<u8> {
    let mut out = Vec::new();
    vault.write_snapshot(cluster, db, target, format, &mut out).unwrap_or_else(|e| panic!("snapshot: {e}"));
    out
}

fn restored(vault: &Vault, cluster: &str, db: &str, target: Target, scratch: &Path) -> Vec<u8> {
    let out = scratch.join("restored.db");
    vault.restore(cluster, db, target, &out, true).unwrap_or_else(|e| panic!("restore {db} at {target:?}: {e}"));
    std::fs::read(&out).expect("read the restore")
}

fn listed(vault: &Vault, cluster: &str) -> Vec<(String, Position)> {
    vault.databases(Some(cluster)).into_iter().map(|d| (d.db, d.position)).collect()
}

/// The log's segment files (not a spare being prepared), oldest first.
fn segments_in(dir: &Path) -> Vec<PathBuf> {
    files_in(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "seg")).collect()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|entries| entries.map(|e| e.expect("entry").path()).collect()).unwrap_or_default();
    files.sort();
    files
}

/// Scenarios 2 to 5: a snapshot, a contiguous write, a compacted write, then the snapshot
/// LiteFS fetches when it restores: MinTXID 1, MaxTXID 4, the pages of TXID 4, the
/// position `/pos` reports and, uncompressed with timestamp 0, the file checksum the spec
/// gives. The plain SQLite form is the same database.
#[test]
fn litefs_scenarios_2_to_5_and_the_snapshot_fetch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let vault = open(&dir.path().join("vault"), &clock);
    let ack = vault.ingest("c", "db", f1(0)).expect("F1");
    assert_eq!((ack.position, ack.hwm), (pos(1, F1_SUM), TxId(1)));
    let ack = vault.ingest("c", "db", f2(0)).expect("F2");
    assert_eq!((ack.position, ack.hwm), (pos(2, F2_SUM), TxId(2)));
    let ack = vault.ingest("c", "db", f3(0)).expect("F3");
    assert_eq!((ack.position, ack.hwm), (pos(4, F3_SUM), TxId(4)));
    assert_eq!(listed(&vault, "c"), vec![("db".to_string(), pos(4, F3_SUM))]);

    let mut out = Vec::new();
    let info = vault.write_snapshot("c", "db", Target::Latest, SnapshotFormat::Ltx, &mut out).expect("snapshot");
    let (header, pages, post, file_checksum) = decode(&out);
    assert_eq!(
        (header.min_txid, header.max_txid, header.commit, header.pre_apply_checksum, header.flags),
        (TxId(1), TxId(4), 2, Checksum::NONE, 0)
    );
    assert_eq!(pages, vec![(1, vec![3; 512]), (2, vec![2; 512])]);
    assert_eq!(post, Checksum(F3_SUM));
    assert_eq!(file_checksum, Checksum(0xcdfd3ff1db5d4292), "the spec's vector for this snapshot");
    assert_eq!(info.position, vault.position("c", "db").expect("position").0, "equals /pos");
    assert_eq!((info.commit, info.page_size, info.bytes), (2, 512, out.len() as u64));

    let sqlite = snapshot(&vault, "c", "db", Target::Latest, SnapshotFormat::Sqlite);
    assert_eq!(sqlite, pages_of(&[3, 2]));
    assert_eq!(database_checksum(&sqlite, 512), Checksum(F3_SUM), "scenario 32: the export reproduces /pos");
    // An earlier point, and the scratch files are gone.
    let (_, pages, post, _) = decode(&snapshot(&vault, "c", "db", Target::TxId(TxId(2)), SnapshotFormat::Ltx));
    assert_eq!((pages, post), (vec![(1, vec![1; 512]), (2, vec![2; 512])], Checksum(F2_SUM)));
    assert!(files_in(&dir.path().join("vault/tmp")).is_empty(), "no scratch file left behind");
}

/// Scenarios 8, 9 and 20: the first upload of an unknown database must be a snapshot and
/// leaves no trace when it is not; a snapshot onto existing data is refused with the
/// stored position; a snapshot of an unknown database is `NotFound` and writes nothing.
#[test]
fn litefs_scenarios_8_9_and_20_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let vault = open(&dir.path().join("vault"), &clock);
    let err = vault.ingest("c", "db3", f2(0)).expect_err("not a snapshot");
    assert!(matches!(err, Error::PositionMismatch { position, .. } if position == Position::default()), "{err}");
    assert!(listed(&vault, "c").is_empty(), "/pos does not list db3");

    vault.ingest("c", "db", f1(0)).expect("F1");
    vault.ingest("c", "db", f2(0)).expect("F2");
    vault.ingest("c", "db", f3(0)).expect("F3");
    let err = vault.ingest("c", "db", f1(0)).expect_err("snapshot onto data");
    assert!(matches!(err, Error::PositionMismatch { position, .. } if position == pos(4, F3_SUM)), "{err}");

    let mut out = Vec::new();
    let err = vault.write_snapshot("c", "nope", Target::Latest, SnapshotFormat::Ltx, &mut out).expect_err("unknown");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = vault.write_snapshot("c", "db3", Target::Latest, SnapshotFormat::Ltx, &mut out).expect_err("unknown");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = vault.write_snapshot("c", "db", Target::TxId(TxId(9)), SnapshotFormat::Sqlite, &mut out).expect_err("9");
    assert!(matches!(err, Error::NoSuchPoint(_)), "{err}");
    assert!(out.is_empty(), "nothing written before the failure");
}

/// Scenario 17 over days: a database deleted by a Commit-0 transaction is still listed
/// with checksum 8000000000000000, its snapshot has no pages, a restore of that point is an
/// empty file; it is re-created by a transaction whose pre-apply checksum is the empty
/// database's. Each transaction lands on its own day, so the compactors write L1 and L2
/// files and an L3 image of the empty database, and the next image is built on it; every
/// point restores the same before and after compaction, after a reopen, and after the
/// page-checksum map was lost and rebuilt from the log (the next upload needs it).
#[test]
fn litefs_scenario_17_deletion_and_re_creation_across_levels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(0);
    let vault = open(&vault_dir, &clock);
    vault.ingest("c", "db", f1(0)).expect("F1");
    vault.ingest("c", "db", f2(0)).expect("F2");
    vault.ingest("c", "db", f3(0)).expect("F3");
    let ack = vault.ingest("c", "db", f4(DAY)).expect("F4 (delete)");
    assert_eq!(ack.position, pos(5, EMPTY));
    assert_eq!(listed(&vault, "c"), vec![("db".to_string(), pos(5, EMPTY))], "still in /pos");
    let (header, pages, post, _) = decode(&snapshot(&vault, "c", "db", Target::Latest, SnapshotFormat::Ltx));
    assert_eq!((header.min_txid, header.max_txid, header.commit), (TxId(1), TxId(5), 0));
    assert_eq!((pages.len(), post), (0, Checksum(EMPTY)));
    assert!(snapshot(&vault, "c", "db", Target::Latest, SnapshotFormat::Sqlite).is_empty());

    let tx6 = ltx(1, (6, 6), EMPTY, &[(1, 1)], F1_SUM, 2 * DAY);
    assert_eq!(vault.ingest("c", "db", tx6).expect("TX6 (re-create)").position, pos(6, F1_SUM));

    let expected: Vec<(u64, Vec<u8>)> =
        vec![(1, pages_of(&[1])), (2, pages_of(&[1, 2])), (4, pages_of(&[3, 2])), (5, Vec::new()), (6, pages_of(&[1]))];
    let check = |vault: &Vault, when: &str| {
        for (txid, image) in &expected {
            let got = restored(vault, "c", "db", Target::TxId(TxId(*txid)), dir.path());
            assert!(got == *image, "{when}: TXID {txid} restores to {} bytes, expected {}", got.len(), image.len());
        }
    };
    check(&vault, "before compaction");
    clock.set_ms(5 * DAY);
    vault.compact_now().expect("compact");
    let levels = vault.level_runs("c", "db");
    let images: Vec<(u64, u32)> = levels[2].iter().map(|r| (r.max_txid.0, r.commit)).collect();
    assert_eq!(images, vec![(4, 2), (5, 0), (6, 1)], "one image a day, the second of the empty database");
    let image = levels[2][1].path().expect("an image file");
    assert_eq!(std::fs::metadata(image).expect("stat").len(), 64, "an empty image is its footer");
    let (plan, _) = vault.plan_restore("c", "db", Target::TxId(TxId(5))).expect("plan");
    assert_eq!(plan.inputs.len(), 1, "TXID 5 restores from its image alone");
    assert_eq!(plan.inputs[0].level, 3);
    check(&vault, "after compaction");
    vault.close().expect("close");

    let vault = open(&vault_dir, &clock);
    check(&vault, "after reopen");
    vault.close().expect("close");
    for map in files_in(&vault_dir.join("sums")) {
        std::fs::remove_file(map).expect("lose the page-checksum map");
    }
    let vault = open(&vault_dir, &clock);
    check(&vault, "after the map was rebuilt");
    // Page 1 rewritten: its old checksum must come from the rebuilt map.
    let tx7 = ltx(1, (7, 7), F1_SUM, &[(1, 5)], 0x99b1d11ab98cc555, 3 * DAY);
    assert_eq!(vault.ingest("c", "db", tx7).expect("TX7").position, pos(7, 0x99b1d11ab98cc555));
}

/// Scenario 18: an empty snapshot (MinTXID 1, MaxTXID 3, Commit 0) for a new database is
/// accepted and listed at 3/8000000000000000; its snapshot and restore are empty, it
/// compacts into an empty image, survives a reopen, and grows from there.
#[test]
fn litefs_scenario_18_empty_snapshot_for_a_new_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(0);
    let vault = open(&vault_dir, &clock);
    let ack = vault.ingest("c", "db4", f5(0)).expect("F5");
    assert_eq!((ack.position, ack.hwm), (pos(3, EMPTY), TxId(3)));
    assert_eq!(listed(&vault, "c"), vec![("db4".to_string(), pos(3, EMPTY))]);
    let (header, pages, post, _) = decode(&snapshot(&vault, "c", "db4", Target::Latest, SnapshotFormat::Ltx));
    assert_eq!((header.max_txid, header.commit, pages.len(), post), (TxId(3), 0, 0, Checksum(EMPTY)));
    assert!(restored(&vault, "c", "db4", Target::Latest, dir.path()).is_empty());
    clock.set_ms(2 * DAY);
    vault.compact_now().expect("compact");
    assert_eq!(vault.level_runs("c", "db4")[2].iter().map(|r| r.commit).collect::<Vec<_>>(), vec![0]);
    vault.close().expect("close");

    let vault = open(&vault_dir, &clock);
    assert_eq!(vault.position("c", "db4").expect("kept").0, pos(3, EMPTY));
    assert!(restored(&vault, "c", "db4", Target::Latest, dir.path()).is_empty());
    let grow = ltx(2, (4, 4), EMPTY, &[(1, 1), (2, 2)], F2_SUM, DAY * 3);
    assert_eq!(vault.ingest("c", "db4", grow).expect("grow").position, pos(4, F2_SUM));
    assert_eq!(restored(&vault, "c", "db4", Target::Latest, dir.path()), pages_of(&[1, 2]));
}

/// A random history (growth, shrink, LZ4 and plain uploads, compaction along the way):
/// the LTX snapshot of every point decodes to the model's pages and the point's checksum,
/// the SQLite form is the model's bytes, timestamps resolve to the last point before them.
#[test]
fn snapshots_of_every_point_in_both_formats() {
    let seed = seed("snapshots_of_every_point_in_both_formats", 5);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let vault = open(&dir.path().join("vault"), &clock);
    let mut model = ModelDb::new(1024);
    model.timestamp_ms = 1_800_000_000_000;
    let mut states = Vec::new();
    for i in 0..60 {
        model.timestamp_ms += rng.below(30_000) as i64;
        let compress = rng.chance(50);
        let (bytes, next) = model.propose(&mut rng, compress);
        vault.ingest("c", "db", bytes).expect("ingest");
        model = next;
        states.push(model.clone());
        if i % 20 == 19 {
            clock.set_ms(model.timestamp_ms);
            vault.compact_now().expect("compact");
        }
    }
    for state in &states {
        let target = Target::TxId(TxId(state.txid));
        let mut out = Vec::new();
        let info = vault.write_snapshot("c", "db", target, SnapshotFormat::Ltx, &mut out).expect("snapshot");
        assert_eq!(info.position, Position { txid: TxId(state.txid), checksum: state.checksum });
        assert_eq!(info.timestamp_ms, state.timestamp_ms);
        let (header, pages, post, _) = decode(&out);
        assert_eq!((header.min_txid, header.max_txid, header.commit), (TxId(1), TxId(state.txid), state.commit()));
        assert_eq!(header.timestamp_ms, state.timestamp_ms, "the point's timestamp");
        assert_eq!(post, state.checksum);
        let image: Vec<u8> = pages.iter().flat_map(|(_, data)| data.iter().copied()).collect();
        assert!(image == state.image, "TXID {}: the snapshot's pages are the model's", state.txid);
        assert_eq!(pages.iter().map(|p| p.0).collect::<Vec<_>>(), (1..=state.commit()).collect::<Vec<_>>());
        assert!(snapshot(&vault, "c", "db", target, SnapshotFormat::Sqlite) == state.image, "TXID {}", state.txid);
    }
    let middle = &states[30];
    let (_, _, post, _) =
        decode(&snapshot(&vault, "c", "db", Target::Timestamp(middle.timestamp_ms), SnapshotFormat::Ltx));
    let newest_at_that_time = states.iter().rev().find(|s| s.timestamp_ms <= middle.timestamp_ms).expect("a point");
    assert_eq!(post, newest_at_that_time.checksum);
}

/// End to end past the lock page: a plain SQLite file of 64 KiB pages reaching one page
/// past it (a sparse file) whose lock page holds garbage is uploaded; the garbage never
/// enters the vault, the SQLite snapshot has zeros there and the LTX snapshot every page
/// but the lock page. (`snapshot`'s unit tests check the writers alone on such an image.)
#[test]
fn the_lock_page_stays_out_of_snapshots() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let page_size = 65536u64;
    let lock = PageNo::lock_page(page_size as u32);
    let commit = lock.0 + 1;
    let file = dir.path().join("big.db");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&file).expect("create");
        f.set_len(u64::from(commit) * page_size).expect("size");
        let mut header = vec![0u8; 100];
        header[..16].copy_from_slice(b"SQLite format 3\0");
        header[16..18].copy_from_slice(&1u16.to_be_bytes());
        f.write_all_at(&header, 0).expect("header");
        f.write_all_at(&[0xee; 64], lock.file_offset(page_size as u32)).expect("garbage in the lock page");
        f.write_all_at(&[0x77; 64], u64::from(commit - 1) * page_size).expect("last page");
    }
    let clock = ManualClock::new(0);
    let config = VaultConfig { max_upload_bytes: 2 << 30, ..config() };
    let vault = Vault::open_with_clock(&dir.path().join("vault"), config, clock.clone()).expect("open");
    let ack = vault.upload_sqlite("c", "big", &file).expect("upload");
    assert_eq!(ack.position.txid, TxId(1));

    let original = ltxvault::io::MappedFile::open(&file).expect("map");
    let lock_at = lock.file_offset(page_size as u32) as usize;
    let mut check = Compare { expected: &original, lock: lock_at..lock_at + page_size as usize, at: 0 };
    vault.write_snapshot("c", "big", Target::Latest, SnapshotFormat::Sqlite, &mut check).expect("sqlite");
    assert_eq!(check.at, original.len(), "the whole database, the lock page as zeros");

    let ltx_path = dir.path().join("big.ltx");
    let mut ltx_file = std::fs::File::create(&ltx_path).expect("create");
    vault.write_snapshot("c", "big", Target::Latest, SnapshotFormat::Ltx, &mut ltx_file).expect("ltx");
    drop(ltx_file);
    let ltx = ltxvault::io::MappedFile::open(&ltx_path).expect("map");
    let mut dec = Decoder::new(&ltx).expect("header");
    let mut seen = Vec::new();
    while let Some(page) = dec.next_page().expect("valid") {
        if page.pgno.0 + 1 >= lock.0 {
            seen.push(page.pgno.0);
        }
    }
    assert_eq!(seen, vec![lock.0 - 1, lock.0 + 1], "every page but the lock page");
    assert_eq!(dec.trailer().expect("end").post_apply_checksum, ack.position.checksum);
}

/// Compares what is written with `expected`, except that the bytes in `lock` must be zeros.
struct Compare<'a> {
    expected: &'a [u8],
    lock: std::ops::Range<usize>,
    at: usize,
}

impl Write for Compare<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for (i, &byte) in buf.iter().enumerate() {
            let at = self.at + i;
            let want = if self.lock.contains(&at) { 0 } else { self.expected[at] };
            assert_eq!(byte, want, "byte {at} of the SQLite snapshot");
        }
        self.at += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Scenario 30: restoring to TXID 2 appends TXID 5 holding the TXID-2 state, with the
/// TXID-4 checksum as pre-apply; the snapshot then serves the TXID-2 contents at MaxTXID
/// 5; the restore is itself undone by restoring to TXID 4. Restoring to the current TXID
/// changes nothing, a dry run only resolves, a TXID past the current one or between points
/// and a timestamp before the history are `NoSuchPoint` with the window; a timestamp
/// resolves to the newest point at or before it. The history survives a reopen.
#[test]
fn litefs_scenario_30_restore_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(10_000);
    let vault = open(&vault_dir, &clock);
    vault.ingest("c", "db", f1(1_000)).expect("F1");
    vault.ingest("c", "db", f2(2_000)).expect("F2");
    vault.ingest("c", "db", f3(3_000)).expect("F3");

    let dry = vault.restore_in_place("c", "db", Target::TxId(TxId(2)), true).expect("dry run");
    assert_eq!((dry.target.txid, dry.target.timestamp_ms, dry.target.checksum), (TxId(2), 2_000, Checksum(F2_SUM)));
    assert!(!dry.applied);
    assert_eq!(dry.position, pos(4, F3_SUM));
    assert_eq!(vault.position("c", "db").expect("position").0, pos(4, F3_SUM), "a dry run changes nothing");

    let done = vault.restore_in_place("c", "db", Target::TxId(TxId(2)), false).expect("restore to TXID 2");
    assert!(done.applied);
    assert_eq!((done.position, done.hwm), (pos(5, F2_SUM), TxId(5)));
    assert_eq!(vault.position("c", "db").expect("position").0, pos(5, F2_SUM));
    let run = vault.runs("c", "db").last().cloned().expect("a run");
    assert_eq!((run.min_txid, run.max_txid, run.pre_apply, run.commit), (TxId(5), TxId(5), Checksum(F3_SUM), 2));
    assert_eq!(run.timestamp_ms, 10_000, "stamped with the vault's clock");
    let (header, pages, post, _) = decode(&snapshot(&vault, "c", "db", Target::Latest, SnapshotFormat::Ltx));
    assert_eq!((header.max_txid, post), (TxId(5), Checksum(F2_SUM)));
    assert_eq!(pages, vec![(1, vec![1; 512]), (2, vec![2; 512])]);
    // The stored transaction is an ordinary one: pre-apply the old checksum, every page.
    let stored = vault.read_run(&run, |bytes| Ok(decode(bytes))).expect("read the run");
    assert_eq!(stored.0.pre_apply_checksum, Checksum(F3_SUM));
    assert_eq!(stored.1.len(), 2);

    let noop = vault.restore_in_place("c", "db", Target::Latest, false).expect("to the current TXID");
    assert!(!noop.applied);
    assert_eq!(noop.position, pos(5, F2_SUM));
    let noop = vault.restore_in_place("c", "db", Target::TxId(TxId(5)), false).expect("to TXID 5");
    assert_eq!((noop.applied, noop.position), (false, pos(5, F2_SUM)));
    for (target, says) in [
        (Target::TxId(TxId(9)), "after the current TXID"),
        (Target::TxId(TxId(3)), "not a stored restore point"),
        (Target::Timestamp(500), "before the oldest restorable point"),
    ] {
        let err = vault.restore_in_place("c", "db", target, false).expect_err("no such point");
        assert!(matches!(&err, Error::NoSuchPoint(m) if m.contains(says)), "{target:?}: {err}");
        assert!(err.to_string().contains("restorable points run from") || says.contains("not a stored"), "{err}");
    }
    assert_eq!(vault.position("c", "db").expect("position").0, pos(5, F2_SUM), "refusals change nothing");

    // By timestamp: 2,500 ms resolves to TXID 2 (the newest point at or before it).
    clock.set_ms(20_000);
    let by_time = vault.restore_in_place("c", "db", Target::Timestamp(2_500), false).expect("by timestamp");
    assert_eq!((by_time.target.txid, by_time.position), (TxId(2), pos(6, F2_SUM)));
    // Undo both restores: back to TXID 4's state.
    let undo = vault.restore_in_place("c", "db", Target::TxId(TxId(4)), false).expect("undo");
    assert_eq!(undo.position, pos(7, F3_SUM));
    let err = vault.restore_in_place("c", "nope", Target::Latest, false).expect_err("unknown database");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    vault.close().expect("close");

    let vault = open(&vault_dir, &clock);
    for (txid, image) in
        [(4, pages_of(&[3, 2])), (5, pages_of(&[1, 2])), (6, pages_of(&[1, 2])), (7, pages_of(&[3, 2]))]
    {
        assert_eq!(restored(&vault, "c", "db", Target::TxId(TxId(txid)), dir.path()), image, "TXID {txid}");
    }
    assert!(files_in(&vault_dir.join("tmp")).is_empty(), "no scratch file left behind");
}

/// A restore in place of a database deleted by a Commit-0 transaction brings it back, and
/// a restore to the deleted point deletes it again (a transaction with Commit 0, no pages).
#[test]
fn restore_in_place_across_a_deletion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let vault = open(&dir.path().join("vault"), &clock);
    for file in [f1(0), f2(0), f3(0), f4(0)] {
        vault.ingest("c", "db", file).expect("ingest");
    }
    let back = vault.restore_in_place("c", "db", Target::TxId(TxId(4)), false).expect("revive");
    assert_eq!(back.position, pos(6, F3_SUM));
    assert_eq!(restored(&vault, "c", "db", Target::Latest, dir.path()), pages_of(&[3, 2]));
    let gone = vault.restore_in_place("c", "db", Target::TxId(TxId(5)), false).expect("delete again");
    assert_eq!(gone.position, pos(7, EMPTY));
    assert!(restored(&vault, "c", "db", Target::Latest, dir.path()).is_empty());
    assert_eq!(listed(&vault, "c"), vec![("db".to_string(), pos(7, EMPTY))]);
}

fn sqlite_db(path: &Path, page_size: u32, rows: std::ops::Range<i64>) {
    let conn = rusqlite::Connection::open(path).expect("open sqlite");
    conn.execute_batch(&format!(
        "PRAGMA page_size = {page_size}; PRAGMA journal_mode = DELETE; CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB);"
    ))
    .expect("schema");
    for id in rows {
        conn.execute("INSERT INTO t (id, v) VALUES (?1, randomblob(700))", [id]).expect("insert");
    }
}

/// Scenario 31: a plain SQLite file uploaded to a new name becomes TXID 1, with the file's
/// own database checksum; uploaded again after changes, TXID 2 over it; both points restore
/// to the files' bytes. A file that is not SQLite, has a bad page size or a torn length is
/// `BadHeader`, one of another page size than the stored database `PageSizeMismatch`, and
/// none of them changes anything. A 64 KiB-page file (header value 1) is taken too.
#[test]
fn litefs_scenario_31_upload_a_sqlite_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(1_900_000_000_000);
    let vault = open(&vault_dir, &clock);
    let file = dir.path().join("app.db");
    sqlite_db(&file, 4096, 0..50);
    let first = std::fs::read(&file).expect("read");
    let ack = vault.upload_sqlite("c", "new", &file).expect("upload");
    assert_eq!((ack.position.txid, ack.hwm), (TxId(1), TxId(1)));
    assert_eq!(ack.position.checksum, database_checksum(&first, 4096));
    assert_eq!(vault.runs("c", "new")[0].timestamp_ms, 1_900_000_000_000, "stamped with the vault's clock");

    sqlite_db(&file, 4096, 50..120);
    let second = std::fs::read(&file).expect("read");
    assert!(second.len() > first.len());
    clock.advance_ms(1_000);
    let ack = vault.upload_sqlite("c", "new", &file).expect("upload over it");
    assert_eq!(ack.position, Position { txid: TxId(2), checksum: database_checksum(&second, 4096) });
    assert_eq!(restored(&vault, "c", "new", Target::TxId(TxId(1)), dir.path()), first);
    assert_eq!(restored(&vault, "c", "new", Target::TxId(TxId(2)), dir.path()), second);

    let bad_header = |bytes: &[u8], says: &str| {
        let path = dir.path().join("bad.db");
        std::fs::write(&path, bytes).expect("write");
        for db in ["new", "other"] {
            let err = vault.upload_sqlite("c", db, &path).expect_err("refused");
            assert!(matches!(&err, Error::BadHeader(m) if m.contains(says)), "{db}: {err}");
        }
    };
    bad_header(&[b'x'; 4096], "SQLite format 3");
    let mut torn = second.clone();
    torn.truncate(torn.len() - 10);
    bad_header(&torn, "not a whole number");
    let mut odd = second.clone();
    odd[16..18].copy_from_slice(&3000u16.to_be_bytes());
    bad_header(&odd, "page size 3000");

    let small = dir.path().join("small.db");
    sqlite_db(&small, 1024, 0..3);
    let err = vault.upload_sqlite("c", "new", &small).expect_err("page size");
    assert!(matches!(err, Error::PageSizeMismatch { expected: 4096, got: 1024 }), "{err}");
    assert_eq!(vault.position("c", "new").expect("kept").0.txid, TxId(2), "refusals change nothing");
    assert!(vault.position("c", "other").is_none());

    let big_pages = dir.path().join("big-pages.db");
    sqlite_db(&big_pages, 65536, 0..3);
    let bytes = std::fs::read(&big_pages).expect("read");
    assert_eq!(&bytes[16..18], &[0, 1], "SQLite writes 65536 as 1");
    let ack = vault.upload_sqlite("c", "wide", &big_pages).expect("64 KiB pages");
    assert_eq!(ack.position.checksum, database_checksum(&bytes, 65536));
    assert_eq!(restored(&vault, "c", "wide", Target::Latest, dir.path()), bytes);
    vault.close().expect("close");
    let vault = open(&vault_dir, &clock);
    assert_eq!(restored(&vault, "c", "new", Target::Latest, dir.path()), second);
}

/// Two databases interleaved in small log segments, compacted into every level, then one
/// deleted: it is gone from the list, positions, restores and snapshots, its level files,
/// images and page-checksum map are removed, the other is untouched. It stays gone after a
/// reopen although its records still sit in the log; a snapshot under its name starts a
/// new history that survives a reopen; retention treats the deleted records as expired,
/// so the segments they shared with the other database's expired records go.
#[test]
fn deleted_databases_stay_deleted() {
    let seed = seed("deleted_databases_stay_deleted", 8);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(0);
    let small = VaultConfig { segment_bytes: 64 << 10, ..config() };
    let vault = Vault::open_with_clock(&vault_dir, small.clone(), clock.clone()).expect("open");
    let mut a = ModelDb::new(1024);
    let mut b = ModelDb::new(1024);
    a.timestamp_ms = 1_800_000_000_000;
    b.timestamp_ms = 1_800_000_000_000;
    for _ in 0..80 {
        for (name, model) in [("a", &mut a), ("b", &mut b)] {
            model.timestamp_ms += rng.below(3 * 3_600_000) as i64;
            let (bytes, next) = model.propose(&mut rng, false);
            vault.ingest("c", name, bytes).expect("ingest");
            *model = next;
        }
    }
    clock.set_ms(a.timestamp_ms.max(b.timestamp_ms) + 2 * DAY);
    vault.compact_now().expect("compact");
    assert!(!vault.level_runs("c", "a")[2].is_empty(), "a has images");
    let a_levels = ltxvault::compact::db_dir(&vault_dir.join("levels"), "c", "a");
    assert!(a_levels.exists());
    let sums_before = files_in(&vault_dir.join("sums"));
    assert_eq!(sums_before.len(), 2);
    let segments_before = segments_in(&vault_dir.join("l0"));
    assert!(segments_before.len() >= 4, "{} segments", segments_before.len());

    vault.delete_database("c", "a").expect("delete");
    let gone = |vault: &Vault, when: &str| {
        assert_eq!(listed(vault, "c").iter().map(|d| d.0.as_str()).collect::<Vec<_>>(), vec!["b"], "{when}");
        assert!(vault.position("c", "a").is_none(), "{when}");
        let err = vault.restore("c", "a", Target::Latest, &dir.path().join("x.db"), true).expect_err(when);
        assert!(matches!(err, Error::NotFound { .. }), "{when}: {err}");
        let err = vault.write_snapshot("c", "a", Target::Latest, SnapshotFormat::Ltx, &mut Vec::new()).expect_err(when);
        assert!(matches!(err, Error::NotFound { .. }), "{when}: {err}");
        assert!(!a_levels.exists(), "{when}: a's level files and images are removed");
        assert_eq!(files_in(&vault_dir.join("sums")).len(), 1, "{when}: a's page-checksum map is removed");
        assert_eq!(restored(vault, "c", "b", Target::Latest, dir.path()), b.image, "{when}: b is untouched");
    };
    gone(&vault, "after the deletion");
    let err = vault.delete_database("c", "a").expect_err("twice");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    vault.close().expect("close");

    let vault = Vault::open_with_clock(&vault_dir, small.clone(), clock.clone()).expect("reopen");
    gone(&vault, "after a reopen");
    // A snapshot under the same name starts a new history, with another page size.
    let mut fresh = ModelDb::new(512);
    fresh.timestamp_ms = clock.now_ms();
    let (bytes, next) = fresh.propose(&mut rng, false);
    let ack = vault.ingest("c", "a", bytes).expect("a new history");
    assert_eq!(ack.position.txid, TxId(1));
    fresh = next;
    vault.close().expect("close");

    let vault = Vault::open_with_clock(&vault_dir, small, clock.clone()).expect("reopen");
    assert_eq!(vault.position("c", "a").expect("the new a").0.txid, TxId(1));
    assert_eq!(restored(&vault, "c", "a", Target::Latest, dir.path()), fresh.image);
    assert_eq!(vault.databases(Some("c")).iter().find(|d| d.db == "a").expect("listed").page_size, 512);

    // A day later, with both databases compacted, every sealed segment holds only expired
    // or deleted records.
    clock.advance_ms(3 * DAY);
    vault.compact_now().expect("compact");
    let report = vault.retain_now().expect("retention");
    let segments_after = segments_in(&vault_dir.join("l0"));
    assert!(!segments_after.contains(&segments_before[0]), "the oldest segment is gone: {report:?}");
    assert!(segments_after.len() <= 2, "{} segments remain: {report:?}", segments_after.len());
    vault.close().expect("close");
    let vault = Vault::open_with_clock(&vault_dir, config(), clock).expect("reopen after retention");
    assert_eq!(restored(&vault, "c", "a", Target::Latest, dir.path()), fresh.image);
    assert_eq!(restored(&vault, "c", "b", Target::Latest, dir.path()), b.image);
}

/// Wraps the std engine; fails every write once `fail` is set, as a dying disk would.
struct FailWhenTold {
    inner: Box<dyn IoEngine>,
    fail: Arc<AtomicBool>,
}

impl IoEngine for FailWhenTold {
    fn name(&self) -> &'static str {
        "fail-when-told"
    }

    fn write_and_sync(&mut self, file: &std::fs::File, offset: u64, bufs: &[&[u8]]) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.inner.write_and_sync(file, offset, bufs)
    }

    fn write_all_at(&mut self, file: &std::fs::File, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_all_at(file, offset, buf)
    }

    fn sync_data(&mut self, file: &std::fs::File) -> std::io::Result<()> {
        self.inner.sync_data(file)
    }

    fn allocate(&mut self, file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.allocate(file, offset, len)
    }
}

/// Crash safety of a deletion. A tombstone that never became durable (its write failed)
/// changes nothing: the vault is poisoned, the files stay, and after a reopen the database
/// is there with its whole history. A crash after the tombstone's fsync but before the
/// files were removed (reproduced by putting them back after a deletion) leaves a vault
/// that opens with the database deleted and its files removed.
#[test]
fn a_deletion_is_all_or_nothing_across_crashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(0);
    let fail = Arc::new(AtomicBool::new(false));
    let (inner, _) = open_engine(IoChoice::Std).expect("std engine");
    let engine = Box::new(FailWhenTold { inner, fail: fail.clone() });
    let vault = Vault::open_with(&vault_dir, config(), clock.clone(), Some(engine)).expect("open");
    for file in [f1(0), f2(0), f3(0)] {
        vault.ingest("c", "db", file).expect("ingest");
    }
    clock.set_ms(2 * DAY);
    vault.compact_now().expect("compact");
    let levels = ltxvault::compact::db_dir(&vault_dir.join("levels"), "c", "db");
    let level_files = files_in(&levels);
    assert!(level_files.len() >= 4, "NAME, L1, L2, L3: {level_files:?}");

    fail.store(true, Ordering::SeqCst);
    let err = vault.delete_database("c", "db").expect_err("the tombstone cannot be written");
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    assert_eq!(files_in(&levels), level_files, "nothing removed before the tombstone is durable");
    drop(vault);
    let vault = open(&vault_dir, &clock);
    assert_eq!(vault.position("c", "db").expect("still there").0, pos(4, F3_SUM));
    assert_eq!(restored(&vault, "c", "db", Target::TxId(TxId(2)), dir.path()), pages_of(&[1, 2]));

    // Keep copies of the files, delete, put them back: the state a crash right after the
    // tombstone's fsync leaves.
    let saved = dir.path().join("saved");
    std::fs::create_dir(&saved).expect("mkdir");
    let sums = files_in(&vault_dir.join("sums"));
    for file in files_in(&levels).iter().chain(&sums) {
        std::fs::copy(file, saved.join(file.file_name().expect("name"))).expect("save");
    }
    vault.delete_database("c", "db").expect("delete");
    vault.close().expect("close");
    std::fs::create_dir(&levels).expect("recreate the level directory");
    for file in files_in(&saved) {
        let name = file.file_name().expect("name").to_owned();
        let back = if name.to_string_lossy().ends_with(".sums") { vault_dir.join("sums") } else { levels.clone() };
        std::fs::copy(&file, back.join(name)).expect("put back");
    }
    let vault = open(&vault_dir, &clock);
    assert!(vault.position("c", "db").is_none(), "deleted after the crash");
    assert!(listed(&vault, "c").is_empty());
    assert!(!levels.exists(), "the open finished removing the level files");
    assert!(files_in(&vault_dir.join("sums")).is_empty(), "and the page-checksum map");
    assert_eq!(vault.ingest("c", "db", f1(3 * DAY)).expect("a new history").position, pos(1, F1_SUM));
}

/// Uploads racing a deletion: each is acknowledged either before it (then deleted with the
/// history) or after it (then part of a new history that starts with a snapshot); nothing
/// acknowledged after the deletion is lost, and the log replays to the same state.
#[test]
fn uploads_racing_a_deletion_land_on_one_side_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(0);
    let vault = open(&vault_dir, &clock);
    vault.ingest("c", "db", f1(0)).expect("F1");
    let deleted = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Until 20 uploads after the deletion: F2 continues the old history, F1 starts
            // a new one once it is deleted.
            let (mut i, mut after) = (0, 0);
            while after < 20 {
                after += usize::from(deleted.load(Ordering::SeqCst));
                match vault.ingest("c", "db", if i % 2 == 0 { f2(0) } else { f1(0) }) {
                    Ok(_) | Err(Error::PositionMismatch { .. }) => {}
                    Err(e) => panic!("upload {i}: {e}"),
                }
                i += 1;
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(2));
        vault.delete_database("c", "db").expect("delete");
        deleted.store(true, Ordering::SeqCst);
    });
    assert_eq!(vault.position("c", "db").map(|p| p.0), Some(pos(2, F2_SUM)), "a new history, F1 then F2");
    let now = vault.position("c", "db").map(|p| p.0);
    vault.close().expect("close");
    let vault = open(&vault_dir, &clock);
    assert_eq!(vault.position("c", "db").map(|p| p.0), now, "the log replays to what the vault showed");
    if let Some(position) = now {
        let image = restored(&vault, "c", "db", Target::Latest, dir.path());
        assert_eq!(database_checksum(&image, 512), position.checksum);
    }
}

/// Clones: one database at a point into another cluster keeps the point's position and
/// contents and continues like the source did; a destination that exists is refused; a
/// deleted (Commit 0) point clones as an empty database. A cluster clone at a timestamp
/// takes each database's own last point before it, skips a database with none and,
/// repeated, skips every existing destination.
#[test]
fn clones_of_databases_and_clusters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(10_000);
    let vault = open(&vault_dir, &clock);
    vault.ingest("prod", "db", f1(100)).expect("F1");
    vault.ingest("prod", "db", f2(200)).expect("F2");
    vault.ingest("prod", "db", f3(300)).expect("F3");
    vault.ingest("prod", "late", f1(400)).expect("late F1");
    vault.ingest("prod", "empty", f5(150)).expect("empty F5");

    let ack = vault.clone_database(("prod", "db"), ("staging", "db"), Target::TxId(TxId(2))).expect("clone");
    assert_eq!(ack.position, pos(2, F2_SUM), "the clone is at the source point");
    assert_eq!(restored(&vault, "staging", "db", Target::Latest, dir.path()), pages_of(&[1, 2]));
    let run = &vault.runs("staging", "db")[0];
    assert_eq!((run.min_txid, run.max_txid, run.timestamp_ms), (TxId(1), TxId(2), 200), "one snapshot at the point");
    // The clone continues as the source did from that point: the source's own F3 fits.
    assert_eq!(vault.ingest("staging", "db", f3(500)).expect("continue").position, pos(4, F3_SUM));
    assert_eq!(vault.position("prod", "db").expect("source").0, pos(4, F3_SUM), "the source is untouched");

    let err = vault.clone_database(("prod", "db"), ("staging", "db"), Target::Latest).expect_err("exists");
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let err = vault.clone_database(("prod", "db"), ("prod", "db"), Target::Latest).expect_err("onto itself");
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let err = vault.clone_database(("prod", "nope"), ("staging", "nope"), Target::Latest).expect_err("no source");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = vault.clone_database(("prod", "db"), ("staging", "x"), Target::TxId(TxId(9))).expect_err("no point");
    assert!(matches!(err, Error::NoSuchPoint(_)), "{err}");
    assert!(vault.position("staging", "x").is_none());
    let ack = vault.clone_database(("prod", "empty"), ("prod", "empty2"), Target::Latest).expect("an empty db");
    assert_eq!(ack.position, pos(3, EMPTY));

    // At 250 ms: db's last point then is TXID 2, empty's TXID 3, late has none.
    let report = vault.clone_cluster("prod", "copy", Target::Timestamp(250)).expect("clone the cluster");
    let cloned: Vec<(String, Position)> = report.cloned.iter().map(|(db, ack)| (db.clone(), ack.position)).collect();
    assert_eq!(
        cloned,
        vec![
            ("db".to_string(), pos(2, F2_SUM)),
            ("empty".to_string(), pos(3, EMPTY)),
            ("empty2".to_string(), pos(3, EMPTY))
        ]
    );
    let skipped: Vec<&str> = report.skipped.iter().map(|(db, _)| db.as_str()).collect();
    assert_eq!(skipped, vec!["late"]);
    assert!(matches!(report.skipped[0].1, Error::NoSuchPoint(_)));
    let again = vault.clone_cluster("prod", "copy", Target::Timestamp(250)).expect("again");
    assert!(again.cloned.is_empty());
    assert_eq!(again.skipped.iter().filter(|(_, e)| matches!(e, Error::AlreadyExists { .. })).count(), 3);
    vault.close().expect("close");

    let vault = open(&vault_dir, &clock);
    assert_eq!(restored(&vault, "copy", "db", Target::Latest, dir.path()), pages_of(&[1, 2]));
    assert!(restored(&vault, "copy", "empty", Target::Latest, dir.path()).is_empty());
}

/// Scratch files an interrupted operation left under `<vault>/tmp/` are removed at open.
#[test]
fn the_scratch_directory_is_emptied_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(0);
    drop(open(&vault_dir, &clock));
    let left = vault_dir.join("tmp").join(".restore-0.tmp-1");
    std::fs::File::create(&left).and_then(|mut f| f.write_all(b"junk")).expect("leave a scratch file");
    drop(open(&vault_dir, &clock));
    assert!(files_in(&vault_dir.join("tmp")).is_empty());
}
