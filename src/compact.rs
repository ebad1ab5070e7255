//! Compaction levels: L1 files hold one time window of L0 runs each (default 1 minute),
//! L2 files one window of L1 files (default 1 hour), and L3 is one database image per
//! window of L2 files (default a day; see `image`). Every level file is an LTX v1 file,
//! uncompressed, with the vault's own pre/post-apply checksums, so a restore reads its
//! pages straight from an mmap.
//!
//! ```text
//! <vault>/levels/<hash of names>/NAME                        cluster and database, checksummed
//! <vault>/levels/<hash of names>/L1-<min txid>-<max txid>-<xxh3 of header+trailer>.ltx
//! <vault>/levels/<hash of names>/L2-<min txid>-<max txid>-<xxh3 of header+trailer>.ltx
//! ```
//!
//! Policy ([`closed_windows`]) is pure: the runs of the level below that come after the last
//! run of this level are grouped by the window their (monotonic) timestamp falls in; a
//! window is closed once a later run of the database exists (imported history compacts at
//! once) or once the clock has passed the window's end plus a grace period (a quiet
//! database still gets its windows closed). The worker merges a closed window's runs with
//! [`PageMerge`] (inputs by mmap, pages never copied into a user buffer on the way) and
//! writes the file durably (temporary name, fdatasync, rename, directory fsync).

use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use crate::catalog::{Run, Source};
use crate::error::{Error, Result};
use crate::io::{Fs, MappedFile};
use crate::ltx::format::{HEADER_SIZE, TRAILER_SIZE};
use crate::ltx::{Checksum, Decoder, Encoder, Format, Header, PageMerge, Trailer, TxId};

/// Windows of each compaction level, in ms: L1, L2, L3.
pub const DEFAULT_LEVEL_INTERVALS_MS: [i64; 3] = [60_000, 3_600_000, 86_400_000];
/// How long each level keeps its restore points, in ms: L0 a day, L1 to L3 30 days.
pub const DEFAULT_RETENTION_MS: [Option<i64>; 4] =
    [Some(86_400_000), Some(30 * 86_400_000), Some(30 * 86_400_000), Some(30 * 86_400_000)];
/// How long after a window's end the clock must be before a quiet database's window closes.
pub const DEFAULT_GRACE_MS: i64 = 5_000;

/// The span of a run of any level, as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Last TXID.
    pub max_txid: TxId,
    /// Effective timestamp of its last transaction.
    pub timestamp_ms: i64,
}

/// Groups `below` (runs of the level below, oldest first, all after the last run of this
/// level) into windows of `interval_ms` and returns the index ranges of the closed ones.
pub fn closed_windows(below: &[Span], interval_ms: i64, grace_ms: i64, now_ms: i64) -> Vec<Range<usize>> {
    let window = |r: &Span| r.timestamp_ms.div_euclid(interval_ms);
    let mut out = Vec::new();
    let mut start = 0;
    while start < below.len() {
        let w = window(&below[start]);
        let end = start + below[start..].iter().take_while(|r| window(r) == w).count();
        let later_run_exists = end < below.len();
        let window_end = (w + 1).saturating_mul(interval_ms);
        if later_run_exists || now_ms >= window_end.saturating_add(grace_ms) {
            out.push(start..end);
        } else {
            break;
        }
        start = end;
    }
    out
}

/// The directory of a database's level files.
pub fn db_dir(levels_dir: &Path, cluster: &str, db: &str) -> PathBuf {
    levels_dir.join(format!("{:016x}", name_hash(cluster, db)))
}

