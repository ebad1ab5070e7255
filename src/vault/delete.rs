//! Deleting a database: a tombstone record in the log, then its files.
//!
//! A database's L0 records share log segments with other databases' records, so they
//! cannot be removed when it is deleted. Instead a tombstone record (see
//! `segment::format`) goes into the log, and everything of the database before it is
//! deleted history from then on:
//!
//! ```text
//!  delete_database                              open (recovery)
//!  ────────────────────────────────────────     ──────────────────────────────────────────
//!  compaction passes, retention gate, db lock   last tombstone of every database in the log
//!  tombstone ──► log writer ──► fdatasync       records before it: skipped
//!  (failure: poisoned, nothing removed)         tombstone is the database's last record:
//!  remove levels/<hash>/ and sums/<hash>.sums     remove its files again (a crash between
//!  (failure: poisoned; the reopen removes them)   the fsync and the removal left them)
//!  mark the state deleted, drop it from the     retention: records before the tombstone,
//!  catalog, let go of the lock                    and the tombstone itself, are expired
//! ```
//!
//! Why a level directory found at open belongs to the history after the database's last
//! tombstone whenever records follow that tombstone: the old history's files are removed
//! before the deletion lets go of the database (or the vault is poisoned, and only a
//! reopen, which removes them first, accepts uploads again), so no upload of a new history
//! can come before that removal. Records of the new history cannot have left the log while
//! the tombstone is still in it, because segments are deleted oldest first.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Vault, lock, sums_path};
use crate::catalog::{Catalog, DbKey, Position};
use crate::compact::db_dir;
use crate::error::{Error, Result};
use crate::ingest::{Payload, payload_checksum};
use crate::io::Fs;
use crate::ltx::{Checksum, TxId};
use crate::names;
use crate::segment::Found;
use crate::segment::format::{KIND_TOMBSTONE, RecordHeader};

impl Vault {
    /// Deletes a database: its history (every level), its restore points, its position.
    /// Afterwards it is gone from [`Vault::databases`], [`Vault::position`] and restores,
    /// and stays gone after a reopen; an upload of a snapshot under the same name starts a
    /// new history at TXID 1. Unknown database: [`Error::NotFound`].
    ///
    /// A tombstone record is made durable in the log first; only then are the database's
    /// level files, images and page-checksum map removed. A failure before the tombstone is
    /// durable changes nothing; one after it poisons the vault, and the reopen finishes the
    /// deletion. Waits for running compaction passes and restores of any database (they
    /// may be reading this one's files); uploads to the database wait for the deletion and
    /// then start the new history.
    pub fn delete_database(&self, cluster: &str, db: &str) -> Result<()> {
        if let Some(reason) = self.poison.reason() {
            return Err(Error::Poisoned(reason));
        }
        names::validate("cluster", cluster)?;
        names::validate("database", db)?;
        let key = DbKey { cluster: cluster.to_string(), db: db.to_string() };
        let not_found = || Error::NotFound { cluster: cluster.into(), db: db.into() };
        // The order every other path takes these in: compaction passes, then the gate
        // (restores, retention), then the database.
        let _passes: Vec<_> =
            self.compactor.passes.iter().map(|pass| pass.lock().unwrap_or_else(|e| e.into_inner())).collect();
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let entry = self.catalog.get(&key).ok_or_else(not_found)?;
        let mut state = lock(&entry);
        // An upload in flight is answered first, so that the pending position the
        // tombstone records is one the log will hold.
        while let Some(busy) = state.in_flight.clone() {
            drop(state);
            let _ = busy.recv();
            state = lock(&entry);
        }
        if state.deleted || state.pending.txid == TxId::ZERO {
            return Err(not_found());
        }
        let now = self.clock.now_ms();
        // Queued under the database's lock: it enters the log after every record of the
        // history it deletes, including uploads still waiting for their fsync.
        let tombstone = RecordHeader {
            kind: KIND_TOMBSTONE,
            seq: 0,
            batch_offset: 0,
            cluster: key.cluster.clone(),
            db: key.db.clone(),
            min_txid: state.pending.txid,
            max_txid: state.pending.txid,
            timestamp_ms: now,
            effective_ms: now,
            received_ms: now,
            pre_apply: state.pending.checksum,
            post_apply: Checksum::NONE,
            commit: state.pending_commit,
            page_size: state.page_size,
            payload_len: 0,
            payload_xxh3: payload_checksum(&[]),
        };
        let done = self.send_to_writer(tombstone, Payload::new(Vec::new()))?;
        let written = done.recv().map_err(|_| {
            self.poison.poison("the log writer stopped without answering".into());
            Error::Poisoned("the log writer stopped without answering".into())
        })?;
        let (_, seq) = written?;
        // The deletion is durable. Removing the files comes before the state leaves the
        // catalog: a new state for the same name opens the same page-checksum map path.
        self.catalog.set_tombstone(&key, seq);
        if let Err(e) = remove_db_files(&self.fs, &self.dir, &key) {
            self.poison.poison(format!(
                "{cluster}/{db} is deleted, but removing its files failed ({e}); reopening the vault finishes the deletion"
            ));
            return Err(e);
        }
        state.deleted = true;
        self.catalog.usage.sub(cluster, std::mem::take(&mut state.stored_bytes));
        state.runs.clear();
        state.levels.iter_mut().for_each(Vec::clear);
        state.pending = Position::default();
        state.durable = Position::default();
        self.catalog.remove(&key);
        drop(state);
        self.drills.forget(&key);
        tracing::info!(cluster, db, tombstone = seq, "database deleted");
        Ok(())
    }
}

/// At open, before the level files are loaded: finds the newest tombstone of every
/// database in the recovered log, tells the catalog (retention needs it), and removes the
/// files of every database whose last record is its tombstone (a crash may have come
/// between the tombstone's fsync and their removal; removing what is already gone is a
/// no-op). Returns, per database with a tombstone, the index in `records` of its newest
/// tombstone: the records before it are deleted history.
pub(super) fn recover_tombstones(
    fs: &Fs,
    vault_dir: &Path,
    records: &[Found],
    catalog: &Catalog,
) -> Result<BTreeMap<DbKey, usize>> {
    let mut tombstones: BTreeMap<DbKey, usize> = BTreeMap::new();
    let mut last_record: BTreeMap<DbKey, usize> = BTreeMap::new();
    for (i, found) in records.iter().enumerate() {
        let h = &found.header;
        let key = DbKey { cluster: h.cluster.clone(), db: h.db.clone() };
        if h.kind == KIND_TOMBSTONE {
            catalog.set_tombstone(&key, h.seq);
            tombstones.insert(key.clone(), i);
        }
        last_record.insert(key, i);
    }
    for (key, at) in &tombstones {
        if last_record.get(key) == Some(at) {
            remove_db_files(fs, vault_dir, key)?;
        }
    }
    Ok(tombstones)
}

/// Removes a database's level directory (level files, images, NAME) and its page-checksum
/// map, and syncs the directories that held them. What is already gone is skipped.
fn remove_db_files(fs: &Fs, vault_dir: &Path, key: &DbKey) -> Result<()> {
    let levels_dir = vault_dir.join("levels");
    if fs.remove_dir_all(&db_dir(&levels_dir, &key.cluster, &key.db))? {
        fs.sync_dir(&levels_dir)?;
    }
    let sums_dir = vault_dir.join("sums");
    if fs.remove_file(&sums_path(&sums_dir, key))? {
        fs.sync_dir(&sums_dir)?;
    }
    Ok(())
}
