//! The codec against real files: 362 LTX files written by Litestream 0.5.17 (v3-block), with
//! a manifest of what each decodes to and of the database image after every TXID.
//!
//! Checked here: every header and trailer field, page counts and page numbers; replaying
//! L0 files 1..=N gives exactly the manifest's image (sha256) for every N; every compacted
//! file (L1..L3) and snapshot (L9) applied on the replay state before it gives the replay
//! state after it; and our own merge of the same L0 ranges gives the same images.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ltxvault::ltx::{Checksum, Decoder, Format, TxId, Version, database_checksum, merge};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/litestream-0.5.17")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("MANIFEST.json")).expect("read MANIFEST.json");
    serde_json::from_str(&text).expect("parse MANIFEST.json")
}

fn hex(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().expect("hex string"), 16).expect("16 hex digits")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Applies one decoded file onto an in-memory image the way SQLite's file would change:
/// write each page at its offset, then cut or extend to Commit pages.
fn apply(image: &mut Vec<u8>, file: &[u8]) {
    let mut decoder = Decoder::new(file).expect("open");
    let page_size = decoder.header().page_size as usize;
    let commit = decoder.header().commit as usize;
    while let Some(page) = decoder.next_page().expect("decode") {
        let at = (page.pgno.0 as usize - 1) * page_size;
        if image.len() < at + page_size {
            image.resize(at + page_size, 0);
        }
        image[at..at + page_size].copy_from_slice(page.data);
    }
    image.resize(commit * page_size, 0);
}

struct Db {
    page_size: u32,
    files: Vec<Value>,
    /// Image after each TXID, from replaying L0 files; index 0 is the empty database.
    states: Vec<Vec<u8>>,
}

fn load_db(db: &Value) -> Db {
    let files: Vec<Value> = db["files"].as_array().expect("files").clone();
    let mut l0: Vec<&Value> = files.iter().filter(|f| f["level"] == 0).collect();
    l0.sort_by_key(|f| hex(&f["min_txid"]));
    let mut states = vec![Vec::new()];
    for f in &l0 {
        assert_eq!(hex(&f["min_txid"]), states.len() as u64, "L0 files are contiguous from 1");
        let bytes = std::fs::read(fixture_dir().join(f["path"].as_str().expect("path"))).expect("read");
        let mut image = states.last().expect("state").clone();
        apply(&mut image, &bytes);
        states.push(image);
    }
    Db { page_size: db["page_size"].as_u64().expect("page_size") as u32, files, states }
}

