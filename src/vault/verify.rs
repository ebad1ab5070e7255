//! Verifying storage: re-reads every byte the vault keeps and checks it against its
//! checksums, then checks that the catalog and the files agree. The restore drills (see
//! `drill`) prove the rest: that the pieces put together give the recorded databases.
//!
//! ```text
//!  l0/*.seg         segment header (xxh3, id = name); every record's header (xxh3) and
//!                   payload (xxh3), sequence numbers consecutive across segments, the
//!                   payload decoded whole as LTX (file checksum, every format rule) and its
//!                   header equal to the record's; after the last record of a sealed segment
//!                   only zeros (a zeroed record header would otherwise hide what follows)
//!  levels/<h>/NAME  its xxh3
//!  levels/<h>/L1-, L2-*.ltx   header and trailer against the xxh3 in the name, the whole
//!                   file decoded (file checksum, every rule), TXIDs against the name
//!  levels/<h>/L3-*.db         footer (xxh3, = the name's), length, and the database
//!                   checksum of its pages against the footer's
//!  sums/*.sums      header xxh3, the entries' xxh3 when marked clean, the entries' sum
//!                   against the database's checksum; damage found when the vault opened
//!  drills.json, auth/*   their xxh3
//!  catalog          every log run found in the log, every level piece on disk and checked,
//!                   pieces ending at the same TXID recording the same checksum
//! ```
//!
//! Only the durable part of the log is read: in the segment the writer appends to, the
//! records up to the end of the last synced batch. The bytes after it are a batch being
//! written, or zeros that recovery checks at the next open. The pass holds the restore gate
//! (shared) throughout, so retention deletes nothing under it; ingest goes on.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use super::Vault;
use crate::catalog::{DbKey, Run, Source, lock};
use crate::compact::{ends_checksum, parse_level_file_name, read_db_name};
use crate::error::{Error, Result};
use crate::io::MappedFile;
use crate::ltx::format::{HEADER_SIZE, TRAILER_SIZE};
use crate::ltx::{Checksum, Decoder, Header, LtxError, Trailer, TxId, Version};
use crate::segment::format::{KIND_LTX, RecordHeader, SEGMENT_HEADER_SIZE, SegmentHeader};
use crate::segment::{Location, segment_path};

/// Most problems listed per subject; the rest are counted.
const MAX_PROBLEMS: usize = 100;

/// What a part of the report is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// The shared L0 log (records of databases the vault no longer has, and damage that
    /// hides whose record it was).
    Log,
    /// Files of the vault as a whole: the drills file, the auth files, level directories
    /// whose NAME is unreadable.
    Vault,
    /// One database: its log records, level files, images and page-checksum map.
    Database {
        /// Cluster name.
        cluster: String,
        /// Database name.
        db: String,
    },
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Log => f.write_str("(log)"),
            Subject::Vault => f.write_str("(vault files)"),
            Subject::Database { cluster, db } => write!(f, "{cluster}/{db}"),
        }
    }
}

/// One thing found wrong: the file, where in it (when known), and which check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The damaged (or missing) file.
    pub file: PathBuf,
    /// Byte offset of the damaged structure.
    pub offset: Option<u64>,
    /// What check failed.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(offset) => write!(f, "{} at offset {offset}: {}", self.file.display(), self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

impl Problem {
    fn at(file: &Path, offset: u64, reason: impl Into<String>) -> Problem {
        Problem { file: file.to_path_buf(), offset: Some(offset), reason: reason.into() }
    }

    fn of(file: &Path, reason: impl Into<String>) -> Problem {
        Problem { file: file.to_path_buf(), offset: None, reason: reason.into() }
    }

    /// An error from reading `file`, as a problem with the error's own file and offset
    /// when it has them.
    fn from_error(file: &Path, error: Error) -> Problem {
        match error {
            Error::Corrupt { file, offset, reason } => Problem { file, offset: Some(offset), reason },
            other => Problem::of(file, other.to_string()),
        }
    }
}

/// What was checked for one subject, and what was wrong.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageCheck {
    /// Files read whole.
    pub files: u64,
    /// Pieces checked: log records, level files, images.
    pub pieces: u64,
    /// Bytes read.
    pub bytes: u64,
    /// What failed a check (at most a hundred; see `more_problems`).
    pub problems: Vec<Problem>,
    /// Problems beyond the ones listed.
    pub more_problems: u64,
}

