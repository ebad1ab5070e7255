//! 32 threads ingesting into 100 databases at once: every database's stored history must
//! be exactly what its thread sent, in order; and two uploads racing for the same position
//! of one database must end with exactly one winner.

mod common;

use std::sync::Barrier;

use common::{ModelDb, Rng, seed};
use ltxvault::catalog::Position;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::TxId;
use ltxvault::{Error, Vault, VaultConfig};

/// A database a thread owns: its name, the (TXID, checksum) it was acknowledged at each
/// upload, and its model.
type Owned = (String, Vec<(u64, u64)>, ModelDb);

fn run(io: IoChoice, seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = VaultConfig { io, segment_bytes: 1 << 20, ..VaultConfig::default().retention_off() };
    let vault = Vault::open(&dir.path().join("vault"), config).expect("open");
    const THREADS: usize = 32;
    const DBS: usize = 100;
    const UPLOADS_PER_DB: usize = 12;
    let sent: Vec<Vec<Owned>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let vault = &vault;
                s.spawn(move || {
                    let mut rng = Rng::new(seed + t as u64);
                    let mut mine: Vec<Owned> = (t..DBS)
                        .step_by(THREADS)
                        .map(|d| (format!("db{d:03}"), Vec::new(), ModelDb::new(512)))
                        .collect();
                    for _ in 0..UPLOADS_PER_DB {
                        for (name, history, model) in &mut mine {
                            let compress = rng.chance(30);
                            let (bytes, next) = model.propose(&mut rng, compress);
                            let ack = vault.ingest("c", name, bytes).expect("ingest");
                            assert_eq!(ack.position, Position { txid: TxId(next.txid), checksum: next.checksum });
                            history.push((next.txid, next.checksum.0));
                            *model = next;
                        }
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let mut databases = 0;
    for (name, history, model) in sent.into_iter().flatten() {
        let runs = vault.runs("c", &name);
        let stored: Vec<(u64, u64)> = runs.iter().map(|r| (r.max_txid.0, r.post_apply.0)).collect();
        assert_eq!(stored, history, "{name}: stored history is what was sent");
        if databases % 10 == 0 {
            let out = dir.path().join(format!("{name}.db"));
            vault.restore_latest("c", &name, &out, false).expect("restore");
            assert!(std::fs::read(&out).expect("read") == model.image, "{name}: restore");
        }
        databases += 1;
    }
    assert_eq!(databases, DBS);

    // Racing uploads for the same position: exactly one wins.
    let mut rng = Rng::new(seed ^ 0xabc);
    let mut base = ModelDb::new(1024);
    let (first, next) = base.propose(&mut rng, false);
    vault.ingest("c", "race", first).expect("first");
    base = next;
    for round in 0..20 {
        let candidates: Vec<(Vec<u8>, ModelDb)> = (0..4).map(|_| base.propose(&mut rng, false)).collect();
        let barrier = Barrier::new(candidates.len());
        let results: Vec<Result<ltxvault::Ack, Error>> = std::thread::scope(|s| {
            let handles: Vec<_> = candidates
                .iter()
                .map(|(bytes, _)| {
                    let (vault, barrier) = (&vault, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        vault.ingest("c", "race", bytes.clone())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        let winners: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one winner, got {results:?}");
        let winner = &candidates[winners[0]].1;
        for r in &results {
            if let Err(Error::PositionMismatch { position, .. }) = r {
                assert_eq!(*position, Position { txid: TxId(winner.txid), checksum: winner.checksum });
            } else {
                assert!(r.is_ok(), "losers get a position mismatch: {r:?}");
            }
        }
        base = winner.clone();
    }
    vault.close().expect("close");
}

#[test]
fn thirty_two_threads_std() {
    run(IoChoice::Std, seed("thirty_two_threads_std", 3));
}

#[test]
fn thirty_two_threads_uring() {
    run(IoChoice::Uring, seed("thirty_two_threads_uring", 4));
}
