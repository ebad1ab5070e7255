//! Damage to the L0 log on disk: a flipped byte in acknowledged data is found at open or at
//! read and never returned as data; a torn last batch (what a crash mid-write leaves) is
//! cut at open and the vault carries on.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{ModelDb, Rng};
use ltxvault::catalog::Run;
use ltxvault::io::engine::IoChoice;
use ltxvault::segment::segment_path;
use ltxvault::{Error, Vault, VaultConfig};

fn config() -> VaultConfig {
    // No compaction: restores must read the log records themselves (a level file covering
    // a damaged record would be read instead of it, which is fine but not what is tested).
    VaultConfig { io: IoChoice::Std, segment_bytes: 64 << 10, background_compaction: false, ..VaultConfig::default() }
}

/// A vault holding one database with enough history to fill several segments. Returns
/// the vault directory, the model and the runs.
fn build(dir: &Path) -> (PathBuf, ModelDb, Vec<Run>) {
    let vault_dir = dir.join("vault");
    let vault = Vault::open(&vault_dir, config()).expect("open");
    let mut rng = Rng::new(99);
    let mut model = ModelDb::new(1024);
    for _ in 0..80 {
        let (bytes, next) = model.propose(&mut rng, false);
        vault.ingest("c", "db", bytes).expect("ingest");
        model = next;
    }
    let runs = vault.runs("c", "db");
    vault.close().expect("close");
    assert!(
        runs.iter().map(|r| r.location().expect("log run").segment).max() >= Some(3),
        "history spans several segments"
    );
    (vault_dir, model, runs)
}

fn flip(path: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open segment");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("read");
    byte[0] ^= 0x20;
    file.write_all_at(&byte, offset).expect("write");
}

#[test]
fn a_flipped_record_header_in_a_sealed_segment_fails_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault_dir, _, runs) = build(dir.path());
    let victim = runs[3].location().expect("log run");
    let path = segment_path(&vault_dir.join("l0"), victim.segment);
    flip(&path, victim.offset + 30);
    let err = Vault::open(&vault_dir, config()).err().expect("open must fail");
    match err {
        Error::Corrupt { file, offset, .. } => {
            assert_eq!(file, path);
            assert_eq!(offset, victim.offset);
        }
        other => panic!("expected a corruption error, got {other}"),
    }
}

#[test]
fn a_flipped_payload_byte_in_a_sealed_segment_is_never_restored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault_dir, _, runs) = build(dir.path());
    let victim = runs[2].location().expect("log run");
    flip(&segment_path(&vault_dir.join("l0"), victim.segment), victim.offset + 200);
    // The open reads headers only for sealed segments, but the page-checksum map rebuild
    // (the map was clean, so no rebuild) or any read of the payload must refuse it.
    match Vault::open(&vault_dir, config()) {
        Err(Error::Corrupt { .. }) => {}
        Err(other) => panic!("unexpected error: {other}"),
        Ok(vault) => {
            let out = dir.path().join("out.db");
            let err = vault.restore_latest("c", "db", &out, false).expect_err("restore must fail");
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(!out.exists(), "nothing written");
        }
    }
}

#[test]
fn damage_before_a_later_batch_in_the_last_segment_fails_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault_dir, mut model, _) = build(dir.path());
    // A few more batches, so the last segment surely holds several.
    let vault = Vault::open(&vault_dir, config()).expect("open");
    let mut rng = Rng::new(5);
    for _ in 0..6 {
        let (bytes, next) = model.propose(&mut rng, false);
        vault.ingest("c", "db", bytes).expect("ingest");
        model = next;
    }
    let runs = vault.runs("c", "db");
    vault.close().expect("close");
    let last_segment = runs.last().expect("runs").location().expect("log run").segment;
    let in_last: Vec<&Run> = runs.iter().filter(|r| r.location().expect("log run").segment == last_segment).collect();
    assert!(in_last.len() >= 2, "the last segment holds several batches");
    flip(&segment_path(&vault_dir.join("l0"), last_segment), in_last[0].location().expect("log run").offset + 150);
    let err = Vault::open(&vault_dir, config()).err().expect("open must fail");
    assert!(err.to_string().contains("acknowledged"), "{err}");
}

#[test]
fn a_torn_last_batch_is_cut_and_the_vault_carries_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault_dir, model, runs) = build(dir.path());
    let last = runs.last().expect("runs");
    let path = segment_path(&vault_dir.join("l0"), last.location().expect("log run").segment);
    // A crash mid-write: the last record's tail never reached the disk, and some garbage
    // of a batch that was being written lies after it.
    let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    file.write_all_at(&[0u8; 64], last.location().expect("log run").offset + 120).expect("tear");
    file.write_all_at(&[0xAB; 100], last.location().expect("log run").offset + 4096).expect("garbage");
    drop(file);

    let vault = Vault::open(&vault_dir, config()).expect("a torn tail still opens");
    let (pos, _) = vault.position("c", "db").expect("position");
    assert_eq!(pos.txid.0, model.txid - 1, "the torn (never acknowledged) upload is gone, nothing else");
    // The vault accepts the next upload on top of what it kept, and reopens cleanly.
    let runs_after = vault.runs("c", "db");
    assert_eq!(runs_after.len(), runs.len() - 1);
    vault.close().expect("close");
    let vault = Vault::open(&vault_dir, config()).expect("reopen");
    assert_eq!(vault.position("c", "db").expect("position").0, pos);
    let out = dir.path().join("out.db");
    vault.restore_latest("c", "db", &out, false).expect("restore");
}
