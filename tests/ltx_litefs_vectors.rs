//! The v1 encoder and decoder against the file checksums LiteFS's own tests assert (LiteFS
//! backup protocol spec §11.2): page size 512, timestamp 0, node ID 0. These are the only
//! independently produced v1 values we have: no LiteFS-written file could be captured.

use std::path::Path;
use std::process::Command;

use ltxvault::ltx::{Checksum, Decoder, Encoder, Format, Header, PageNo, TxId};

struct Vector {
    name: &'static str,
    commit: u32,
    txids: (u64, u64),
    pre_apply: u64,
    pages: &'static [(u32, u8)],
    post_apply: u64,
    file_checksum: u64,
    compress: bool,
}

const VECTORS: &[Vector] = &[
    Vector {
        name: "A (lz4)",
        commit: 2,
        txids: (1, 4),
        pre_apply: 0,
        pages: &[(1, 3), (2, 2)],
        post_apply: 0x8b87423eeeeeeeee,
        file_checksum: 0xb8e6a652b0ec8453,
        compress: true,
    },
    Vector {
        name: "F1",
        commit: 1,
        txids: (1, 1),
        pre_apply: 0,
        pages: &[(1, 1)],
        post_apply: 0xe4e4aaa102377eee,
        file_checksum: 0xa5764f2cc208d3e5,
        compress: false,
    },
    Vector {
        name: "F2",
        commit: 2,
        txids: (2, 2),
        pre_apply: 0xe4e4aaa102377eee,
        pages: &[(2, 2)],
        post_apply: 0xad2dffe333333333,
        file_checksum: 0xd0405c19d8ab974a,
        compress: false,
    },
    Vector {
        name: "F3",
        commit: 2,
        txids: (3, 4),
        pre_apply: 0xad2dffe333333333,
        pages: &[(1, 3)],
        post_apply: 0x8b87423eeeeeeeee,
        file_checksum: 0xab0bcab6608318d4,
        compress: false,
    },
    Vector {
        name: "F4 (delete)",
        commit: 0,
        txids: (5, 5),
        pre_apply: 0x8b87423eeeeeeeee,
        pages: &[],
        post_apply: 0x8000000000000000,
        file_checksum: 0xad14cd185a861181,
        compress: false,
    },
    Vector {
        name: "F5 (empty snapshot)",
        commit: 0,
        txids: (1, 3),
        pre_apply: 0,
        pages: &[],
        post_apply: 0x8000000000000000,
        file_checksum: 0x82b3ac6129338655,
        compress: false,
    },
    Vector {
        name: "snapshot after F1-F3",
        commit: 2,
        txids: (1, 4),
        pre_apply: 0,
        pages: &[(1, 3), (2, 2)],
        post_apply: 0x8b87423eeeeeeeee,
        file_checksum: 0xcdfd3ff1db5d4292,
        compress: false,
    },
];

fn encode(v: &Vector) -> Vec<u8> {
    let header = Header {
        page_size: 512,
        commit: v.commit,
        min_txid: TxId(v.txids.0),
        max_txid: TxId(v.txids.1),
        pre_apply_checksum: Checksum(v.pre_apply),
        ..Header::default()
    };
    let mut encoder = Encoder::new(Vec::new(), &header, Format::V1 { compress: v.compress }).expect("header");
    for &(pgno, fill) in v.pages {
        encoder.write_page(PageNo(pgno), &[fill; 512]).expect("page");
    }
    let (bytes, trailer) = encoder.finish(Checksum(v.post_apply)).expect("finish");
    assert_eq!(trailer.file_checksum, Checksum(v.file_checksum), "{}: file checksum", v.name);
    bytes
}

#[test]
fn encoder_reproduces_litefs_file_checksums() {
    for v in VECTORS {
        let bytes = encode(v);
        let mut decoder = Decoder::new(&bytes).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        let mut pages = Vec::new();
        while let Some(page) = decoder.next_page().expect("decode") {
            assert!(page.data.iter().all(|&b| b == page.data[0]));
            pages.push((page.pgno.0, page.data[0]));
        }
        assert_eq!(pages, v.pages, "{}", v.name);
        let trailer = decoder.trailer().expect("verified");
        assert_eq!(trailer.post_apply_checksum, Checksum(v.post_apply), "{}", v.name);
        assert_eq!(trailer.file_checksum, Checksum(v.file_checksum), "{}", v.name);
    }
}

#[test]
fn a_wrong_post_apply_checksum_on_a_snapshot_is_refused() {
    // LiteFS's upstream vector B carries a made-up post-apply checksum (0x8000000000000bb8)
    // on a snapshot; a strict encoder must refuse to write it.
    let header = Header { page_size: 512, commit: 2, min_txid: TxId(1), max_txid: TxId(4), ..Header::default() };
    let mut encoder = Encoder::new(Vec::new(), &header, Format::V1 { compress: false }).expect("header");
    encoder.write_page(PageNo(1), &[3; 512]).expect("page");
    encoder.write_page(PageNo(2), &[2; 512]).expect("page");
    let err = encoder.finish(Checksum(0x8000000000000bb8)).expect_err("bad post-apply");
    assert!(err.to_string().contains("post-apply-checksum"), "{err}");
}

#[test]
fn cli_apply_checks_the_pre_apply_checksum_of_v1_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, v: &Vector| {
        let path = dir.path().join(name);
        std::fs::write(&path, encode(v)).expect("write");
        path
    };
    let f1 = write("f1.ltx", &VECTORS[1]);
    let f2 = write("f2.ltx", &VECTORS[2]);
    let f3 = write("f3.ltx", &VECTORS[3]);
    let db = dir.path().join("db");
    let run = |files: &[&Path]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ltxvault"));
        cmd.args(["ltx", "apply", "--db"]).arg(&db).args(files);
        cmd.output().expect("run")
    };
    assert!(run(&[&f1, &f2]).status.success());
    assert_eq!(std::fs::read(&db).expect("db"), [[1u8; 512], [2u8; 512]].concat());

    // Someone changed the database behind our back: F3 no longer continues it.
    std::fs::write(&db, [[1u8; 512], [9u8; 512]].concat()).expect("tamper");
    let out = run(&[&f3]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pre-apply checksum"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&db).expect("db"), [[1u8; 512], [9u8; 512]].concat(), "unchanged");

    std::fs::write(&db, [[1u8; 512], [2u8; 512]].concat()).expect("restore");
    assert!(run(&[&f3]).status.success());
    assert_eq!(std::fs::read(&db).expect("db"), [[3u8; 512], [2u8; 512]].concat());
}
