//! Retention over 31 simulated days with the default windows (L0 a day, L1 to L3 thirty
//! days): compaction and retention passes run along the way as the background threads
//! would, the vault is closed and reopened (once with its page-checksum maps gone, so they
//! are rebuilt from levels alone). A second database goes quiet after two days: its log
//! records expire while they share segments with the busy one, and its position then lives
//! in its level files alone. At the end the vault holds no more than the windows promise,
//! and every promised point restores byte for byte.

mod common;

use common::{ModelDb, Rng, seed};
use ltxvault::clock::ManualClock;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::TxId;
use ltxvault::restore::Target;
use ltxvault::{Vault, VaultConfig};
use xxhash_rust::xxh3::xxh3_64;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const START: i64 = 1_800_000_000_000;

fn config() -> VaultConfig {
    VaultConfig { io: IoChoice::Std, background_compaction: false, segment_bytes: 256 << 10, ..VaultConfig::default() }
}

/// One upload as the model saw it.
struct Point {
    txid: u64,
    ts: i64,
    hash: u64,
}

#[test]
fn thirty_one_days_keep_what_the_windows_promise_and_no_more() {
    let seed = seed("thirty_one_days_keep_what_the_windows_promise_and_no_more", 31);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(START);
    let mut vault = Vault::open_with_clock(&vault_dir, config(), clock.clone()).expect("open");
    let mut model = ModelDb::new(512);
    model.timestamp_ms = START;
    let mut points: Vec<Point> = Vec::new();
    let mut quiet = ModelDb::new(1024);
    quiet.timestamp_ms = START;
    let mut next_pass = START + HOUR;
    let mut reopened_without_maps = false;
    while model.timestamp_ms < START + 31 * DAY {
        // Mostly every 10-50 minutes, sometimes a burst within the same minute.
        let gap =
            if rng.chance(15) { rng.below(20_000) as i64 } else { 10 * MINUTE + rng.below(40 * MINUTE as u64) as i64 };
        model.timestamp_ms += gap; // the upload is stamped a little after this
        let compress = rng.chance(50);
        let (bytes, next) = model.propose(&mut rng, compress);
        vault.ingest("c", "db", bytes).unwrap_or_else(|e| panic!("upload {}: {e}", next.txid));
        model = next;
        points.push(Point { txid: model.txid, ts: model.timestamp_ms, hash: xxh3_64(&model.image) });
        if model.timestamp_ms < START + 2 * DAY && rng.chance(30) {
            quiet.timestamp_ms = quiet.timestamp_ms.max(model.timestamp_ms);
            let (bytes, next) = quiet.propose(&mut rng, false);
            vault.ingest("c", "quiet", bytes).expect("quiet upload");
            quiet = next;
        }
        if model.timestamp_ms >= next_pass {
            clock.set_ms(model.timestamp_ms);
            vault.compact_now().expect("compact");
            vault.retain_now().expect("retain");
            next_pass = model.timestamp_ms + HOUR / 2 + rng.below(2 * HOUR as u64) as i64;
            if rng.chance(3) {
                vault.close().expect("close");
                if !reopened_without_maps && model.timestamp_ms > START + 3 * DAY {
                    // Lose the page-checksum maps: the history from TXID 1 is gone from the
                    // log, so the map is rebuilt from the levels.
                    std::fs::remove_dir_all(vault_dir.join("sums")).expect("remove the maps");
                    reopened_without_maps = true;
                }
                vault = Vault::open_with_clock(&vault_dir, config(), clock.clone()).expect("reopen");
            }
        }
    }
    assert!(reopened_without_maps, "the test reopened without maps at least once");
    let now = model.timestamp_ms + MINUTE;
    clock.set_ms(now);
    vault.compact_now().expect("compact");
    vault.retain_now().expect("retain");
    // Upload more after the maps were rebuilt: the position and map are right.
    model.timestamp_ms = now;
    let (bytes, next) = model.propose(&mut rng, false);
    vault.ingest("c", "db", bytes).expect("an upload after rebuilding the map");
    model = next;
    points.push(Point { txid: model.txid, ts: model.timestamp_ms, hash: xxh3_64(&model.image) });

    // What is held: nothing that left every window, except what the oldest promised
    // points are built on.
    let levels = vault.level_runs("c", "db");
    let l0 = vault.runs("c", "db");
    let l0_cutoff = now - DAY;
    let cutoff = now - 30 * DAY;
    let l1_straddling = levels[0].iter().find(|f| f.timestamp_ms >= l0_cutoff).expect("an L1 file in the last day");
    assert!(
        l0.iter().all(|r| r.timestamp_ms >= l0_cutoff || r.min_txid >= l1_straddling.min_txid),
        "L0 keeps only the last day (and the minute that straddles it)"
    );
    assert!(l0.len() < points.len() / 20, "L0 holds {} of {} uploads", l0.len(), points.len());
    let l2_straddling = levels[1].iter().find(|f| f.timestamp_ms >= cutoff).expect("an L2 file in the window");
    assert!(levels[0].iter().all(|f| f.timestamp_ms >= cutoff || f.min_txid >= l2_straddling.min_txid));
    let old_images = levels[2].iter().filter(|i| i.timestamp_ms < cutoff).count();
    assert_eq!(old_images, 1, "exactly one image older than the window: the base of its oldest points");
    assert!(levels[2].len() >= 30, "{} images for 31 days", levels[2].len());
    let base = levels[2].iter().find(|i| i.timestamp_ms < cutoff).expect("the base image");
    assert!(levels[1].iter().all(|f| f.min_txid > base.max_txid), "L2 files before the base image are gone");
    // The log: every segment before the one holding the first kept upload is gone.
    let oldest_segment = std::fs::read_dir(vault_dir.join("l0"))
        .expect("list l0")
        .filter_map(|e| u64::from_str_radix(e.expect("entry").file_name().to_str()?.strip_suffix(".seg")?, 16).ok())
        .min();
    let first_kept = l0.first().and_then(|r| r.location()).map(|l| l.segment);
    assert_eq!(oldest_segment, first_kept, "the log starts at the first kept upload's segment");

    // Every promised point restores; the expired fine points are refused with the window.
    let out = dir.path().join("out.db");
    let mut checked = 0;
    for (i, p) in points.iter().enumerate() {
        let next = points.get(i + 1);
        let ends = |window: i64| next.is_none_or(|n| n.ts.div_euclid(window) != p.ts.div_euclid(window));
        let promised = (p.ts >= l0_cutoff) || (p.ts >= cutoff && ends(MINUTE));
        let l2_point = p.ts >= cutoff && ends(HOUR);
        if !(promised || l2_point) || (!rng.chance(25) && !l2_point && p.ts < l0_cutoff) {
            continue;
        }
        vault.restore("c", "db", Target::TxId(TxId(p.txid)), &out, true).unwrap_or_else(|e| {
            panic!("TXID {} at {} (now {now}) is promised: {e}", p.txid, p.ts);
        });
        let bytes = std::fs::read(&out).expect("read");
        assert_eq!(xxh3_64(&bytes), p.hash, "TXID {} restores to the state after it", p.txid);
        checked += 1;
    }
    assert!(checked > 500, "checked {checked} points");
    let expired = points.iter().enumerate().find(|(i, p)| {
        p.ts < cutoff && points.get(i + 1).is_some_and(|n| n.ts.div_euclid(MINUTE) == p.ts.div_euclid(MINUTE))
    });
    let (_, expired) = expired.expect("a fine point long expired");
    let err = vault.restore("c", "db", Target::TxId(TxId(expired.txid)), &out, true).expect_err("expired");
    assert!(err.to_string().contains("not a stored restore point") || err.to_string().contains("outside"), "{err}");

    // The quiet database: no log records left, its position from its levels, its latest
    // state restorable, before and after a reopen that drops its map again.
    assert!(vault.runs("c", "quiet").is_empty(), "the quiet database's uploads all left the log");
    let check_quiet = |vault: &Vault| {
        let (position, _) = vault.position("c", "quiet").expect("the quiet database is known");
        assert_eq!((position.txid, position.checksum), (TxId(quiet.txid), quiet.checksum));
        vault.restore("c", "quiet", Target::Latest, &out, true).expect("restore the quiet database");
        assert!(std::fs::read(&out).expect("read") == quiet.image, "the quiet database restores");
    };
    check_quiet(&vault);
    vault.close().expect("close");
    std::fs::remove_dir_all(vault_dir.join("sums")).expect("remove the maps");
    let vault = Vault::open_with_clock(&vault_dir, config(), clock.clone()).expect("reopen");
    check_quiet(&vault);
    // It takes uploads again from where its levels left it.
    quiet.timestamp_ms = now;
    let (bytes, next) = quiet.propose(&mut rng, false);
    vault.ingest("c", "quiet", bytes).expect("the quiet database wakes up");
    let quiet = next;
    vault.restore("c", "quiet", Target::Latest, &out, true).expect("restore");
    assert!(std::fs::read(&out).expect("read") == quiet.image);
    vault.close().expect("close");
}
