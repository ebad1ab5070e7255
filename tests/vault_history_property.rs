//! Issue #4's property test: random histories over simulated days, compacted at random
//! moments, restore byte for byte like a naive replay of the uploads.
//!
//! Each case drives one database through 2 to 5 simulated days on a manual clock: uploads
//! with random gaps (several in the same millisecond, milliseconds, seconds, minutes, quiet
//! hours, and now and then a timestamp earlier than the one before), compressed or not,
//! the database growing and shrinking. At random moments the clock moves forward (never
//! back) to somewhere between the last upload and a few hours later and a compaction pass
//! runs (L1 one minute, L2 one hour, L3 one day), or the vault is closed and reopened on
//! the same directory and clock. At random moments, and at the end before and after a
//! compaction that closes every window, random targets are restored:
//!
//! - a TXID: every upload ends at a restore point (retention is off), and the dry-run plan
//!   resolves to exactly that TXID;
//! - a timestamp T: the state after the last upload whose effective timestamp is <= T,
//!   where the effective timestamp is the vault's per-database monotonic one,
//!   max(own, previous effective); before the first upload it is an error.
//!
//! The oracle is a naive replay of the upload files themselves, decoded and applied one
//! after the other onto a byte image (checked against the model database after every
//! upload). A restore must equal it byte for byte, and the database checksum of the bytes
//! must be the one the restore reports. Once every window is closed, restores must read
//! level files: an input of level k < 3 lies in the point's own level k+1 window (L0
//! inputs in its minute, L1 in its hour, L2 in its day; all earlier days come from L3), a
//! point a day or more into the history takes at most a third as many inputs as there
//! were uploads (about a fifth at worst over 300 seeds), and the latest point is read from
//! L3 alone.
//!
//! Nothing here depends on how a level stores its history (L3 is changing to daily full
//! images), only on the public API: ingest, compact_now, level_runs, runs, plan_restore,
//! restore, close.
//!
//! `LTXVAULT_SEED` sets the base seed (case i uses base + i); `LTXVAULT_CASES` the number
//! of cases. A failing case prints the line that replays it alone.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use common::{ModelDb, Rng, seed};
use ltxvault::catalog::Run;
use ltxvault::clock::ManualClock;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::{Checksum, Decoder, Encoder, Format, TxId, database_checksum};
use ltxvault::restore::{Plan, Target};
use ltxvault::{Vault, VaultConfig};

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
const DEFAULT_CASES: u64 = 8;
/// Keeps a case's database at a few hundred pages (ModelDb grows by about half a page an
/// upload on average).
const MAX_UPLOADS: usize = 700;
/// A point at least a day into the history, once compacted, must take at most this
/// fraction of the uploads that built it as restore inputs.
const MAX_INPUTS_PER_UPLOAD: f64 = 1.0 / 3.0;
const CLUSTER: &str = "c";
const DB: &str = "db";

fn config() -> VaultConfig {
    VaultConfig { io: IoChoice::Std, background_compaction: false, ..VaultConfig::default().retention_off() }
}

/// One acknowledged upload (TXID = index + 1): the file the client sent and what the
/// vault must make of it.
struct Upload {
    bytes: Vec<u8>,
    effective_ms: i64,
    /// The model's database checksum and size after it.
    checksum: Checksum,
    commit: u32,
}

/// The uploads of a case, oldest first.
struct History {
    page_size: u32,
    uploads: Vec<Upload>,
}

impl History {
    fn upload(&self, txid: TxId) -> &Upload {
        &self.uploads[txid.0 as usize - 1]
    }

    /// The expected point of a target (an index into `uploads`), or `None` if the vault
    /// must refuse it. The timestamp rule is the one under test: the last upload whose
    /// effective timestamp is <= T.
    fn resolve(&self, target: Target) -> Option<usize> {
        match target {
            Target::Latest => self.uploads.len().checked_sub(1),
            Target::TxId(txid) => (1..=self.uploads.len() as u64).contains(&txid.0).then(|| txid.0 as usize - 1),
            Target::Timestamp(t) => self.uploads.partition_point(|u| u.effective_ms <= t).checked_sub(1),
        }
    }
}

/// The client's timestamp for the next upload, `previous` being its last one.
fn next_timestamp(rng: &mut Rng, previous: i64) -> i64 {
    let mut below = |n: i64| rng.below(n as u64) as i64;
    match below(100) {
        0..12 => previous,                                 // several commits in one millisecond
        12..18 => previous - 1 - below(10 * MINUTE_MS),    // the client's clock stepped back
        18..48 => previous + 1 + below(SECOND_MS),         // a busy moment
        48..78 => previous + SECOND_MS + below(MINUTE_MS), // steady writes
        78..95 => previous + MINUTE_MS + below(20 * MINUTE_MS),
        _ => previous + HOUR_MS + below(5 * HOUR_MS), // a quiet spell
    }
}

