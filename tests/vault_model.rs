//! The engine against a model: random workloads over many databases (page changes,
//! growth, shrinks, snapshots, refused uploads, reopenings) with both I/O engines. After
//! every step the vault's position must be the model's, and restores must give the
//! model's image byte for byte.

mod common;

use common::{ModelDb, Rng, seed};
use ltxvault::catalog::Position;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::{Checksum, TxId};
use ltxvault::{Error, Vault, VaultConfig};

fn config(io: IoChoice) -> VaultConfig {
    // Small segments so that the workload crosses many of them.
    VaultConfig { io, segment_bytes: 256 << 10, ..VaultConfig::default().retention_off() }
}

fn restore_matches(vault: &Vault, dir: &std::path::Path, name: &str, model: &ModelDb) {
    let out = dir.join(format!("restore-{name}.db"));
    let summary = vault.restore_latest("c", name, &out, true).expect("restore");
    assert_eq!(summary.position, Position { txid: TxId(model.txid), checksum: model.checksum });
    let restored = std::fs::read(&out).expect("read restore");
    assert!(restored == model.image, "{name} at TXID {}: restore differs from the model", model.txid);
}

fn run_model(io: IoChoice, seed: u64, steps: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let mut rng = Rng::new(seed);
    let mut dbs: Vec<(String, ModelDb)> =
        (0..6).map(|i| (format!("db{i}"), ModelDb::new([512, 1024, 4096][i % 3]))).collect();
    let mut vault = Some(Vault::open(&vault_dir, config(io)).expect("open"));
    for step in 0..steps {
        let v = vault.as_ref().expect("open vault");
        let i = rng.below(dbs.len() as u64) as usize;
        let (name, model) = &mut dbs[i];
        let compress = rng.chance(50);
        match rng.below(12) {
            // Refused: a file that skips a TXID.
            0 if model.txid > 0 => {
                let (_, next) = model.propose(&mut rng, compress);
                let (gap, _) = next.propose(&mut rng, compress);
                let err = v.ingest("c", name, gap).expect_err("gap refused");
                assert!(matches!(err, Error::PositionMismatch { .. }), "step {step}: {err}");
            }
            // Refused: a replay of the current snapshot on top of existing data.
            1 if model.txid > 0 => {
                let err = v.ingest("c", name, model.snapshot(compress)).expect_err("snapshot refused");
                let Error::PositionMismatch { position, .. } = err else { panic!("step {step}: {err}") };
                assert_eq!(position, Position { txid: TxId(model.txid), checksum: model.checksum });
            }
            // Refused: a corrupted upload.
            2 => {
                let (mut bytes, _) = model.propose(&mut rng, compress);
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
                assert!(v.ingest("c", name, bytes).is_err(), "step {step}: a flipped byte at {at} was accepted");
            }
            // Reopen the vault: recovery and page-checksum maps must bring back the same state.
            3 if rng.chance(30) => {
                vault.take().expect("open").close().expect("close");
                vault = Some(Vault::open(&vault_dir, config(io)).expect("reopen"));
            }
            _ => {
                let (bytes, next) = model.propose(&mut rng, compress);
                let ack = v.ingest("c", name, bytes).unwrap_or_else(|e| panic!("step {step} {name}: {e}"));
                assert_eq!(ack.position, Position { txid: TxId(next.txid), checksum: next.checksum });
                assert_eq!(ack.hwm, TxId(next.txid));
                *model = next;
            }
        }
        let v = vault.as_ref().expect("open vault");
        let (name, model) = &dbs[i];
        let expected = (model.txid > 0)
            .then_some((Position { txid: TxId(model.txid), checksum: model.checksum }, TxId(model.txid)));
        assert_eq!(v.position("c", name), expected, "step {step}: {name} position");
        if model.txid > 0 && (step % 7 == 0) {
            restore_matches(v, dir.path(), name, model);
        }
    }
    let v = vault.take().expect("open");
    for (name, model) in &dbs {
        if model.txid > 0 {
            restore_matches(&v, dir.path(), name, model);
            assert_eq!(model.checksum, ltxvault::ltx::database_checksum(&model.image, model.page_size));
            assert_ne!(model.checksum, Checksum::NONE);
        }
    }
    v.close().expect("close");
}

#[test]
fn model_std_engine() {
    run_model(IoChoice::Std, seed("model_std_engine", 11), 400);
}

#[test]
fn model_uring_engine() {
    run_model(IoChoice::Uring, seed("model_uring_engine", 12), 400);
}
