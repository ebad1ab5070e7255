//! Export: a database's history as a Litestream 0.5 file replica, which
//! `litestream restore -o OUT.db file:///<out_dir>` restores, to the latest point or to
//! any exported TXID (`-txid`) or time (`-timestamp`).
//!
//! ```text
//! <out_dir>/ltx/9/0000000000000001-<S>.ltx     one snapshot: the database at TXID S
//! <out_dir>/ltx/0/<min>-<max>.ltx              one file per stored L0 run after S
//! ```
//!
//! That is all a file replica is: Litestream lists `ltx/<level>/` and parses the names
//! (16 lowercase hex digits each); there is no other metadata. S is the end of the first
//! L0 run when the log starts at TXID 1 (the usual case; the first run, a snapshot, is
//! then also written to level 0 as Litestream does), otherwise the TXID just before it;
//! when retention has let every L0 record of the database go, S is its latest point and
//! the snapshot is the whole replica.
//! The snapshot is built by a verified `Vault::restore` to S, so it does not depend on how
//! that part of the history is stored. Level files of the vault are not exported: every
//! L0 run is, so every restore point of level 0 is one of the replica.
//!
//! Every file is v3-block, written as Litestream 0.5.17 writes its own (checked against
//! the vectors in `shared/vectors/litestream-0.5.17`):
//!
//! * header flags = NoChecksum (`0x2`), so pre- and post-apply checksums are 0; only the
//!   file checksum is present. Node ID 0. WAL offset, size and salts 0: the vault never
//!   saw the WAL, and 0 is what Litestream's own compacted files carry.
//! * header timestamp = the run's effective (per-database monotonic) timestamp, the one
//!   `Vault::restore` resolves timestamps against; the snapshot carries its point's.
//! * the file's mtime = the header timestamp. The file backend takes a file's creation
//!   time from its mtime, and `restore -timestamp T` keeps files created strictly before T
//!   (see [`timestamp_flag`] for the value that selects the same point as the vault).
//!
//! One thing is added to what the vault stores. Litestream's restore compacts the files
//! it picks into one and truncates by the *last* file's Commit only, so a page cut off by
//! a shrink and not rewritten when the database grew back would reappear with its old
//! contents (and a page no file holds makes the snapshot it builds incomplete). Litestream
//! avoids both by writing, whenever Commit grows, every page between the old and the new
//! Commit. The export does the same: pages in `(previous commit, commit]` that a run does
//! not hold are written as zero pages, which is what they are after the run (cut, then
//! regrown). Replaying the export file by file therefore gives the same images as before.
//!
//! Durability: each file is written as `<name>.tmp` (a name Litestream ignores), its
//! mtime set, fsynced (data and mtime), and renamed; every directory is fsynced before the
//! export returns. An export that fails leaves a partial replica behind: remove it.
//! (`ltxvault export-litestream` exports into a staging directory and renames it into
//! place, so its OUT_DIR is never partial.)

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::catalog::Run;
use crate::error::{Error, Result};
use crate::io::fs::FileWriter;
use crate::io::{Fs, Sync};
use crate::ltx::format::HEADER_FLAG_NO_CHECKSUM;
use crate::ltx::{Checksum, Decoder, Encoder, Format, Header, PageNo, TxId, file_name};
use crate::restore::Target;
use crate::vault::Vault;

/// Litestream's level for full snapshots (`SnapshotLevel`).
pub const SNAPSHOT_LEVEL: u8 = 9;

/// Buffer between the encoder and each file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportReport {
    /// The snapshot's TXID (the end of its range `1..=snapshot`).
    pub snapshot: TxId,
    /// Level-0 files written.
    pub l0_files: usize,
    /// First and last TXID of level 0 (the last is the newest point exported); `None` when
    /// the vault holds no L0 records of the database (retention let them go), so the
    /// snapshot, at its latest point, is all there is.
    pub l0_range: Option<(TxId, TxId)>,
    /// Zero pages added where the database grew (see the module docs).
    pub growth_pages: u64,
    /// Bytes of all files written.
    pub bytes: u64,
}

/// Writes the history of `cluster`/`db` as a Litestream 0.5 file replica in `out_dir`,
/// which must be empty or not exist yet. See the module docs for the layout and the
/// conventions followed.
pub fn export_litestream(vault: &Vault, cluster: &str, db: &str, out_dir: &Path) -> Result<ExportReport> {
    export_litestream_with_progress(vault, cluster, db, out_dir, &mut |_, _| {})
}

