//! Point-in-time restore: resolve a target to a stored point, plan the inputs, merge them
//! onto a file, verify the result.
//!
//! Targets are the latest state, a TXID, or a timestamp. A timestamp T means the state
//! after the last transaction whose (per-database monotonic) timestamp is <= T. Only the
//! end of a stored run is a restorable point: a TXID inside a run (an upload that carried
//! several transactions) is refused with the points around it, never rounded silently.
//!
//! Execution merges the planned runs oldest first with [`PageMerge`] in chunks of at most
//! [`MERGE_FAN_IN`] inputs, each chunk written onto the output and cut to its final Commit,
//! so memory stays flat however long the history is; every output page of a chunk is
//! written once.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalog::Run;
use crate::error::{Error, Result};
use crate::io::{Fs, MappedFile};
use crate::ltx::{Checksum, Decoder, PageMerge, PageNo, TxId};

/// Most runs merged at once.
pub const MERGE_FAN_IN: usize = 64;

/// What to restore to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The newest durable state.
    Latest,
    /// The state right after this TXID.
    TxId(TxId),
    /// The state after the last transaction with timestamp <= this (ms since the epoch).
    Timestamp(i64),
}

impl Target {
    /// Parses a timestamp given as RFC 3339 or as Unix milliseconds.
    pub fn parse_timestamp(text: &str) -> Result<i64> {
        if let Ok(ms) = text.parse::<i64>() {
            return Ok(ms);
        }
        chrono::DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()).map_err(|e| {
            Error::Invalid(format!(
                "timestamp \"{text}\" is neither RFC 3339 (2026-11-27T07:35:56.203Z) nor Unix milliseconds: {e}"
            ))
        })
    }
}

/// The inputs of a restore and what it will produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The TXID restored to.
    pub txid: TxId,
    /// Its database checksum.
    pub checksum: Checksum,
    /// Its timestamp (ms).
    pub timestamp_ms: i64,
    /// Database size in pages.
    pub commit: u32,
    /// The finest level holding this point: 0 = every transaction is a point there, 1 =
    /// one point per L1 window, 2 = one per L2 window.
    pub granularity_level: u8,
    /// The runs to merge, oldest first.
    pub inputs: Vec<Run>,
    /// Their stored bytes.
    pub bytes: u64,
}

/// Resolves `target` against a database's stored pieces (any order, any level) and picks
/// the cheapest chain of inputs that rebuilds it (see [`cheapest_path`]): typically the
/// newest image at or before the point, then L2, L1 and L0 pieces up to it.
pub fn plan(pieces: &[Run], target: Target) -> Result<Plan> {
    // Restorable points: the end of every piece but the stranded ones; the finest level
    // that has one says the granularity there.
    let stranded = stranded_pieces(pieces);
    let mut points: BTreeMap<TxId, &Run> = BTreeMap::new();
    for piece in pieces.iter().filter(|p| !stranded.contains(p)) {
        let entry = points.entry(piece.max_txid).or_insert(piece);
        if piece.level < entry.level {
            *entry = piece;
        }
    }
    let (Some((_, first)), Some((_, last))) = (points.first_key_value(), points.last_key_value()) else {
        return Err(Error::Invalid("the database has no stored history".into()));
    };
    let window = || {
        format!(
            "restorable points run from TXID {} ({}) to TXID {} ({})",
            first.max_txid,
            format_ms(first.timestamp_ms),
            last.max_txid,
            format_ms(last.timestamp_ms)
        )
    };
    let point: &Run = match target {
        Target::Latest => last,
        Target::TxId(txid) => match points.get(&txid) {
            Some(p) => p,
            None if txid > first.max_txid && txid < last.max_txid => {
                let before = points.range(..txid).next_back().map(|(t, _)| *t).unwrap_or_default();
                let after = points.range(txid..).next().map(|(t, _)| *t).unwrap_or_default();
                return Err(Error::NoSuchPoint(format!(
                    "TXID {txid} is not a stored restore point (it lies inside a stored run or a compacted window); the nearest points are TXID {before} and TXID {after}"
                )));
            }
            None if txid > last.max_txid => {
                return Err(Error::NoSuchPoint(format!(
                    "TXID {txid} is after the current TXID {}: {}",
                    last.max_txid,
                    window()
                )));
            }
            None => {
                return Err(Error::NoSuchPoint(format!("TXID {txid} is outside the retained history: {}", window())));
            }
        },
        Target::Timestamp(ms) => match points.values().rev().find(|p| p.timestamp_ms <= ms) {
            Some(p) => p,
            None => {
                return Err(Error::NoSuchPoint(format!(
                    "timestamp {} is before the oldest restorable point: {}",
                    format_ms(ms),
                    window()
                )));
            }
        },
    };
    let inputs = cheapest_path(pieces, point.max_txid).ok_or_else(|| Error::Corrupt {
        file: "catalog".into(),
        offset: 0,
        reason: format!("no chain of stored pieces leads from TXID 1 to TXID {}", point.max_txid),
    })?;
    Ok(Plan {
        txid: point.max_txid,
        checksum: point.post_apply,
        timestamp_ms: point.timestamp_ms,
        commit: point.commit,
        granularity_level: point.level,
        bytes: inputs.iter().map(|r| r.bytes).sum(),
        inputs,
    })
}

