//! `ltxvault ltx inspect` and `ltxvault ltx apply`, run as a user would run them.

mod common;

use std::path::{Path, PathBuf};

use common::cli::ltxvault;

use serde_json::Value;
use sha2::{Digest, Sha256};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/litestream-0.5.17")
}

fn l0_files(db: &str, up_to: u64) -> Vec<String> {
    (1..=up_to)
        .map(|t| vectors().join(format!("{db}/ltx/0/{t:016x}-{t:016x}.ltx")).to_string_lossy().into_owned())
        .collect()
}

fn sha256_file(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).expect("read")).iter().map(|b| format!("{b:02x}")).collect()
}

fn manifest_state(db: &str, txid: u64) -> String {
    let text = std::fs::read_to_string(vectors().join("MANIFEST.json")).expect("manifest");
    let manifest: Value = serde_json::from_str(&text).expect("json");
    let db = manifest["databases"].as_array().expect("dbs").iter().find(|d| d["name"] == db).expect("db").clone();
    db["state_by_txid"][format!("{txid:016x}")]["sha256"].as_str().expect("sha").to_string()
}

#[test]
fn inspect_json_prints_the_fields_of_each_file() {
    let file = vectors().join("pg4096/ltx/0/0000000000000001-0000000000000001.ltx");
    let out = ltxvault(&["ltx", "inspect", "--json", file.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(line["min_txid"], "0000000000000001");
    assert_eq!(line["max_txid"], "0000000000000001");
    assert_eq!(line["page_size"], 4096);
    assert_eq!(line["flags"], 2);
    assert_eq!(line["pre_apply_checksum"], "0000000000000000");
    assert_eq!(line["post_apply_checksum"], "0000000000000000");
    for field in ["commit", "timestamp_ms", "file_checksum", "page_count"] {
        assert!(!line[field].is_null(), "{field} present");
    }
    assert_eq!(line["file_checksum"].as_str().expect("hex").len(), 16);
}

#[test]
fn inspect_fails_with_one_line_on_a_corrupt_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = vectors().join("pg1024/ltx/0/0000000000000002-0000000000000002.ltx");
    let mut bytes = std::fs::read(&good).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let bad = dir.path().join("bad.ltx");
    std::fs::write(&bad, &bytes).expect("write");
    let out = ltxvault(&["ltx", "inspect", good.to_str().expect("utf-8"), bad.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("bad.ltx") && stderr.contains("file-checksum"), "{stderr}");
    // The good file was still inspected.
    assert!(String::from_utf8_lossy(&out.stdout).contains("0000000000000002-0000000000000002"));
}

#[test]
fn apply_reproduces_the_manifest_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("out.db");
    let mut args = vec!["ltx".to_string(), "apply".into(), "--db".into(), db.to_string_lossy().into_owned()];
    args.extend(l0_files("pg4096", 40));
    let out = ltxvault(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_file(&db), manifest_state("pg4096", 40));

    // Continue from 41 to 60 onto the existing file.
    let mut args = vec!["ltx".to_string(), "apply".into(), "--db".into(), db.to_string_lossy().into_owned()];
    args.extend(l0_files("pg4096", 60).split_off(40));
    let out = ltxvault(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_file(&db), manifest_state("pg4096", 60));
}

#[test]
fn apply_refuses_bad_input_and_leaves_the_database_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("out.db");
    let files = l0_files("pg1024", 10);
    let mut args = vec!["ltx".to_string(), "apply".into(), "--db".into(), db.to_string_lossy().into_owned()];
    args.extend(files[..5].iter().cloned());
    assert!(ltxvault(&args.iter().map(String::as_str).collect::<Vec<_>>()).status.success());
    let before = sha256_file(&db);

    // A gap: 6 then 8.
    let gap = ["ltx", "apply", "--db", db.to_str().expect("utf-8"), &files[5], &files[7]];
    let out = ltxvault(&gap);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("previous file ends at"));
    assert_eq!(sha256_file(&db), before);

    // A corrupt second file: nothing is written, not even the good first file.
    let mut bytes = std::fs::read(&files[6]).expect("read");
    bytes[120] ^= 1;
    let bad = dir.path().join("bad.ltx");
    std::fs::write(&bad, &bytes).expect("write");
    let out = ltxvault(&["ltx", "apply", "--db", db.to_str().expect("utf-8"), &files[5], bad.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert_eq!(sha256_file(&db), before);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // An incremental file onto a missing database.
    let missing = dir.path().join("missing.db");
    let out = ltxvault(&["ltx", "apply", "--db", missing.to_str().expect("utf-8"), &files[5]]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a snapshot"));
    assert!(!missing.exists());
}
