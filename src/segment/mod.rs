//! The shared L0 log: numbered, preallocated segment files of self-describing records.
//!
//! ```text
//! <vault>/l0/0000000000000001.seg   sealed: full, never written again
//! <vault>/l0/0000000000000002.seg   active: the writer appends here; zeros after the tail
//! ```
//!
//! Recovery ([`recover`]) walks every segment reading record headers (each checked by its
//! own xxh3); the last segment's payloads are checked too, because only there can a crash
//! have torn a write. A bad record in the last segment is a torn tail when nothing valid
//! follows it from a later write batch: the batch was never acknowledged (acks wait for its
//! fdatasync), so it is cut and zeroed. A bad record anywhere else, or one followed by a
//! later batch, is damage to acknowledged data: the open fails and names file and offset.
//! Zeros where a record should be end a segment, unless a record from a later batch follows
//! them (damage again); in the last segment whatever non-zero bytes follow them are the
//! rest of a torn batch whose start never reached the disk, and are cut too.

pub mod format;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use format::{RECORD_ALIGN, RECORD_MAGIC, RecordHeader, SEGMENT_HEADER_SIZE, SegmentHeader};

use crate::error::{Error, Result};
use crate::io::{Fs, MappedFile, Sync};

/// Where a record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Segment id.
    pub segment: u64,
    /// Byte offset of the record in the segment.
    pub offset: u64,
}

/// Path of segment `id` in the log directory.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    (stem.len() == 16 && stem.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| u64::from_str_radix(stem, 16).ok())
        .flatten()
}

/// How much of a new segment is zero-filled between two syncs.
const ZERO_FILL_CHUNK: usize = 1 << 20;

/// A segment written under a temporary name, ready to be installed as segment `id`.
pub struct PreparedSegment {
    /// The open file.
    pub file: File,
    /// Its id.
    pub id: u64,
    /// Its size.
    pub size: u64,
    temp: PathBuf,
}

/// Writes segment `id` of `size` bytes under a temporary name: allocated (a full disk shows
/// here, before anything is written), zero-filled (so later appends change no file
/// metadata and fdatasync stays cheap), header written, synced. Slow (it writes `size`
/// bytes), so the log writer has it done ahead of time. On error the temporary file is
/// removed.
pub fn prepare_segment(fs: &Fs, dir: &Path, id: u64, size: u64, created_ms: i64) -> Result<PreparedSegment> {
    let temp = dir.join(format!(".{id:016x}.seg.tmp"));
    let file = fs.create(&temp)?;
    fill_segment(fs, &file, &temp, id, size, created_ms).inspect_err(|_| {
        let _ = fs.remove_file(&temp);
    })?;
    Ok(PreparedSegment { file, id, size, temp })
}

fn fill_segment(fs: &Fs, file: &File, temp: &Path, id: u64, size: u64, created_ms: i64) -> Result<()> {
    fs.allocate(file, 0, size, temp)?;
    // Zeros go out 1 MiB at a time, each chunk synced before the next: a log fdatasync
    // issued meanwhile then waits behind at most one chunk of writeback, not the whole
    // segment, which keeps the background preparation from stalling acknowledgements.
    let zeros = vec![0u8; ZERO_FILL_CHUNK.min(size as usize)];
    let mut at = 0;
    while at < size {
        let n = zeros.len().min((size - at) as usize);
        fs.write_all_at(file, &zeros[..n], at, temp)?;
        fs.sync(file, Sync::Data, temp)?;
        at += n as u64;
    }
    let header = SegmentHeader { id, created_ms }.encode();
    fs.write_all_at(file, &header, 0, temp)?;
    fs.sync(file, Sync::All, temp)
}

impl PreparedSegment {
    /// Removes a prepared segment that will not be used.
    pub fn discard(self, fs: &Fs) {
        let _ = fs.remove_file(&self.temp);
    }

    /// Renames the segment to its final name. Until the caller has synced the directory
    /// ([`Fs::sync_dir`]) the rename may not survive a crash; if the rename itself fails
    /// the temporary file is removed and the log is as it was.
    pub fn rename_into_place(self, fs: &Fs, dir: &Path) -> Result<(File, u64, u64)> {
        let path = segment_path(dir, self.id);
        if let Err(e) = fs.rename(&self.temp, &path) {
            self.discard(fs);
            return Err(e);
        }
        Ok((self.file, self.id, self.size))
    }
}

/// Read access to segments through cached read-only mmaps.
pub struct Segments {
    fs: Fs,
    dir: PathBuf,
    maps: RwLock<BTreeMap<u64, Arc<MappedFile>>>,
}

impl Segments {
    /// Segments of the log directory `dir`.
    pub fn new(fs: &Fs, dir: &Path) -> Segments {
        Segments { fs: fs.clone(), dir: dir.to_path_buf(), maps: RwLock::new(BTreeMap::new()) }
    }

