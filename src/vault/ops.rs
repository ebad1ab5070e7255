//! Operations built on restore and ingest: a snapshot of any point streamed out, a
//! restore in place (the target state appended as a new transaction), an uploaded SQLite
//! file, clones of a database or of a whole cluster.
//!
//! Each starts, where it needs a database's bytes, with an ordinary restore (planned,
//! merged, checked against the recorded checksum) into a scratch file under
//! `<vault>/tmp/`, read back through a mapping released as it goes; the transactions it
//! writes are encoded into another scratch file and go through the ordinary ingest path,
//! so they are validated, durable and acknowledged like any upload. Memory stays flat
//! whatever the database size; the scratch files are removed when the operation ends
//! (and at the next open, should the process die first).

use std::io::Write;
use std::path::Path;

use super::{Ack, Vault, write_scratch};
use crate::catalog::{DbKey, Position, lock};
use crate::error::{Error, Result};
use crate::ingest::Payload;
use crate::io::{MappedFile, TempFile};
use crate::ltx::{Checksum, Header, TxId};
use crate::metrics::RestoreKind;
use crate::names;
use crate::restore::{Plan, Target};
use crate::snapshot;

/// What [`Vault::write_snapshot`] writes (also the values of `export --format` and of
/// `GET /db/snapshot?format=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SnapshotFormat {
    /// One LTX v1 snapshot, uncompressed: MinTXID 1, MaxTXID and post-apply checksum of
    /// the point, pre-apply 0, the point's timestamp, node ID 0, every page up to Commit
    /// but the lock page. What LiteFS's `GET /db/snapshot` expects.
    Ltx,
    /// The plain SQLite database: Commit × page size bytes, the lock page zeros.
    Sqlite,
}

impl SnapshotFormat {
    /// The name the CLI and the HTTP API use.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotFormat::Ltx => "ltx",
            SnapshotFormat::Sqlite => "sqlite",
        }
    }
}

/// What [`Vault::write_snapshot`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The point: its TXID and database checksum.
    pub position: Position,
    /// The point's timestamp (ms).
    pub timestamp_ms: i64,
    /// Database size in pages.
    pub commit: u32,
    /// Page size.
    pub page_size: u32,
    /// Bytes written.
    pub bytes: u64,
}

/// A restore point a target resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    /// Its TXID.
    pub txid: TxId,
    /// Its (monotonic) timestamp, ms.
    pub timestamp_ms: i64,
    /// The database checksum there.
    pub checksum: Checksum,
    /// Database size in pages there.
    pub commit: u32,
}

impl Point {
    fn of(plan: &Plan) -> Point {
        Point { txid: plan.txid, timestamp_ms: plan.timestamp_ms, checksum: plan.checksum, commit: plan.commit }
    }
}

/// What [`Vault::restore_in_place`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InPlace {
    /// The point the target resolved to.
    pub target: Point,
    /// The database's position afterwards: the new transaction's when one was appended,
    /// else the current one.
    pub position: Position,
    /// The database's HWM afterwards.
    pub hwm: TxId,
    /// Whether a transaction was appended (false for a dry run and for a target that is the
    /// current position).
    pub applied: bool,
}

/// What [`Vault::clone_cluster`] did, per database of the source cluster.
#[derive(Debug, Default)]
pub struct CloneReport {
    /// Databases cloned, with the clone's position.
    pub cloned: Vec<(String, Ack)>,
    /// Databases skipped and why: no restore point at the target
    /// ([`Error::NoSuchPoint`]), the destination exists ([`Error::AlreadyExists`]), or the
    /// source was deleted meanwhile ([`Error::NotFound`]).
    pub skipped: Vec<(String, Error)>,
}

impl Vault {
    /// Writes the state of `cluster`/`db` at `target` to `out` as `format` (see
    /// [`SnapshotFormat`]); returns the point written. An LTX snapshot's position is the
    /// point's, so for [`Target::Latest`] it equals what [`Vault::position`] reports; a
    /// database whose last transaction deleted it (Commit 0) gives a snapshot with no
    /// pages and checksum `8000000000000000`, or an empty SQLite file.
    ///
    /// Nothing is written to `out` before the state has been restored to a scratch file
    /// and checked against the recorded checksum: an unknown database
    /// ([`Error::NotFound`]) or target ([`Error::NoSuchPoint`]) fails before the first
    /// byte. An error after the first byte is a failure of `out` or of reading the scratch
    /// file back; the LTX trailer is then never written, so a reader sees a truncated file.
    pub fn write_snapshot(
        &self,
        cluster: &str,
        db: &str,
        target: Target,
        format: SnapshotFormat,
        out: &mut dyn Write,
    ) -> Result<SnapshotInfo> {
        self.timed(RestoreKind::Snapshot, || {
            let (plan, page_size, scratch) = self.restore_to_scratch(cluster, db, target)?;
            let image = MappedFile::open(scratch.path())?;
            let bytes = match format {
                SnapshotFormat::Ltx => {
                    let header = snapshot_header(&plan, page_size);
                    snapshot::write_ltx(&image, scratch.path(), &header, Some(plan.checksum), out)?.1
                }
                SnapshotFormat::Sqlite => snapshot::write_sqlite(&image, scratch.path(), page_size, plan.commit, out)?,
            };
            Ok(SnapshotInfo {
                position: Position { txid: plan.txid, checksum: plan.checksum },
                timestamp_ms: plan.timestamp_ms,
                commit: plan.commit,
                page_size,
                bytes,
            })
        })
    }

