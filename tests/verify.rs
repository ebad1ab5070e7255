//! Proof that backups restore: `ltxvault verify` over a vault with days of history of real
//! SQLite databases (compacted into every level, L0 cut to a day by retention) passes, and
//! a single flipped byte in a log segment, a level file, an image or a page-checksum map
//! makes it fail and name the file; restore drills pass on good databases, fail on bad
//! ones, show in `info` and the control plane, and the schedule of a serving vault drills
//! every database, one at a time.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cli::{ltxvault, path};
use common::http::{Body, request};
use common::server::TestServer;
use common::sqlite::SqliteHistory;
use common::{ModelDb, Rng};
use ltxvault::clock::ManualClock;
use ltxvault::config::ConfigFile;
use ltxvault::io::engine::IoChoice;
use ltxvault::restore::Target;
use ltxvault::segment::format::{RecordHeader, SEGMENT_HEADER_SIZE};
use ltxvault::server::{AuthMode, ClusterIdPolicy, Limits};
use ltxvault::vault::{DrillResult, PointChoice};
use ltxvault::{Vault, VaultConfig};
use serde_json::Value;

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
/// A midnight (UTC), so that days of history fall into whole L3 windows.
const START: i64 = 1_800_000_000_000 / DAY * DAY;

fn config() -> VaultConfig {
    VaultConfig { io: IoChoice::Std, background_compaction: false, segment_bytes: 64 << 10, ..VaultConfig::default() }
}

/// A vault holding 3.5 days of two SQLite databases, c/app (a transaction every 40
/// minutes) and c/small (every 4 hours), compacted and retained along the way as the
/// background threads would: L0 keeps the last day, L1, L2 and the daily images the rest.
/// Built once per run (it takes seconds of fsyncs) under Cargo's temporary directory; each
/// test works on a copy at `dir`. Returns a clock standing where the history ends.
fn vault_with_days_of_history(dir: &Path) -> Arc<ManualClock> {
    static TEMPLATE: std::sync::OnceLock<(PathBuf, i64)> = std::sync::OnceLock::new();
    let (template, end_ms) = TEMPLATE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("verify-history");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("mkdir");
        let data = root.join("vault");
        let clock = ManualClock::new(START);
        let vault = Vault::open_with_clock(&data, config(), clock.clone()).expect("open");
        let mut app = SqliteHistory::new(&root.join("app.db"), START);
        let mut small = SqliteHistory::new(&root.join("small.db"), START);
        for n in 0..126u64 {
            vault.ingest("c", "app", app.insert(n, 3, 300, 40 * MINUTE)).expect("ingest app");
            if n % 6 == 0 {
                vault.ingest("c", "small", small.insert(n, 1, 100, 240 * MINUTE)).expect("ingest small");
            }
            clock.set_ms(app.model.timestamp_ms);
            if n % 12 == 11 {
                vault.compact_now().expect("compact");
                vault.retain_now().expect("retain");
            }
        }
        clock.advance_ms(2 * 3_600_000);
        vault.compact_now().expect("compact");
        vault.retain_now().expect("retain");
        let levels = vault.level_runs("c", "app");
        assert!(
            levels.iter().all(|l| !l.is_empty()),
            "every level holds pieces: {:?}",
            levels.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let runs = vault.runs("c", "app");
        assert!(!runs.is_empty() && runs[0].min_txid.0 > 1, "retention cut L0 to the last day");
        vault.close().expect("close");
        (data, ltxvault::clock::Clock::now_ms(&*clock))
    });
    copy_dir(template, dir);
    ManualClock::new(*end_ms)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn flip(file: &Path, offset: u64) {
    let mut bytes = std::fs::read(file).expect("read");
    bytes[offset as usize] ^= 0x40;
    std::fs::write(file, bytes).expect("write");
}

