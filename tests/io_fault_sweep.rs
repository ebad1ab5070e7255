//! Fails every durable file-system operation of a mixed workload, one at a time, and checks
//! what the vault makes of it.
//!
//! The workload (seeded): three databases in two clusters receive ten simulated hours of
//! uploads through the library, with compaction and retention passes on an injected clock
//! (short windows and retentions, so that L1, L2, hourly images and every kind of deletion
//! happen), restores to the latest point, to TXIDs and to timestamps, snapshots, restores
//! in place, and reopens. A first run counts the operations of each kind (`io::fs::Op`; the
//! thread that prepares log segments ahead of time is counted apart, since its operations
//! interleave with the others). Then, for every N and every fault (EIO, ENOSPC, and for
//! writes and copies a short write followed by ENOSPC), the workload runs again with the
//! N-th operation of that kind failing, and the test checks:
//!
//! - the call that met the fault failed with a clear error: `Error::NoSpace` for ENOSPC,
//!   `Error::Io` with EIO or `Error::Poisoned` naming it for EIO; no panic, and no success
//!   unless the operation was one whose failure is harmless (removing a temporary file, the
//!   spare segment the writer prepares again itself);
//! - the vault is poisoned exactly when the fault hit the log's durability path (the
//!   writer's segment files during an upload); a failed upload that did not poison changed
//!   no position, and a poisoned vault refuses the next upload;
//! - a failed restore leaves nothing in its output directory;
//! - after closing and reopening without faults, the vault opens, every database is at its
//!   last acknowledged position (or at the failed upload's, when its bytes landed), every
//!   acknowledged point the retention windows still promise restores byte for byte, any
//!   other point either restores byte for byte or is refused as `NoSuchPoint`, and
//!   compaction runs through.
//!
//! CI runs a seeded sample (the first and last N of every kind and fault, then random
//! ones) within about a minute; `LTXVAULT_FAULT_SWEEP=full` runs every N.
//! `LTXVAULT_FAULT_RUN=Write:main:17:short` runs one case (as printed on failure),
//! `LTXVAULT_SEED` changes the workload. Runs happen on `/dev/shm` when it is there (the
//! faults are injected, so the disk's speed would only cost time); without it, or with
//! `LTXVAULT_FAULT_NO_TMPFS` set, on the default temporary directory with a smaller sample.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{ModelDb, Rng, seed};
use ltxvault::clock::ManualClock;
use ltxvault::ingest::SEGMENT_PREP_THREAD;
use ltxvault::io::engine::IoChoice;
use ltxvault::io::{Fault, FaultPlan, Op};
use ltxvault::ltx::{TxId, database_checksum};
use ltxvault::restore::Target;
use ltxvault::vault::SnapshotFormat;
use ltxvault::{Error, Vault, VaultConfig};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const START: i64 = 1_800_000_000_000;
const SPAN: i64 = 10 * HOUR;
/// L1, L2 and L3 windows.
const INTERVALS_MS: [i64; 3] = [MINUTE, 10 * MINUTE, HOUR];
/// How long L0 to L3 keep their points.
const RETENTION_MS: [i64; 4] = [30 * MINUTE, 2 * HOUR, 4 * HOUR, 8 * HOUR];
/// Fault runs in CI (a sample) on tmpfs, about 15 s on two cores; `LTXVAULT_FAULT_SWEEP=full`
/// runs them all.
const CI_RUNS: usize = 600;
/// The sample without tmpfs, where every sync reaches the disk.
const CI_RUNS_ON_DISK: usize = 80;

fn config(plan: Option<Arc<Sweep>>) -> VaultConfig {
    VaultConfig {
        io: IoChoice::Std,
        background_compaction: false,
        segment_bytes: 64 << 10,
        level_intervals_ms: INTERVALS_MS.to_vec(),
        retention_ms: RETENTION_MS.iter().map(|&ms| Some(ms)).collect(),
        compaction_grace_ms: 5_000,
        faults: plan.map(|plan| plan as Arc<dyn FaultPlan>),
        ..VaultConfig::default()
    }
}