    /// Runs one restore of `kind` and counts it in the metrics (see
    /// [`Metrics::restore_done`](crate::metrics::Metrics::restore_done)).
    fn timed<T>(&self, kind: RestoreKind, restore: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = std::time::Instant::now();
        let result = restore();
        self.metrics.restore_done(kind, started.elapsed(), &result);
        result
    }

    /// Restores `cluster`/`db` to `target` in place, the way LiteFS Cloud does: appends
    /// ONE transaction, TXID current + 1, whose pre-apply checksum is the current one and
    /// whose pages are every page of the target state (Commit the target's, post-apply
    /// checksum the target's), through the ordinary ingest path. The history before it
    /// stays, so the restore can itself be undone by restoring to a point before it; a
    /// LiteFS primary sees the vault ahead of it and restores from its snapshot. The
    /// transaction's timestamp is the vault's clock.
    ///
    /// A target that resolves to the current position changes nothing; `dry_run` only
    /// resolves the target. Errors: unknown database [`Error::NotFound`]; a target after
    /// the current TXID, between restore points or before the retained history
    /// [`Error::NoSuchPoint`] (with the restorable window); an upload that lands between
    /// resolving and appending [`Error::PositionMismatch`] (nothing changed; retry).
    pub fn restore_in_place(&self, cluster: &str, db: &str, target: Target, dry_run: bool) -> Result<InPlace> {
        let not_found = || Error::NotFound { cluster: cluster.into(), db: db.into() };
        let (current, hwm) = self.position(cluster, db).ok_or_else(not_found)?;
        let (plan, _) = self.plan_restore(cluster, db, target)?;
        let point = Point::of(&plan);
        if dry_run || plan.txid == current.txid {
            return Ok(InPlace { target: point, position: current, hwm, applied: false });
        }
        let next = current.txid.0.checked_add(1).ok_or_else(|| {
            Error::Invalid(format!("{cluster}/{db} is at the largest TXID; no transaction can follow it"))
        })?;
        let ack = self.timed(RestoreKind::InPlace, || {
            let (plan, page_size, scratch) = self.restore_to_scratch(cluster, db, Target::TxId(plan.txid))?;
            let image = MappedFile::open(scratch.path())?;
            let header = Header {
                page_size,
                commit: plan.commit,
                min_txid: TxId(next),
                max_txid: TxId(next),
                timestamp_ms: self.clock.now_ms(),
                pre_apply_checksum: current.checksum,
                ..Header::default()
            };
            self.ingest_image(cluster, db, &image, scratch.path(), &header, Some(plan.checksum))
        })?;
        tracing::info!(cluster, db, target = %plan.txid, txid = %ack.position.txid, "restored in place");
        Ok(InPlace { target: point, position: ack.position, hwm: ack.hwm, applied: true })
    }

    /// Stores the SQLite database `file` as `cluster`/`db`: for a database the vault does
    /// not have, as a snapshot (TXID 1); over an existing one, as one transaction TXID
    /// current + 1 that rewrites every page (its page size must match:
    /// [`Error::PageSizeMismatch`]). The transaction's timestamp is the vault's clock.
    ///
    /// The file is checked first (see [`snapshot::sqlite_geometry`]): not SQLite, a bad page
    /// size or a torn length is [`Error::BadHeader`]; larger than the upload limit,
    /// [`Error::TooLarge`]. It is read through a mapping and must not change meanwhile.
    pub fn upload_sqlite(&self, cluster: &str, db: &str, file: &Path) -> Result<Ack> {
        names::validate("cluster", cluster)?;
        names::validate("database", db)?;
        let image = MappedFile::open(file)?;
        let limit = self.config.max_upload_bytes;
        if image.len() as u64 > limit {
            return Err(Error::TooLarge { size: image.len() as u64, limit });
        }
        let (page_size, commit) = snapshot::sqlite_geometry(&image)?;
        let now = self.clock.now_ms();
        let header = match self.position(cluster, db) {
            None => Header {
                page_size,
                commit,
                min_txid: TxId(1),
                max_txid: TxId(1),
                timestamp_ms: now,
                ..Header::default()
            },
            Some((current, _)) => {
                let stored = self.page_size_of(cluster, db);
                if let Some(expected) = stored.filter(|&stored| stored != page_size) {
                    return Err(Error::PageSizeMismatch { expected, got: page_size });
                }
                let next = TxId(current.txid.0.saturating_add(1));
                Header {
                    page_size,
                    commit,
                    min_txid: next,
                    max_txid: next,
                    timestamp_ms: now,
                    pre_apply_checksum: current.checksum,
                    ..Header::default()
                }
            }
        };
        self.ingest_image(cluster, db, &image, file, &header, None)
    }