/// The hash that names a database's files.
pub fn name_hash(cluster: &str, db: &str) -> u64 {
    let mut bytes = Vec::with_capacity(cluster.len() + db.len() + 1);
    bytes.extend_from_slice(cluster.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(db.as_bytes());
    xxh3_64(&bytes)
}

/// Creates a database's level directory with its NAME file (durably) if missing. A
/// failure can leave the directory without its NAME (or with only temporary files): the
/// next call finishes it, and opening the vault removes it if it holds nothing else.
pub fn ensure_db_dir(fs: &Fs, levels_dir: &Path, cluster: &str, db: &str) -> Result<PathBuf> {
    let dir = db_dir(levels_dir, cluster, db);
    if dir.join("NAME").exists() {
        return Ok(dir);
    }
    fs.make_dir(&dir)?;
    let body = format!("{cluster}\n{db}\n");
    let text = format!("{body}{:016x}\n", xxh3_64(body.as_bytes()));
    let temp = fs.temp_file(&dir.join("NAME"))?;
    temp.write_all_at(text.as_bytes(), 0)?;
    temp.commit()?;
    fs.sync_dir(levels_dir)?;
    Ok(dir)
}

/// Reads and checks a NAME file: (cluster, db).
pub fn read_db_name(dir: &Path) -> Result<(String, String)> {
    let path = dir.join("NAME");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let mut lines = text.lines();
    let (cluster, db, sum) = match (lines.next(), lines.next(), lines.next()) {
        (Some(c), Some(d), Some(s)) => (c, d, s),
        _ => return Err(Error::Corrupt { file: path, offset: 0, reason: "NAME file is not three lines".into() }),
    };
    let body = format!("{cluster}\n{db}\n");
    if format!("{:016x}", xxh3_64(body.as_bytes())) != sum {
        return Err(Error::Corrupt { file: path, offset: 0, reason: "NAME file checksum mismatch".into() });
    }
    Ok((cluster.to_string(), db.to_string()))
}

/// File name of a level file: level, TXID range, and the xxh3 of the file's header and
/// trailer ([`ends_checksum`]), so that opening a vault can trust a level file's catalog
/// fields after reading 116 bytes of it. Its pages are verified (file checksum) whenever
/// it is read.
pub fn level_file_name(level: u8, min: TxId, max: TxId, ends: u64) -> String {
    format!("L{level}-{min}-{max}-{ends:016x}.ltx")
}

/// Parses a level file name: (level, min TXID, max TXID, ends checksum).
pub fn parse_level_file_name(name: &str) -> Option<(u8, TxId, TxId, u64)> {
    let rest = name.strip_prefix('L')?.strip_suffix(".ltx")?;
    let (level, rest) = rest.split_once('-')?;
    let level: u8 = level.parse().ok()?;
    let [min, max, ends] = parse_hex_fields(rest)?;
    Some((level, TxId(min), TxId(max), ends))
}

/// Parses exactly `N` fields of 16 lowercase hex digits separated by `-`, as the names of
/// level files and images carry them.
pub fn parse_hex_fields<const N: usize>(text: &str) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    let mut parts = text.split('-');
    for field in &mut out {
        let part = parts.next()?;
        if part.len() != 16 || !part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        *field = u64::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// xxh3 of a level file's header followed by its trailer.
pub fn ends_checksum(header: &[u8; HEADER_SIZE], trailer: &[u8; TRAILER_SIZE]) -> u64 {
    let mut bytes = [0u8; HEADER_SIZE + TRAILER_SIZE];
    bytes[..HEADER_SIZE].copy_from_slice(header);
    bytes[HEADER_SIZE..].copy_from_slice(trailer);
    xxh3_64(&bytes)
}

/// Reads a level file's header and trailer, checks them against the checksum its name
/// carries and the format's header rules, and makes its [`Run`]; also returns the page size.
pub fn load_level_file(path: &Path, level: u8, ends: u64) -> Result<(Run, u32)> {
    use std::os::unix::fs::FileExt;
    let corrupt = |reason: String| Error::Corrupt { file: path.to_path_buf(), offset: 0, reason };
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let len = file.metadata().map_err(|e| Error::io(format!("stat {}", path.display()), e))?.len();
    if len < (HEADER_SIZE + TRAILER_SIZE) as u64 {
        return Err(corrupt(format!("{len} bytes, too short for an LTX file")));
    }
    let mut header_bytes = [0u8; HEADER_SIZE];
    let mut trailer_bytes = [0u8; TRAILER_SIZE];
    file.read_exact_at(&mut header_bytes, 0).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    file.read_exact_at(&mut trailer_bytes, len - TRAILER_SIZE as u64)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if ends_checksum(&header_bytes, &trailer_bytes) != ends {
        return Err(corrupt("header or trailer does not match the checksum in the file name".into()));
    }
    let header = crate::ltx::format::read_header(&header_bytes).map_err(|e| Error::from(e).in_file(path))?;
    header.validate(crate::ltx::Version::V1).map_err(|e| Error::from(e).in_file(path))?;
    let trailer = Trailer::decode(&trailer_bytes);
    let run = Run {
        level,
        min_txid: header.min_txid,
        max_txid: header.max_txid,
        timestamp_ms: header.timestamp_ms,
        commit: header.commit,
        pre_apply: header.pre_apply_checksum,
        post_apply: trailer.post_apply_checksum,
        bytes: len,
        source: Source::File(path.to_path_buf()),
    };
    Ok((run, header.page_size))
}

/// What one compaction output must say about itself; the inputs are its pages' source.
pub struct Output<'a> {
    /// Level being written.
    pub level: u8,
    /// Directory of the database's level files.
    pub dir: &'a Path,
    /// Page size.
    pub page_size: u32,
    /// First TXID (of the first input).
    pub min_txid: TxId,
    /// Last TXID, Commit, timestamp and checksums of the last input.
    pub max_txid: TxId,
    /// Commit after the last input.
    pub commit: u32,
    /// Timestamp of the last input.
    pub timestamp_ms: i64,
    /// Database checksum before the first input.
    pub pre_apply: Checksum,
    /// Database checksum after the last input.
    pub post_apply: Checksum,
}

/// Merges `inputs` (LTX files, oldest first, contiguous) into one level file and returns
/// it. Nothing is left behind on error.
pub fn write_level_file(fs: &Fs, out: &Output<'_>, inputs: &[&[u8]]) -> Result<Run> {
    let provisional = out.dir.join(format!("L{}-{}-{}.ltx", out.level, out.min_txid, out.max_txid));
    let temp = fs.temp_file(&provisional)?;
    let header = Header {
        page_size: out.page_size,
        commit: out.commit,
        min_txid: out.min_txid,
        max_txid: out.max_txid,
        timestamp_ms: out.timestamp_ms,
        pre_apply_checksum: if out.min_txid == TxId(1) { Checksum::NONE } else { out.pre_apply },
        ..Header::default()
    };
    let mut writer = BufWriter::with_capacity(1 << 20, temp.writer());
    let mut encoder = Encoder::new(&mut writer, &header, Format::V1 { compress: false })?;
    let decoders = inputs.iter().map(|p| Decoder::new(p)).collect::<Result<Vec<_>, _>>()?;
    let mut merge = PageMerge::new(decoders, out.page_size)?;
    while let Some(page) = merge.next_page()? {
        encoder.write_page(page.pgno, page.data)?;
    }
    let header_bytes = encoder.header().encode();
    let (_, trailer) = encoder.finish(out.post_apply)?;
    writer.flush().map_err(|e| Error::io(format!("write {}", temp.path().display()), e))?;
    drop(writer);
    let bytes = temp.file().metadata().map_err(|e| Error::io(format!("stat {}", temp.path().display()), e))?.len();
    let ends = ends_checksum(&header_bytes, &trailer.encode());
    let path = out.dir.join(level_file_name(out.level, out.min_txid, out.max_txid, ends));
    temp.commit_to(&path)?;
    Ok(Run {
        level: out.level,
        min_txid: out.min_txid,
        max_txid: out.max_txid,
        timestamp_ms: out.timestamp_ms,
        commit: out.commit,
        pre_apply: header.pre_apply_checksum,
        post_apply: out.post_apply,
        bytes,
        source: Source::File(path),
    })
}

/// Runs compaction passes over every database of a catalog.
pub struct Compactor {
    /// The file-system seam level files are written through.
    pub fs: Fs,
    /// The vault's catalog.
    pub catalog: std::sync::Arc<crate::catalog::Catalog>,
    /// The L0 log.
    pub segments: std::sync::Arc<crate::segment::Segments>,
    /// `<vault>/levels`.
    pub levels_dir: PathBuf,
    /// Window of each level, ms (index 0 = L1).
    pub intervals_ms: Vec<i64>,
    /// Grace after a window's end before a quiet database's window closes.
    pub grace_ms: i64,
    /// The clock.
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
    /// One pass of a level at a time (a compactor thread and `compact_now` may both run).
    pub passes: Vec<std::sync::Mutex<()>>,
    /// The vault's metrics: bytes and pieces written per level, failures, corruption found
    /// (an L3 image whose checksum does not match).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Compactor {
    /// One pass of `level` (1-based) over every database; returns the files written. A
    /// database whose compaction fails is logged and left at its last good file; the pass
    /// goes on with the others and returns the first error at the end. A full disk ends the
    /// pass at once, unlogged (the others would find no room either; the caller logs it
    /// once and backs off); the failed file's temporary file is gone already.
    pub fn run_level(&self, level: u8) -> Result<usize> {
        let index = usize::from(level) - 1;
        let Some(&interval) = self.intervals_ms.get(index) else { return Ok(0) };
        let _pass = self.passes.get(index).map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
        let mut written = 0;
        let mut first_error = None;
        for key in self.catalog.keys() {
            match self.run_level_of(level, interval, &key) {
                Ok(n) => written += n,
                Err(e) if e.is_no_space() => return Err(e),
                Err(e) => {
                    self.metrics.compaction_failed(level);
                    if matches!(e, Error::Corrupt { .. }) {
                        self.metrics.corruption_found("compaction");
                    }
                    tracing::error!(level, cluster = %key.cluster, db = %key.db, error = %e, "compaction failed; the level is not advanced");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(written), Err)
    }

    fn run_level_of(&self, level: u8, interval: i64, key: &crate::catalog::DbKey) -> Result<usize> {
        let index = usize::from(level) - 1;
        let Some(state) = self.catalog.get(key) else { return Ok(0) };
        let (below, page_size, done) = {
            let state = crate::catalog::lock(&state);
            if state.deleted {
                return Ok(0);
            }
            // Where this level goes on: after its last piece, or, when retention has emptied
            // it (every piece covered by a coarser one and expired), after the coarser
            // levels, which hold everything before.
            let done = match state.levels.get(index).and_then(|l| l.last()) {
                Some(last) => last.max_txid,
                None => state.levels.iter().skip(index + 1).flatten().map(|r| r.max_txid).max().unwrap_or(TxId::ZERO),
            };
            let level_below = if index == 0 { &state.runs } else { &state.levels[index - 1] };
            let below: Vec<Run> = level_below.iter().filter(|r| r.max_txid > done).cloned().collect();
            (below, state.page_size, done)
        };
        let spans: Vec<Span> =
            below.iter().map(|r| Span { max_txid: r.max_txid, timestamp_ms: r.timestamp_ms }).collect();
        let mut written = 0;
        for window in closed_windows(&spans, interval, self.grace_ms, self.clock.now_ms()) {
            let group = &below[window];
            let previous = crate::catalog::lock(&state).levels[index].last().cloned();
            if let Some(first) = group.first()
                && !first.min_txid.follows(previous.as_ref().map_or(done, |p| p.max_txid))
            {
                return Err(Error::Corrupt {
                    file: self.levels_dir.clone(),
                    offset: 0,
                    reason: format!(
                        "L{level} of {}/{} would start at TXID {}, which does not follow its last file",
                        key.cluster, key.db, first.min_txid
                    ),
                });
            }
            let run = self.compact_window(level, key, page_size, group, previous.as_ref())?;
            let mut state = crate::catalog::lock(&state);
            let list = &mut state.levels[index];
            let extends = |last: &Run| match level {
                3 => run.max_txid > last.max_txid,
                _ => run.min_txid.follows(last.max_txid),
            };
            if list.last().is_none_or(extends) {
                self.metrics.compacted(level, run.bytes);
                let bytes = crate::catalog::stored_bytes(key, &run);
                list.push(run);
                state.stored_bytes += bytes;
                self.catalog.usage.add(&key.cluster, bytes);
                written += 1;
            } else if let Some(path) = run.path() {
                // Cannot happen while passes of a level are serialized; a file that
                // does not extend the level must not stay where the next open finds it.
                let _ = self.fs.remove_file(path);
            }
        }
        Ok(written)
    }

    fn compact_window(
        &self,
        level: u8,
        key: &crate::catalog::DbKey,
        page_size: u32,
        group: &[Run],
        previous: Option<&Run>,
    ) -> Result<Run> {
        let mut maps = Vec::with_capacity(group.len());
        for input in group {
            maps.push(match &input.source {
                Source::Log(location) => self.segments.payload(*location)?,
                Source::File(path) => {
                    let map = std::sync::Arc::new(MappedFile::open(path)?);
                    let len = map.len();
                    (map, 0..len)
                }
                Source::Image(path) => {
                    return Err(Error::Invalid(format!("{} is an image, not an input of L{level}", path.display())));
                }
            });
        }
        let (first, last) = (&group[0], &group[group.len() - 1]);
        let dir = ensure_db_dir(&self.fs, &self.levels_dir, &key.cluster, &key.db)?;
        if level == 3 {
            return crate::image::write_image(&self.fs, &dir, page_size, previous, &maps, last);
        }
        let payloads: Vec<&[u8]> = maps.iter().map(|(map, range)| &map[range.clone()]).collect();
        let out = Output {
            level,
            dir: &dir,
            page_size,
            min_txid: first.min_txid,
            max_txid: last.max_txid,
            commit: last.commit,
            timestamp_ms: last.timestamp_ms,
            pre_apply: first.pre_apply,
            post_apply: last.post_apply,
        };
        write_level_file(&self.fs, &out, &payloads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(ts: &[i64]) -> Vec<Span> {
        ts.iter().enumerate().map(|(i, &t)| Span { max_txid: TxId(i as u64 + 1), timestamp_ms: t }).collect()
    }

    #[test]
    fn windows_close_on_a_later_run_or_on_the_clock() {
        let runs = spans(&[1_000, 59_000, 61_000, 62_000, 130_000]);
        // The clock at 0: windows followed by a later run are closed, the last is not.
        assert_eq!(closed_windows(&runs, 60_000, 5_000, 0), vec![0..2, 2..4]);
        // The clock past the last window's end plus grace closes it too.
        assert_eq!(closed_windows(&runs, 60_000, 5_000, 185_000), vec![0..2, 2..4, 4..5]);
        assert_eq!(closed_windows(&runs, 60_000, 5_000, 184_999), vec![0..2, 2..4]);
        assert!(closed_windows(&[], 60_000, 5_000, i64::MAX).is_empty());
    }

    #[test]
    fn level_file_names_round_trip() {
        let name = level_file_name(2, TxId(5), TxId(300), 0xabc);
        assert_eq!(name, "L2-0000000000000005-000000000000012c-0000000000000abc.ltx");
        assert_eq!(parse_level_file_name(&name), Some((2, TxId(5), TxId(300), 0xabc)));
        assert_eq!(parse_level_file_name("L2-5-300-1.ltx"), None);
        assert_eq!(parse_level_file_name("L2-0000000000000005-000000000000012c.ltx"), None);
    }
}
