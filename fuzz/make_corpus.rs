//! Writes the seed corpus in `fuzz/seeds/`: small valid LTX files of every version and
//! encoding for `ltx_decode`, chains of contiguous files for `ltx_merge`, a few of the
//! smallest Litestream 0.5.17 vectors for both, segment files written by a real vault for
//! `segment_record`, and request sequences over every endpoint for `http_router`.
//!
//! Run from anywhere with `cargo run --manifest-path fuzz/Cargo.toml --example make_corpus`.
//! Its output is deterministic; rerun it after changing the generators and commit the result.
//!
//! Seeds only have to be valid and varied: the fuzzer learns far more from mutating a file
//! that decodes than from random bytes that die at the magic or the file checksum.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ltxvault::clock::ManualClock;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::format::HEADER_FLAG_NO_CHECKSUM;
use ltxvault::ltx::{Checksum, Crc64, Encoder, Format, Header, PageNo, TxId, Version, database_checksum};
use ltxvault::segment::scan;
use ltxvault::{Vault, VaultConfig};
use ltxvault_fuzz::http::{CLUSTER_ID, Harness, Step, unparse};
use ltxvault_fuzz::segment::{FROM_SEQ_1, LAST, RESEAL, check_segment};
use ltxvault_fuzz::{check_decode, check_merge, join};

/// A database image that files are applied to, so that chains carry real checksums: a merge
/// whose output is a snapshot recomputes the database checksum and compares it.
struct Db {
    page_size: u32,
    image: Vec<u8>,
}

impl Db {
    fn new(page_size: u32) -> Db {
        Db { page_size, image: Vec::new() }
    }

    fn checksum(&self) -> Checksum {
        database_checksum(&self.image, self.page_size)
    }

    /// Apply as `ltxvault::ltx::apply` does it: write the pages, then cut or zero-extend to
    /// Commit.
    fn apply(&mut self, pages: &[(u32, Vec<u8>)], commit: u32) {
        let size = self.page_size as usize;
        for (pgno, data) in pages {
            let start = (*pgno as usize - 1) * size;
            if self.image.len() < start + size {
                self.image.resize(start + size, 0);
            }
            self.image[start..start + size].copy_from_slice(data);
        }
        self.image.resize(commit as usize * size, 0);
    }
}

/// One file to write.
struct Spec {
    format: Format,
    page_size: u32,
    commit: u32,
    txids: (u64, u64),
    checksums: bool,
    /// Page numbers; contents come from [`page`].
    pages: Vec<u32>,
    /// WAL offset, size, salt 1, salt 2.
    wal: (i64, i64, u32, u32),
}

impl Spec {
    fn new(format: Format, page_size: u32, commit: u32, txids: (u64, u64), pages: &[u32]) -> Spec {
        Spec { format, page_size, commit, txids, checksums: true, pages: pages.to_vec(), wal: (0, 0, 0, 0) }
    }

    fn no_checksums(mut self) -> Spec {
        self.checksums = false;
        self
    }

    fn wal(mut self, offset: i64, size: i64, salt1: u32, salt2: u32) -> Spec {
        self.wal = (offset, size, salt1, salt2);
        self
    }

    fn header(&self, db: &Db) -> Header {
        let snapshot = self.txids.0 == 1;
        Header {
            flags: if self.checksums { 0 } else { HEADER_FLAG_NO_CHECKSUM },
            page_size: self.page_size,
            commit: self.commit,
            min_txid: TxId(self.txids.0),
            max_txid: TxId(self.txids.1),
            timestamp_ms: 1_764_230_000_000 + self.txids.1 as i64 * 1000,
            pre_apply_checksum: if snapshot || !self.checksums { Checksum::NONE } else { db.checksum() },
            wal_offset: self.wal.0,
            wal_size: self.wal.1,
            wal_salt1: self.wal.2,
            wal_salt2: self.wal.3,
            node_id: 0,
        }
    }