/// `upload` re-encoded with another header timestamp (ModelDb picks its own).
fn with_timestamp(upload: &[u8], timestamp_ms: i64, compress: bool) -> Vec<u8> {
    let mut decoder = Decoder::new(upload).expect("decode our own upload");
    let mut header = *decoder.header();
    header.timestamp_ms = timestamp_ms;
    let mut encoder = Encoder::new(Vec::new(), &header, Format::V1 { compress }).expect("header");
    while let Some(page) = decoder.next_page().expect("page") {
        encoder.write_page(page.pgno, page.data).expect("page");
    }
    let trailer = decoder.trailer().expect("a decoded file has a trailer");
    encoder.finish(trailer.post_apply_checksum).expect("finish").0
}

/// The naive replay: applies one LTX file to a database image, its Commit first (cutting
/// the image, or growing it with zero pages), then its pages.
fn apply(image: &mut Vec<u8>, upload: &[u8]) {
    let mut decoder = Decoder::new(upload).expect("decode");
    let header = *decoder.header();
    let page_size = header.page_size as usize;
    if header.is_snapshot() {
        image.clear();
    }
    image.resize(header.commit as usize * page_size, 0);
    while let Some(page) = decoder.next_page().expect("page") {
        let at = (page.pgno.0 as usize - 1) * page_size;
        image[at..at + page_size].copy_from_slice(page.data);
    }
}

/// Random restore targets over `history`: TXIDs, timestamps exactly at, just before and
/// between points, before the first point and past the last.
fn random_targets(rng: &mut Rng, history: &History, count: usize) -> Vec<Target> {
    let n = history.uploads.len() as u64;
    let first = history.uploads[0].effective_ms;
    let last = history.uploads[n as usize - 1].effective_ms;
    let random_point = |rng: &mut Rng| history.uploads[rng.below(n) as usize].effective_ms;
    (0..count)
        .map(|_| match rng.below(20) {
            0..8 => Target::TxId(TxId(1 + rng.below(n))),
            8..11 => Target::Timestamp(random_point(rng)),
            11..13 => Target::Timestamp(random_point(rng) - 1),
            13..17 => Target::Timestamp(first + rng.below((last - first) as u64 + 1) as i64),
            17 => Target::Timestamp(first - 1 - rng.below(DAY_MS as u64) as i64),
            18 => Target::Timestamp(last + rng.below(DAY_MS as u64) as i64),
            _ => Target::Latest,
        })
        .collect()
}

/// Restores every target and compares it with the naive replay; returns each restorable
/// target's plan.
fn check_targets(vault: &Vault, history: &History, targets: &[Target], out_dir: &Path, what: &str) -> Vec<Plan> {
    let mut resolved: Vec<(usize, Target)> = Vec::new();
    for &target in targets {
        match history.resolve(target) {
            Some(index) => resolved.push((index, target)),
            None => {
                let missing = out_dir.join("refused.db");
                let plan = vault.plan_restore(CLUSTER, DB, target);
                assert!(plan.is_err(), "{what}: {target:?} has no point, yet plans to {:?}", plan.map(|p| p.0.txid));
                let restored = vault.restore(CLUSTER, DB, target, &missing, false);
                assert!(restored.is_err(), "{what}: {target:?} has no point, yet restores");
                assert!(!missing.exists(), "{what}: a refused restore left a file");
            }
        }
    }
    // One replay, oldest first, for every target.
    resolved.sort_by_key(|(index, _)| *index);
    let out = out_dir.join("out.db");
    let mut image = Vec::new();
    let mut replayed = 0;
    let mut plans = Vec::new();
    for (index, target) in resolved {
        while replayed <= index {
            apply(&mut image, &history.uploads[replayed].bytes);
            replayed += 1;
        }
        let upload = &history.uploads[index];
        let txid = TxId(index as u64 + 1);
        let what = format!("{what}: {target:?} (expected TXID {txid}, effective timestamp {})", upload.effective_ms);
        let (plan, page_size) = vault.plan_restore(CLUSTER, DB, target).unwrap_or_else(|e| panic!("{what}: plan: {e}"));
        assert_eq!(plan.txid, txid, "{what}: the plan resolves to another point");
        assert_eq!(page_size, history.page_size, "{what}");
        assert_eq!(plan.timestamp_ms, upload.effective_ms, "{what}: timestamp of the point");
        assert_eq!((plan.checksum, plan.commit), (upload.checksum, upload.commit), "{what}: checksum and commit");
        let summary = vault.restore(CLUSTER, DB, target, &out, true).unwrap_or_else(|e| panic!("{what}: restore: {e}"));
        assert_eq!(summary.position.txid, txid, "{what}: restored another point");
        assert_eq!(summary.inputs, plan.inputs.len(), "{what}: the restore read another plan");
        let bytes = std::fs::read(&out).expect("read the restored database");
        assert_eq!(bytes.len(), image.len(), "{what}: size of the restored database");
        if let Some(at) = bytes.iter().zip(&image).position(|(a, b)| a != b) {
            panic!(
                "{what}: the restore differs from the replay at byte {at} (page {}); plan inputs {:?}",
                at / history.page_size as usize + 1,
                plan.inputs.iter().map(|r| (r.level, r.min_txid.0, r.max_txid.0)).collect::<Vec<_>>()
            );
        }
        let checksum = database_checksum(&bytes, history.page_size);
        assert_eq!(checksum, summary.position.checksum, "{what}: database checksum of the restored bytes");
        assert_eq!(checksum, upload.checksum, "{what}: database checksum of the model");
        plans.push(plan);
    }
    plans
}