#[test]
fn every_field_of_every_file_matches_the_manifest() {
    let manifest = manifest();
    let mut checked = 0;
    for db in manifest["databases"].as_array().expect("databases") {
        for f in db["files"].as_array().expect("files") {
            let path = f["path"].as_str().expect("path");
            let bytes = std::fs::read(fixture_dir().join(path)).expect("read");
            assert_eq!(bytes.len() as u64, f["size"].as_u64().expect("size"), "{path}: size");
            assert_eq!(sha256_hex(&bytes), f["sha256"].as_str().expect("sha256"), "{path}: sha256");
            assert_eq!(Version::detect(&bytes), Version::V3, "{path}: version");

            let mut decoder = Decoder::new(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
            let mut pgnos = Vec::new();
            let page_size = decoder.header().page_size as usize;
            while let Some(page) = decoder.next_page().unwrap_or_else(|e| panic!("{path}: {e}")) {
                assert_eq!(page.data.len(), page_size);
                pgnos.push(page.pgno.0 as u64);
            }
            let h = *decoder.header();
            let t = decoder.trailer().expect("verified trailer");
            assert_eq!(h.flags as u64, f["flags"].as_u64().expect("flags"), "{path}: flags");
            assert_eq!(h.page_size as u64, f["page_size"].as_u64().expect("page_size"), "{path}");
            assert_eq!(h.commit as u64, f["commit"].as_u64().expect("commit"), "{path}: commit");
            assert_eq!(h.min_txid, TxId(hex(&f["min_txid"])), "{path}: min_txid");
            assert_eq!(h.max_txid, TxId(hex(&f["max_txid"])), "{path}: max_txid");
            assert_eq!(h.is_snapshot(), f["is_snapshot"].as_bool().expect("is_snapshot"), "{path}");
            assert_eq!(h.timestamp_ms, f["timestamp_ms"].as_i64().expect("timestamp_ms"), "{path}");
            assert_eq!(h.wal_offset, f["wal_offset"].as_i64().expect("wal_offset"), "{path}");
            assert_eq!(h.wal_size, f["wal_size"].as_i64().expect("wal_size"), "{path}");
            assert_eq!(h.wal_salt1 as u64, f["wal_salt1"].as_u64().expect("wal_salt1"), "{path}");
            assert_eq!(h.wal_salt2 as u64, f["wal_salt2"].as_u64().expect("wal_salt2"), "{path}");
            assert_eq!(h.node_id, f["node_id"].as_u64().expect("node_id"), "{path}");
            assert_eq!(h.pre_apply_checksum, Checksum(hex(&f["pre_apply_checksum"])), "{path}");
            assert_eq!(t.post_apply_checksum, Checksum(hex(&f["post_apply_checksum"])), "{path}");
            assert_eq!(t.file_checksum, Checksum(hex(&f["file_checksum"])), "{path}");
            assert_eq!(pgnos.len() as u64, f["page_count"].as_u64().expect("page_count"), "{path}");
            let first: Vec<u64> =
                f["pgnos_first"].as_array().expect("pgnos_first").iter().map(|v| v.as_u64().expect("u64")).collect();
            assert_eq!(&pgnos[..first.len()], &first[..], "{path}: first page numbers");
            assert_eq!(pgnos.last().copied().unwrap_or(0), f["pgno_max"].as_u64().expect("pgno_max"), "{path}");
            for encoding in f["page_frame_encoding"].as_array().expect("encodings") {
                assert_eq!(encoding, "lz4-block", "{path}");
                assert_eq!(bytes[100 + 4..100 + 6], [0, 1], "{path}: v3-block page flag");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 362, "every vector file was checked");
}

#[test]
fn replaying_l0_reproduces_every_state() {
    let manifest = manifest();
    for db in manifest["databases"].as_array().expect("databases") {
        let name = db["name"].as_str().expect("name");
        let loaded = load_db(db);
        let states: &BTreeMap<String, Value> =
            &serde_json::from_value(db["state_by_txid"].clone()).expect("state_by_txid");
        assert_eq!(states.len(), loaded.states.len() - 1, "{name}: one state per L0 TXID");
        for (txid, expected) in states {
            let image = &loaded.states[hex(&Value::from(txid.as_str())) as usize];
            assert_eq!(image.len() as u64, expected["size"].as_u64().expect("size"), "{name} @ {txid}: size");
            assert_eq!(sha256_hex(image), expected["sha256"].as_str().expect("sha256"), "{name} @ {txid}");
            assert_eq!(
                database_checksum(image, loaded.page_size),
                Checksum(hex(&expected["db_checksum"])),
                "{name} @ {txid}: database checksum"
            );
        }
        // Litestream's own restores agree with the replay.
        for restore in db["restores"].as_array().expect("restores") {
            let txid = match restore["mode"].as_str().expect("mode") {
                "timestamp" => hex(&restore["equals_state_at_txids"][0]),
                _ => hex(&restore["txid"]),
            };
            let image = &loaded.states[txid as usize];
            assert_eq!(sha256_hex(image), restore["sha256"].as_str().expect("sha256"), "{name}: restore to {txid}");
        }
    }
}

#[test]
fn compacted_files_and_our_merge_match_the_replay() {
    let manifest = manifest();
    let mut compared = 0;
    let mut expected_count = 0;
    for db in manifest["databases"].as_array().expect("databases") {
        let loaded = load_db(db);
        let l0: BTreeMap<u64, Vec<u8>> = loaded
            .files
            .iter()
            .filter(|f| f["level"] == 0)
            .map(|f| {
                (
                    hex(&f["min_txid"]),
                    std::fs::read(fixture_dir().join(f["path"].as_str().expect("path"))).expect("read"),
                )
            })
            .collect();
        expected_count += loaded.files.iter().filter(|f| f["level"] != 0).count();
        for f in loaded.files.iter().filter(|f| f["level"] != 0) {
            let path = f["path"].as_str().expect("path");
            let (min, max) = (hex(&f["min_txid"]), hex(&f["max_txid"]));
            let before = if min == 1 { Vec::new() } else { loaded.states[(min - 1) as usize].clone() };
            let expected = &loaded.states[max as usize];

            let mut image = before.clone();
            apply(&mut image, &std::fs::read(fixture_dir().join(path)).expect("read"));
            assert!(image == *expected, "{path}: Litestream's file applied gives the replay state");

            let inputs: Vec<&[u8]> = (min..=max).map(|t| l0[&t].as_slice()).collect();
            let (merged, trailer) =
                merge(&inputs, Vec::new(), Format::V3Block).unwrap_or_else(|e| panic!("{path}: {e}"));
            let summary = Decoder::new(&merged).expect("open merged").verify().expect("merged file verifies");
            assert_eq!(summary.trailer, trailer);
            assert_eq!((summary.header.min_txid, summary.header.max_txid), (TxId(min), TxId(max)));
            assert_eq!(summary.header.is_snapshot(), min == 1);
            let mut image = before;
            apply(&mut image, &merged);
            assert!(image == *expected, "{path}: our merge of L0 {min}..={max} gives the replay state");
            compared += 1;
        }
    }
    assert!(
        expected_count > 0 && compared == expected_count,
        "compared {compared} of {expected_count} compacted files"
    );
}