    /// Encodes the file with the crate's encoder and applies it to `db`.
    fn encode(&self, db: &mut Db) -> Vec<u8> {
        let header = self.header(db);
        let pages = self.page_contents();
        let mut encoder = Encoder::new(Vec::new(), &header, self.format).expect("seed header");
        for (pgno, data) in &pages {
            encoder.write_page(PageNo(*pgno), data).expect("seed page");
        }
        let post = self.apply(db, &pages);
        encoder.finish(post).expect("seed trailer").0
    }

    /// Encodes the file by hand as v2 or v3-frame (one LZ4 frame per page), which the
    /// crate's encoder does not write, and applies it to `db`.
    fn encode_framed(&self, version: Version, db: &mut Db) -> Vec<u8> {
        let header = self.header(db);
        let pages = self.page_contents();
        let mut out = header.encode().to_vec();
        let mut crc = Crc64::new();
        crc.update(&out);
        let mut index = Vec::new();
        for (i, (pgno, data)) in pages.iter().enumerate() {
            let mut frame = pgno.to_be_bytes().to_vec();
            if version == Version::V3 {
                frame.extend_from_slice(&0u16.to_be_bytes());
            }
            // The file checksum covers the page header as stored and the page decompressed.
            crc.update(&frame);
            crc.update(data);
            // Alternate the optional LZ4 checksums so the frame walker sees both layouts.
            let info = lz4_flex::frame::FrameInfo::new().content_checksum(i % 2 == 0).block_checksums(i % 2 == 1);
            let mut lz4 = lz4_flex::frame::FrameEncoder::with_frame_info(info, frame);
            lz4.write_all(data).expect("LZ4 into a Vec");
            let frame = lz4.finish().expect("LZ4 into a Vec");
            for value in [u64::from(*pgno), out.len() as u64, frame.len() as u64] {
                put_uvarint(&mut index, value);
            }
            out.extend_from_slice(&frame);
        }
        let end_marker = &[0u8; 6][..version.page_header_size()];
        crc.update(end_marker);
        out.extend_from_slice(end_marker);
        put_uvarint(&mut index, 0);
        let index_len = index.len() as u64;
        index.extend_from_slice(&index_len.to_be_bytes());
        crc.update(&index);
        out.extend_from_slice(&index);
        let post = self.apply(db, &pages);
        crc.update(&post.0.to_be_bytes());
        out.extend_from_slice(&post.0.to_be_bytes());
        out.extend_from_slice(&(Checksum::FLAG | crc.value()).to_be_bytes());
        out
    }

    fn page_contents(&self) -> Vec<(u32, Vec<u8>)> {
        self.pages.iter().map(|&p| (p, page(p, self.txids.1, self.page_size))).collect()
    }

    /// Applies the pages to `db` and returns the post-apply checksum the trailer needs.
    fn apply(&self, db: &mut Db, pages: &[(u32, Vec<u8>)]) -> Checksum {
        if self.txids.0 == 1 {
            db.image.clear();
        }
        db.apply(pages, self.commit);
        if self.checksums { db.checksum() } else { Checksum::NONE }
    }
}

/// Page contents that look a little like SQLite pages: some text, then zeros. Different
/// for every page and transaction, so a merge that picks the wrong source shows.
fn page(pgno: u32, txid: u64, page_size: u32) -> Vec<u8> {
    let mut data = vec![0u8; page_size as usize];
    let text = format!("page {pgno} written by txid {txid};").repeat(4);
    let n = text.len().min(data.len());
    data[..n].copy_from_slice(&text.as_bytes()[..n]);
    data[page_size as usize - 1] = pgno as u8;
    data
}

/// Unsigned LEB128, the varint of the v2/v3 page index.
fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Writes a set of contiguous files, each applied to the same database in turn.
fn chain(page_size: u32, specs: &[Spec]) -> Vec<Vec<u8>> {
    let mut db = Db::new(page_size);
    specs.iter().map(|s| s.encode(&mut db)).collect()
}