impl StorageCheck {
    fn add(&mut self, problem: Problem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.more_problems += 1;
        }
    }

    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.more_problems == 0
    }
}

/// What [`Vault::verify_storage`] found, by subject: the log, the vault's own files, then
/// every database in the filter (each present even when nothing was wrong).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageReport {
    /// Sorted: log, vault, databases by cluster and name.
    pub checks: BTreeMap<Subject, StorageCheck>,
}

impl StorageReport {
    /// Whether every check of every subject passed.
    pub fn ok(&self) -> bool {
        self.checks.values().all(StorageCheck::ok)
    }

    fn of(&mut self, subject: Subject) -> &mut StorageCheck {
        self.checks.entry(subject).or_default()
    }
}

/// Which databases a verification covers, and which of those the vault has.
struct Filter<'a> {
    cluster: Option<&'a str>,
    db: Option<&'a str>,
    /// The covered databases the vault has (a position, not deleted).
    live: BTreeSet<DbKey>,
}

impl Filter<'_> {
    fn covers(&self, cluster: &str, db: &str) -> bool {
        self.cluster.is_none_or(|c| c == cluster) && self.db.is_none_or(|d| d == db)
    }
}

/// What the file pass learnt, for the catalog pass.
#[derive(Default)]
struct Seen {
    /// Log records whose header and payload passed.
    records: HashSet<Location>,
    /// Level files and images that passed, with the post-apply checksum they hold.
    files: BTreeMap<PathBuf, Checksum>,
    /// Files that were read (passed or not).
    read: BTreeSet<PathBuf>,
    /// Records that failed a check (reported with the file).
    failed: HashSet<Location>,
    /// Per segment, the offset from which its records could not be read (a damaged header,
    /// or the whole segment); reported with the file.
    unreadable_from: BTreeMap<u64, u64>,
}

impl Seen {
    /// Whether the file pass reported the record at `location` already.
    fn reported(&self, location: Location) -> bool {
        self.failed.contains(&location)
            || self.unreadable_from.get(&location.segment).is_some_and(|&from| from <= location.offset)
    }
}