/// Which thread an operation ran on: the segment-preparing thread or any other (the test
/// thread and the log writer, which only works while the test thread waits for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Lane {
    Main,
    Prep,
}

/// The fault injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Eio,
    Enospc,
    /// Half the bytes, then ENOSPC: a disk filling up mid-write.
    Short,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Eio, Kind::Enospc, Kind::Short];

    fn applies_to(self, op: Op) -> bool {
        self != Kind::Short || op.moves_bytes()
    }

    fn fault(self, len: u64) -> Fault {
        match self {
            Kind::Eio => Fault::Fail(libc::EIO),
            Kind::Enospc => Fault::Fail(libc::ENOSPC),
            Kind::Short => Fault::Short { bytes: len / 2, errno: libc::ENOSPC },
        }
    }

    fn errno(self) -> i32 {
        if self == Kind::Eio { libc::EIO } else { libc::ENOSPC }
    }
}

/// One fault run: the `n`-th operation of kind `op` on `lane` fails as `kind` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Case {
    op: Op,
    lane: Lane,
    n: u64,
    kind: Kind,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lane = if self.lane == Lane::Main { "main" } else { "prep" };
        let kind = match self.kind {
            Kind::Eio => "eio",
            Kind::Enospc => "enospc",
            Kind::Short => "short",
        };
        write!(f, "{:?}:{lane}:{}:{kind}", self.op, self.n)
    }
}

impl Case {
    /// Parses what `Display` prints (for `LTXVAULT_FAULT_RUN`).
    fn parse(text: &str) -> Option<Case> {
        let mut parts = text.split(':');
        let op_name = parts.next()?;
        let op = Op::ALL.into_iter().find(|op| format!("{op:?}").eq_ignore_ascii_case(op_name))?;
        let lane = match parts.next()? {
            "main" => Lane::Main,
            "prep" => Lane::Prep,
            _ => return None,
        };
        let n = parts.next()?.parse().ok()?;
        let kind = match parts.next()? {
            "eio" => Kind::Eio,
            "enospc" => Kind::Enospc,
            "short" => Kind::Short,
            _ => return None,
        };
        Some(Case { op, lane, n, kind })
    }
}

/// An injected fault, as it happened.
#[derive(Clone, Debug)]
struct Fired {
    case: Case,
    path: PathBuf,
    /// The workload step during which it fired.
    step: usize,
}

/// The fault plan: counts operations per kind and lane, and fails the one its case names.
#[derive(Debug)]
struct Sweep {
    case: Option<Case>,
    counts: Mutex<BTreeMap<(Op, Lane), u64>>,
    fired: Mutex<Option<Fired>>,
    step: AtomicUsize,
}

impl Sweep {
    fn new(case: Option<Case>) -> Arc<Sweep> {
        Arc::new(Sweep {
            case,
            counts: Mutex::new(BTreeMap::new()),
            fired: Mutex::new(None),
            step: AtomicUsize::new(0),
        })
    }

    fn fired(&self) -> Option<Fired> {
        self.fired.lock().expect("fired").clone()
    }
}

impl FaultPlan for Sweep {
    fn before(&self, op: Op, path: &Path, len: u64) -> Fault {
        let lane = if std::thread::current().name() == Some(SEGMENT_PREP_THREAD) { Lane::Prep } else { Lane::Main };
        let n = {
            let mut counts = self.counts.lock().expect("counts");
            let n = counts.entry((op, lane)).or_default();
            *n += 1;
            *n
        };
        match self.case {
            Some(case) if (case.op, case.lane, case.n) == (op, lane, n) => {
                let step = self.step.load(Ordering::SeqCst);
                *self.fired.lock().expect("fired") = Some(Fired { case, path: path.to_path_buf(), step });
                case.kind.fault(len)
            }
            _ => Fault::Proceed,
        }
    }
}

/// One acknowledged point of a database.
#[derive(Clone)]
struct Point {
    txid: u64,
    timestamp_ms: i64,
    image: Arc<Vec<u8>>,
}

struct Db {
    cluster: &'static str,
    name: &'static str,
    model: ModelDb,
    acked: Vec<Point>,
}