/// Files under `dir` (recursively) whose name matches.
fn files(dir: &Path, matches: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files(&p, matches));
        } else if matches(&entry.file_name().to_string_lossy()) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Picks the byte to flip in a vault: file and offset.
type Pick = dyn Fn(&Path) -> (PathBuf, u64);

fn verify_json(data: &Path) -> (Option<i32>, Value) {
    let out = ltxvault(&["verify", "--data", path(data), "--json", "--seed", "7"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

/// Every problem the report lists, as "subject: file: reason".
fn problems(report: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for row in report["rows"].as_array().expect("rows") {
        for p in row["problems"].as_array().expect("problems") {
            out.push(format!("{}: {} at {}: {}", row["subject"], p["file"], p["offset"], p["reason"]));
        }
    }
    out
}

#[test]
fn verify_passes_a_clean_vault_and_names_every_flipped_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clean = dir.path().join("clean");
    vault_with_days_of_history(&clean);

    let (code, report) = verify_json(&clean);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["seed"], "7");
    let rows = report["rows"].as_array().expect("rows");
    let subjects: Vec<&str> = rows.iter().map(|r| r["subject"].as_str().expect("subject")).collect();
    assert_eq!(subjects, ["(log)", "(vault files)", "c/app", "c/small"]);
    let log = &rows[0];
    assert!(log["files"].as_u64() > Some(2) && log["pieces"].as_u64() > Some(20), "{log}");
    let app = &rows[2];
    assert!(app["pieces"].as_u64() > Some(100), "level files and images are read: {app}");
    let points: Vec<&str> = app["drill"]["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["point"].as_str().expect("point"))
        .collect();
    for choice in ["latest", "random L0", "random L1", "random L2", "random L3"] {
        assert!(points.contains(&choice), "{choice} missing from {points:?}");
    }
    assert!(app["drill"]["points"].as_array().expect("points").iter().all(|p| p["ok"] == true));

    // The drills were recorded: `info` shows the last one, offline.
    let out = ltxvault(&["info", "--data", path(&clean), "--cluster", "c", "--db", "app", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((info["drill"]["ok"].clone(), info["drill"]["seed"].clone()), (Value::from(true), Value::from("7")));
    let out = ltxvault(&["info", "--data", path(&clean), "--cluster", "c", "--db", "app"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("last drill") && text.contains(" ok (") && text.contains("seed 7"), "{text}");

    // The text form: a row per database, "all well".
    let out = ltxvault(&["verify", "--data", path(&clean), "--seed", "7"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("all well (seed 7)"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("c/app ") && l.contains(" ok")), "{text}");

    // One database, and one the vault does not have.
    let out = ltxvault(&["verify", "--data", path(&clean), "--cluster", "c", "--db", "small", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let subjects: Vec<&str> =
        report["rows"].as_array().expect("rows").iter().map(|r| r["subject"].as_str().expect("s")).collect();
    assert_eq!((out.status.code(), subjects), (Some(0), vec!["(log)", "(vault files)", "c/small"]));
    let out = ltxvault(&["verify", "--data", path(&clean), "--cluster", "c", "--db", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("no database \"nope\""), "{err}");

    // One flipped byte at a time, each in a copy of the clean vault.
    let segment = |data: &Path| {
        // The oldest segment left: sealed. A byte in the middle of its first record's payload.
        let file = files(&data.join("l0"), &|n| n.ends_with(".seg")).remove(0);
        let bytes = std::fs::read(&file).expect("read");
        let header = RecordHeader::decode(&bytes[SEGMENT_HEADER_SIZE..]).expect("header").expect("a record");
        let offset = SEGMENT_HEADER_SIZE as u64 + header.header_len() as u64 + header.payload_len / 2;
        (file, offset)
    };
    let level_file = |data: &Path| {
        let file = files(&data.join("levels"), &|n| n.starts_with("L1-")).remove(0);
        let len = std::fs::metadata(&file).expect("stat").len();
        (file, len / 2)
    };
    let image = |data: &Path| (files(&data.join("levels"), &|n| n.starts_with("L3-")).remove(0), 4096 + 100);
    // A page-checksum map, marked clean at the close: the second page's entry.
    let sums = |data: &Path| (files(&data.join("sums"), &|n| n.ends_with(".sums")).remove(0), 512 + 8 + 3);
    let cases: [(&str, &Pick); 4] =
        [("segment", &segment), ("level file", &level_file), ("image", &image), ("page-checksum map", &sums)];
    for (what, pick) in cases {
        // Each run on a fresh copy: opening the vault rebuilds a damaged page-checksum map.
        let damaged = |copy: &str| {
            let data = dir.path().join(format!("{}-{copy}", what.replace(' ', "-")));
            copy_dir(&clean, &data);
            let (file, offset) = pick(&data);
            flip(&file, offset);
            (data, file.file_name().expect("name").to_string_lossy().into_owned())
        };
        let (data, name) = damaged("json");
        let (code, report) = verify_json(&data);
        assert_eq!(code, Some(1), "{what}: {report:#}");
        assert_eq!(report["ok"], false, "{what}");
        let found = problems(&report);
        assert!(found.iter().any(|p| p.contains(&name)), "{what}: {name} not named in {found:#?}");
        let (data, name) = damaged("text");
        let out = ltxvault(&["verify", "--data", path(&data), "--seed", "7"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{what}: {text}");
        assert!(text.contains(&name) && text.contains("FAILED"), "{what}: {text}");
    }
}

/// A server on a loopback port over `vault` (no auth), stopped on drop.
fn serve(vault: Arc<Vault>) -> TestServer {
    common::server::serve(vault, AuthMode::None, ClusterIdPolicy::Off, Limits::default())
}

/// `GET path` of cluster `c` as JSON; must succeed.
fn get_json(server: &TestServer, path: &str) -> Value {
    let reply = request(server.addr, "GET", path, &[("Authorization", "cluster c")], Body::None).expect("reply");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

#[test]
fn drills_pass_on_good_databases_fail_on_bad_ones_and_show_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("vault");
    let clock = vault_with_days_of_history(&data);
    let vault = Vault::open_with_clock(&data, config(), clock.clone()).expect("open");

    let result = vault.drill("c", "app", 11).expect("drill");
    assert!(result.ok, "{result:#?}");
    assert_eq!(result.seed, 11);
    let choices: Vec<PointChoice> = result.points.iter().map(|p| p.choice).collect();
    assert_eq!(choices[0], PointChoice::Latest);
    for level in 0..=3 {
        assert!(choices.contains(&PointChoice::Level(level)), "L{level} missing: {choices:?}");
    }
    for point in &result.points {
        let (plan, _) = vault.plan_restore("c", "app", Target::TxId(point.txid)).expect("plan");
        assert_eq!((point.checksum, point.commit, point.ok), (plan.checksum, plan.commit, true), "{point:?}");
    }
    // The same seed picks the same points; another seed, other ones (sooner or later).
    let again = vault.drill("c", "app", 11).expect("drill");
    let txids = |r: &DrillResult| r.points.iter().map(|p| p.txid).collect::<Vec<_>>();
    assert_eq!(txids(&again), txids(&result));
    assert!((12..40).any(|seed| txids(&vault.drill("c", "app", seed).expect("drill")) != txids(&result)));
    let last = vault.drill("c", "app", 11).expect("drill");
    assert_eq!(vault.drill_results().into_iter().find(|(_, db, _)| db == "app").map(|(.., r)| r), Some(last.clone()));
    assert!(matches!(vault.drill("c", "nope", 1), Err(ltxvault::Error::NotFound { .. })));

    // A database SQLite would not open (random pages): every point restores and matches
    // its checksum, and SQLite's integrity check fails it.
    let mut rng = Rng::new(5);
    let mut model = ModelDb::new(4096);
    model.timestamp_ms = ltxvault::clock::Clock::now_ms(&*clock);
    for _ in 0..5 {
        let (bytes, next) = model.propose(&mut rng, false);
        vault.ingest("c", "noise", bytes).expect("ingest");
        model = next;
    }
    let noise = vault.drill("c", "noise", 3).expect("drill");
    assert!(!noise.ok && (noise.detail.contains("integrity_check") || noise.detail.contains("SQLite")), "{noise:#?}");
    assert!(noise.points.iter().all(|p| !p.ok && !p.detail.contains("restore failed")), "restores matched: {noise:#?}");

    // The control plane shows the last drill of each database.
    let vault = Arc::new(vault);
    {
        let server = serve(vault.clone());
        let info = get_json(&server, "/db/info?db=app");
        assert_eq!(info["drill"]["ok"], true, "{info:#}");
        assert_eq!(info["drill"]["seed"], "11");
        assert_eq!(info["drill"]["points"].as_array().map(Vec::len), Some(last.points.len()));
        assert_eq!(info["drill"]["points"][0]["txid"], last.points[0].txid.to_string());
        let dbs = get_json(&server, "/dbs");
        let by_name = |name: &str| {
            dbs["databases"].as_array().expect("databases").iter().find(|d| d["db"] == name).cloned().expect(name)
        };
        assert_eq!(by_name("noise")["drill"]["ok"], false);
        assert_eq!(by_name("small")["drill"], Value::Null, "never drilled");
        // And the metrics count them per cluster.
        let never = dbs["databases"].as_array().expect("databases").iter().filter(|d| d["drill"].is_null()).count();
        let metrics = request(server.addr, "GET", "/metrics", &[], Body::None).expect("reply");
        let text = String::from_utf8_lossy(&metrics.body);
        let sample = |name: &str| {
            let prefix = format!("{name}{{cluster=\"c\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {prefix}in\n{text}"))
                .to_string()
        };
        assert_eq!(sample("ltxvault_drill_failed_databases"), "1", "noise failed");
        assert_eq!(sample("ltxvault_drill_missing_databases"), never.to_string());
    }
    Arc::try_unwrap(vault).ok().expect("the server let go").close().expect("close");

    // The results outlive the process; a deleted database's goes with it.
    let vault = Vault::open_with_clock(&data, config(), clock).expect("reopen");
    let names: Vec<String> = vault.drill_results().into_iter().map(|(_, db, _)| db).collect();
    assert_eq!(names, ["app", "noise"]);
    vault.delete_database("c", "noise").expect("delete");
    assert_eq!(vault.drill_results().len(), 1);
    vault.close().expect("close");
    let text = std::fs::read_to_string(data.join("drills.json")).expect("drills file");
    assert!(text.contains("\"app\"") && !text.contains("\"noise\""), "{text}");
}

#[test]
fn a_damaged_level_file_fails_the_drill_of_a_point_that_reads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("vault");
    let clock = vault_with_days_of_history(&data);
    let vault = Vault::open_with_clock(&data, config(), clock.clone()).expect("open");
    let latest = vault.plan_restore("c", "app", Target::Latest).expect("plan").0;
    let l2 = latest.inputs.iter().find(|r| r.level == 2).expect("an L2 input").path().expect("a file").to_path_buf();
    vault.close().expect("close");
    // An L2 file the latest point's restore reads: a byte of its pages.
    let len = std::fs::metadata(&l2).expect("stat").len();
    flip(&l2, len / 2);
    let vault = Vault::open_with_clock(&data, config(), clock).expect("open");
    let result = vault.drill("c", "app", 1).expect("drill");
    assert!(!result.ok, "{result:#?}");
    let latest_point = &result.points[0];
    assert!(!latest_point.ok && latest_point.detail.contains("restore failed"), "{latest_point:?}");
    assert!(latest_point.detail.contains("checksum"), "{latest_point:?}");
    assert!(vault.corruptions() >= 1);
}

/// Databases of about 4 MiB, so that a drill takes long enough for two at once to overlap.
fn big_history(vault: &Vault, work: &Path, names: &[&str], start_ms: i64) {
    for name in names {
        let mut db = SqliteHistory::new(&work.join(format!("{name}.db")), start_ms);
        for n in 0..10 {
            vault.ingest("c", name, db.insert(n, 100, 3000, 1_000)).expect("ingest");
        }
    }
}

/// Whether the drills' [start, start + duration] intervals are disjoint.
fn one_at_a_time(mut drills: Vec<DrillResult>) -> Result<(), String> {
    drills.sort_by_key(|d| d.started_ms);
    for pair in drills.windows(2) {
        let end = pair[0].started_ms + pair[0].duration_ms as i64;
        if pair[1].started_ms < end {
            return Err(format!("a drill started at {} while one ran until {end}", pair[1].started_ms));
        }
    }
    Ok(())
}

#[test]
fn drills_run_one_at_a_time_whoever_asks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(&dir.path().join("vault"), config()).expect("open");
    let names = ["a", "b", "c", "d"];
    big_history(&vault, dir.path(), &names, 1_700_000_000_000);
    let results: Vec<DrillResult> = std::thread::scope(|s| {
        let handles: Vec<_> = names.iter().map(|name| s.spawn(|| vault.drill("c", name, 1).expect("drill"))).collect();
        handles.into_iter().map(|h| h.join().expect("join")).collect()
    });
    assert!(results.iter().all(|r| r.ok), "{results:#?}");
    assert!(results.iter().all(|r| r.duration_ms >= 2), "drills long enough to overlap: {results:#?}");
    one_at_a_time(results).unwrap();
}

#[test]
fn a_serving_vault_drills_every_database_on_its_schedule_one_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("vault");
    let file = ConfigFile::parse("[storage]\nio = \"std\"\n[drill]\nevery = \"300ms\"\n").expect("parse");
    let config = file.apply(VaultConfig::default()).expect("apply");
    assert!(config.background_compaction);
    let vault = Vault::open(&data, config).expect("open");
    let names = ["a", "b", "c"];
    let now = ltxvault::clock::Clock::now_ms(&ltxvault::clock::SystemClock);
    big_history(&vault, dir.path(), &names, now - 3_600_000);

    // Watch the results change: every drill of every database, until each had three.
    let mut seen: Vec<(String, DrillResult)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while names.iter().any(|n| seen.iter().filter(|(db, _)| db == n).count() < 3) {
        assert!(Instant::now() < deadline, "the schedule did not drill every database three times: {seen:#?}");
        for (_, db, result) in vault.drill_results() {
            if !seen.iter().any(|(d, r)| *d == db && r.started_ms == result.started_ms) {
                seen.push((db, result));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(seen.iter().all(|(_, r)| r.ok), "{seen:#?}");
    assert!(seen.iter().all(|(_, r)| r.duration_ms >= 2), "drills long enough to overlap: {seen:#?}");
    // Each database about every 300 ms (give or take a tenth), not back to back.
    for name in names {
        let starts: Vec<i64> = seen.iter().filter(|(db, _)| db == name).map(|(_, r)| r.started_ms).collect();
        for pair in starts.windows(2) {
            assert!(pair[1] - pair[0] >= 250, "{name} drilled again after {} ms", pair[1] - pair[0]);
        }
    }
    one_at_a_time(seen.into_iter().map(|(_, r)| r).collect()).unwrap();
    vault.close().expect("close");

    // "off" turns the schedule off.
    let file = ConfigFile::parse("[storage]\nio = \"std\"\n[drill]\nevery = \"off\"\n").expect("parse");
    let vault = Vault::open(&data, file.apply(VaultConfig::default()).expect("apply")).expect("reopen");
    let before = vault.drill_results();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(vault.drill_results(), before);
    vault.close().expect("close");
}
