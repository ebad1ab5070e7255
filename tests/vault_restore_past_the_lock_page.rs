//! A database larger than 1 GiB: its pages run past SQLite's lock page (the page holding
//! file offset 0x4000_0000, which SQLite never uses and LTX never stores). Built by SQLite
//! itself, uploaded as one snapshot, restored: the result must be the same bytes and pass
//! `PRAGMA integrity_check`. Then compacted into a daily image (the snapshot is stamped in
//! 1970, so every window is closed) and restored from that image with a kernel copy: the
//! same again.

use std::io::{BufWriter, Write};

use ltxvault::io::MappedFile;
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::{Encoder, Format, Header, PageNo, TxId, database_file_checksum};
use ltxvault::restore::Target;
use ltxvault::{Vault, VaultConfig};

const PAGE_SIZE: u32 = 65536;

#[test]
fn a_database_past_the_lock_page_restores_intact() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the target disk");
    let db_path = dir.path().join("big.db");
    {
        let conn = rusqlite::Connection::open(&db_path).expect("open sqlite");
        conn.execute_batch(&format!(
            "PRAGMA page_size = {PAGE_SIZE}; PRAGMA journal_mode = DELETE; CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);"
        ))
        .expect("schema");
        let tx = conn.unchecked_transaction().expect("begin");
        // 1,100 blobs of 1 MiB: about 1.1 GiB, well past the lock page at 1 GiB.
        let mut stmt = tx.prepare("INSERT INTO t (v) VALUES (?1)").expect("prepare");
        let mut blob = vec![0u8; 1 << 20];
        for i in 0..1100u32 {
            for (j, chunk) in blob.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&(i.wrapping_mul(2_654_435_761) ^ j as u32).to_le_bytes());
            }
            stmt.execute([&blob]).expect("insert");
        }
        drop(stmt);
        tx.commit().expect("commit");
    }
    let original = MappedFile::open(&db_path).expect("map db");
    let commit = (original.len() / PAGE_SIZE as usize) as u32;
    let lock = PageNo::lock_page(PAGE_SIZE);
    assert!(commit > lock.0 + 10, "the database ({commit} pages) reaches past the lock page ({lock})");
    let checksum = database_file_checksum(&db_path, PAGE_SIZE).expect("checksum");

    // One LiteFS-style snapshot of every page but the lock page.
    let ltx_path = dir.path().join("snapshot.ltx");
    {
        let header = Header { page_size: PAGE_SIZE, commit, min_txid: TxId(1), max_txid: TxId(1), ..Header::default() };
        let mut out = BufWriter::new(std::fs::File::create(&ltx_path).expect("create ltx"));
        let mut enc = Encoder::new(&mut out, &header, Format::V1 { compress: false }).expect("header");
        for (i, page) in original.chunks(PAGE_SIZE as usize).enumerate() {
            let pgno = PageNo(i as u32 + 1);
            if pgno != lock {
                enc.write_page(pgno, page).expect("page");
            }
        }
        enc.finish(checksum).expect("finish");
        out.flush().expect("flush");
    }

    let config = VaultConfig {
        io: IoChoice::Std,
        max_upload_bytes: 4 << 30,
        background_compaction: false,
        ..VaultConfig::default()
    };
    let vault = Vault::open(&dir.path().join("vault"), config).expect("open vault");
    let upload = MappedFile::open(&ltx_path).expect("map ltx");
    let ack = vault.ingest("c", "big", ltxvault::ingest::Payload::new(upload)).expect("ingest");
    assert_eq!(ack.position.checksum, checksum);
    std::fs::remove_file(&ltx_path).expect("remove ltx");

    let restored = dir.path().join("restored.db");
    vault.restore("c", "big", Target::Latest, &restored, false).expect("restore");
    let restored_map = MappedFile::open(&restored).expect("map restored");
    assert_eq!(restored_map.len(), original.len());
    assert!(restored_map[..] == original[..], "the restored database is the original, byte for byte");
    drop(restored_map);

    let conn = rusqlite::Connection::open(&restored).expect("open restored");
    let result: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("integrity_check");
    assert_eq!(result, "ok");
    let rows: i64 = conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0)).expect("count");
    assert_eq!(rows, 1100);
    drop(conn);
    std::fs::remove_file(&restored).expect("remove the first restore");

    assert_eq!(vault.compact_now().expect("compact"), 3, "an L1 file, an L2 file and an image");
    let (plan, _) = vault.plan_restore("c", "big", Target::Latest).expect("plan");
    assert_eq!(plan.inputs.len(), 1);
    assert_eq!(plan.inputs[0].level, 3, "the latest point is the image");
    vault.restore("c", "big", Target::Latest, &restored, false).expect("restore from the image");
    let restored_map = MappedFile::open(&restored).expect("map restored");
    assert!(restored_map[..] == original[..], "the restore from the image is the original, byte for byte");
    drop(restored_map);
    let conn = rusqlite::Connection::open(&restored).expect("open restored");
    let result: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("integrity_check");
    assert_eq!(result, "ok");
}
