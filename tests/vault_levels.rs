//! Compaction levels with an injected clock: hours of history in seconds. After
//! compaction every point still restores byte for byte, restores read level files instead
//! of every upload, and the levels survive a reopen.

mod common;

use common::{ModelDb, Rng, seed};
use ltxvault::clock::ManualClock;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::TxId;
use ltxvault::restore::Target;
use ltxvault::{Vault, VaultConfig};

fn config() -> VaultConfig {
    VaultConfig { io: IoChoice::Std, background_compaction: false, ..VaultConfig::default() }
}

#[test]
fn compacted_history_restores_every_point() {
    let seed = seed("compacted_history_restores_every_point", 21);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(0);
    let vault = Vault::open_with_clock(&vault_dir, config(), clock.clone()).expect("open");
    let mut model = ModelDb::new(1024);
    model.timestamp_ms = 1_800_000_000_000;
    // (txid, timestamp, image) after every upload.
    let mut states: Vec<(u64, i64, Vec<u8>)> = Vec::new();
    for i in 0..300 {
        if rng.chance(5) {
            model.timestamp_ms += rng.below(40 * 60_000) as i64; // a quiet spell of up to 40 min
        }
        let compress = rng.chance(50);
        let (bytes, next) = model.propose(&mut rng, compress);
        vault.ingest("c", "db", bytes).unwrap_or_else(|e| panic!("upload {i}: {e}"));
        model = next;
        states.push((model.txid, model.timestamp_ms, model.image.clone()));
        // Compact now and then along the way, as the background threads would.
        if i % 50 == 49 {
            clock.set_ms(model.timestamp_ms);
            vault.compact_now().expect("compact");
        }
    }
    clock.set_ms(model.timestamp_ms + 2 * 3_600_000);
    vault.compact_now().expect("compact");
    let levels = vault.level_runs("c", "db");
    assert!(levels[0].len() > 5 && !levels[1].is_empty(), "L1 {} files, L2 {} files", levels[0].len(), levels[1].len());
    assert!(levels[2].is_empty(), "the history spans less than a day: no image yet");
    for level in &levels[..2] {
        assert_eq!(level.first().map(|r| r.min_txid), Some(TxId(1)));
        assert_eq!(level.last().map(|r| r.max_txid), Some(TxId(model.txid)), "every closed window is compacted");
        for pair in level.windows(2) {
            assert!(pair[1].min_txid.follows(pair[0].max_txid));
        }
    }
    let (plan, _) = vault.plan_restore("c", "db", Target::Latest).expect("plan");
    assert!(
        plan.inputs.len() <= levels[1].len(),
        "the latest point is read from L2 files: {} inputs",
        plan.inputs.len()
    );
    assert!(plan.inputs.iter().all(|p| p.level == 2));

    let out = dir.path().join("out.db");
    let check = |vault: &Vault, target: Target, expected: &[u8], what: &str| {
        vault.restore("c", "db", target, &out, true).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(std::fs::read(&out).expect("read") == expected, "{what}: restore differs from the model");
    };
    for (txid, _, image) in &states {
        check(&vault, Target::TxId(TxId(*txid)), image, &format!("TXID {txid}"));
    }
    for _ in 0..50 {
        let (first, last) = (states[0].1, states[states.len() - 1].1);
        let t = first + rng.below((last - first) as u64 + 1) as i64;
        let expected = states.iter().rev().find(|(_, ts, _)| *ts <= t).expect("a point at or before t");
        check(&vault, Target::Timestamp(t), &expected.2, &format!("timestamp {t}"));
    }
    vault.close().expect("close");

    let vault = Vault::open_with_clock(&vault_dir, config(), clock).expect("reopen");
    assert_eq!(vault.level_runs("c", "db"), levels, "level files are found again at open");
    let (txid, _, image) = &states[states.len() / 2];
    check(&vault, Target::TxId(TxId(*txid)), image, "after reopen");
}

#[test]
fn a_quiet_database_gets_its_window_closed_by_the_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(0);
    let vault = Vault::open_with_clock(&dir.path().join("vault"), config(), clock.clone()).expect("open");
    let mut rng = Rng::new(1);
    let mut model = ModelDb::new(512);
    model.timestamp_ms = 1_800_000_000_000; // a multiple of a minute: the window starts here
    for _ in 0..3 {
        let (bytes, next) = model.propose(&mut rng, false);
        vault.ingest("c", "db", bytes).expect("ingest");
        model = next;
    }
    clock.set_ms(model.timestamp_ms);
    assert_eq!(vault.compact_now().expect("compact"), 0, "the window is still open");
    clock.set_ms(1_800_000_000_000 + 60_000 + 5_000);
    assert_eq!(vault.compact_now().expect("compact"), 1, "the clock closed the L1 window");
    assert_eq!(vault.level_runs("c", "db")[0].len(), 1);
}