/// The pieces no chain from TXID 1 reaches whose TXIDs a reachable piece of a coarser
/// level covers: what a retention pass that stopped part way leaves (a failed delete, or a
/// crash, after the pieces before it went; the next pass deletes them). Their ends are not
/// restore points. An unreachable piece that nothing covers is not stranded but a hole in
/// the history: targeting it fails loudly ([`Error::Corrupt`]).
fn stranded_pieces(pieces: &[Run]) -> Vec<&Run> {
    let mut order: Vec<&Run> = pieces.iter().collect();
    order.sort_by_key(|p| (p.min_txid, p.max_txid));
    // Chain ends reachable from TXID 1 (TXID 0 stands for the empty database); a chain
    // end is always found before a piece that continues it, which starts later.
    let mut ends = std::collections::BTreeSet::from([TxId::ZERO]);
    let reached = |ends: &std::collections::BTreeSet<TxId>, p: &Run| {
        p.min_txid.0.checked_sub(1).is_some_and(|before| ends.contains(&TxId(before)))
    };
    for piece in &order {
        if reached(&ends, piece) {
            ends.insert(piece.max_txid);
        }
    }
    order
        .iter()
        .filter(|p| !reached(&ends, p))
        .filter(|p| {
            order
                .iter()
                .any(|q| q.level > p.level && reached(&ends, q) && q.min_txid <= p.min_txid && q.max_txid >= p.max_txid)
        })
        .copied()
        .collect()
}

/// What reading one input costs a restore beyond its bytes (opening, mapping, checking),
/// in bytes: it makes the planner prefer one large piece over many small ones that add up
/// to the same size.
const INPUT_COST_BYTES: u64 = 64 << 10;

/// The cheapest chain of pieces from TXID 1 to `end`, oldest first: each piece starts right
/// after the previous one ends. Cost is bytes read plus [`INPUT_COST_BYTES`] per piece;
/// between chains of equal cost, the one ending in the coarser level (an image, then a
/// level file, then a log record). Pieces sorted by their first TXID reach every chain
/// end before it is extended, so one pass finds the cheapest chain.
fn cheapest_path(pieces: &[Run], end: TxId) -> Option<Vec<Run>> {
    let mut order: Vec<&Run> = pieces.iter().filter(|p| p.max_txid <= end).collect();
    order.sort_by_key(|p| (p.min_txid, p.max_txid));
    // Chain end -> (cost, -level of the last piece, that piece's index in `order`).
    let mut best: BTreeMap<TxId, (u64, i16, Option<usize>)> = BTreeMap::new();
    best.insert(TxId::ZERO, (0, 0, None));
    for (i, piece) in order.iter().enumerate() {
        let Some(&(cost, _, _)) = piece.min_txid.0.checked_sub(1).and_then(|from| best.get(&TxId(from))) else {
            continue;
        };
        let candidate =
            (cost.saturating_add(piece.bytes).saturating_add(INPUT_COST_BYTES), -i16::from(piece.level), Some(i));
        let entry = best.entry(piece.max_txid).or_insert(candidate);
        if (candidate.0, candidate.1) < (entry.0, entry.1) {
            *entry = candidate;
        }
    }
    let mut chain = Vec::new();
    let mut at = end;
    while at != TxId::ZERO {
        let (_, _, Some(i)) = *best.get(&at)? else { return None };
        chain.push(order[i].clone());
        at = TxId(order[i].min_txid.0.checked_sub(1)?);
    }
    chain.reverse();
    Some(chain)
}