    /// Makes the state of `from` (cluster, database) at `target` a new database `to`, in the
    /// same or another cluster: one snapshot upload with the point's TXID, checksum and
    /// timestamp, so the clone's position equals the source point's. The clone's history
    /// starts there. A destination that exists (even one deleted by a Commit-0
    /// transaction) is refused with [`Error::AlreadyExists`]; an unknown source is
    /// [`Error::NotFound`], a target it has no point for [`Error::NoSuchPoint`].
    pub fn clone_database(&self, from: (&str, &str), to: (&str, &str), target: Target) -> Result<Ack> {
        let (to_cluster, to_db) = to;
        names::validate("cluster", to_cluster)?;
        names::validate("database", to_db)?;
        let exists = || Error::AlreadyExists { cluster: to_cluster.into(), db: to_db.into() };
        if self.position(to_cluster, to_db).is_some() {
            return Err(exists());
        }
        self.timed(RestoreKind::Clone, || {
            let (plan, page_size, scratch) = self.restore_to_scratch(from.0, from.1, target)?;
            let image = MappedFile::open(scratch.path())?;
            let header = snapshot_header(&plan, page_size);
            match self.ingest_image(to_cluster, to_db, &image, scratch.path(), &header, Some(plan.checksum)) {
                // A snapshot fails to continue only a database that has data: one appeared.
                Err(Error::PositionMismatch { .. }) => Err(exists()),
                other => other,
            }
        })
    }

    /// Clones every database of cluster `from` into cluster `to` (see
    /// [`Vault::clone_database`]), each at `target` resolved against its own history (a
    /// timestamp gives each database its own last point at or before it). A database with
    /// no point at the target, or whose destination exists, is skipped and reported; any
    /// other error stops the clone there and is returned (the databases cloned so far
    /// stay, and a second call skips them as existing).
    pub fn clone_cluster(&self, from: &str, to: &str, target: Target) -> Result<CloneReport> {
        names::validate("cluster", to)?;
        let mut report = CloneReport::default();
        for info in self.databases(Some(from)) {
            match self.clone_database((from, &info.db), (to, &info.db), target) {
                Ok(ack) => report.cloned.push((info.db, ack)),
                Err(e @ (Error::NoSuchPoint(_) | Error::AlreadyExists { .. } | Error::NotFound { .. })) => {
                    report.skipped.push((info.db, e));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Restores `cluster`/`db` at `target` into a new scratch file (not synced: it lives as
    /// long as the operation), checked against the recorded checksum. Holds the restore
    /// gate while it reads, like any restore.
    fn restore_to_scratch(&self, cluster: &str, db: &str, target: Target) -> Result<(Plan, u32, TempFile)> {
        let _reading = self.gate.read().unwrap_or_else(|e| e.into_inner());
        let (plan, page_size) = self.plan_restore(cluster, db, target)?;
        let scratch = self.scratch_file("restore")?;
        write_scratch(&self.segments, &plan, page_size, &scratch)?;
        Ok((plan, page_size, scratch))
    }

    /// Encodes the database `image` as one LTX file after `header` (see
    /// [`snapshot::write_ltx`]) into a scratch file and ingests it without the upload size
    /// limit (it holds a whole database, which the limit is not about).
    fn ingest_image(
        &self,
        cluster: &str,
        db: &str,
        image: &MappedFile,
        name: &Path,
        header: &Header,
        expected: Option<Checksum>,
    ) -> Result<Ack> {
        let ltx = self.scratch_file("transaction")?;
        snapshot::write_ltx(image, name, header, expected, &mut ltx.writer())?;
        let payload = Payload::new(MappedFile::open(ltx.path())?);
        self.ingest_with_limit(cluster, db, payload, None)
    }

    /// The page size of a database the vault has.
    fn page_size_of(&self, cluster: &str, db: &str) -> Option<u32> {
        let state = self.catalog.get(&DbKey { cluster: cluster.into(), db: db.into() })?;
        let state = lock(&state);
        (!state.deleted && state.page_size != 0).then_some(state.page_size)
    }
}

/// The header of a snapshot of a planned point: TXIDs 1 to the point, its size and time.
fn snapshot_header(plan: &crate::restore::Plan, page_size: u32) -> Header {
    Header {
        page_size,
        commit: plan.commit,
        min_txid: TxId(1),
        max_txid: plan.txid,
        timestamp_ms: plan.timestamp_ms,
        ..Header::default()
    }
}