/// What every level run must say about the point it ends at, however it stores it, and
/// how L1 and L2 tile the history.
fn check_levels(vault: &Vault, history: &History, what: &str) -> Vec<Vec<Run>> {
    let levels = vault.level_runs(CLUSTER, DB);
    assert_eq!(levels.len(), 3, "{what}: L1, L2, L3");
    for (index, level) in levels.iter().enumerate() {
        for run in level {
            let name = format!("{what}: L{} run {}..{}", index + 1, run.min_txid, run.max_txid);
            assert_eq!(run.level as usize, index + 1, "{name}");
            assert!(run.min_txid >= TxId(1) && run.min_txid <= run.max_txid, "{name}");
            assert!(run.max_txid.0 as usize <= history.uploads.len(), "{name}: past the last upload");
            let upload = history.upload(run.max_txid);
            assert_eq!(run.timestamp_ms, upload.effective_ms, "{name}: timestamp");
            assert_eq!((run.post_apply, run.commit), (upload.checksum, upload.commit), "{name}: point");
        }
    }
    for level in &levels[..2] {
        if let Some(first) = level.first() {
            assert_eq!(first.min_txid, TxId(1), "{what}: L{} starts at TXID 1", first.level);
        }
        for pair in level.windows(2) {
            assert!(pair[1].min_txid.follows(pair[0].max_txid), "{what}: L{} has a gap or overlap", pair[0].level);
        }
    }
    let end = |level: &Vec<Run>| level.last().map_or(TxId::ZERO, |r| r.max_txid);
    assert!(end(&levels[1]) <= end(&levels[0]), "{what}: L2 ends past L1");
    levels
}

/// The L0 runs are the uploads, with the vault's effective timestamps.
fn check_uploads(vault: &Vault, history: &History, what: &str) {
    let runs = vault.runs(CLUSTER, DB);
    assert_eq!(runs.len(), history.uploads.len(), "{what}: one L0 run per upload");
    for (i, (run, upload)) in runs.iter().zip(&history.uploads).enumerate() {
        let txid = TxId(i as u64 + 1);
        assert_eq!((run.level, run.min_txid, run.max_txid), (0, txid, txid), "{what}");
        assert_eq!(run.timestamp_ms, upload.effective_ms, "{what}: effective timestamp of TXID {txid}");
    }
}

fn reopen(vault: Vault, dir: &Path, clock: &Arc<ManualClock>, history: &History, what: &str) -> Vault {
    let levels = vault.level_runs(CLUSTER, DB);
    let position = vault.position(CLUSTER, DB);
    vault.close().unwrap_or_else(|e| panic!("{what}: close: {e}"));
    let vault = Vault::open_with_clock(dir, config(), clock.clone()).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert_eq!(vault.position(CLUSTER, DB), position, "{what}: position after reopen");
    assert_eq!(vault.level_runs(CLUSTER, DB), levels, "{what}: level runs after reopen");
    check_uploads(&vault, history, what);
    vault
}

