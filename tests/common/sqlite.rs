//! A real SQLite database, changed through rusqlite, whose every transaction becomes a
//! LiteFS-style upload (the pages that changed, as an LTX v1 file): histories that
//! SQLite's own integrity check can judge after a restore.

use std::path::{Path, PathBuf};

use super::ModelDb;

/// A database file and the model of what the vault has of it.
pub struct SqliteHistory {
    path: PathBuf,
    connection: rusqlite::Connection,
    /// What has been uploaded so far.
    pub model: ModelDb,
}

impl SqliteHistory {
    /// A new database at `path` (rollback journal, so the file holds every committed
    /// transaction) with 4 KiB pages, a table and an index; the model starts at
    /// `timestamp_ms` with nothing uploaded.
    pub fn new(path: &Path, timestamp_ms: i64) -> SqliteHistory {
        let connection = rusqlite::Connection::open(path).expect("open sqlite");
        connection
            .execute_batch(
                "PRAGMA page_size=4096; PRAGMA journal_mode=DELETE; PRAGMA synchronous=OFF;
                 CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT NOT NULL, n INTEGER);
                 CREATE INDEX t_n ON t(n);",
            )
            .expect("schema");
        let mut model = ModelDb::new(4096);
        model.timestamp_ms = timestamp_ms;
        SqliteHistory { path: path.to_path_buf(), connection, model }
    }

    /// Runs `sql` (one transaction) and returns the upload that carries it, `dt_ms` after
    /// the previous one.
    pub fn transact(&mut self, sql: &str, dt_ms: i64) -> Vec<u8> {
        self.connection.execute_batch(&format!("BEGIN; {sql}; COMMIT;")).expect("transaction");
        let image = std::fs::read(&self.path).expect("read the database");
        let (upload, next) = self.model.change_to(image, dt_ms);
        self.model = next;
        upload
    }

    /// Inserts `rows` rows of `bytes` bytes each (seeded by `n`), and deletes a few old
    /// ones now and then, so that pages are written, split and freed.
    pub fn insert(&mut self, n: u64, rows: u32, bytes: usize, dt_ms: i64) -> Vec<u8> {
        let body = format!("{n:08}-").repeat(bytes / 9 + 1);
        let body = &body[..bytes];
        let mut sql = String::new();
        for i in 0..rows {
            sql.push_str(&format!("INSERT INTO t(body, n) VALUES ('{body}', {});", (n * 7919 + u64::from(i)) % 1000));
        }
        if n % 5 == 4 {
            sql.push_str(&format!("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY n LIMIT {});", rows / 2 + 1));
        }
        self.transact(sql.trim_end_matches(';'), dt_ms)
    }
}