impl Db {
    fn point(&self, txid: u64) -> Option<&Point> {
        self.acked.iter().find(|p| p.txid == txid)
    }

    /// Whether the retention windows, as of a pass at `retained_ms`, still promise the
    /// acknowledged point `i`: within L0's retention, or the last point of a closed window
    /// of level k (a later point exists in a later window) within level k's, or the newest
    /// point. (A lower bound of what the vault keeps: a window not compacted yet keeps more.)
    fn promised(&self, i: usize, retained_ms: i64) -> bool {
        let point = &self.acked[i];
        let Some(next) = self.acked.get(i + 1) else { return true };
        if point.timestamp_ms >= retained_ms.saturating_sub(RETENTION_MS[0]) {
            return true;
        }
        INTERVALS_MS.iter().zip(&RETENTION_MS[1..]).any(|(&interval, &kept)| {
            let closed = next.timestamp_ms.div_euclid(interval) != point.timestamp_ms.div_euclid(interval);
            closed && point.timestamp_ms >= retained_ms.saturating_sub(kept)
        })
    }
}

/// What a workload step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Ingest,
    Compact,
    Retain,
    Restore,
    Snapshot,
    InPlace,
    Reopen,
}

/// Whether a fault during a step of this kind, at this operation, must poison the vault:
/// the log writer's operations on its segments while it writes an upload, except a full
/// disk while it prepares a new segment (anything up to the rename of its temporary file):
/// nothing of the log changed, and the upload is refused alone.
fn must_poison(step: Step, fired: &Fired, log_dir: &Path) -> bool {
    let preparing = fired.path.file_name().is_some_and(|name| name.to_string_lossy().ends_with(".seg.tmp"));
    matches!(step, Step::Ingest | Step::InPlace)
        && fired.case.lane == Lane::Main
        && fired.case.op != Op::Remove
        && fired.path.starts_with(log_dir)
        && !(preparing && fired.case.kind.errno() == libc::ENOSPC)
}

/// A failure nothing depends on: removing a temporary file, or the spare segment that the
/// writer prepares again itself when it finds it missing.
fn harmless(fired: &Fired) -> bool {
    let temporary = fired.path.file_name().is_some_and(|name| name.to_string_lossy().contains(".tmp"));
    fired.case.lane == Lane::Prep || (fired.case.op == Op::Remove && temporary)
}

/// The error a fault must produce.
fn is_clear(e: &Error, kind: Kind) -> bool {
    match e {
        Error::NoSpace(message) => kind.errno() == libc::ENOSPC && message.contains("No space left"),
        Error::Io { source, .. } => kind == Kind::Eio && source.raw_os_error() == Some(libc::EIO),
        Error::Poisoned(reason) => kind == Kind::Eio && reason.contains("Input/output error"),
        _ => false,
    }
}

/// The directory runs happen in: tmpfs when there is one (the faults are injected, so the
/// disk's speed would only cost time), else the default temporary directory.
fn scratch_dir() -> tempfile::TempDir {
    match tmpfs().map(tempfile::tempdir_in) {
        Some(Ok(dir)) => dir,
        _ => tempfile::tempdir().expect("tempdir"),
    }
}

/// `/dev/shm` if it is there and writable.
fn tmpfs() -> Option<&'static Path> {
    let shm = Path::new("/dev/shm");
    (std::env::var_os("LTXVAULT_FAULT_NO_TMPFS").is_none() && tempfile::tempdir_in(shm).is_ok()).then_some(shm)
}

/// What one run saw.
struct Outcome {
    fired: Option<Fired>,
    poisoned: bool,
    counts: BTreeMap<(Op, Lane), u64>,
}