/// [`export_litestream`], telling `progress` (files written, files to write) as it goes.
pub fn export_litestream_with_progress(
    vault: &Vault,
    cluster: &str,
    db: &str,
    out_dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ExportReport> {
    let runs = vault.runs(cluster, db);
    // The snapshot: the database at the point just before the L0 files that follow it, or
    // at its latest point when the log holds none of it.
    let snapshot = match runs.first() {
        Some(first) if first.min_txid == TxId(1) => first.max_txid,
        Some(first) => TxId(first.min_txid.0 - 1),
        None => vault.plan_restore(cluster, db, Target::Latest)?.0.txid,
    };
    let (plan, page_size) = vault.plan_restore(cluster, db, Target::TxId(snapshot))?;
    let total = 1 + runs.len();
    let fs = vault.fs();
    prepare_out_dir(fs, out_dir)?;
    let ltx_dir = out_dir.join("ltx");
    let level_dirs = [ltx_dir.join("0"), ltx_dir.join(SNAPSHOT_LEVEL.to_string())];
    for dir in &level_dirs {
        fs.make_dir(dir)?;
    }

    let image = out_dir.join(".export-snapshot.db");
    vault.restore(cluster, db, Target::TxId(snapshot), &image, false)?;
    let header = Header {
        flags: HEADER_FLAG_NO_CHECKSUM,
        page_size,
        commit: plan.commit,
        min_txid: TxId(1),
        max_txid: snapshot,
        timestamp_ms: plan.timestamp_ms,
        ..Header::default()
    };
    let written = write_file(fs, &level_dirs[1], &header, |encoder| encode_image(&image, encoder));
    let removed = fs.remove_file(&image);
    let mut bytes = written?;
    removed?;
    progress(1, total);

    let mut growth_pages = 0;
    let mut commit = plan.commit;
    let mut l0_files = 0;
    for run in &runs {
        let prev_commit = commit;
        let header = Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size,
            commit: run.commit,
            min_txid: run.min_txid,
            max_txid: run.max_txid,
            timestamp_ms: run.timestamp_ms,
            ..Header::default()
        };
        bytes += vault.read_run(run, |payload| {
            write_file(fs, &level_dirs[0], &header, |encoder| {
                growth_pages += encode_run(payload, run, prev_commit, encoder)?;
                Ok(())
            })
        })?;
        commit = run.commit;
        l0_files += 1;
        progress(1 + l0_files, total);
    }

    for dir in level_dirs.iter().map(PathBuf::as_path).chain([ltx_dir.as_path(), out_dir]) {
        fs.sync_dir(dir)?;
    }
    if let Some(parent) = out_dir.parent() {
        fs.sync_dir(parent)?;
    }
    let l0_range = runs.first().zip(runs.last()).map(|(first, last)| (first.min_txid, last.max_txid));
    Ok(ExportReport { snapshot, l0_files, l0_range, growth_pages, bytes })
}

