//! `--config FILE`, `--retention` and `ltxvault config example`, run as a user would run
//! them; and what `ltxvault info` shows per level.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{ltxvault, path, succeeded};

use serde_json::Value;

fn example() -> String {
    succeeded(&ltxvault(&["config", "example"]))
}

/// A vault holding the pg4096 Litestream fixture as demo/app (202 transactions, compacted
/// into L1 and L2 by the import), imported with the given extra arguments.
fn vault_with_history(dir: &Path, extra: &[&str]) -> PathBuf {
    let data = dir.join("vault");
    let replica = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/litestream-0.5.17/pg4096");
    let mut args = vec!["import-litestream", "--data", path(&data), "--cluster", "demo", "--db", "app"];
    args.extend_from_slice(extra);
    args.push(path(&replica));
    succeeded(&ltxvault(&args));
    data
}

fn info_json(data: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["info", "--data", path(data), "--cluster", "demo", "--db", "app", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&succeeded(&ltxvault(&args))).expect("one JSON object")
}

fn retention_of_each_level(info: &Value) -> Vec<Value> {
    info["levels"].as_array().expect("levels").iter().map(|l| l["retention"].clone()).collect()
}

#[test]
fn the_example_is_accepted_by_every_command_that_opens_a_vault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("example.toml");
    std::fs::write(&file, example()).expect("write");
    let data = vault_with_history(dir.path(), &["--config", path(&file)]);
    let info = info_json(&data, &["--config", path(&file)]);
    assert_eq!(retention_of_each_level(&info), ["1d", "30d", "30d", "30d"]);
    let windows: Vec<_> = info["levels"].as_array().expect("levels").iter().map(|l| l["window"].clone()).collect();
    assert_eq!(windows, [Value::Null, "1m".into(), "1h".into(), "1d".into()]);
    let out = dir.path().join("app.db");
    let restore = ltxvault(&[
        "restore",
        "--data",
        path(&data),
        "--cluster",
        "demo",
        "--db",
        "app",
        "--config",
        path(&file),
        "-o",
        path(&out),
        "--dry-run",
    ]);
    assert!(succeeded(&restore).starts_with("would restore demo/app"));
}

#[test]
fn the_file_sets_what_info_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("vault.toml");
    let text = example().replace("l0 = \"1d\"", "l0 = \"off\"").replace("l3 = \"30d\"", "l3 = \"90d\"");
    std::fs::write(&file, text).expect("write");
    let data = vault_with_history(dir.path(), &[]);
    let info = info_json(&data, &["--config", path(&file)]);
    assert_eq!(retention_of_each_level(&info), ["off", "30d", "30d", "90d"]);
    assert_eq!(info["levels"][0]["retention_ms"], Value::Null);
    assert_eq!(info["levels"][3]["retention_ms"], 90 * 86_400_000_i64);
}

#[test]
fn retention_off_overrides_the_file_and_on_keeps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("vault.toml");
    std::fs::write(&file, "[retention]\nl1 = \"2d\"\n").expect("write");
    let data = vault_with_history(dir.path(), &["--retention", "off"]);
    let off = info_json(&data, &["--config", path(&file), "--retention", "off"]);
    assert_eq!(retention_of_each_level(&off), ["off", "off", "off", "off"]);
    let on = info_json(&data, &["--config", path(&file), "--retention", "on"]);
    assert_eq!(retention_of_each_level(&on), ["1d", "2d", "30d", "30d"]);
}

#[test]
fn a_bad_key_fails_every_command_and_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = vault_with_history(dir.path(), &[]);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[levels]\nl1_window = \"1m\"\nl2_windw = \"1h\"\n").expect("write");
    let common = ["--data", path(&data), "--cluster", "demo", "--db", "app", "--config", path(&bad)];
    let out_db = dir.path().join("out.db");
    let replica = dir.path().join("no-replica");
    for command in [
        [&["info"][..], &common].concat(),
        [&["restore"][..], &common, &["-o", path(&out_db)]].concat(),
        [&["import-litestream"][..], &common, &[path(&replica)]].concat(),
    ] {
        let out = ltxvault(&command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{command:?} succeeded");
        assert!(stderr.contains("unknown field `l2_windw`"), "{command:?}: {stderr}");
        assert!(stderr.contains(path(&bad)) && stderr.contains("line 3"), "{command:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{command:?} printed {}", String::from_utf8_lossy(&out.stdout));
    }
    assert!(!out_db.exists());
}

#[test]
fn info_shows_each_level_with_its_range_bytes_and_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = vault_with_history(dir.path(), &[]);
    let info = info_json(&data, &[]);
    let levels = info["levels"].as_array().expect("levels");
    assert_eq!(levels.iter().map(|l| l["level"].as_u64().expect("level")).collect::<Vec<_>>(), [0, 1, 2, 3]);
    // The fixture: TXIDs 1..=0xca, the first at 07:35:38.907, the last at 07:36:38.907.
    let l0 = &levels[0];
    assert_eq!(l0["pieces"], 202);
    assert_eq!(l0["oldest"]["txid"], "0000000000000001");
    assert_eq!(l0["oldest"]["time"], "2026-11-27T07:35:38.907Z");
    assert_eq!(l0["newest"]["txid"], "00000000000000ca");
    assert_eq!(l0["newest"]["time"], "2026-11-27T07:36:38.907Z");
    assert_eq!(l0["newest"]["timestamp_ms"], 1_795_764_998_907_i64);
    for level in &levels[1..3] {
        assert!(level["bytes"].as_u64().expect("bytes") > 0, "{level}");
        assert_eq!(level["newest"]["txid"], "00000000000000ca", "{level}");
    }
    assert_eq!(levels[3]["pieces"], 0);
    assert_eq!(levels[3]["oldest"], Value::Null);

    let text = succeeded(&ltxvault(&["info", "--data", path(&data), "--cluster", "demo", "--db", "app"]));
    let row = |name: &str| {
        let line = text.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_else(|| panic!("{name}: {text}"));
        line.split_whitespace().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(row("level"), ["level", "window", "retention", "pieces", "bytes", "oldest", "newest"]);
    let bytes = l0["bytes"].to_string();
    assert_eq!(
        row("L0"),
        [
            "L0",
            "-",
            "1d",
            "202",
            &bytes,
            "0000000000000001",
            "2026-11-27T07:35:38.907Z",
            "00000000000000ca",
            "2026-11-27T07:36:38.907Z"
        ]
    );
    assert_eq!(row("L1")[..3], ["L1", "1m", "30d"]);
    assert_eq!(row("L3"), ["L3", "1d", "30d", "0", "0", "-", "-"]);
}