    /// The mapped segment `id`.
    pub fn map(&self, id: u64) -> Result<Arc<MappedFile>> {
        if let Some(map) = self.maps.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(map.clone());
        }
        let map = Arc::new(MappedFile::open(&segment_path(&self.dir, id))?);
        self.maps.write().unwrap_or_else(|e| e.into_inner()).insert(id, map.clone());
        Ok(map)
    }

    /// Deletes segment `id` (retention: no kept run is in it) and forgets its map; readers
    /// that still hold the map keep reading it until they drop it.
    pub fn delete(&self, id: u64) -> Result<()> {
        self.fs.remove_file(&segment_path(&self.dir, id))?;
        self.maps.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
        Ok(())
    }

    /// The header of every record in sealed segment `id`, each checked, in order.
    pub fn record_headers(&self, id: u64) -> Result<Vec<RecordHeader>> {
        let map = self.map(id)?;
        let path = segment_path(&self.dir, id);
        SegmentHeader::decode(&map).map_err(|reason| Error::Corrupt { file: path.clone(), offset: 0, reason })?;
        let mut out = Vec::new();
        let mut offset = SEGMENT_HEADER_SIZE;
        while offset < map.len() {
            let header = RecordHeader::decode(&map[offset..]).map_err(|reason| Error::Corrupt {
                file: path.clone(),
                offset: offset as u64,
                reason,
            })?;
            let Some(header) = header else { break };
            offset += header.record_len() as usize;
            out.push(header);
        }
        Ok(out)
    }

    /// Ids of the segment files present, ascending.
    pub fn ids(&self) -> Result<Vec<u64>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(format!("list {}", self.dir.display()), e))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("list {}", self.dir.display()), e))?;
            if let Some(id) = parse_segment_name(&entry.file_name().to_string_lossy()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file-system seam the log goes through.
    pub fn fs(&self) -> &Fs {
        &self.fs
    }

    /// The segment holding the record at `loc` and the byte range of its payload, with
    /// header and payload checksums verified: for readers that keep several payloads open
    /// at once (a merge).
    pub fn payload(&self, loc: Location) -> Result<(Arc<MappedFile>, std::ops::Range<usize>)> {
        let map = self.map(loc.segment)?;
        let range = self.with_record(loc, |header, payload| {
            let start = loc.offset as usize + header.header_len();
            Ok(start..start + payload.len())
        })?;
        // The checksum pass touched every page; the caller reads them again as it goes.
        map.release(range.clone());
        Ok((map, range))
    }

    /// Reads the record at `loc`, checking header and payload checksums, and hands the
    /// header and payload to `f`.
    pub fn with_record<T>(&self, loc: Location, f: impl FnOnce(&RecordHeader, &[u8]) -> Result<T>) -> Result<T> {
        let map = self.map(loc.segment)?;
        let path = || segment_path(&self.dir, loc.segment);
        let corrupt = |reason: String| Error::Corrupt { file: path(), offset: loc.offset, reason };
        let bytes = map.get(loc.offset as usize..).ok_or_else(|| corrupt("record offset past the end".into()))?;
        let header = RecordHeader::decode(bytes).map_err(corrupt)?.ok_or_else(|| corrupt("no record here".into()))?;
        let payload = header.payload(bytes).map_err(corrupt)?;
        f(&header, payload)
    }
}

/// One record found by recovery.
#[derive(Clone, Debug)]
pub struct Found {
    /// Where it is.
    pub location: Location,
    /// Its header.
    pub header: RecordHeader,
}

/// What recovery found: every record in log order, and where the writer continues.
#[derive(Debug)]
pub struct Recovered {
    /// Records, oldest first.
    pub records: Vec<Found>,
    /// The active segment (the last one), if any.
    pub active: Option<u64>,
    /// Offset in the active segment where the next record goes.
    pub tail: u64,
    /// Sequence number of the next record.
    pub next_seq: u64,
    /// Bytes of a torn tail that were cut, if any (for the log line).
    pub torn_bytes: u64,
}

/// Scans the log directory; see the module docs for what is checked and what is repaired.
pub fn recover(fs: &Fs, dir: &Path) -> Result<Recovered> {
    let mut ids = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = parse_segment_name(&name) {
            ids.push(id);
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            // A segment whose creation a crash interrupted: never renamed, never used.
            let _ = fs.remove_file(&entry.path());
        }
    }
    ids.sort_unstable();
    for pair in ids.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(Error::Corrupt {
                file: segment_path(dir, pair[0] + 1),
                offset: 0,
                reason: format!("segment missing between {:016x} and {:016x}", pair[0], pair[1]),
            });
        }
    }
    let mut out = Recovered { records: Vec::new(), active: ids.last().copied(), tail: 0, next_seq: 1, torn_bytes: 0 };
    let mut expected_seq: Option<u64> = None;
    for (i, &id) in ids.iter().enumerate() {
        let is_last = i + 1 == ids.len();
        let path = segment_path(dir, id);
        let map = MappedFile::open(&path)?;
        let scanned = scan(&map, id, is_last, expected_seq).map_err(|(offset, reason)| Error::Corrupt {
            file: path.clone(),
            offset,
            reason,
        })?;
        if let Some(last) = scanned.records.last() {
            expected_seq = Some(last.1.seq + 1);
        }
        out.records.extend(
            scanned
                .records
                .into_iter()
                .map(|(offset, header)| Found { location: Location { segment: id, offset }, header }),
        );
        if is_last {
            out.tail = scanned.tail;
            if scanned.torn {
                out.torn_bytes = cut_torn_tail(fs, &path, &map, scanned.tail)?;
            }
        }
    }
    out.next_seq = expected_seq.unwrap_or(1);
    Ok(out)
}