const V1: Format = Format::V1 { compress: false };
const V1_LZ4: Format = Format::V1 { compress: true };
const V3: Format = Format::V3Block;

/// The smallest Litestream vectors (all v3-block, NoChecksum), relative to
/// `tests/fixtures/litestream-0.5.17`.
const VECTORS: [&str; 7] = [
    "pg1024/ltx/0/0000000000000079-0000000000000079.ltx",
    "pg1024/ltx/0/000000000000003a-000000000000003a.ltx",
    "pg4096/ltx/0/0000000000000034-0000000000000034.ltx",
    "pg1024/ltx/0/0000000000000071-0000000000000071.ltx",
    "pg1024/ltx/0/0000000000000072-0000000000000072.ltx",
    "pg1024/ltx/0/0000000000000001-0000000000000001.ltx",
    "pg4096/ltx/0/00000000000000c8-00000000000000c8.ltx",
];

fn decode_seeds(fixtures: &Path) -> Vec<(String, Vec<u8>)> {
    let lock_64k = PageNo::lock_page(65536).0;
    let one = |spec: Spec| spec.encode(&mut Db::new(spec.page_size));
    let framed = |spec: Spec, version| spec.encode_framed(version, &mut Db::new(spec.page_size));
    let mut seeds = vec![
        ("v1-snapshot-512.ltx", one(Spec::new(V1, 512, 3, (1, 1), &[1, 2, 3]))),
        ("v1-lz4-snapshot-512.ltx", one(Spec::new(V1_LZ4, 512, 3, (1, 2), &[1, 2, 3]))),
        ("v1-empty-snapshot.ltx", one(Spec::new(V1, 512, 0, (1, 1), &[]))),
        ("v1-incremental-wal.ltx", one(Spec::new(V1, 512, 6, (5, 7), &[2, 5]).wal(32, 1080, 7, 9))),
        ("v1-lz4-incremental.ltx", one(Spec::new(V1_LZ4, 1024, 4, (3, 3), &[4]))),
        ("v3-block-snapshot-512.ltx", one(Spec::new(V3, 512, 3, (1, 4), &[1, 2, 3]))),
        ("v3-block-snapshot-4096.ltx", one(Spec::new(V3, 4096, 1, (1, 1), &[1]).no_checksums())),
        ("v3-block-incremental.ltx", one(Spec::new(V3, 512, 4, (10, 12), &[1, 4]).no_checksums())),
        ("v3-block-no-pages.ltx", one(Spec::new(V3, 512, 3, (8, 8), &[]).no_checksums())),
        // Pages on either side of the lock page, which is never stored.
        (
            "v3-block-around-lock-page.ltx",
            one(Spec::new(V3, 65536, lock_64k + 1, (20, 20), &[lock_64k - 1, lock_64k + 1]).no_checksums()),
        ),
        ("v2-incremental.ltx", framed(Spec::new(V3, 512, 5, (4, 4), &[1, 3]).wal(32, 2128, 1, 2), Version::V2)),
        ("v2-snapshot.ltx", framed(Spec::new(V3, 512, 2, (1, 1), &[1, 2]).no_checksums(), Version::V2)),
        ("v3-frame-incremental.ltx", framed(Spec::new(V3, 1024, 3, (6, 9), &[2, 3]), Version::V3)),
    ]
    .into_iter()
    .map(|(name, bytes)| (name.to_string(), bytes))
    .collect::<Vec<_>>();
    for path in VECTORS {
        let bytes = fs::read(fixtures.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        // pg1024/ltx/0/0000000000000079-….ltx -> litestream-pg1024-0000000000000079.ltx
        let db = path.split('/').next().expect("path has a database");
        let txid = &path[path.rfind('/').expect("path has a file") + 1..][..16];
        seeds.push((format!("litestream-{db}-{txid}.ltx"), bytes));
    }
    seeds
}

fn merge_seeds(fixtures: &Path) -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut add = |name: &str, files: Vec<Vec<u8>>, format| {
        let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        seeds.push((name.to_string(), join(&refs, format).expect("seed fits the split layout")));
    };
    // Snapshot, a file that grows the database, then one that shrinks it: exercises the
    // truncation limits of the merge.
    add(
        "v1-snapshot-grow-shrink.bin",
        chain(
            512,
            &[
                Spec::new(V1, 512, 3, (1, 1), &[1, 2, 3]),
                Spec::new(V1, 512, 5, (2, 3), &[2, 5]),
                Spec::new(V1, 512, 2, (4, 4), &[1]),
            ],
        ),
        V1,
    );
    // Shrink then regrow without writing the pages in between: those come out as zeros.
    add(
        "v3-shrink-regrow.bin",
        chain(
            512,
            &[
                Spec::new(V3, 512, 4, (7, 7), &[1, 4]).no_checksums(),
                Spec::new(V3, 512, 1, (8, 8), &[1]).no_checksums(),
                Spec::new(V3, 512, 5, (9, 10), &[5]).no_checksums(),
                Spec::new(V3, 512, 5, (11, 11), &[2]).no_checksums(),
            ],
        ),
        V3,
    );
    // Mixed input versions with checksums, into compressed v1.
    add(
        "mixed-into-v1-lz4.bin",
        chain(
            1024,
            &[
                Spec::new(V3, 1024, 2, (1, 1), &[1, 2]),
                Spec::new(V1_LZ4, 1024, 3, (2, 2), &[3]),
                Spec::new(V1, 1024, 3, (3, 5), &[1, 2]).wal(32, 2080, 3, 4),
            ],
        ),
        V1_LZ4,
    );
    let vectors = |names: &[&str]| -> Vec<Vec<u8>> {
        names
            .iter()
            .map(|n| fs::read(fixtures.join("pg1024/ltx/0").join(n)).unwrap_or_else(|e| panic!("{n}: {e}")))
            .collect()
    };
    add(
        "litestream-pg1024-71-72.bin",
        vectors(&["0000000000000071-0000000000000071.ltx", "0000000000000072-0000000000000072.ltx"]),
        V3,
    );
    add(
        "litestream-pg1024-snapshot-1-2.bin",
        vectors(&["0000000000000001-0000000000000001.ltx", "0000000000000002-0000000000000002.ltx"]),
        V3,
    );
    seeds
}

