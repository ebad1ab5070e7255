//! Kill -9 at random moments while several threads ingest, then reopen: every upload that
//! was acknowledged must be in the vault with the checksum that was acknowledged, and the
//! vault must open. The child is this test binary itself, re-run with an environment
//! variable that selects the child role; it prints one line per acknowledged upload.
//!
//! Kill points: `LTXVAULT_CRASH_KILLS` per engine (default 100, so 200 in CI), seeded by
//! `LTXVAULT_SEED`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ModelDb, Rng, seed};
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::{Checksum, TxId, database_checksum};
use ltxvault::{Vault, VaultConfig};

const THREADS: usize = 4;
const DBS_PER_THREAD: usize = 2;

fn config(io: IoChoice) -> VaultConfig {
    VaultConfig { io, segment_bytes: 512 << 10, ..VaultConfig::default().retention_off() }
}

fn io_from_env() -> IoChoice {
    match std::env::var("LTXVAULT_CRASH_IO").as_deref() {
        Ok("uring") => IoChoice::Uring,
        _ => IoChoice::Std,
    }
}

/// The child: continues every database from the vault's latest state and ingests until
/// killed, printing `ACK <db> <txid> <checksum>` after each acknowledgement.
#[test]
#[ignore = "run by crash tests as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var("LTXVAULT_CRASH_DIR") else { return };
    let seed: u64 = std::env::var("LTXVAULT_CRASH_CHILD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    // The parent runs two of these loops at once, and a child spawned by one can hold a
    // copy of the other's lock descriptor for the instant between its fork and its exec:
    // a lock that is about to go away. Wait a little for it, as an operator would.
    let started = Instant::now();
    let vault = loop {
        match Vault::open(Path::new(&dir), config(io_from_env())) {
            Err(ltxvault::Error::Locked { .. }) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other.expect("child open"),
        }
    };
    // Scratch space inside the parent's temporary directory: a killed child cannot clean
    // up after itself, the parent's directory goes when the test ends.
    let scratch = Path::new(&dir).with_file_name("child-scratch");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let vault = &vault;
            let scratch = scratch.as_path();
            s.spawn(move || {
                let mut rng = Rng::new(seed * 1000 + t as u64);
                let mut models: Vec<(String, ModelDb)> = (0..DBS_PER_THREAD)
                    .map(|d| {
                        let name = format!("t{t}d{d}");
                        let mut model = ModelDb::new(1024);
                        if let Some((pos, _)) = vault.position("c", &name) {
                            let out = scratch.join(&name);
                            vault.restore_latest("c", &name, &out, true).expect("child restore");
                            model.image = std::fs::read(&out).expect("read");
                            model.txid = pos.txid.0;
                            model.checksum = pos.checksum;
                        }
                        (name, model)
                    })
                    .collect();
                println!("READY");
                loop {
                    let d = rng.below(DBS_PER_THREAD as u64) as usize;
                    let (name, model) = &mut models[d];
                    let compress = rng.chance(50);
                    let (bytes, next) = model.propose(&mut rng, compress);
                    let ack = vault.ingest("c", name, bytes).expect("child ingest");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {name} {} {} END", ack.position.txid.0, ack.position.checksum.0)
                        .expect("stdout");
                    out.flush().expect("flush");
                    *model = next;
                }
            });
        }
    });
}

fn crash_loop(io: IoChoice, name: &str) {
    let kills: usize = std::env::var("LTXVAULT_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let seed = seed(name, 7);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    // Every acknowledged (txid -> checksum), per database.
    let mut acked: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    let io_name = if io == IoChoice::Uring { "uring" } else { "std" };
    for kill in 0..kills {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("LTXVAULT_CRASH_DIR", &vault_dir)
            .env("LTXVAULT_CRASH_CHILD_SEED", (seed * 100_000 + kill as u64).to_string())
            .env("LTXVAULT_CRASH_IO", io_name)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("child.stderr")).expect("stderr file"))
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until every thread is ingesting, then let it run a random while.
        let mut ready = 0;
        let start = Instant::now();
        let mut lines = Vec::new();
        while ready < THREADS && start.elapsed() < Duration::from_secs(30) {
            match rx.recv_timeout(Duration::from_secs(30)) {
                // The test harness may print "test crash_child ... " on the same line.
                Ok(line) if line.ends_with("READY") => ready += 1,
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        if ready != THREADS {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(dir.path().join("child.stderr")).unwrap_or_default();
            panic!("kill {kill}: child did not start; its stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        reader.join().expect("reader");
        lines.extend(rx.try_iter());
        for line in lines.iter().filter_map(|l| l.find("ACK ").map(|at| &l[at..])) {
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() != 5 || parts[4] != "END" {
                continue; // the line the kill cut short: its ack may not have been seen
            }
            let (db, txid, sum) = (parts[1], parts[2].parse().expect("txid"), parts[3].parse().expect("sum"));
            acked.entry(db.to_string()).or_default().insert(txid, sum);
        }
        // Reopen in this process and check every acknowledged upload.
        let vault = Vault::open(&vault_dir, config(io)).unwrap_or_else(|e| panic!("kill {kill}: reopen: {e}"));
        for (db, txids) in &acked {
            let runs = vault.runs("c", db);
            let stored: BTreeMap<u64, u64> = runs.iter().map(|r| (r.max_txid.0, r.post_apply.0)).collect();
            for (txid, sum) in txids {
                assert_eq!(stored.get(txid), Some(sum), "kill {kill}: {db} TXID {txid} was acknowledged but is lost");
            }
            let (pos, hwm) = vault.position("c", db).expect("position");
            assert!(hwm >= TxId(*txids.keys().last().expect("one")), "kill {kill}: HWM went back");
            assert_eq!(pos.txid, hwm);
        }
        if kill % 10 == 9 {
            // A full restore of one database, checked against its stored checksum.
            if let Some(db) = acked.keys().nth(kill / 10 % acked.len().max(1)) {
                let out = dir.path().join("restore.db");
                let summary = vault.restore_latest("c", db, &out, true).expect("restore");
                let image = std::fs::read(&out).expect("read");
                assert_eq!(database_checksum(&image, 1024), summary.position.checksum);
                assert_ne!(summary.position.checksum, Checksum::NONE);
            }
        }
        vault.close().expect("close");
    }
    let total: usize = acked.values().map(BTreeMap::len).sum();
    eprintln!("{name}: {kills} kills, {total} acknowledged uploads, none lost");
    assert!(total > kills, "the children acknowledged too little to test anything ({total})");
}

#[test]
fn kill_9_loses_nothing_std() {
    crash_loop(IoChoice::Std, "kill_9_loses_nothing_std");
}

#[test]
fn kill_9_loses_nothing_uring() {
    crash_loop(IoChoice::Uring, "kill_9_loses_nothing_uring");
}
