//! `ltxvault clone` and `ltxvault delete`, on a vault directory and through a running
//! `ltxvault serve`, run as an operator would run them; the confirmation `delete` asks
//! for on a terminal (a pseudo-terminal here); and what an offline command says when the
//! vault is held, by a server (go through it with --endpoint) or by another process.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cli::{failed, ltxvault, path, succeeded};
use common::{ModelDb, Rng, seed};
use ltxvault::io::engine::IoChoice;
use ltxvault::{Vault, VaultConfig};

fn config() -> VaultConfig {
    VaultConfig { io: IoChoice::Std, background_compaction: false, ..VaultConfig::default() }
}

/// A vault with cluster `c` holding `db` (30 transactions) and `other` (5), written
/// through the library; returns the images of `db` after each TXID (index 0 = TXID 1).
fn vault_with_history(data: &Path, test: &str) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed(test, 11));
    let vault = Vault::open(data, config()).expect("open");
    let mut images = Vec::new();
    for (db, count) in [("db", 30), ("other", 5)] {
        let mut model = ModelDb::new(1024);
        for _ in 0..count {
            let (bytes, next) = model.propose(&mut rng, false);
            vault.ingest("c", db, bytes).expect("ingest");
            model = next;
            if db == "db" {
                images.push(model.image.clone());
            }
        }
    }
    vault.close().expect("close");
    images
}

/// The database as `ltxvault restore --data` writes it (`txid`: None for the latest).
fn restored(data: &Path, cluster: &str, db: &str, txid: Option<u64>) -> Vec<u8> {
    let out = data.with_extension(format!("{cluster}-{db}-{}.db", txid.unwrap_or(0)));
    let mut args = vec!["restore", "--data", path(data), "--cluster", cluster, "--db", db, "-o", path(&out), "--force"];
    let txid = txid.map(|t| t.to_string());
    if let Some(txid) = &txid {
        args.extend(["--txid", txid.as_str()]);
    }
    succeeded(&ltxvault(&args));
    std::fs::read(&out).expect("read the restore")
}

fn databases(data: &Path) -> Vec<String> {
    let text = succeeded(&ltxvault(&["ls", "--data", path(data), "--json"]));
    let mut names: Vec<String> = text
        .lines()
        .map(|line| {
            let report: serde_json::Value = serde_json::from_str(line).expect("JSON");
            format!("{}/{}", report["cluster"].as_str().expect("cluster"), report["db"].as_str().expect("db"))
        })
        .collect();
    names.sort();
    names
}

/// Runs `ltxvault ARGS` with its standard input on a pseudo-terminal, types `answer` and a
/// newline on it, and returns the outcome.
fn with_terminal(args: &[&str], answer: &str) -> Output {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills in two new descriptors; the null pointers ask for defaults.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and nothing else owns them.
    let (mut master, slave) = unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) };
    let child = Command::new(env!("CARGO_BIN_EXE_ltxvault"))
        .args(args)
        .stdin(Stdio::from(slave))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ltxvault");
    // The terminal keeps the line until the command reads it.
    master.write_all(format!("{answer}\n").as_bytes()).expect("type the answer");
    let out = child.wait_with_output().expect("wait");
    drop(master);
    out
}

