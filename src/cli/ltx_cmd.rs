//! `ltxvault ltx inspect | apply`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::{MappedFile, TempFile};
use crate::ltx::{Decoder, Summary, apply_pages, database_file_checksum, format::HEADER_FLAG_COMPRESS_LZ4};

#[derive(Subcommand, Debug)]
pub(crate) enum LtxCommand {
    /// Decode and verify LTX files; print each one's header, trailer and page count.
    /// Exits non-zero if any file is corrupt.
    Inspect {
        /// LTX files (any version: LiteFS v1, Litestream v3).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON object per file, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Apply LTX files, in order, onto a database file. All files are verified first, and
    /// the result is written to a temporary file and renamed into place, so a bad file
    /// leaves the database as it was.
    Apply {
        /// The database file to create or update.
        #[arg(long)]
        db: PathBuf,
        /// LTX files, oldest first; each must continue the one before it.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub(crate) fn run(command: LtxCommand) -> Result<ExitCode> {
    match command {
        LtxCommand::Inspect { files, json } => inspect(&files, json),
        LtxCommand::Apply { db, files } => {
            let summary = apply(&db, &files)?;
            println!(
                "{}: applied {} file(s), TXID {} -> {}, {} pages of {} bytes",
                db.display(),
                files.len(),
                summary.first_txid,
                summary.last_txid,
                summary.commit,
                summary.page_size
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The JSON form of one inspected file. Checksums and TXIDs are 16 lowercase hex digits.
#[derive(Serialize)]
struct InspectJson<'a> {
    file: &'a str,
    version: &'static str,
    min_txid: String,
    max_txid: String,
    page_size: u32,
    commit: u32,
    timestamp_ms: i64,
    flags: u32,
    pre_apply_checksum: String,
    post_apply_checksum: String,
    file_checksum: String,
    page_count: u32,
    wal_offset: i64,
    wal_size: i64,
    wal_salt1: u32,
    wal_salt2: u32,
    node_id: u64,
}

fn inspect(files: &[PathBuf], json: bool) -> Result<ExitCode> {
    let mut failed = 0;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in files {
        match verify_file(path) {
            Ok(summary) => {
                let written =
                    if json { print_json(&mut out, path, &summary) } else { print_text(&mut out, path, &summary) };
                written.map_err(|e| Error::io("write to stdout", e))?;
            }
            Err(err) => {
                failed += 1;
                eprintln!("ltxvault: {err}");
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Maps and fully verifies one LTX file; errors carry the path.
fn verify_file(path: &Path) -> Result<Summary> {
    let map = MappedFile::open(path)?;
    Decoder::new(&map).and_then(|d| d.verify()).map_err(|e| Error::from(e).in_file(path))
}

fn version_label(summary: &Summary) -> &'static str {
    match (summary.version, summary.header.flags & HEADER_FLAG_COMPRESS_LZ4 != 0) {
        (crate::ltx::Version::V1, true) => "v1-lz4",
        (v, _) => v.name(),
    }
}

fn print_json(out: &mut impl Write, path: &Path, s: &Summary) -> std::io::Result<()> {
    let h = &s.header;
    let record = InspectJson {
        file: &path.to_string_lossy(),
        version: version_label(s),
        min_txid: h.min_txid.to_string(),
        max_txid: h.max_txid.to_string(),
        page_size: h.page_size,
        commit: h.commit,
        timestamp_ms: h.timestamp_ms,
        flags: h.flags,
        pre_apply_checksum: h.pre_apply_checksum.to_string(),
        post_apply_checksum: s.trailer.post_apply_checksum.to_string(),
        file_checksum: s.trailer.file_checksum.to_string(),
        page_count: s.page_count,
        wal_offset: h.wal_offset,
        wal_size: h.wal_size,
        wal_salt1: h.wal_salt1,
        wal_salt2: h.wal_salt2,
        node_id: h.node_id,
    };
    serde_json::to_writer(&mut *out, &record).map_err(std::io::Error::other)?;
    writeln!(out)
}

fn print_text(out: &mut impl Write, path: &Path, s: &Summary) -> std::io::Result<()> {
    let h = &s.header;
    let kind = if h.is_snapshot() { "snapshot" } else { "incremental" };
    writeln!(out, "{}", path.display())?;
    writeln!(out, "  format        {} ({kind})", version_label(s))?;
    writeln!(out, "  txid          {}-{}", h.min_txid, h.max_txid)?;
    writeln!(out, "  page size     {}", h.page_size)?;
    writeln!(out, "  commit        {} pages", h.commit)?;
    writeln!(out, "  timestamp     {} ({} ms)", format_timestamp(h.timestamp_ms), h.timestamp_ms)?;
    writeln!(out, "  flags         {:#010x}", h.flags)?;
    writeln!(out, "  pre-apply     {}", h.pre_apply_checksum)?;
    writeln!(out, "  post-apply    {}", s.trailer.post_apply_checksum)?;
    writeln!(out, "  file checksum {}", s.trailer.file_checksum)?;
    writeln!(out, "  pages         {} (highest {})", s.page_count, s.max_pgno)?;
    if h.wal_offset != 0 || h.wal_salt1 != 0 || h.wal_salt2 != 0 {
        writeln!(
            out,
            "  wal           offset {} size {} salts {:08x}/{:08x}",
            h.wal_offset, h.wal_size, h.wal_salt1, h.wal_salt2
        )?;
    }
    if h.node_id != 0 {
        writeln!(out, "  node id       {:016x}", h.node_id)?;
    }
    Ok(())
}

/// RFC 3339 with milliseconds in UTC, as LTX tools print timestamps.
fn format_timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| "out of range".into())
}

/// What an apply produced.
pub(crate) struct ApplySummary {
    first_txid: crate::ltx::TxId,
    last_txid: crate::ltx::TxId,
    commit: u32,
    page_size: u32,
}

/// Verifies every file and their chaining, then applies them onto a temporary copy of the
/// database and renames it into place once the result's checksum (when the files carry
/// one) is right.
fn apply(db: &Path, files: &[PathBuf]) -> Result<ApplySummary> {
    let maps = files.iter().map(|p| MappedFile::open(p)).collect::<Result<Vec<_>>>()?;
    let mut summaries = Vec::with_capacity(files.len());
    for (path, map) in files.iter().zip(&maps) {
        let summary = Decoder::new(map).and_then(|d| d.verify()).map_err(|e| Error::from(e).in_file(path))?;
        if let Some(prev) = summaries.last().map(|s: &Summary| s.header) {
            let h = summary.header;
            if h.page_size != prev.page_size {
                return Err(Error::Invalid(format!(
                    "{}: page size {} differs from the previous file's {}",
                    path.display(),
                    h.page_size,
                    prev.page_size
                )));
            }
            if !h.min_txid.follows(prev.max_txid) {
                return Err(Error::Invalid(format!(
                    "{}: starts at TXID {}, but the previous file ends at {}",
                    path.display(),
                    h.min_txid,
                    prev.max_txid
                )));
            }
        }
        summaries.push(summary);
    }
    let first = summaries[0].header;
    let page_size = first.page_size;
    let existing = std::fs::metadata(db).ok().filter(|m| m.len() > 0);
    let temp = TempFile::create_output(db)?;
    if !first.is_snapshot() {
        let Some(meta) = existing else {
            return Err(Error::Invalid(format!(
                "{} does not exist or is empty, and {} is not a snapshot (it starts at TXID {}): apply a snapshot first",
                db.display(),
                files[0].display(),
                first.min_txid
            )));
        };
        if !meta.len().is_multiple_of(u64::from(page_size)) {
            return Err(Error::Invalid(format!(
                "{}: size {} is not a multiple of the LTX page size {page_size}",
                db.display(),
                meta.len()
            )));
        }
        if first.has_checksums() {
            let current = database_file_checksum(db, page_size)?;
            if current != first.pre_apply_checksum {
                return Err(Error::Invalid(format!(
                    "{}: database checksum {current} is not the pre-apply checksum {} of {}: it is not the state this file continues",
                    db.display(),
                    first.pre_apply_checksum,
                    files[0].display()
                )));
            }
        }
        if !first.has_checksums() {
            eprintln!(
                "ltxvault: warning: {} carries no database checksums (Litestream files never do), so nothing can confirm that {} holds the state it continues (TXID {})",
                files[0].display(),
                db.display(),
                first.min_txid.0 - 1
            );
        }
        std::fs::copy(db, temp.path())
            .map_err(|e| Error::io(format!("copy {} to a temporary file", db.display()), e))?;
    }
    for (path, map) in files.iter().zip(&maps) {
        let mut decoder = Decoder::new(map).map_err(|e| Error::from(e).in_file(path))?;
        apply_pages(temp.file(), &mut decoder, page_size).map_err(|e| e.in_file(path))?;
    }
    let last = summaries[summaries.len() - 1];
    if last.header.has_checksums() {
        let result = database_file_checksum(temp.path(), page_size)?;
        if result != last.trailer.post_apply_checksum {
            return Err(Error::Invalid(format!(
                "result has database checksum {result}, but {} says {}: not written",
                files[files.len() - 1].display(),
                last.trailer.post_apply_checksum
            )));
        }
    }
    temp.commit()?;
    Ok(ApplySummary {
        first_txid: first.min_txid,
        last_txid: last.header.max_txid,
        commit: last.header.commit,
        page_size,
    })
}
