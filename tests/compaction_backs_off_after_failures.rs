//! A compactor thread whose passes keep failing (here: every file it tries to create under
//! `levels/`) backs off instead of retrying every second, leaves ingest alone (the vault
//! is not poisoned, uploads go on being acknowledged), and once the disk behaves again a
//! later pass catches the level up.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{ModelDb, Rng};
use ltxvault::clock::ManualClock;
use ltxvault::io::engine::IoChoice;
use ltxvault::io::{Fault, FaultPlan, Op};
use ltxvault::{Vault, VaultConfig};

/// Fails every creation of a file under `levels` while `failing`, counting the attempts.
#[derive(Debug)]
struct FullLevels {
    levels: PathBuf,
    failing: AtomicBool,
    attempts: AtomicUsize,
    log: Mutex<Vec<Duration>>,
    started: Instant,
}

impl FaultPlan for FullLevels {
    fn before(&self, op: Op, path: &Path, _len: u64) -> Fault {
        if op != Op::Create || !path.starts_with(&self.levels) || !self.failing.load(Ordering::SeqCst) {
            return Fault::Proceed;
        }
        self.attempts.fetch_add(1, Ordering::SeqCst);
        self.log.lock().expect("log").push(self.started.elapsed());
        Fault::Fail(libc::ENOSPC)
    }
}

#[test]
fn failing_compaction_backs_off_and_catches_up_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let plan = Arc::new(FullLevels {
        levels: vault_dir.join("levels"),
        failing: AtomicBool::new(true),
        attempts: AtomicUsize::new(0),
        log: Mutex::new(Vec::new()),
        started: Instant::now(),
    });
    let config = VaultConfig {
        io: IoChoice::Std,
        faults: Some(plan.clone() as Arc<dyn FaultPlan>),
        retention_every: Duration::from_secs(3600),
        ..VaultConfig::default().retention_off()
    };
    let start = 1_800_000_000_000;
    let clock = ManualClock::new(start);
    let vault = Vault::open_with_clock(&vault_dir, config, clock.clone()).expect("open");
    let mut rng = Rng::new(5);
    let mut model = ModelDb::new(512);
    model.timestamp_ms = start;
    let mut upload = |model: &mut ModelDb| {
        let (bytes, next) = model.propose(&mut rng, false);
        vault.ingest("c", "db", bytes).expect("uploads go on while compaction fails");
        *model = next;
    };
    upload(&mut model);
    // The first L1 window closes: every pass from now on fails.
    clock.set_ms(start + 10 * 60_000);
    std::thread::sleep(Duration::from_millis(5_500));
    upload(&mut model);
    assert!(vault.poisoned().is_none(), "a failing compaction must not poison the vault");
    let attempts = plan.attempts.load(Ordering::SeqCst);
    let log = plan.log.lock().expect("log").clone();
    // Passes at about 0, 2 and (past the window) 6 s; retrying every second would be 5 or 6.
    assert!((1..=3).contains(&attempts), "{attempts} attempts in 5.5 s: {log:?}");
    for pair in log.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(1_900), "the pause must grow: {log:?}");
    }

    plan.failing.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while vault.level_runs("c", "db")[0].is_empty() {
        assert!(Instant::now() < deadline, "compaction did not catch up after the failures stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
    vault.close().expect("close");
}
