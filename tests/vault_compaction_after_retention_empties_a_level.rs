//! Compaction goes on after retention has emptied a level.
//!
//! The failure this pins (found by the kill -9 soak, with windows and retention periods of
//! seconds): once every L2 file had gone, covered by a newer image, the L2 compactor took
//! its level to start at TXID 0 again, so its next window, which starts where the deleted
//! files ended, "did not follow its last file"; it refused with a corruption error every
//! second from then on, and the level never moved again. The same happens to L1 once every
//! L1 file is covered by L2. A level emptied by retention must go on from where the coarser
//! levels end.

mod common;

use common::{ModelDb, Rng, seed};
use ltxvault::clock::ManualClock;
use ltxvault::io::engine::IoChoice;
use ltxvault::restore::Target;
use ltxvault::{Vault, VaultConfig};

#[test]
fn levels_emptied_by_retention_keep_compacting() {
    let seed = seed("levels_emptied_by_retention_keep_compacting", 5);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let start = 1_800_000_000_000;
    let clock = ManualClock::new(start);
    let config = VaultConfig {
        io: IoChoice::Std,
        background_compaction: false,
        segment_bytes: 64 << 10,
        level_intervals_ms: vec![1_000, 2_000, 4_000],
        compaction_grace_ms: 0,
        retention_ms: vec![Some(1_000), Some(2_000), Some(3_000), Some(4_000)],
        ..VaultConfig::default()
    };
    let vault = Vault::open_with_clock(&dir.path().join("vault"), config, clock.clone()).expect("open");
    let mut model = ModelDb::new(512);
    model.max_pages = 16;
    model.timestamp_ms = start;
    let (mut emptied_l1, mut emptied_l2) = (0, 0);
    // An upload every 2.5 s on average (the model's clock), with a compaction and a
    // retention pass after each, the vault's clock at the upload's time.
    for i in 0..120 {
        let (bytes, next) = model.propose(&mut rng, false);
        vault.ingest("c", "db", bytes).unwrap_or_else(|e| panic!("upload {i}: {e}"));
        model = next;
        clock.set_ms(model.timestamp_ms);
        vault.compact_now().unwrap_or_else(|e| panic!("compaction after upload {i}: {e}"));
        vault.retain_now().unwrap_or_else(|e| panic!("retention after upload {i}: {e}"));
        let levels = vault.level_runs("c", "db");
        emptied_l1 += usize::from(levels[0].is_empty() && !levels[1].is_empty());
        emptied_l2 += usize::from(levels[1].is_empty() && !levels[2].is_empty());
    }
    assert!(emptied_l1 + emptied_l2 > 0, "retention never emptied L1 or L2: the test does not test anything");
    // Well after the last upload every window has closed: each level reaches the end.
    clock.set_ms(model.timestamp_ms + 10_000);
    vault.compact_now().expect("compaction at the end");
    let image = vault.level_runs("c", "db")[2].last().cloned().expect("an image");
    assert_eq!(image.max_txid.0, model.txid, "the newest image holds the last upload");
    let mut out = Vec::new();
    vault
        .write_snapshot("c", "db", Target::Latest, ltxvault::vault::SnapshotFormat::Sqlite, &mut out)
        .expect("restore the latest state");
    assert!(out == model.image, "the latest state restores byte for byte");
    eprintln!("L1 empty after {emptied_l1} passes, L2 after {emptied_l2}");
}