/// What [`scan`] read from one segment.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    /// Every record, in order, with its offset in the segment.
    pub records: Vec<(u64, RecordHeader)>,
    /// Offset just past the last record: where the writer continues in the last segment.
    pub tail: u64,
    /// Whether the bytes from `tail` on are a torn batch that recovery must zero (last
    /// segment only).
    pub torn: bool,
}

/// Reads the records of one segment's bytes the way recovery does, without touching the
/// file: the segment header (whose id must be `id`), then every record header in order,
/// each checked, with sequence numbers counting up from `expected_seq` (from the first
/// record when `None`). In the last segment (`is_last`) every payload is checked too, and
/// a bad record with nothing valid from a later write batch after it ends the scan as a
/// torn tail, as do zeros followed by anything non-zero. Any other bad record, and zeros
/// followed by a record of a later write batch, is an error: its offset and what is wrong.
pub fn scan(
    segment: &[u8],
    id: u64,
    is_last: bool,
    mut expected_seq: Option<u64>,
) -> std::result::Result<Scan, (u64, String)> {
    let header = SegmentHeader::decode(segment).map_err(|r| (0, r))?;
    if header.id != id {
        return Err((0, format!("header says segment {:016x}", header.id)));
    }
    let mut out = Scan { records: Vec::new(), tail: SEGMENT_HEADER_SIZE as u64, torn: false };
    let mut offset = SEGMENT_HEADER_SIZE as u64;
    loop {
        let at = &segment[offset as usize..];
        let checked = RecordHeader::decode(at).and_then(|h| match h {
            Some(h) if is_last => h.payload(at).map(|_| Some(h)),
            other => Ok(other),
        });
        let checked = checked.and_then(|h| match (h, expected_seq) {
            (Some(h), Some(seq)) if h.seq != seq => Err(format!("sequence number {} where {seq} was expected", h.seq)),
            // No record can follow this one, so the log never wrote it.
            (Some(h), _) if h.seq == u64::MAX => Err("sequence number at its largest value".into()),
            (h, _) => Ok(h),
        });
        match checked {
            Ok(Some(h)) => {
                expected_seq = Some(h.seq + 1);
                let len = h.record_len();
                out.records.push((offset, h));
                offset += len;
            }
            Ok(None) => {
                // Zeros where a record should be: the end of what was written, unless a
                // record from a later write batch follows. That batch was written only after
                // this one was synced and acknowledged, so the zeros are damage.
                if let Some(later) = later_batch_after(segment, offset) {
                    return Err((
                        offset,
                        format!(
                            "no record here, but a later write batch at offset {later} proves records were acknowledged after it"
                        ),
                    ));
                }
                // What is left after the end in the last segment is a batch torn so that its
                // start never reached the disk: cut it, or a record written here later could
                // end right before a stale one and bring it back at the next open.
                out.torn = is_last && segment[offset as usize..].iter().any(|&b| b != 0);
                break;
            }
            Err(reason) if is_last => {
                if let Some(later) = later_batch_after(segment, offset) {
                    return Err((
                        offset,
                        format!("{reason}; a later write batch at offset {later} proves this record was acknowledged"),
                    ));
                }
                out.torn = true;
                break;
            }
            Err(reason) => return Err((offset, reason)),
        }
    }
    out.tail = offset;
    Ok(out)
}

/// Looks for a valid record header after `bad` that belongs to a batch starting after it.
/// Steps through every aligned offset of the rest of the segment: at open, once per segment.
fn later_batch_after(segment: &[u8], bad: u64) -> Option<u64> {
    let mut at = bad as usize + RECORD_ALIGN;
    while at + RECORD_MAGIC.len() <= segment.len() {
        if segment[at..at + RECORD_MAGIC.len()] == RECORD_MAGIC
            && let Ok(Some(h)) = RecordHeader::decode(&segment[at..])
            && h.batch_offset > bad
        {
            return Some(at as u64);
        }
        at += RECORD_ALIGN;
    }
    None
}

/// Zeroes a torn tail from `from` to the last non-zero byte and syncs; returns the bytes
/// cut.
fn cut_torn_tail(fs: &Fs, path: &Path, segment: &[u8], from: u64) -> Result<u64> {
    let end = segment.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1) as u64;
    if end <= from {
        return Ok(0);
    }
    let file = fs.open_rw(path, false)?;
    let zeros = vec![0u8; (end - from).min(1 << 20) as usize];
    let mut at = from;
    while at < end {
        let n = zeros.len().min((end - at) as usize);
        fs.write_all_at(&file, &zeros[..n], at, path)?;
        at += n as u64;
    }
    fs.sync(&file, Sync::Data, path)?;
    Ok(end - from)
}