/// Pages written between two releases of the inputs' consumed bytes.
const RELEASE_EVERY_PAGES: usize = 2048;

/// One input of a restore: a mapped file and the byte range of its LTX payload.
pub type Input = (Arc<MappedFile>, std::ops::Range<usize>);

/// A database image a restore starts from: the file and the bytes of it that are the
/// database (an L3 image carries a footer after them).
pub struct Base<'a> {
    /// The image.
    pub file: &'a File,
    /// Database bytes at its start.
    pub bytes: u64,
}

/// Writes the restored database onto `out`, which must be empty: the planned inputs (oldest
/// first) merged in chunks of [`MERGE_FAN_IN`], each chunk's pages written once (runs of
/// adjacent pages in one call) and the file cut to the chunk's Commit. With a base image,
/// the first chunk also fills the gaps between the pages it writes from the base: long
/// gaps with a kernel copy, short ones read into the same buffer as the merged pages, so
/// every page of the result is written once and mostly in large sequential writes (a
/// base copied whole and then overwritten would write every changed page twice). With a
/// base and no inputs, the restore is one kernel copy. `progress` hears the number of pages
/// written so far, now and then. Bytes the decoders have gone past are released from this
/// process's mappings as the merge goes, so memory stays flat whatever the database size.
pub fn execute(
    fs: &Fs,
    out: &File,
    out_path: &Path,
    base: Option<Base<'_>>,
    inputs: &[Input],
    page_size: u32,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut writer = PageWriter::new(fs, out, out_path);
    let mut fill = base.map(|base| BaseFill { pages: (base.bytes / u64::from(page_size)) as u32, base, next: 1 });
    if inputs.is_empty() {
        if let Some(fill) = &mut fill {
            fill.fill_to(fill.pages + 1, &mut writer, page_size)?;
            writer.flush()?;
        }
        return Ok(());
    }
    let mut total_written = 0u64;
    for chunk in inputs.chunks(MERGE_FAN_IN) {
        let decoders =
            chunk.iter().map(|(map, range)| Decoder::new(&map[range.clone()])).collect::<Result<Vec<_>, _>>()?;
        let mut merge = PageMerge::new(decoders, page_size)?;
        let mut written = 0usize;
        while let Some(page) = merge.next_page()? {
            if let Some(fill) = &mut fill {
                fill.fill_to(page.pgno.0, &mut writer, page_size)?;
                fill.next = page.pgno.0 + 1;
            }
            writer.write(page.pgno.file_offset(page_size), page.data)?;
            written += 1;
            total_written += 1;
            if written.is_multiple_of(RELEASE_EVERY_PAGES) {
                release_consumed(chunk, merge.sources());
                progress(total_written);
            }
        }
        // The base pages after the last merged one, up to the new size; later chunks write
        // over this result like any other.
        if let Some(mut fill) = fill.take() {
            fill.fill_to(fill.pages.min(merge.commit()) + 1, &mut writer, page_size)?;
        }
        writer.flush()?;
        fs.set_len(out, u64::from(merge.commit()) * u64::from(page_size), out_path)?;
    }
    Ok(())
}

/// Gaps of at least this many pages are copied by the kernel; shorter ones are read into
/// the writer's buffer, where they join the merged pages around them in one write.
const KERNEL_COPY_MIN_PAGES: u32 = 16;

/// The base image's pages not yet written to the result.
struct BaseFill<'a> {
    base: Base<'a>,
    /// Pages in the base.
    pages: u32,
    /// The first page not yet written.
    next: u32,
}