#[test]
fn clone_and_delete_work_on_the_vault_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("vault");
    let images = vault_with_history(&data, "clone_and_delete_work_on_the_vault_directory");

    // A database at TXID 12 into another cluster: the clone's latest state is that point.
    let out = succeeded(&ltxvault(&[
        "clone",
        "--data",
        path(&data),
        "--cluster",
        "c",
        "--db",
        "db",
        "--to-cluster",
        "copy",
        "--txid",
        "12",
    ]));
    assert!(out.contains("cloned c/db at TXID 000000000000000c into copy/db"), "{out}");
    assert!(restored(&data, "copy", "db", None) == images[11], "the clone is the source at TXID 12");
    // Under another name in the same cluster, at the latest point.
    succeeded(&ltxvault(&["clone", "--data", path(&data), "--cluster", "c", "--db", "db", "--to-db", "db2"]));
    assert!(restored(&data, "c", "db2", None) == images[29]);
    // Onto itself, or onto an existing database: refused.
    let err = failed(&ltxvault(&["clone", "--data", path(&data), "--cluster", "c", "--db", "db"]));
    assert!(err.contains("would be c/db itself"), "{err}");
    let err = failed(&ltxvault(&["clone", "--data", path(&data), "--cluster", "c", "--db", "db", "--to-db", "db2"]));
    assert!(err.contains("already exists"), "{err}");

    // A whole cluster at TXID 20: databases without that point (other has 5 TXIDs, db2's
    // history starts at 30) are skipped, not fatal.
    let out = succeeded(&ltxvault(&[
        "clone",
        "--data",
        path(&data),
        "--cluster",
        "c",
        "--to-cluster",
        "all",
        "--txid",
        "20",
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let names = |list: &str| -> Vec<String> {
        report[list].as_array().expect("list").iter().map(|i| i["db"].as_str().expect("db").to_string()).collect()
    };
    assert_eq!((names("cloned"), names("skipped")), (vec!["db".to_string()], vec!["db2".into(), "other".into()]));
    assert!(restored(&data, "all", "db", None) == images[19]);
    let err = failed(&ltxvault(&["clone", "--data", path(&data), "--cluster", "c"]));
    assert!(err.contains("needs --to-cluster"), "{err}");
    let err = failed(&ltxvault(&["clone", "--data", path(&data), "--cluster", "c", "--to-db", "x"]));
    assert!(err.contains("--db"), "{err}");
    assert_eq!(databases(&data), ["all/db", "c/db", "c/db2", "c/other", "copy/db"]);

    // Delete: refused without a terminal and without --yes; a wrong answer deletes
    // nothing; the name, or --yes, deletes.
    let delete = ["delete", "--data", path(&data), "--cluster", "c", "--db", "db2"];
    let err = failed(&ltxvault(&delete));
    assert!(err.contains("not a terminal") && err.contains("--yes"), "{err}");
    let out = with_terminal(&delete, "db");
    let err = failed(&out);
    assert!(err.contains("Type the database name (db2)"), "the prompt: {err}");
    assert!(err.contains("not deleted"), "{err}");
    assert!(databases(&data).contains(&"c/db2".to_string()));
    let out = with_terminal(&delete, "db2");
    assert!(succeeded(&out).contains("deleted c/db2"), "{}", String::from_utf8_lossy(&out.stderr));
    succeeded(&ltxvault(&["delete", "--data", path(&data), "--cluster", "all", "--db", "db", "--yes"]));
    let err = failed(&ltxvault(&["delete", "--data", path(&data), "--cluster", "all", "--db", "db", "--yes"]));
    assert!(err.contains("no database \"db\" in cluster \"all\""), "{err}");
    assert_eq!(databases(&data), ["c/db", "c/other", "copy/db"]);
    assert!(restored(&data, "c", "db", Some(7)) == images[6], "the source is untouched");
}

/// A `ltxvault serve` child process on a free loopback port.
struct Server {
    child: Child,
    endpoint: String,
}

impl Server {
    fn start(data: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ltxvault"))
            .args(["serve", "--data", path(data), "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let endpoint = loop {
            let line = lines.next().expect("serve exited before serving").expect("read stderr");
            if let Some((_, url)) = line.split_once(" on ")
                && line.contains("serving")
            {
                // The log line's fields follow the URL.
                break url.split_whitespace().next().expect("a URL after \"on\"").to_string();
            }
        };
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, endpoint }
    }

    /// SIGTERM, then waits for the clean exit.
    fn stop(mut self) {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "serve exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn offline_commands_name_the_server_holding_the_vault_and_work_through_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("vault");
    let images = vault_with_history(&data, "offline_commands_name_the_server_holding_the_vault_and_work_through_it");
    let token = succeeded(&ltxvault(&["token", "create", "--data", path(&data), "--admin"])).trim().to_string();

    // Another process holding the vault: named, and no server to point to.
    let holder = Vault::open(&data, config()).expect("open");
    let err = failed(&ltxvault(&["ls", "--data", path(&data)]));
    assert!(err.contains(&format!("in use by process {}", std::process::id())), "{err}");
    assert!(err.contains("stop that process first") && !err.contains("--endpoint"), "{err}");
    holder.close().expect("close");

    let server = Server::start(&data);
    let endpoint = server.endpoint.clone();
    assert!(endpoint.starts_with("http://127.0.0.1:") && !endpoint.ends_with(":0"), "{endpoint}");
    let lock = std::fs::read_to_string(data.join("LOCK")).expect("LOCK");
    assert!(lock.contains(&format!("endpoint {endpoint}")) && lock.contains("command ltxvault serve"), "{lock}");
    for args in [
        vec!["ls", "--data", path(&data)],
        vec!["info", "--data", path(&data), "--cluster", "c", "--db", "db"],
        vec!["delete", "--data", path(&data), "--cluster", "c", "--db", "db", "--yes"],
        vec!["clone", "--data", path(&data), "--cluster", "c", "--db", "db", "--to-db", "x"],
    ] {
        let err = failed(&ltxvault(&args));
        assert!(err.contains("ltxvault serve"), "{args:?}: {err}");
        assert!(err.contains(&format!("--endpoint {endpoint} --token T")), "{args:?}: {err}");
    }
    let err = failed(&ltxvault(&["export-litestream", "--data", path(&data), "--cluster", "c", "--db", "db", "out"]));
    assert!(err.contains("no --endpoint mode") && err.contains("stop the server"), "{err}");

    // Through the server: ls, clone (a database and a cluster), delete.
    let remote = ["--endpoint", endpoint.as_str(), "--token", token.as_str()];
    let run = |args: &[&str]| ltxvault(&[args, &remote[..]].concat());
    let listed = succeeded(&run(&["ls", "--cluster", "c"]));
    assert!(listed.contains("c/db") && listed.contains("c/other") && listed.contains("cluster c stores"), "{listed}");
    let out = succeeded(&run(&["clone", "--cluster", "c", "--db", "db", "--to-db", "at5", "--txid", "5"]));
    assert!(out.contains("into c/at5"), "{out}");
    let out = succeeded(&run(&["clone", "--cluster", "c", "--to-cluster", "copy"]));
    assert!(out.contains("cloned 3 database(s) of c into copy"), "{out}");
    let err = failed(&run(&["delete", "--cluster", "c", "--db", "other"]));
    assert!(err.contains("not a terminal"), "{err}");
    succeeded(&run(&["delete", "--cluster", "c", "--db", "other", "--yes"]));
    let err = failed(&run(&["delete", "--cluster", "c", "--db", "other", "--yes"]));
    assert!(err.contains("404 ENODB"), "{err}");
    server.stop();

    // The vault is free again, and holds what the server did.
    assert_eq!(databases(&data), ["c/at5", "c/db", "copy/at5", "copy/db", "copy/other"]);
    assert!(restored(&data, "c", "at5", None) == images[4]);
    assert!(!std::fs::read_to_string(data.join("LOCK")).expect("LOCK").contains("endpoint"));
}