impl Vault {
    /// Re-reads and checks every byte the vault stores for the databases of `cluster` (all
    /// clusters when `None`) named `db` (all when `None`; `db` needs `cluster`): see the
    /// module docs for each check. The log's record headers are checked whatever the
    /// filter, the payloads of the filter's databases only. Tells `progress` (bytes read,
    /// bytes to read) as it goes. Damage is reported, not returned as an error: `Err` is
    /// for a bad filter.
    pub fn verify_storage(
        &self,
        cluster: Option<&str>,
        db: Option<&str>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<StorageReport> {
        if db.is_some() && cluster.is_none() {
            return Err(Error::Invalid("a database name needs its cluster (--cluster)".into()));
        }
        let mut filter = Filter { cluster, db, live: BTreeSet::new() };
        // Retention deletes nothing while this reads.
        let _reading = self.gate.read().unwrap_or_else(|e| e.into_inner());
        let mut report = StorageReport::default();
        report.of(Subject::Log);
        report.of(Subject::Vault);
        filter.live = self
            .catalog
            .keys()
            .into_iter()
            .filter(|key| filter.covers(&key.cluster, &key.db) && self.position(&key.cluster, &key.db).is_some())
            .collect();
        for key in &filter.live {
            report.of(database(key));
        }
        let segment_ids = match self.segments.ids() {
            Ok(ids) => ids,
            Err(e) => {
                report.of(Subject::Log).add(Problem::from_error(self.segments.dir(), e));
                Vec::new()
            }
        };
        let level_dirs = self.level_dirs(&mut report);
        let total: u64 = segment_ids
            .iter()
            .map(|&id| file_len(&segment_path(self.segments.dir(), id)))
            .chain(level_dirs.iter().flat_map(|(_, files)| files.iter().map(|f| file_len(f))))
            .sum();
        let mut done = 0u64;
        let mut seen = Seen::default();
        progress(0, total);
        // One end for both passes: a record acknowledged after it was not read.
        let end = self.durable_end.get();
        self.verify_log(&segment_ids, end, &filter, &mut report, &mut seen, &mut |n| {
            done += n;
            progress(done, total);
        });
        for (key, files) in &level_dirs {
            if !filter.covers(&key.cluster, &key.db) {
                continue;
            }
            let check = report.of(database(key));
            for path in files {
                verify_level_dir_file(path, check, &mut seen);
                done += file_len(path);
                progress(done, total);
            }
        }
        for key in &filter.live {
            self.verify_catalog(key, end, &seen, report.of(database(key)));
        }
        self.verify_vault_files(report.of(Subject::Vault));
        progress(total, total);
        let problems: u64 = report.checks.values().map(|c| c.problems.len() as u64 + c.more_problems).sum();
        if problems > 0 {
            self.metrics.corruptions_found("verify", problems);
        }
        Ok(report)
    }

    /// Every database directory under `levels/` with the files in it (NAME first, then
    /// the level files and images; temporary files of a compaction in progress left out).
    /// A directory whose NAME fails its check is a problem of the vault.
    fn level_dirs(&self, report: &mut StorageReport) -> Vec<(DbKey, Vec<PathBuf>)> {
        let levels_dir = self.dir.join("levels");
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&levels_dir) {
            Ok(entries) => entries,
            Err(e) => {
                report.of(Subject::Vault).add(Problem::of(&levels_dir, format!("cannot list: {e}")));
                return out;
            }
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            let (cluster, db) = match read_db_name(&dir) {
                Ok(names) => names,
                Err(e) => {
                    report.of(Subject::Vault).add(Problem::from_error(&dir.join("NAME"), e));
                    continue;
                }
            };
            let mut files = vec![dir.join("NAME")];
            let mut listed: Vec<PathBuf> = match std::fs::read_dir(&dir) {
                Ok(entries) => entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        name != "NAME" && !(name.starts_with('.') && name.contains(".tmp-"))
                    })
                    .collect(),
                Err(e) => {
                    report.of(Subject::Vault).add(Problem::of(&dir, format!("cannot list: {e}")));
                    continue;
                }
            };
            listed.sort();
            files.extend(listed);
            out.push((DbKey { cluster, db }, files));
        }
        out.sort();
        out
    }

    /// Every durable record of every segment; see the module docs.
    fn verify_log(
        &self,
        ids: &[u64],
        end: Option<Location>,
        filter: &Filter<'_>,
        report: &mut StorageReport,
        seen: &mut Seen,
        advance: &mut dyn FnMut(u64),
    ) {
        let Some(end) = end else { return };
        let mut expected_seq: Option<u64> = None;
        for &id in ids {
            let path = segment_path(self.segments.dir(), id);
            if id > end.segment {
                // Installed by the writer, nothing durable in it yet.
                advance(file_len(&path));
                continue;
            }
            let map = match MappedFile::open(&path) {
                Ok(map) => map,
                Err(e) => {
                    report.of(Subject::Log).add(Problem::from_error(&path, e));
                    seen.unreadable_from.insert(id, 0);
                    expected_seq = None;
                    continue;
                }
            };
            let log = report.of(Subject::Log);
            log.files += 1;
            log.bytes += map.len() as u64;
            match SegmentHeader::decode(&map) {
                Ok(header) if header.id == id => {}
                Ok(header) => {
                    log.add(Problem::at(&path, 0, format!("the header says segment {:016x}", header.id)));
                }
                Err(reason) => {
                    log.add(Problem::at(&path, 0, reason));
                    seen.unreadable_from.insert(id, 0);
                    expected_seq = None;
                    advance(map.len() as u64);
                    continue;
                }
            }
            let sealed = id < end.segment;
            let limit = if sealed { map.len() } else { (end.offset as usize).min(map.len()) };
            let mut offset = SEGMENT_HEADER_SIZE;
            let mut intact = true;
            while offset < limit {
                let header = match RecordHeader::decode(&map[offset..]) {
                    Ok(Some(header)) => header,
                    Ok(None) => break,
                    Err(reason) => {
                        // Its length is unknown: nothing after it in this segment can be found.
                        report.of(Subject::Log).add(Problem::at(&path, offset as u64, reason));
                        seen.unreadable_from.insert(id, offset as u64);
                        intact = false;
                        expected_seq = None;
                        break;
                    }
                };
                let key = DbKey { cluster: header.cluster.clone(), db: header.db.clone() };
                let subject = if filter.live.contains(&key) { database(&key) } else { Subject::Log };
                if let Some(seq) = expected_seq
                    && header.seq != seq
                {
                    report.of(Subject::Log).add(Problem::at(
                        &path,
                        offset as u64,
                        format!("sequence number {} where {seq} was expected: records are missing", header.seq),
                    ));
                }
                expected_seq = Some(header.seq + 1);
                report.of(Subject::Log).pieces += 1;
                if filter.covers(&key.cluster, &key.db) {
                    match verify_record(&header, &map, offset) {
                        Ok(()) => {
                            seen.records.insert(Location { segment: id, offset: offset as u64 });
                        }
                        Err((at, reason)) => {
                            seen.failed.insert(Location { segment: id, offset: offset as u64 });
                            let what = format!(
                                "record of {}/{} TXID {}..{}: {reason}",
                                header.cluster, header.db, header.min_txid, header.max_txid
                            );
                            report.of(subject).add(Problem::at(&path, offset as u64 + at, what));
                        }
                    }
                }
                offset += header.record_len() as usize;
            }
            if sealed
                && intact
                && let Some(at) = first_non_zero(&map, offset.min(map.len())..map.len())
            {
                report.of(Subject::Log).add(Problem::at(
                    &path,
                    at as u64,
                    "a non-zero byte after the last record of a sealed segment (a damaged record header hides \
                     the records after it, or the unused end of the segment is damaged)",
                ));
            }
            advance(map.len() as u64);
        }
    }

    /// The catalog against the files: every log run was found, every level piece was read
    /// and passed, pieces ending at the same TXID agree on its checksum; and the
    /// page-checksum map (see the module docs).
    fn verify_catalog(&self, key: &DbKey, end: Option<Location>, seen: &Seen, check: &mut StorageCheck) {
        let Some(state) = self.catalog.get(key) else { return };
        let (pieces, sums_problems) = {
            let state = lock(&state);
            let pieces: Vec<Run> = state.runs.iter().chain(state.levels.iter().flatten()).cloned().collect();
            let path = state.sums.path().to_path_buf();
            let mut problems = Vec::new();
            if let Some(damage) = state.sums.damage_at_open() {
                problems.push(Problem::of(
                    &path,
                    format!("{damage} (found when the vault opened; the map was rebuilt from the history)"),
                ));
            }
            if let Err(reason) = state.sums.verify() {
                problems.push(Problem::at(&path, 0, reason));
            }
            // With an upload in flight the map is ahead of the durable position.
            if state.pending == state.durable {
                let entries = state.sums.entries();
                let sum = state.sums.database_checksum(state.page_size);
                if entries != state.durable_commit || sum != state.durable.checksum {
                    problems.push(Problem::of(
                        &path,
                        format!(
                            "{entries} entries adding up to {sum}; the database has {} pages and checksum {} at TXID {}",
                            state.durable_commit, state.durable.checksum, state.durable.txid
                        ),
                    ));
                }
                check.bytes += u64::from(entries) * 8;
            }
            check.files += 1;
            (pieces, problems)
        };
        for problem in sums_problems {
            check.add(problem);
        }
        let mut points: BTreeMap<TxId, &Run> = BTreeMap::new();
        for piece in &pieces {
            match &piece.source {
                Source::Log(location) => {
                    // A record after the durable end is being acknowledged right now.
                    let durable = end.is_some_and(|end| *location < end);
                    if durable && !seen.records.contains(location) && !seen.reported(*location) {
                        check.add(Problem::at(
                            &segment_path(self.segments.dir(), location.segment),
                            location.offset,
                            format!(
                                "the catalog's record of TXID {}..{} is not an intact record",
                                piece.min_txid, piece.max_txid
                            ),
                        ));
                    }
                }
                Source::File(path) | Source::Image(path) => match seen.files.get(path) {
                    Some(&checksum) if checksum != piece.post_apply => check.add(Problem::of(
                        path,
                        format!("holds checksum {checksum}; the catalog recorded {}", piece.post_apply),
                    )),
                    Some(_) => {}
                    None if seen.read.contains(path) => {} // reported with the file
                    // Written by a compaction after the directory was listed.
                    None if path.exists() => {}
                    None => check.add(Problem::of(path, format!("L{} piece of the catalog is missing", piece.level))),
                },
            }
            if let Some(other) = points.get(&piece.max_txid) {
                if other.post_apply != piece.post_apply {
                    let file = piece.path().map_or_else(|| self.segments.dir().to_path_buf(), Path::to_path_buf);
                    check.add(Problem::of(
                        &file,
                        format!(
                            "L{} records checksum {} for TXID {}, L{} records {}",
                            piece.level, piece.post_apply, piece.max_txid, other.level, other.post_apply
                        ),
                    ));
                }
            } else {
                points.insert(piece.max_txid, piece);
            }
        }
    }

    /// The drills file and the auth files, each against its checksum.
    fn verify_vault_files(&self, check: &mut StorageCheck) {
        let drills = self.dir.join(super::drill::DRILLS_FILE);
        if drills.exists() {
            check.files += 1;
            check.bytes += file_len(&drills);
            if let Err(e) = super::drill::load(&self.dir) {
                check.add(Problem::from_error(&drills, e));
            }
        }
        let auth = self.dir.join(crate::auth::AUTH_DIR);
        if auth.is_dir() {
            for (name, opened) in [
                (crate::auth::TOKENS_FILE, crate::auth::TokenStore::open(&self.dir).err()),
                (crate::auth::CLUSTER_IDS_FILE, crate::auth::ClusterIds::open(&self.dir).err()),
            ] {
                let path = auth.join(name);
                if path.exists() {
                    check.files += 1;
                    check.bytes += file_len(&path);
                }
                if let Some(e) = opened {
                    check.add(Problem::from_error(&path, e));
                }
            }
        }
    }
}