impl BaseFill<'_> {
    /// Writes the base's pages from `next` up to (not including) `end`, capped at the
    /// base's size.
    fn fill_to(&mut self, end: u32, writer: &mut PageWriter<'_>, page_size: u32) -> Result<()> {
        let end = end.min(self.pages + 1);
        if end <= self.next {
            return Ok(());
        }
        let (offset, len) =
            (PageNo(self.next).file_offset(page_size), u64::from(end - self.next) * u64::from(page_size));
        if end - self.next >= KERNEL_COPY_MIN_PAGES {
            writer.flush()?;
            let copied = writer.fs.copy_range_at(self.base.file, offset, writer.file, offset, len, writer.path)?;
            if copied != len {
                return Err(Error::Invalid(format!("base image ended within pages {}..{end}", self.next)));
            }
        } else {
            writer.read_from(self.base.file, offset, len as usize)?;
        }
        self.next = end;
        Ok(())
    }
}

/// Gathers pages that follow each other in the file into one write of up to 1 MiB: a
/// restore of a fresh snapshot is then a few hundred writes instead of one per page. Every
/// [`WRITEBACK_EVERY`] bytes it asks the kernel to start writing the file back, so the disk
/// works while the merge goes on and the final sync has little left.
struct PageWriter<'a> {
    fs: &'a Fs,
    file: &'a File,
    path: &'a Path,
    buf: Vec<u8>,
    at: u64,
    unsynced: u64,
}

/// Bytes written between two writeback kicks.
const WRITEBACK_EVERY: u64 = 8 << 20;

impl<'a> PageWriter<'a> {
    const CAPACITY: usize = 1 << 20;