/// Segment files written by a real vault: LiteFS-style uploads, Litestream files and a
/// deletion (a tombstone), in 4 KiB segments so the log rotates. Each is cut just past its
/// last record (the zeros after it say nothing new) and prefixed with a control byte.
fn segment_seeds(fixtures: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = std::env::temp_dir().join(format!("ltxvault-make-corpus-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let config = VaultConfig {
        io: IoChoice::Std,
        segment_bytes: 4 << 10,
        background_compaction: false,
        ..VaultConfig::default()
    };
    let vault = Vault::open_with_clock(&dir, config, ManualClock::new(1_765_000_000_000)).expect("open a vault");
    let files = chain(
        512,
        &[
            Spec::new(V1, 512, 3, (1, 1), &[1, 2, 3]),
            Spec::new(V1, 512, 5, (2, 3), &[2, 5]),
            Spec::new(V1_LZ4, 512, 2, (4, 4), &[1]),
        ],
    );
    for file in &files {
        vault.ingest("prod", "app.db", file.clone()).expect("ingest a seed file");
    }
    for n in 1..=3 {
        let name = format!("pg1024/ltx/0/{n:016x}-{n:016x}.ltx");
        let bytes = fs::read(fixtures.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        vault.ingest("prod", "lite.db", bytes).expect("ingest a Litestream file");
    }
    vault.delete_database("prod", "app.db").expect("delete");
    vault.ingest("prod", "app.db", files[0].clone()).expect("ingest after the deletion");
    vault.close().expect("close the vault");
    let read = |id: u64| fs::read(dir.join(format!("l0/{id:016x}.seg"))).expect("read a segment");
    let last_id =
        (2..).take_while(|id| dir.join(format!("l0/{id:016x}.seg")).exists()).last().expect("the log rotated");
    let (first, last) = (read(1), read(last_id));
    let _ = fs::remove_dir_all(&dir);
    let trim = |mut bytes: Vec<u8>, id: u64, is_last: bool, seq: Option<u64>| {
        let tail = scan(&bytes, id, is_last, seq).expect("a segment the vault wrote scans").tail as usize;
        bytes.truncate(tail + 64);
        bytes
    };
    let first = trim(first, 1, false, None);
    let last = trim(last, last_id, true, None);
    let with = |ctrl: u8, bytes: &[u8]| [&[ctrl][..], bytes].concat();
    // A torn tail: the last record's payload half written.
    let records = scan(&last, last_id, true, None).expect("scan").records;
    let (at, header) = records.last().expect("the last segment has records");
    let mut torn = last.clone();
    let cut = *at as usize + header.header_len() + header.payload_len as usize / 2;
    torn[cut..].fill(0);
    vec![
        ("sealed.bin".to_string(), with(FROM_SEQ_1, &first)),
        ("sealed-resealed.bin".to_string(), with(RESEAL | FROM_SEQ_1, &first)),
        ("last.bin".to_string(), with(LAST, &last)),
        ("last-resealed.bin".to_string(), with(LAST | RESEAL, &last)),
        ("last-torn.bin".to_string(), with(LAST | RESEAL, &torn)),
    ]
}

/// Builds one step of an HTTP seed.
fn step(line: &str, headers: &[(&str, &str)], body: &str) -> Step {
    let (open, line) = match line.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (method, target) = line.split_once(' ').unwrap_or((line, ""));
    Step {
        open,
        method: method.into(),
        target: target.into(),
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        body: body.as_bytes().to_vec(),
    }
}

/// Request sequences that reach every endpoint, most of them with success, some refused.
fn http_seeds() -> Vec<(String, Vec<u8>)> {
    let t1 = [("Authorization", "$T1"), ("Litefs-Cluster-Id", CLUSTER_ID)];
    let t2 = [("Authorization", "$T2")];
    let admin = [("Authorization", "$TA")];
    let open = [("Authorization", "cluster c3")];
    let seeds: Vec<(&str, Vec<Step>)> = vec![
        (
            "reads.txt",
            vec![
                step("GET /pos", &t1, ""),
                step("GET /dbs", &t1, ""),
                step("GET /db/info?db=fs", &t2, ""),
                step("GET /db/snapshot?db=lite", &t1, ""),
                step("GET /db/snapshot?db=lite&format=sqlite&txid=3", &t1, ""),
                step("GET /pos?cluster=c2", &admin, ""),
            ],
        ),
        (
            "litestream-uploads.txt",
            vec![
                step("POST /db/tx?db=lite", &t1, "$U0"),
                step("POST /db/tx?db=lite", &[("Authorization", "$T1"), ("Fuzz-Chunks", "3")], "$U1"),
                step("GET /db/snapshot?db=lite&txid=5", &t1, ""),
            ],
        ),
        (
            "litefs-uploads-compact-restore.txt",
            vec![
                step("POST /db/tx?db=fs", &t2, "$U2"),
                step("POST /db/tx?db=fs", &t2, "$U3"),
                step("COMPACT /", &[], ""),
                step("GET /db/restore/check?db=fs&txid=2", &t2, ""),
                step("POST /db/restore?db=fs&timestamp=2025-12-06T04:46:42Z", &t2, ""),
                step("GET /db/snapshot?db=fs", &t2, ""),
            ],
        ),
        (
            "open-create-delete.txt",
            vec![
                step("!POST /db/tx?db=new", &open, "$U4"),
                step("!POST /db/tx?db=other", &open, "$U5"),
                step("!GET /pos?cluster=c3", &[], ""),
                step("!DELETE /db?db=new&cluster=c3", &[], ""),
                step("RETAIN /", &[], ""),
            ],
        ),
        (
            "upload-and-clones.txt",
            vec![
                step("POST /db/upload?db=up", &t2, "$S"),
                step("POST /db/clone?db=fs&to_db=fs2", &t2, ""),
                step("POST /cluster/clone?cluster=c1&to_cluster=c2", &admin, ""),
            ],
        ),
        (
            "refused.txt",
            vec![
                step("POST /db/tx?db=fs", &t1, "$U2 @120=ff"),
                step("POST /db/tx?db=lite", &[("Authorization", "$T1"), ("Fuzz-Cut", "1")], "$U0"),
                step("POST /db/tx?db=lite", &[("Authorization", "$T1x")], "$U0 #200"),
                step("POST /db/tx?db=lite", &[("Authorization", "$T1"), ("Content-Length", "999999999")], "$U0"),
                step("GET /db/snapshot?db=fs&txid=99&cluster=c2", &t1, ""),
                step("POST /db/restore?db=fs", &t1, ""),
                step("PUT /db/tx?db=fs", &t1, ""),
            ],
        ),
    ];
    seeds.into_iter().map(|(name, steps)| (name.to_string(), unparse(&steps))).collect()
}

/// Replaces the `*.ltx` / `*.bin` / `*.txt` files of `dir` with `seeds`.
fn write_dir(dir: &Path, seeds: &[(String, Vec<u8>)]) {
    fs::create_dir_all(dir).expect("create seed directory");
    for entry in fs::read_dir(dir).expect("read seed directory") {
        let path = entry.expect("seed directory entry").path();
        if path.extension().is_some_and(|e| e == "ltx" || e == "bin" || e == "txt") {
            fs::remove_file(&path).expect("remove old seed");
        }
    }
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).expect("write seed");
    }
}

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixtures = fuzz.join("../tests/fixtures/litestream-0.5.17");
    let decode = decode_seeds(&fixtures);
    for (name, bytes) in &decode {
        // A seed that does not decode teaches the fuzzer little; refuse to write one.
        let summary =
            check_decode(bytes).detected.unwrap_or_else(|e| panic!("decode seed {name} does not decode: {e}"));
        // The name says which version the seed is meant to be; detection must agree, or
        // the seed exercises a different decoder path than its name promises.
        let expected = match &name[..3] {
            "v1-" => Version::V1,
            "v2-" => Version::V2,
            _ => Version::V3,
        };
        assert_eq!(summary.version, expected, "decode seed {name}");
    }
    let merge = merge_seeds(&fixtures);
    for (name, bytes) in &merge {
        if let Err(e) = check_merge(bytes) {
            panic!("merge seed {name} does not merge: {e}");
        }
    }
    let segment = segment_seeds(&fixtures);
    for (name, bytes) in &segment {
        let scanned = check_segment(bytes).unwrap_or_else(|e| panic!("segment seed {name} does not scan: {e:?}"));
        assert!(!scanned.records.is_empty(), "segment seed {name} has no records");
    }
    let http = http_seeds();
    let dir = std::env::temp_dir().join(format!("ltxvault-make-corpus-http-{}", std::process::id()));
    let harness = Harness::new(&dir);
    for (name, bytes) in &http {
        for exchange in harness.run(bytes) {
            assert!(exchange.status.is_some(), "http seed {name}: {} was not sent", exchange.request);
        }
    }
    drop(harness);
    let _ = fs::remove_dir_all(&dir);
    write_dir(&fuzz.join("seeds/ltx_decode"), &decode);
    write_dir(&fuzz.join("seeds/ltx_merge"), &merge);
    write_dir(&fuzz.join("seeds/segment_record"), &segment);
    write_dir(&fuzz.join("seeds/http_router"), &http);
    let all = [&decode, &merge, &segment, &http];
    let total: usize = all.iter().flat_map(|s| s.iter()).map(|(_, b)| b.len()).sum();
    println!(
        "wrote {} decode, {} merge, {} segment and {} http seeds, {total} bytes",
        decode.len(),
        merge.len(),
        segment.len(),
        http.len()
    );
}