/// The `-timestamp` value that makes `litestream restore` pick the point that
/// `Target::Timestamp(ms)` picks in the vault. Litestream keeps the files created
/// *strictly before* its timestamp, the vault the points at or before its own, and the
/// export stores millisecond timestamps: so one millisecond later, as RFC 3339.
pub fn timestamp_flag(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms.saturating_add(1))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// The `litestream` binary on `PATH`, if there is one.
pub fn litestream_on_path() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("litestream"))
        .find(|exe| exe.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Creates `out_dir` if needed and refuses one that holds anything.
fn prepare_out_dir(fs: &Fs, out_dir: &Path) -> Result<()> {
    match std::fs::read_dir(out_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Invalid(format!(
                    "{} is not empty; export into a new or empty directory",
                    out_dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs.make_dir(out_dir),
        Err(e) => Err(Error::io(format!("read {}", out_dir.display()), e)),
    }
}

type FileEncoder<'a> = Encoder<BufWriter<FileWriter<'a>>>;

/// Writes one LTX file `<dir>/<min>-<max>.ltx` durably (see the module docs), with the
/// pages `pages` gives the encoder; returns its size.
fn write_file(
    fs: &Fs,
    dir: &Path,
    header: &Header,
    pages: impl FnOnce(&mut FileEncoder<'_>) -> Result<()>,
) -> Result<u64> {
    let name = file_name(header.min_txid, header.max_txid);
    let path = dir.join(&name);
    let temp = dir.join(format!("{name}.tmp"));
    let io = |what: &'static str| {
        let temp = temp.display().to_string();
        move |e: std::io::Error| Error::io(format!("{what} {temp}"), e)
    };
    let result = (|| {
        let file = fs.create_new(&temp)?;
        let mut encoder = Encoder::new(
            BufWriter::with_capacity(WRITE_BUFFER_BYTES, fs.writer(&file, &temp)),
            header,
            Format::V3Block,
        )?;
        pages(&mut encoder)?;
        let (writer, _) = encoder.finish(Checksum::NONE)?;
        writer.into_inner().map_err(|e| e.into_error()).map_err(io("write"))?;
        file.set_modified(system_time(header.timestamp_ms)).map_err(io("set the mtime of"))?;
        fs.sync(&file, Sync::All, &temp)?;
        let len = file.metadata().map_err(io("stat"))?.len();
        fs.rename(&temp, &path)?;
        Ok(len)
    })();
    if result.is_err() {
        let _ = fs.remove_file(&temp);
    }
    result.map_err(|e: Error| e.in_file(&path))
}

/// Streams a restored database file into a snapshot encoder, page by page (the lock page
/// is read past, never stored).
fn encode_image(image: &Path, encoder: &mut FileEncoder<'_>) -> Result<()> {
    let header = *encoder.header();
    let file = File::open(image).map_err(|e| Error::io(format!("open {}", image.display()), e))?;
    let mut reader = BufReader::with_capacity(WRITE_BUFFER_BYTES, file);
    let mut page = vec![0u8; header.page_size as usize];
    let lock = header.lock_page();
    for pgno in (1..=header.commit).map(PageNo) {
        reader.read_exact(&mut page).map_err(|e| Error::io(format!("read {}", image.display()), e))?;
        if pgno != lock {
            encoder.write_page(pgno, &page)?;
        }
    }
    Ok(())
}

/// Decodes a stored run and writes its pages, with zero pages for the growth pages it
/// lacks (pages in `(prev_commit, commit]`; none for a snapshot). Returns how many it added.
fn encode_run(payload: &[u8], run: &Run, prev_commit: u32, encoder: &mut FileEncoder<'_>) -> Result<u64> {
    let mut decoder = Decoder::new(payload)?;
    let stored = *decoder.header();
    let header = *encoder.header();
    if (stored.min_txid, stored.max_txid, stored.commit, stored.page_size)
        != (run.min_txid, run.max_txid, run.commit, header.page_size)
    {
        return Err(Error::Invalid(format!(
            "stored run {}..{} (commit {}) holds a file for {}..{} (commit {}, page size {}), page size {} expected",
            run.min_txid,
            run.max_txid,
            run.commit,
            stored.min_txid,
            stored.max_txid,
            stored.commit,
            stored.page_size,
            header.page_size
        )));
    }
    let zero = vec![0u8; header.page_size as usize];
    let lock = header.lock_page();
    // The next growth page not yet written; past `run.commit` when there are none.
    let mut next = if stored.is_snapshot() { run.commit.saturating_add(1) } else { prev_commit.saturating_add(1) };
    let mut added = 0;
    let mut fill_to = |end: u32, next: &mut u32, encoder: &mut FileEncoder<'_>| -> Result<()> {
        while *next < end && *next <= run.commit {
            if PageNo(*next) != lock {
                encoder.write_page(PageNo(*next), &zero)?;
                added += 1;
            }
            *next += 1;
        }
        Ok(())
    };
    while let Some(page) = decoder.next_page()? {
        fill_to(page.pgno.0, &mut next, encoder)?;
        encoder.write_page(page.pgno, page.data)?;
        next = next.max(page.pgno.0.saturating_add(1));
    }
    fill_to(u32::MAX, &mut next, encoder)?;
    Ok(added)
}

/// A header timestamp (ms since the epoch, possibly negative) as a file time.
fn system_time(ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 { UNIX_EPOCH + magnitude } else { UNIX_EPOCH - magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_flag_is_one_millisecond_later() {
        assert_eq!(timestamp_flag(1_795_764_938_905), "2026-11-27T07:35:38.906Z");
        assert_eq!(timestamp_flag(-1), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn negative_timestamps_are_before_the_epoch() {
        assert_eq!(system_time(-1500), UNIX_EPOCH - Duration::from_millis(1500));
        assert_eq!(system_time(1500), UNIX_EPOCH + Duration::from_millis(1500));
    }
}
