//! What the vault does when the disk misbehaves under the log writer: a failed fdatasync
//! poisons the vault (every later write fails, nothing is acknowledged that is not
//! durable), reopening recovers everything acknowledged; a stalled writer makes a full
//! queue refuse uploads with `Busy` instead of buffering without bound.

mod common;

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{ModelDb, Rng};
use ltxvault::clock::SystemClock;
use ltxvault::io::engine::{IoChoice, IoEngine, open_engine};
use ltxvault::{Error, Vault, VaultConfig};

/// Wraps a real engine; fails the `fail_at`-th `write_and_sync` (counting from 1) with EIO
/// and sleeps `delay` in each.
struct Faulty {
    inner: Box<dyn IoEngine>,
    calls: Arc<AtomicUsize>,
    fail_at: usize,
    delay: Duration,
}

impl IoEngine for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }

    fn write_and_sync(&mut self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        std::thread::sleep(self.delay);
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at {
            // Half the batch reaches the file, as a real failing disk might leave it.
            let half = &bufs[..bufs.len() / 2];
            let _ = self.inner.write_and_sync(file, offset, half);
            return Err(io::Error::from_raw_os_error(5));
        }
        self.inner.write_and_sync(file, offset, bufs)
    }

    fn write_all_at(&mut self, file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all_at(file, offset, buf)
    }

    fn sync_data(&mut self, file: &File) -> io::Result<()> {
        self.inner.sync_data(file)
    }

    fn allocate(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        self.inner.allocate(file, offset, len)
    }
}

fn faulty(fail_at: usize, delay: Duration) -> Box<dyn IoEngine> {
    let (inner, _) = open_engine(IoChoice::Std).expect("std engine");
    Box::new(Faulty { inner, calls: Arc::new(AtomicUsize::new(0)), fail_at, delay })
}

#[test]
fn a_failed_fdatasync_poisons_and_reopening_recovers_every_ack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let config = VaultConfig { io: IoChoice::Std, segment_bytes: 128 << 10, ..VaultConfig::default() };
    let vault = Vault::open_with(&vault_dir, config.clone(), Arc::new(SystemClock), Some(faulty(6, Duration::ZERO)))
        .expect("open");
    let mut rng = Rng::new(1);
    let mut model = ModelDb::new(1024);
    let mut acked = model.clone();
    let mut failures = 0;
    for _ in 0..10 {
        let (bytes, next) = model.propose(&mut rng, false);
        match vault.ingest("c", "db", bytes) {
            Ok(ack) => {
                assert_eq!(ack.position.txid.0, next.txid);
                model = next;
                acked = model.clone();
            }
            Err(e) => {
                failures += 1;
                assert!(matches!(e, Error::Poisoned(_)), "{e}");
                assert!(vault.poisoned().is_some());
            }
        }
    }
    assert_eq!(failures, 5, "the 6th write fails and every later one is refused");
    vault.close().expect("close a poisoned vault");

    let vault = Vault::open(&vault_dir, config).expect("reopen recovers");
    let (pos, hwm) = vault.position("c", "db").expect("position");
    assert_eq!((pos.txid.0, pos.checksum), (acked.txid, acked.checksum));
    assert_eq!(hwm.0, acked.txid);
    let out = dir.path().join("out.db");
    vault.restore_latest("c", "db", &out, false).expect("restore");
    assert!(std::fs::read(&out).expect("read") == acked.image);
    // And it takes new uploads again.
    let (bytes, _) = acked.propose(&mut rng, false);
    vault.ingest("c", "db", bytes).expect("ingest after reopen");
}

#[test]
fn a_full_queue_answers_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = VaultConfig {
        io: IoChoice::Std,
        queue_capacity: 1,
        enqueue_timeout: Duration::from_millis(20),
        ..VaultConfig::default()
    };
    // Each write takes 300 ms: the writer holds one batch, the queue holds one request,
    // the rest must be turned away quickly.
    let vault = Vault::open_with(
        &dir.path().join("vault"),
        config,
        Arc::new(SystemClock),
        Some(faulty(0, Duration::from_millis(300))),
    )
    .expect("open");
    let results: Vec<Result<ltxvault::Ack, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let vault = &vault;
                s.spawn(move || {
                    let mut rng = Rng::new(i);
                    let (bytes, _) = ModelDb::new(512).propose(&mut rng, false);
                    vault.ingest("c", &format!("db{i}"), bytes)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let busy = results.iter().filter(|r| matches!(r, Err(Error::Busy(_)))).count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(busy + ok, 8, "{results:?}");
    assert!(busy >= 4, "most uploads are refused while the writer is stalled: {results:?}");
    assert!(ok >= 1);
    // A refused upload changed nothing: its database does not exist.
    for (i, r) in results.iter().enumerate() {
        if r.is_err() {
            assert_eq!(vault.position("c", &format!("db{i}")), None);
        }
    }
}

#[test]
fn a_second_open_is_refused_and_names_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let first = Vault::open(&vault_dir, VaultConfig::default()).expect("open");
    let err = Vault::open(&vault_dir, VaultConfig::default()).err().expect("second open refused");
    let text = err.to_string();
    assert!(matches!(err, Error::Locked { .. }), "{text}");
    assert!(text.contains(&format!("process {}", std::process::id())), "{text}");
    first.close().expect("close");
    Vault::open(&vault_dir, VaultConfig::default()).expect("open after the holder closed");
}