    fn new(fs: &'a Fs, file: &'a File, path: &'a Path) -> Self {
        PageWriter { fs, file, path, buf: Vec::with_capacity(Self::CAPACITY), at: 0, unsynced: 0 }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let follows = offset == self.at + self.buf.len() as u64;
        if !self.buf.is_empty() && (!follows || self.buf.len() + data.len() > Self::CAPACITY) {
            self.flush()?;
        }
        if self.buf.is_empty() {
            self.at = offset;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Appends `len` bytes read from `file` at `offset` as if they were pages written at the
    /// same offset of the output.
    fn read_from(&mut self, file: &File, offset: u64, len: usize) -> Result<()> {
        let follows = offset == self.at + self.buf.len() as u64;
        if !self.buf.is_empty() && (!follows || self.buf.len() + len > Self::CAPACITY) {
            self.flush()?;
        }
        if self.buf.is_empty() {
            self.at = offset;
        }
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        file.read_exact_at(&mut self.buf[start..], offset)
            .map_err(|e| Error::io(format!("read the base image at byte {offset}"), e))
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.fs.write_all_at(self.file, &self.buf, self.at, self.path)?;
            self.unsynced += self.buf.len() as u64;
            if self.unsynced >= WRITEBACK_EVERY {
                // The whole file: writes land anywhere, and ranges already clean cost nothing.
                crate::io::start_writeback(self.file, 0, 0);
                self.unsynced = 0;
            }
            self.buf.clear();
        }
        Ok(())
    }
}

/// Releases what each decoder has read past (see [`MappedFile::release`]).
pub fn release_consumed(inputs: &[Input], decoders: &[Decoder<'_>]) {
    for ((map, range), decoder) in inputs.iter().zip(decoders) {
        if let Some(offset) = decoder.input_offset() {
            map.release(range.start..range.start + offset);
        }
    }
}

fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(level: u8, min: u64, max: u64, ts: i64) -> Run {
        Run::for_test(level, min, max, ts)
    }

    #[test]
    fn targets_resolve_to_piece_ends_and_nothing_else() {
        let pieces = [piece(0, 1, 1, 100), piece(0, 2, 4, 200), piece(0, 5, 5, 200), piece(0, 6, 6, 300)];
        assert_eq!(plan(&pieces, Target::Latest).unwrap().txid, TxId(6));
        assert_eq!(plan(&pieces, Target::TxId(TxId(4))).unwrap().inputs.len(), 2);
        let err = plan(&pieces, Target::TxId(TxId(3))).unwrap_err().to_string();
        assert!(err.contains("not a stored restore point") && err.contains("TXID 0000000000000001"), "{err}");
        let err = plan(&pieces, Target::TxId(TxId(7))).unwrap_err();
        assert!(matches!(&err, Error::NoSuchPoint(m) if m.contains("after the current TXID")), "{err}");
        let err = plan(&pieces, Target::TxId(TxId(0))).unwrap_err();
        assert!(matches!(&err, Error::NoSuchPoint(m) if m.contains("outside the retained history")), "{err}");
        assert_eq!(plan(&pieces, Target::Timestamp(250)).unwrap().txid, TxId(5));
        assert_eq!(plan(&pieces, Target::Timestamp(200)).unwrap().txid, TxId(5));
        assert_eq!(plan(&pieces, Target::Timestamp(199)).unwrap().txid, TxId(1));
        assert!(plan(&pieces, Target::Timestamp(99)).unwrap_err().to_string().contains("before the oldest"));
    }

    #[test]
    fn the_plan_takes_the_longest_pieces_and_reports_granularity() {
        let mut pieces: Vec<Run> = (1..=10).map(|t| piece(0, t, t, t as i64 * 10)).collect();
        pieces.push(piece(1, 1, 4, 40));
        pieces.push(piece(1, 5, 8, 80));
        pieces.push(piece(2, 1, 8, 80));
        let p = plan(&pieces, Target::TxId(TxId(10))).unwrap();
        let spans: Vec<(u8, u64, u64)> = p.inputs.iter().map(|i| (i.level, i.min_txid.0, i.max_txid.0)).collect();
        assert_eq!(spans, vec![(2, 1, 8), (0, 9, 9), (0, 10, 10)]);
        assert_eq!(p.granularity_level, 0);
        let p = plan(&pieces, Target::TxId(TxId(6))).unwrap();
        let spans: Vec<(u8, u64, u64)> = p.inputs.iter().map(|i| (i.level, i.min_txid.0, i.max_txid.0)).collect();
        assert_eq!(spans, vec![(1, 1, 4), (0, 5, 5), (0, 6, 6)]);
        // With L0 gone only the level ends remain restorable, at their granularity.
        let levels: Vec<Run> = pieces.iter().filter(|p| p.level > 0).cloned().collect();
        assert_eq!(plan(&levels, Target::Timestamp(75)).unwrap().txid, TxId(4));
        assert_eq!(plan(&levels, Target::TxId(TxId(8))).unwrap().granularity_level, 1);
        assert!(plan(&levels, Target::TxId(TxId(6))).is_err());
    }

    #[test]
    fn pieces_stranded_by_an_interrupted_retention_pass_are_no_points() {
        // Retention deleted the L1 pieces 1..=2 and stopped before 3 (a failed delete):
        // the L2 piece still covers 1..=4, so 3 is no restore point, while 4 and 5 are.
        let pieces = [piece(2, 1, 4, 40), piece(1, 3, 3, 30), piece(1, 4, 4, 40), piece(0, 5, 5, 50)];
        let err = plan(&pieces, Target::TxId(TxId(3))).unwrap_err();
        assert!(matches!(&err, Error::NoSuchPoint(m) if m.contains("outside the retained history")), "{err}");
        assert_eq!(plan(&pieces, Target::TxId(TxId(5))).unwrap().inputs.len(), 2);
        assert!(plan(&pieces, Target::Timestamp(35)).unwrap_err().to_string().contains("before the oldest"));
        // A hole nothing covers is damage, not a leftover: refused loudly.
        let holed = [piece(0, 1, 1, 10), piece(0, 3, 3, 30)];
        assert!(matches!(plan(&holed, Target::Latest), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn timestamps_parse_in_both_forms() {
        assert_eq!(Target::parse_timestamp("1795764956203").unwrap(), 1795764956203);
        assert_eq!(Target::parse_timestamp("2026-11-27T07:35:56.203Z").unwrap(), 1795764956203);
        assert!(Target::parse_timestamp("yesterday").is_err());
    }
}
