//! A vault opens after the creation of a database's level directory was cut short.
//!
//! The failure this pins (found by `tests/full_disk.rs` on tmpfs): compaction makes a
//! database's level directory, then writes its NAME file into it. On a full tmpfs the
//! directory is made (it needs no block) and the NAME file is not; a crash between the two
//! leaves the same. The vault then refused to open at all ("read .../NAME: No such file"),
//! although nothing in the directory was ever part of the vault. Such a directory (nothing
//! in it but temporary files) is removed at open; one that holds level files but no NAME is
//! damage and still fails the open.

mod common;

use common::{ModelDb, Rng};
use ltxvault::io::engine::IoChoice;
use ltxvault::{Vault, VaultConfig};

fn config() -> VaultConfig {
    VaultConfig { io: IoChoice::Std, background_compaction: false, ..VaultConfig::default() }
}

#[test]
fn a_level_dir_without_its_name_file_is_removed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let vault = Vault::open(&vault_dir, config()).expect("open");
    let mut rng = Rng::new(1);
    let (bytes, model) = ModelDb::new(512).propose(&mut rng, false);
    vault.ingest("c", "db", bytes).expect("ingest");
    vault.close().expect("close");

    // What a cut-short creation leaves: the directory, and at most the temporary NAME file.
    let empty = vault_dir.join("levels/00000000000000aa");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let partial = vault_dir.join("levels/00000000000000bb");
    std::fs::create_dir_all(&partial).expect("mkdir");
    std::fs::write(partial.join(".NAME.tmp-4242"), b"c\n").expect("temp file");
    let vault = Vault::open(&vault_dir, config()).expect("the vault opens");
    assert!(!empty.exists() && !partial.exists(), "the cut-short directories are removed");
    let (position, _) = vault.position("c", "db").expect("position");
    assert_eq!(position.txid.0, model.txid);
    vault.close().expect("close");

    // Level files without a NAME are damage: the open fails and names the directory.
    let damaged = vault_dir.join("levels/00000000000000cc");
    std::fs::create_dir_all(&damaged).expect("mkdir");
    std::fs::write(damaged.join("L1-0000000000000001-0000000000000001-0000000000000000.ltx"), b"x")
        .expect("level file");
    let err = Vault::open(&vault_dir, config()).err().expect("the open fails");
    assert!(err.to_string().contains("00000000000000cc"), "{err}");
}