/// Runs the workload with `case` failing (none: the counting run), checks everything the
/// module docs list, and panics with the case and seed on the first violation.
fn run(seed: u64, case: Option<Case>) -> Outcome {
    let plan = Sweep::new(case);
    let dir = scratch_dir();
    let vault_dir = dir.path().join("vault");
    let log_dir = vault_dir.join("l0");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).expect("out dir");
    let clock = ManualClock::new(START);
    let open = || Vault::open_with_clock(&vault_dir, config(Some(plan.clone())), clock.clone());
    // The first open (step 0) may meet the fault too; the next one must then work.
    let mut vault = Some(
        open()
            .or_else(|e| {
                let fired =
                    plan.fired().unwrap_or_else(|| panic!("case {case:?}: the first open failed without a fault: {e}"));
                assert!(is_clear(&e, fired.case.kind), "case {case:?}: unclear error from open after {fired:?}: {e:?}");
                open()
            })
            .unwrap_or_else(|e| panic!("case {case:?}: open: {e}")),
    );
    let mut rng = Rng::new(seed);
    let mut dbs: Vec<Db> = [("c", "a", 512), ("c", "b", 1024), ("d", "x", 512)]
        .into_iter()
        .map(|(cluster, name, page_size)| {
            let mut model = ModelDb::new(page_size);
            model.timestamp_ms = START;
            // Big enough that restores from an image copy runs of pages in the kernel.
            model.image = vec![0; 40 * page_size as usize];
            rng.fill(&mut model.image);
            Db { cluster, name, model, acked: Vec::new() }
        })
        .collect();
    // An upload whose failure poisoned the vault: its bytes may or may not have landed.
    let mut unacked: Option<(usize, Point)> = None;
    let mut retained_ms = i64::MIN;
    let mut now = START;
    let mut next_pass = START + 20 * MINUTE;
    let mut step = 0usize;
    let mut pending: Vec<Step> = Vec::new();
    let mut poisoned = false;

    // The last two steps: a compaction and a retention pass after the workload, after
    // which the level files on disk must be exactly the catalog's.
    let mut final_steps: Option<usize> = None;
    while !poisoned {
        if pending.is_empty() && now >= START + SPAN {
            if final_steps.is_some() {
                break;
            }
            final_steps = Some(step + 1);
            pending.extend([Step::Retain, Step::Compact]);
        }
        let kind = pending.pop().unwrap_or_else(|| {
            if now >= next_pass {
                next_pass = now + 10 * MINUTE + rng.below(30 * MINUTE as u64) as i64;
                pending.push(Step::Retain);
                return Step::Compact;
            }
            match rng.below(100) {
                0..=7 => Step::Restore,
                8..=10 => Step::Snapshot,
                11..=12 => Step::InPlace,
                13..=14 => Step::Reopen,
                _ => Step::Ingest,
            }
        });
        step += 1;
        plan.step.store(step, Ordering::SeqCst);
        let context = format!("case {case:?}, seed {seed}, step {step} ({kind:?})");
        let v = vault.as_ref().expect("open vault");
        let d = rng.below(dbs.len() as u64) as usize;
        let result: Result<(), Error> = match kind {
            Step::Ingest => {
                if rng.chance(70) {
                    now += 2 * MINUTE + rng.below(13 * MINUTE as u64) as i64;
                } else {
                    now += 1_000 + rng.below(20_000) as i64;
                }
                let db = &mut dbs[d];
                db.model.timestamp_ms = db.model.timestamp_ms.max(now);
                let compress = rng.chance(30);
                let (bytes, next) = db.model.propose(&mut rng, compress);
                let point =
                    Point { txid: next.txid, timestamp_ms: next.timestamp_ms, image: Arc::new(next.image.clone()) };
                match v.ingest(db.cluster, db.name, bytes) {
                    Ok(ack) => {
                        assert_eq!(
                            (ack.position.txid.0, ack.position.checksum),
                            (next.txid, next.checksum),
                            "{context}"
                        );
                        db.model = next;
                        db.acked.push(point);
                        Ok(())
                    }
                    Err(e) => {
                        if v.poisoned().is_some() {
                            unacked = Some((d, point));
                        } else {
                            let position = v.position(db.cluster, db.name).map(|(p, _)| p.txid.0);
                            assert_eq!(
                                position,
                                db.acked.last().map(|p| p.txid),
                                "{context}: a refused upload moved the position"
                            );
                        }
                        Err(e)
                    }
                }
            }
            Step::Compact => {
                clock.set_ms(now);
                v.compact_now().map(|_| ())
            }
            Step::Retain => {
                clock.set_ms(now);
                retained_ms = now;
                v.retain_now().map(|_| ())
            }
            Step::Restore | Step::Snapshot => {
                let db = &dbs[d];
                // The images' points restore with one kernel copy.
                let images: Vec<u64> = v
                    .level_runs(db.cluster, db.name)
                    .get(2)
                    .map(|l| l.iter().map(|r| r.max_txid.0).collect())
                    .unwrap_or_default();
                let target = match (db.acked.is_empty(), rng.below(10)) {
                    (true, _) => Target::Latest,
                    (false, 0..=1) => Target::Latest,
                    (false, 2..=3) if !images.is_empty() => {
                        Target::TxId(TxId(images[rng.below(images.len() as u64) as usize]))
                    }
                    (false, 4..=7) => Target::TxId(TxId(db.acked[rng.below(db.acked.len() as u64) as usize].txid)),
                    (false, _) => Target::Timestamp(START + rng.below((now - START + 1) as u64) as i64),
                };
                let out = out_dir.join(format!("restore-{step}.db"));
                let restored = if kind == Step::Restore {
                    v.restore(db.cluster, db.name, target, &out, false)
                        .map(|summary| (summary.position.txid.0, std::fs::read(&out).expect("read the restore")))
                } else {
                    let mut bytes = Vec::new();
                    v.write_snapshot(db.cluster, db.name, target, SnapshotFormat::Sqlite, &mut bytes)
                        .map(|info| (info.position.txid.0, bytes))
                };
                let result = check_restore(db, target, restored, retained_ms, &context);
                if result.is_err() {
                    let left: Vec<_> =
                        std::fs::read_dir(&out_dir).expect("list").flatten().map(|e| e.file_name()).collect();
                    assert!(left.is_empty(), "{context}: a failed restore left {left:?}");
                }
                let _ = std::fs::remove_file(&out);
                result
            }
            Step::InPlace => {
                let db = &mut dbs[d];
                if db.acked.len() < 2 {
                    Ok(())
                } else {
                    let target = db.acked[rng.below(db.acked.len() as u64 - 1) as usize].clone();
                    clock.set_ms(now);
                    let mut next = db.model.clone();
                    next.image = (*target.image).clone();
                    next.txid += 1;
                    next.checksum = database_checksum(&next.image, next.page_size);
                    next.timestamp_ms = now.max(db.model.timestamp_ms);
                    let point = Point { txid: next.txid, timestamp_ms: next.timestamp_ms, image: target.image.clone() };
                    match v.restore_in_place(db.cluster, db.name, Target::TxId(TxId(target.txid)), false) {
                        Ok(done) => {
                            assert!(done.applied, "{context}");
                            assert_eq!(
                                (done.position.txid.0, done.position.checksum),
                                (next.txid, next.checksum),
                                "{context}"
                            );
                            db.model = next;
                            db.acked.push(point);
                            Ok(())
                        }
                        Err(Error::NoSuchPoint(message)) => {
                            let i = db.acked.iter().position(|p| p.txid == target.txid).expect("acked");
                            assert!(
                                !db.promised(i, retained_ms),
                                "{context}: promised point {} refused: {message}",
                                target.txid
                            );
                            Ok(())
                        }
                        Err(e) => {
                            if v.poisoned().is_some() {
                                unacked = Some((d, point));
                            }
                            Err(e)
                        }
                    }
                }
            }
            Step::Reopen => {
                let closed = vault.take().expect("open vault").close();
                match open() {
                    Ok(reopened) => {
                        vault = Some(reopened);
                        closed
                    }
                    Err(e) => {
                        // The fault is spent: the next open must work.
                        vault = Some(open().unwrap_or_else(|e| panic!("{context}: second reopen: {e}")));
                        closed.and(Err(e))
                    }
                }
            }
        };
        let v = vault.as_ref().expect("open vault");
        let fired = plan.fired().filter(|f| f.step == step);
        match (&result, &fired) {
            (Ok(()), None) => {}
            (Ok(()), Some(fired)) => {
                assert!(harmless(fired), "{context}: the step succeeded although {fired:?} failed");
            }
            (Err(e), Some(fired)) => {
                assert!(is_clear(e, fired.case.kind), "{context}: unclear error after {fired:?}: {e:?}");
            }
            (Err(e), None) => panic!("{context}: failed without a fault (earlier: {:?}): {e}", plan.fired()),
        }
        let expected = fired.as_ref().is_some_and(|f| result.is_err() && must_poison(kind, f, &log_dir));
        poisoned = v.poisoned().is_some();
        assert_eq!(poisoned, expected, "{context}: poisoned {:?} after {fired:?}", v.poisoned());
    }
    let last_fault_step = plan.fired().map(|f| f.step);
    if !poisoned && final_steps.is_some_and(|first| last_fault_step.is_none_or(|at| at < first)) {
        check_levels_match_catalog(
            vault.as_ref().expect("open vault"),
            &vault_dir,
            &dbs,
            &format!("case {case:?}, seed {seed}"),
        );
    }
    if poisoned {
        let db = &dbs[0];
        let (bytes, _) = db.model.propose(&mut rng, false);
        let refused = vault.as_ref().expect("open vault").ingest(db.cluster, db.name, bytes);
        assert!(matches!(refused, Err(Error::Poisoned(_))), "case {case:?}: a poisoned vault took {refused:?}");
    }
    // The last close may meet the fault too.
    step += 1;
    plan.step.store(step, Ordering::SeqCst);
    let closed = vault.take().expect("open vault").close();
    if let Some(fired) = plan.fired().filter(|f| f.step == step) {
        match &closed {
            Ok(()) => assert!(harmless(&fired), "case {case:?}: close succeeded although {fired:?} failed"),
            Err(e) => assert!(is_clear(e, fired.case.kind), "case {case:?}: unclear error from close: {e:?}"),
        }
    } else if let Err(e) = closed {
        panic!("case {case:?}: close failed without a fault: {e}");
    }
    let counts = plan.counts.lock().expect("counts").clone();
    verify_after_reopen(
        &vault_dir,
        &clock,
        &dbs,
        unacked.as_ref(),
        retained_ms,
        &out_dir,
        &format!("case {case:?}, seed {seed}"),
    );
    Outcome { fired: plan.fired(), poisoned, counts }
}