fn database(key: &DbKey) -> Subject {
    Subject::Database { cluster: key.cluster.clone(), db: key.db.clone() }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// One record of the segment `map`, at `offset`: its payload checksum, and for an LTX
/// record the whole file decoded and its header against the record's. `Err` has the
/// offset in the record and the reason. Memory stays flat: see [`CHUNK`].
fn verify_record(header: &RecordHeader, map: &MappedFile, offset: usize) -> std::result::Result<(), (u64, String)> {
    let start = offset + header.header_len();
    let end = start + header.payload_len as usize;
    if end > map.len() {
        return Err((0, "payload runs past the end of the segment".into()));
    }
    let sum = xxh3_flat(map, start..end);
    if sum != header.payload_xxh3 {
        return Err((
            0,
            format!("payload checksum mismatch (stored {:016x}, computed {sum:016x})", header.payload_xxh3),
        ));
    }
    if header.kind != KIND_LTX {
        return Ok(());
    }
    let at = header.header_len() as u64;
    let (ltx, trailer) = decode_flat(map, start..end, None)
        .map_err(|e| (at + e.offset, format!("LTX payload: {}: {}", e.rule, e.detail)))?;
    let agree = ltx.min_txid == header.min_txid
        && ltx.max_txid == header.max_txid
        && ltx.commit == header.commit
        && ltx.page_size == header.page_size
        && ltx.timestamp_ms == header.timestamp_ms;
    if !agree {
        return Err((at, "the LTX header disagrees with the record's (TXIDs, commit, page size or timestamp)".into()));
    }
    if ltx.has_checksums() && trailer.post_apply_checksum != header.post_apply {
        return Err((
            at,
            format!(
                "the LTX file says post-apply checksum {}, the record {}",
                trailer.post_apply_checksum, header.post_apply
            ),
        ));
    }
    Ok(())
}

/// How much of a mapping is read before the pages behind the cursor are let go: a
/// verification reads files far larger than memory should grow, and mapped pages it has
/// read count as its memory until released (they stay in the page cache).
const CHUNK: usize = 8 << 20;

/// The xxh3 of `range` of `map`, read a chunk at a time.
fn xxh3_flat(map: &MappedFile, range: Range<usize>) -> u64 {
    let mut hash = Xxh3::new();
    let mut at = range.start;
    while at < range.end {
        let end = (at + CHUNK).min(range.end);
        hash.update(&map[at..end]);
        map.release(at..end);
        at = end;
    }
    hash.digest()
}

/// The offset of the first non-zero byte in `range` of `map`, read a chunk at a time.
fn first_non_zero(map: &MappedFile, range: Range<usize>) -> Option<usize> {
    let mut at = range.start;
    while at < range.end {
        let end = (at + CHUNK).min(range.end);
        let found = map[at..end].iter().position(|&b| b != 0);
        map.release(at..end);
        if let Some(i) = found {
            return Some(at + i);
        }
        at = end;
    }
    None
}

/// Decodes the LTX file at `range` of `map` whole (every check of the decoder), letting go
/// of the pages behind the decoder as it goes where it reads in place (not inside a v1 LZ4
/// page block, which a frame decoder streams: there, memory is the compressed size).
fn decode_flat(
    map: &MappedFile,
    range: Range<usize>,
    version: Option<Version>,
) -> std::result::Result<(Header, Trailer), LtxError> {
    let bytes = &map[range.clone()];
    let mut decoder = match version {
        Some(version) => Decoder::with_version(bytes, version)?,
        None => Decoder::new(bytes)?,
    };
    let mut released = 0;
    while decoder.advance()? {
        if let Some(at) = decoder.input_offset()
            && at >= released + CHUNK
        {
            map.release(range.start + released..range.start + at);
            released = at;
        }
    }
    map.release(range);
    Ok((*decoder.header(), decoder.trailer().unwrap_or_default()))
}

/// One file of a database's level directory: NAME, a level file or an image.
fn verify_level_dir_file(path: &Path, check: &mut StorageCheck, seen: &mut Seen) {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    check.files += 1;
    check.bytes += file_len(path);
    seen.read.insert(path.to_path_buf());
    let result = if name == "NAME" {
        read_db_name(path.parent().unwrap_or(Path::new("."))).map(|_| None).map_err(|e| Problem::from_error(path, e))
    } else if let Some((max, sum)) = crate::image::parse_image_file_name(&name) {
        check.pieces += 1;
        verify_image(path, max, sum).map(Some)
    } else if let Some((_, min, max, ends)) = parse_level_file_name(&name) {
        check.pieces += 1;
        verify_level_file(path, min, max, ends).map(Some)
    } else {
        Err(Problem::of(path, "not a file the vault writes"))
    };
    match result {
        Ok(Some(checksum)) => {
            seen.files.insert(path.to_path_buf(), checksum);
        }
        Ok(None) => {}
        Err(problem) => check.add(problem),
    }
}

/// A level file: header and trailer against the name, decoded whole, TXIDs against the
/// name. Returns its post-apply checksum.
fn verify_level_file(path: &Path, min: TxId, max: TxId, ends: u64) -> std::result::Result<Checksum, Problem> {
    let map = MappedFile::open(path).map_err(|e| Problem::from_error(path, e))?;
    if map.len() < HEADER_SIZE + TRAILER_SIZE {
        return Err(Problem::at(path, 0, format!("{} bytes, too short for an LTX file", map.len())));
    }
    let header: &[u8; HEADER_SIZE] = map[..HEADER_SIZE].try_into().map_err(|_| Problem::at(path, 0, "header"))?;
    let trailer: &[u8; TRAILER_SIZE] =
        map[map.len() - TRAILER_SIZE..].try_into().map_err(|_| Problem::at(path, 0, "trailer"))?;
    if ends_checksum(header, trailer) != ends {
        return Err(Problem::at(path, 0, "header or trailer does not match the checksum in the file name"));
    }
    let (header, trailer) = decode_flat(&map, 0..map.len(), Some(Version::V1))
        .map_err(|e| Problem::at(path, e.offset, format!("{}: {}", e.rule, e.detail)))?;
    if (header.min_txid, header.max_txid) != (min, max) {
        return Err(Problem::at(
            path,
            0,
            format!("the header says TXID {}..{}, the name {min}..{max}", header.min_txid, header.max_txid),
        ));
    }
    Ok(trailer.post_apply_checksum)
}

/// An image: footer against the name, length, and the database checksum of its pages
/// against the footer's. Returns that checksum.
fn verify_image(path: &Path, max: TxId, sum: u64) -> std::result::Result<Checksum, Problem> {
    let (run, page_size) = crate::image::load_image(path, sum).map_err(|e| Problem::from_error(path, e))?;
    if run.max_txid != max {
        return Err(Problem::of(path, format!("the name says TXID {max}, the footer {}", run.max_txid)));
    }
    let bytes = u64::from(run.commit) * u64::from(page_size);
    let computed =
        crate::ltx::database_checksum_of_prefix(path, bytes, page_size).map_err(|e| Problem::from_error(path, e))?;
    if computed != run.post_apply {
        return Err(Problem::of(
            path,
            format!(
                "its {} pages give database checksum {computed}, its footer records {} for TXID {}",
                run.commit, run.post_apply, run.max_txid
            ),
        ));
    }
    Ok(run.post_apply)
}
