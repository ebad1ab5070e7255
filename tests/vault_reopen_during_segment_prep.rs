//! Pins a bug: closing a vault while the next log segment was still being zero-filled in
//! the background left that thread running after `close` returned. A vault reopened on
//! the same directory could then create the same segment itself and write acknowledged
//! records into it while the stray thread was still writing zeros and a header into the
//! same path. `close` must wait for the segment being prepared and remove it, so that
//! nothing writes into the log directory once it has returned.

mod common;

use common::{ModelDb, Rng};
use ltxvault::io::engine::IoChoice;
use ltxvault::{Vault, VaultConfig};

#[test]
fn close_leaves_no_segment_being_prepared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    // 4 MiB segments: each takes a moment to zero-fill.
    let config = VaultConfig { io: IoChoice::Std, segment_bytes: 4 << 20, ..VaultConfig::default() };
    let mut rng = Rng::new(3);
    for round in 0..5 {
        let vault = Vault::open(&vault_dir, config.clone()).expect("open");
        // The first upload of a fresh vault starts segment 1 and, with it, the background
        // preparation of segment 2.
        let (bytes, _) = ModelDb::new(4096).propose(&mut rng, false);
        vault.ingest("c", "db", bytes).expect("ingest");
        vault.close().expect("close");
        let leftovers: Vec<String> = std::fs::read_dir(vault_dir.join("l0"))
            .expect("list l0")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: {leftovers:?} still being written after close");
        std::fs::remove_dir_all(&vault_dir).expect("fresh vault for the next round");
    }
}