/// After a compaction and a retention pass that met no fault: the level files on disk are
/// exactly the catalog's (a file whose deletion failed earlier was deleted by a later pass,
/// an output whose installation failed was written again or removed), and no temporary
/// file is left.
fn check_levels_match_catalog(vault: &Vault, vault_dir: &Path, dbs: &[Db], context: &str) {
    for db in dbs {
        let dir = ltxvault::compact::db_dir(&vault_dir.join("levels"), db.cluster, db.name);
        let mut on_disk: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.flatten().map(|e| e.path()).filter(|p| !p.ends_with("NAME")).collect(),
            Err(_) => Vec::new(),
        };
        on_disk.sort();
        let mut cataloged: Vec<PathBuf> = vault
            .level_runs(db.cluster, db.name)
            .iter()
            .flatten()
            .filter_map(|run| run.path().map(Path::to_path_buf))
            .collect();
        cataloged.sort();
        assert_eq!(on_disk, cataloged, "{context}: {}/{}: level files on disk and in the catalog", db.cluster, db.name);
    }
}

/// Checks a restore's or snapshot's outcome against the model: the point it names is an
/// acknowledged one (the target's, for a TXID or the latest) and the bytes are its image;
/// a refusal is `NoSuchPoint` for a point the windows no longer promise. Errors other than
/// that refusal are passed on for the caller to judge.
fn check_restore(
    db: &Db,
    target: Target,
    restored: Result<(u64, Vec<u8>), Error>,
    retained_ms: i64,
    context: &str,
) -> Result<(), Error> {
    match restored {
        Ok((txid, bytes)) => {
            let point = db.point(txid).unwrap_or_else(|| panic!("{context}: restored TXID {txid}, never acknowledged"));
            match target {
                Target::Latest => assert_eq!(Some(txid), db.acked.last().map(|p| p.txid), "{context}"),
                Target::TxId(want) => assert_eq!(txid, want.0, "{context}"),
                Target::Timestamp(ms) => assert!(point.timestamp_ms <= ms, "{context}"),
            }
            assert!(bytes == *point.image, "{context}: TXID {txid} restored other bytes than were uploaded");
            Ok(())
        }
        Err(Error::NoSuchPoint(message)) => {
            let refused_but_promised = db.acked.iter().enumerate().any(|(i, p)| {
                let wanted = match target {
                    Target::Latest => true,
                    Target::TxId(want) => p.txid == want.0,
                    Target::Timestamp(ms) => p.timestamp_ms <= ms,
                };
                wanted && db.promised(i, retained_ms)
            });
            assert!(!refused_but_promised, "{context}: {target:?} refused although promised: {message}");
            Ok(())
        }
        Err(Error::NotFound { .. }) if db.acked.is_empty() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reopens without faults and checks positions and every acknowledged point; then
/// compaction must run through.
fn verify_after_reopen(
    vault_dir: &Path,
    clock: &Arc<ManualClock>,
    dbs: &[Db],
    unacked: Option<&(usize, Point)>,
    retained_ms: i64,
    out_dir: &Path,
    context: &str,
) {
    let vault = Vault::open_with_clock(vault_dir, config(None), clock.clone())
        .unwrap_or_else(|e| panic!("{context}: the vault does not open after the fault: {e}"));
    for (d, db) in dbs.iter().enumerate() {
        let landed = unacked.filter(|(at, _)| *at == d).map(|(_, point)| point);
        let position = vault.position(db.cluster, db.name).map(|(p, _)| p.txid.0);
        let last = db.acked.last().map(|p| p.txid);
        let at_landed = landed.is_some_and(|p| position == Some(p.txid));
        assert!(
            position == last || at_landed,
            "{context}: {}/{} at {position:?}, acknowledged {last:?}",
            db.cluster,
            db.name
        );
        let mut points: Vec<(usize, &Point)> = db.acked.iter().enumerate().collect();
        if at_landed && let Some(point) = landed {
            points.push((db.acked.len(), point));
        }
        for (i, point) in points {
            let out = out_dir.join("verify.db");
            match vault.restore(db.cluster, db.name, Target::TxId(TxId(point.txid)), &out, true) {
                Ok(_) => {
                    let bytes = std::fs::read(&out).expect("read");
                    assert!(
                        bytes == *point.image,
                        "{context}: {}/{} TXID {} restores other bytes",
                        db.cluster,
                        db.name,
                        point.txid
                    );
                }
                Err(Error::NoSuchPoint(message)) => {
                    let promised = i < db.acked.len() && db.promised(i, retained_ms);
                    assert!(
                        !promised,
                        "{context}: {}/{} TXID {} promised but refused: {message}",
                        db.cluster, db.name, point.txid
                    );
                }
                Err(e) => {
                    let spans = |runs: &[ltxvault::catalog::Run]| {
                        runs.iter().map(|r| format!("{}-{}", r.min_txid.0, r.max_txid.0)).collect::<Vec<_>>().join(" ")
                    };
                    let levels = vault.level_runs(db.cluster, db.name);
                    panic!(
                        "{context}: {}/{} TXID {}: {e}\nL0 {}\nL1 {}\nL2 {}\nL3 {}",
                        db.cluster,
                        db.name,
                        point.txid,
                        spans(&vault.runs(db.cluster, db.name)),
                        spans(&levels[0]),
                        spans(&levels[1]),
                        spans(&levels[2])
                    )
                }
            }
        }
    }
    vault.compact_now().unwrap_or_else(|e| panic!("{context}: compaction after the fault: {e}"));
    vault.close().unwrap_or_else(|e| panic!("{context}: close after verifying: {e}"));
}

/// Every case for the counts of a fault-free run.
fn all_cases(counts: &BTreeMap<(Op, Lane), u64>) -> Vec<Case> {
    let mut cases = Vec::new();
    for (&(op, lane), &count) in counts {
        for kind in Kind::ALL.into_iter().filter(|kind| kind.applies_to(op)) {
            cases.extend((1..=count).map(|n| Case { op, lane, n, kind }));
        }
    }
    cases
}

/// A seeded sample of `budget` cases: the first and last N of every kind, lane and fault,
/// then random others.
fn sample(cases: &[Case], budget: usize, rng: &mut Rng) -> Vec<Case> {
    let mut chosen: Vec<Case> = Vec::new();
    let mut by_group: BTreeMap<(Op, Lane, Kind), Vec<Case>> = BTreeMap::new();
    for case in cases {
        by_group.entry((case.op, case.lane, case.kind)).or_default().push(*case);
    }
    for group in by_group.values() {
        chosen.push(group[0]);
        if group.len() > 1 {
            chosen.push(group[group.len() - 1]);
        }
    }
    let mut rest: Vec<Case> = cases.iter().filter(|c| !chosen.contains(c)).copied().collect();
    while chosen.len() < budget && !rest.is_empty() {
        let i = rng.below(rest.len() as u64) as usize;
        chosen.push(rest.swap_remove(i));
    }
    chosen.sort();
    chosen
}

#[test]
fn every_failed_operation_is_reported_and_loses_nothing_acknowledged() {
    let seed = seed("every_failed_operation_is_reported_and_loses_nothing_acknowledged", 7);
    let started = Instant::now();
    if let Some(case) = std::env::var("LTXVAULT_FAULT_RUN").ok().and_then(|text| Case::parse(&text)) {
        let outcome = run(seed, Some(case));
        assert!(outcome.fired.is_some(), "{case} never fired");
        eprintln!("{case}: {:?}, poisoned {}", outcome.fired, outcome.poisoned);
        return;
    }
    let baseline = run(seed, None);
    let again = run(seed, None);
    let main = |counts: &BTreeMap<(Op, Lane), u64>| {
        counts.iter().filter(|((_, lane), _)| *lane == Lane::Main).map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
    };
    assert_eq!(main(&baseline.counts), main(&again.counts), "the workload's operations are not deterministic");
    for op in Op::ALL {
        assert!(
            baseline.counts.contains_key(&(op, Lane::Main)),
            "the workload never does {op:?}: {:?}",
            baseline.counts
        );
    }
    eprintln!("operations of a fault-free run: {:?}", baseline.counts);

    let cases = all_cases(&baseline.counts);
    let full = std::env::var("LTXVAULT_FAULT_SWEEP").is_ok_and(|v| v == "full");
    let budget = if tmpfs().is_some() { CI_RUNS } else { CI_RUNS_ON_DISK };
    let chosen = if full { cases.clone() } else { sample(&cases, budget, &mut Rng::new(seed)) };
    eprintln!("{} fault cases in all; running {}", cases.len(), chosen.len());

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(Case, Fired, bool)>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&case) = chosen.get(i) else { return };
                    let outcome = std::panic::catch_unwind(|| run(seed, Some(case)));
                    let outcome = outcome.unwrap_or_else(|_| {
                        next.store(chosen.len(), Ordering::SeqCst);
                        panic!("fault case {case} failed; rerun it with LTXVAULT_SEED={seed} LTXVAULT_FAULT_RUN={case}")
                    });
                    let fired = outcome.fired.unwrap_or_else(|| panic!("fault case {case} never fired"));
                    results.lock().expect("results").push((case, fired, outcome.poisoned));
                }
            });
        }
    });
    let results = results.into_inner().expect("results");
    let poisoned = results.iter().filter(|(_, _, poisoned)| *poisoned).count();
    let mut per_op: BTreeMap<Op, usize> = BTreeMap::new();
    for (case, _, _) in &results {
        *per_op.entry(case.op).or_default() += 1;
    }
    eprintln!(
        "{} faults injected ({} poisoned the vault) in {:.1} s; per operation: {per_op:?}",
        results.len(),
        poisoned,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(results.len(), chosen.len());
    assert!(poisoned > 0 && poisoned < results.len(), "some faults poison and some do not");
}