#[derive(Default)]
struct Stats {
    days: i64,
    page_size: u32,
    uploads: usize,
    max_commit: u32,
    grew: usize,
    shrank: usize,
    compactions: usize,
    reopens: usize,
    restores: usize,
    level_files: [usize; 3],
    /// Most inputs per upload over the compacted points a day or more into the history.
    worst_input_ratio: f64,
}

fn run_case(case_seed: u64) -> Stats {
    let mut rng = Rng::new(case_seed);
    let mut stats =
        Stats { days: 2 + rng.below(4) as i64, page_size: if rng.chance(50) { 512 } else { 1024 }, ..Stats::default() };
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let start = 1_800_000_000_000 + rng.below(DAY_MS as u64) as i64;
    let end = start + stats.days * DAY_MS;
    let mut clock_ms = start;
    let clock = ManualClock::new(clock_ms);
    let mut vault = Vault::open_with_clock(&vault_dir, config(), clock.clone()).expect("open");
    let mut history = History { page_size: stats.page_size, uploads: Vec::new() };
    let mut model = ModelDb::new(stats.page_size);
    let mut replayed = Vec::new();
    let mut own_ms = start;

    while history.uploads.len() < MAX_UPLOADS && history.uploads.last().is_none_or(|u| u.effective_ms < end) {
        if !history.uploads.is_empty() {
            own_ms = next_timestamp(&mut rng, own_ms);
        }
        let compress = rng.chance(50);
        let (bytes, next) = model.propose(&mut rng, compress);
        let bytes = with_timestamp(&bytes, own_ms, compress);
        let what = format!("upload of TXID {} at {own_ms}", next.txid);
        let ack = vault.ingest(CLUSTER, DB, bytes.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((ack.position.txid, ack.position.checksum), (TxId(next.txid), next.checksum), "{what}: ack");
        match next.commit().cmp(&model.commit()) {
            std::cmp::Ordering::Greater => stats.grew += 1,
            std::cmp::Ordering::Less => stats.shrank += 1,
            std::cmp::Ordering::Equal => {}
        }
        model = next;
        model.timestamp_ms = own_ms;
        stats.max_commit = stats.max_commit.max(model.commit());
        apply(&mut replayed, &bytes);
        assert!(replayed == model.image, "{what}: the naive replay disagrees with the model");
        let effective_ms = history.uploads.last().map_or(own_ms, |u| u.effective_ms.max(own_ms));
        history.uploads.push(Upload { bytes, effective_ms, checksum: model.checksum, commit: model.commit() });

        // Now and then the clock moves on (never back) and a compaction pass runs.
        if rng.chance(3) {
            clock_ms = clock_ms.max(effective_ms + rng.below(4 * HOUR_MS as u64) as i64);
            clock.set_ms(clock_ms);
            vault.compact_now().unwrap_or_else(|e| panic!("compaction at {clock_ms}: {e}"));
            stats.compactions += 1;
            check_levels(&vault, &history, &format!("after compaction at {clock_ms}"));
        }
        if rng.chance(1) {
            vault = reopen(vault, &vault_dir, &clock, &history, &format!("reopen after TXID {}", model.txid));
            stats.reopens += 1;
        }
        if rng.chance(1) {
            let targets = random_targets(&mut rng, &history, 6);
            let what = format!("probe after TXID {}", model.txid);
            stats.restores += check_targets(&vault, &history, &targets, dir.path(), &what).len();
        }
    }
    stats.uploads = history.uploads.len();
    let n = TxId(history.uploads.len() as u64);
    let first_ms = history.uploads[0].effective_ms;
    let last_ms = history.uploads[history.uploads.len() - 1].effective_ms;

    // The end of the history, compacted as far as the random passes went.
    check_uploads(&vault, &history, "end");
    check_levels(&vault, &history, "end");
    let mut targets = random_targets(&mut rng, &history, 40);
    targets.extend([Target::Latest, Target::TxId(TxId::ZERO), Target::TxId(TxId(n.0 + 1))]);
    stats.restores += check_targets(&vault, &history, &targets, dir.path(), "end").len();

    // A pass with the clock past every window's end closes them all.
    clock_ms = clock_ms.max(last_ms + 2 * DAY_MS);
    clock.set_ms(clock_ms);
    vault.compact_now().expect("final compaction");
    stats.compactions += 1;
    let levels = check_levels(&vault, &history, "after the final compaction");
    for (index, level) in levels.iter().enumerate() {
        assert_eq!(level.last().map(|r| r.max_txid), Some(n), "every window of L{} is compacted", index + 1);
        stats.level_files[index] = level.len();
    }
    let mut targets = random_targets(&mut rng, &history, 40);
    // Points a day or more into the history, where the inputs are checked below.
    for _ in 0..10 {
        targets
            .push(Target::Timestamp(first_ms + DAY_MS + rng.below((last_ms - first_ms - DAY_MS).max(1) as u64) as i64));
    }
    targets.push(Target::Latest);
    let plans = check_targets(&vault, &history, &targets, dir.path(), "compacted");
    stats.restores += plans.len();
    let intervals_ms = config().level_intervals_ms;
    for plan in &plans {
        let inputs: Vec<(u8, u64, u64)> = plan.inputs.iter().map(|r| (r.level, r.min_txid.0, r.max_txid.0)).collect();
        // Every window before the point's own is closed and compacted: an input of level k
        // < 3 lies in the same level k+1 window as the point (L0 inputs in its minute, L1
        // in its hour, L2 in its day).
        for input in &plan.inputs {
            let Some(&interval) = intervals_ms.get(usize::from(input.level)) else { continue };
            assert_eq!(
                input.timestamp_ms.div_euclid(interval),
                plan.timestamp_ms.div_euclid(interval),
                "compacted TXID {}: input L{} {}..{} is outside the point's L{} window; inputs {inputs:?}",
                plan.txid,
                input.level,
                input.min_txid,
                input.max_txid,
                input.level + 1
            );
        }
        if plan.timestamp_ms < first_ms + DAY_MS {
            continue;
        }
        let ratio = inputs.len() as f64 / plan.txid.0 as f64;
        stats.worst_input_ratio = stats.worst_input_ratio.max(ratio);
        assert!(
            ratio <= MAX_INPUTS_PER_UPLOAD && inputs.iter().any(|&(level, _, _)| level == 3),
            "compacted TXID {}, {} ms into the history, is read from {} inputs for {} uploads: {inputs:?}",
            plan.txid,
            plan.timestamp_ms - first_ms,
            inputs.len(),
            plan.txid
        );
    }
    let (latest, _) = vault.plan_restore(CLUSTER, DB, Target::Latest).expect("plan latest");
    assert!(
        !latest.inputs.is_empty()
            && latest.inputs.iter().all(|r| r.level == 3)
            && latest.inputs.len() <= stats.level_files[2],
        "the latest point closes the last day: it is read from L3 alone, not {:?}",
        latest.inputs.iter().map(|r| (r.level, r.min_txid.0, r.max_txid.0)).collect::<Vec<_>>()
    );

    // The levels are found again at open and still restore.
    vault = reopen(vault, &vault_dir, &clock, &history, "final reopen");
    stats.reopens += 1;
    let targets = random_targets(&mut rng, &history, 10);
    stats.restores += check_targets(&vault, &history, &targets, dir.path(), "after the final reopen").len();
    vault.close().expect("close");

    assert!(stats.grew > 0 && stats.shrank > 0, "the database grew {} and shrank {} times", stats.grew, stats.shrank);
    stats
}

/// Runs the cases on a few threads (they wait on fsync more than they compute); a failing
/// case prints the line that replays it alone, and its panic fails the test.
#[test]
fn random_histories_restore_like_a_naive_replay() {
    let base = seed("random_histories_restore_like_a_naive_replay", 4);
    let cases = std::env::var("LTXVAULT_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_CASES);
    let next_case = AtomicU64::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4);
    let failures: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| loop {
                    let case = next_case.fetch_add(1, Ordering::Relaxed);
                    if case >= cases {
                        return None;
                    }
                    let case_seed = base.wrapping_add(case);
                    let started = Instant::now();
                    match catch_unwind(AssertUnwindSafe(|| run_case(case_seed))) {
                        Ok(stats) => eprintln!("case {case} (seed {case_seed}): {stats}; {:.1?}", started.elapsed()),
                        Err(panic) => {
                            eprintln!("case {case} failed: replay it alone with LTXVAULT_SEED={case_seed} LTXVAULT_CASES=1");
                            return Some(panic);
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().expect("workers catch their panics")).collect()
    });
    if let Some(panic) = failures.into_iter().next() {
        resume_unwind(panic);
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} days, {} uploads, pages of {} bytes (up to {}, grew {} times, shrank {}), {} compactions, {} reopens, \
             L1/L2/L3 runs {:?}, {} restores, inputs per upload at most {:.3} a day in",
            self.days,
            self.uploads,
            self.page_size,
            self.max_commit,
            self.grew,
            self.shrank,
            self.compactions,
            self.reopens,
            self.level_files,
            self.restores,
            self.worst_input_ratio
        )
    }
}