#[test]
fn damaged_level_files_are_never_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(0);
    let vault = Vault::open_with_clock(&vault_dir, config(), clock.clone()).expect("open");
    let mut rng = Rng::new(9);
    let mut model = ModelDb::new(1024);
    model.timestamp_ms = 1_800_000_000_000;
    for _ in 0..40 {
        model.timestamp_ms += 20_000;
        let (bytes, next) = model.propose(&mut rng, false);
        vault.ingest("c", "db", bytes).expect("ingest");
        model = next;
    }
    clock.set_ms(model.timestamp_ms + 2 * 3_600_000);
    vault.compact_now().expect("compact");
    let l2 = vault.level_runs("c", "db")[1].clone();
    vault.close().expect("close");
    let file = l2.last().expect("an L2 file").path().expect("a level file").to_path_buf();
    let file = &file;
    let pristine = std::fs::read(file).expect("read");

    // A page byte: the open trusts the header and trailer (checked against the name), but
    // a restore that reads the file finds the damage and writes nothing.
    let mut bytes = pristine.clone();
    bytes[100 + 4 + 10] ^= 1;
    std::fs::write(file, &bytes).expect("damage a page");
    let vault = Vault::open_with_clock(&vault_dir, config(), clock.clone()).expect("open");
    let out = dir.path().join("out.db");
    let err = vault.restore("c", "db", Target::Latest, &out, false).expect_err("damaged input");
    assert!(err.to_string().contains("file-checksum"), "{err}");
    assert!(!out.exists());
    vault.close().expect("close");

    // A header byte: the open fails and names the file.
    let mut bytes = pristine;
    bytes[40] ^= 1;
    std::fs::write(file, &bytes).expect("damage the header");
    let err = Vault::open_with_clock(&vault_dir, config(), clock).err().expect("open must fail");
    assert!(err.to_string().contains(&file.display().to_string()), "{err}");
}

/// Days of history: one image per closed day, restores start from the newest image at or
/// before the point (a kernel copy) and are byte-identical to the model; a damaged image
/// is refused by the restore's final checksum, and the next day's image is not built on
/// it (counted as corruption, the level stays where it was).
#[test]
fn daily_images_are_the_base_of_restores() {
    let seed = seed("daily_images_are_the_base_of_restores", 33);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let clock = ManualClock::new(0);
    let vault = Vault::open_with_clock(&vault_dir, config(), clock.clone()).expect("open");
    let mut model = ModelDb::new(1024);
    model.timestamp_ms = 1_800_000_000_000;
    let mut states: Vec<(u64, i64, Vec<u8>)> = Vec::new();
    let day = 86_400_000;
    // Four days, an upload every 1-3 hours.
    while model.timestamp_ms < 1_800_000_000_000 + 4 * day {
        model.timestamp_ms += 3_600_000 + rng.below(2 * 3_600_000) as i64;
        let compress = rng.chance(50);
        let (bytes, next) = model.propose(&mut rng, compress);
        vault.ingest("c", "db", bytes).expect("ingest");
        model = next;
        states.push((model.txid, model.timestamp_ms, model.image.clone()));
        if rng.chance(20) {
            clock.set_ms(model.timestamp_ms);
            vault.compact_now().expect("compact");
        }
    }
    clock.set_ms(model.timestamp_ms + 2 * day);
    vault.compact_now().expect("compact");
    let levels = vault.level_runs("c", "db");
    assert!(levels[2].len() >= 3, "one image per closed day: {} images", levels[2].len());
    for image in &levels[2] {
        let expected = states.iter().find(|s| s.0 == image.max_txid.0).expect("an image ends at an upload");
        let bytes = std::fs::read(image.path().expect("a file")).expect("read the image");
        assert!(bytes[..expected.2.len()] == expected.2[..], "image at TXID {} is the database", image.max_txid);
    }
    let out = dir.path().join("out.db");
    for (txid, _, image) in &states {
        let (plan, _) = vault.plan_restore("c", "db", Target::TxId(TxId(*txid))).expect("plan");
        let newest_image = levels[2].iter().rev().find(|i| i.max_txid.0 <= *txid);
        if let Some(base) = newest_image {
            assert_eq!(plan.inputs[0].max_txid, base.max_txid, "TXID {txid} starts from the newest image before it");
        }
        vault.restore("c", "db", Target::TxId(TxId(*txid)), &out, true).expect("restore");
        assert!(std::fs::read(&out).expect("read") == *image, "TXID {txid}: restore differs from the model");
    }
    vault.close().expect("close");

    // Damage every page of the newest image (later uploads rewrite some pages, never all),
    // each at a different offset: the database checksum XORs page CRCs, so the same flip
    // in an even number of pages would cancel out. A restore from it fails on the final
    // checksum and leaves nothing behind.
    let newest = levels[2].last().expect("an image").clone();
    let path = newest.path().expect("a file").to_path_buf();
    let mut bytes = std::fs::read(&path).expect("read");
    for page in 0..newest.commit as usize {
        bytes[page * 1024 + 8 + page] ^= 0x40;
    }
    std::fs::write(&path, &bytes).expect("damage");
    let vault = Vault::open_with_clock(&vault_dir, config(), clock.clone()).expect("open");
    let _ = std::fs::remove_file(&out);
    let err = vault.restore("c", "db", Target::TxId(newest.max_txid), &out, false).expect_err("damaged image");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(!out.exists(), "a failed restore leaves nothing");
    // The restore found the damage, and says so in the metrics.
    assert_eq!(vault.corruptions(), 1);
    assert!(vault.metrics_text().lines().any(|l| l == "ltxvault_corruptions_total{found_by=\"restore\"} 1"));

    // More history and another closed day: the image built on the damaged one does not
    // match the recorded checksum, so it is not installed.
    for _ in 0..5 {
        model.timestamp_ms += 3 * 3_600_000;
        let (bytes, next) = model.propose(&mut rng, false);
        vault.ingest("c", "db", bytes).expect("ingest");
        model = next;
    }
    clock.set_ms(model.timestamp_ms + 2 * day);
    let err = vault.compact_now().expect_err("the new image must not match");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert_eq!(vault.corruptions(), 2, "found by the restore, then by compaction");
    let text = vault.metrics_text();
    assert!(text.lines().any(|l| l == "ltxvault_corruptions_total{found_by=\"compaction\"} 1"), "{text}");
    assert!(text.lines().any(|l| l == "ltxvault_compaction_failures_total{level=\"3\"} 1"), "{text}");
    assert_eq!(vault.level_runs("c", "db")[2].last(), Some(&newest), "L3 did not advance past the damage");
}
