//! Ingest: validating an upload against the stored position, and the group-commit log
//! writer that makes it durable.
//!
//! ```text
//!  request thread                         writer thread (one per vault)
//!  ─────────────────────────────────      ─────────────────────────────────────────
//!  decode + verify LTX (no locks)
//!  lock database
//!    contiguity, page size, checksum
//!    reserve page-sum map room
//!    push WriteRequest ──── bounded ───►  take the first request, then all that are
//!    update pending state                  queued (up to a batch limit)
//!  unlock                                  append them with one gather write,
//!  wait for the ack  ◄──────────────────   one fdatasync (io_uring or pwrite engine)
//!  lock database: page sums, durable run,  answer every request of the batch
//!    HWM (or, refused, pending put back)
//! ```
//!
//! The request thread pushes while holding its database's lock, so one database's
//! records enter the log in TXID order, and a database has one record in flight at a time
//! (a second upload waits for the first's answer). The writer takes no lock a request
//! thread holds. A failed write or fdatasync poisons the vault: the writer answers every
//! later request with an error, and only reopening (which runs recovery) clears it. A disk
//! without room for the next segment is not a failed write: nothing was written, the log is
//! as it was, and the writer refuses that request alone (`Refusal::NoSpace`); its request
//! thread puts the database's pending state back (nothing of the database was queued after
//! it), and the upload can be retried once space is freed.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam::channel::{Receiver, Sender};
use xxhash_rust::xxh3::xxh3_64;

use crate::catalog::pagesums::PageSums;
use crate::clock::Clock;
use crate::error::Error;
use crate::io::Fs;
use crate::io::engine::IoEngine;
use crate::ltx::{Checksum, PageNo, page_checksum};
use crate::segment::format::{RecordHeader, SEGMENT_HEADER_SIZE, align_up};
use crate::segment::{Location, PreparedSegment, prepare_segment, segment_path};

/// An upload's bytes, shared with the writer thread without copying.
#[derive(Clone)]
pub struct Payload(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl Payload {
    /// Wraps anything that holds bytes (a `Vec`, an mmap of a spooled body).
    pub fn new(bytes: impl AsRef<[u8]> + Send + Sync + 'static) -> Payload {
        Payload(Arc::new(bytes))
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        Payload::new(bytes)
    }
}

/// The vault-wide "a write failed" flag. Once set it stays set until the vault is
/// reopened.
#[derive(Default)]
pub struct Poison {
    set: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Poison {
    /// Marks the vault poisoned; the first reason wins.
    pub fn poison(&self, reason: String) {
        let mut current = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_none() {
            *current = Some(reason);
        }
        self.set.store(true, Ordering::SeqCst);
    }

    /// The reason, if poisoned.
    pub fn reason(&self) -> Option<String> {
        if !self.set.load(Ordering::SeqCst) {
            return None;
        }
        self.reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One record on its way to the log (an upload, or a tombstone with an empty payload).
/// `seq` and `batch_offset` of the header are filled in by the writer, which answers with
/// where the record is and its sequence number once it is durable.
pub(crate) struct WriteRequest {
    pub header: RecordHeader,
    pub payload: Payload,
    pub done: Sender<Written>,
}

/// The writer's answer to one request: where the record is and its sequence number, or
/// why it was not written.
pub(crate) type Written = Result<(Location, u64), Refusal>;

/// Why the writer did not write a record.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// No room on the disk for the log segment the record needed. Nothing was written and
    /// the log is as it was: the request may be retried once space is freed.
    NoSpace(String),
    /// A write failed, or the vault was poisoned before: the vault is poisoned
    /// ([`Error::Poisoned`], or [`Error::NoSpace`] when a full disk failed the write).
    Failed(Error),
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Error {
        match refusal {
            Refusal::NoSpace(context) => Error::NoSpace(context),
            Refusal::Failed(e) => e,
        }
    }
}

/// Why a new segment could not be started.
enum RollError {
    /// The disk has no room for it; the log is as it was.
    NoSpace(Error),
    /// Anything else, or a failure after the rename (the directory sync): poisons.
    Fatal(Error),
}

/// Limits of the writer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriterLimits {
    pub segment_bytes: u64,
    pub max_batch_bytes: u64,
    pub max_batch_records: usize,
}

/// The log writer's state; runs on its own thread.
pub(crate) struct LogWriter {
    pub dir: PathBuf,
    pub engine: Box<dyn IoEngine>,
    pub fs: Fs,
    pub limits: WriterLimits,
    pub poison: Arc<Poison>,
    pub clock: Arc<dyn Clock>,
    /// Batch sizes and write+fdatasync times go here.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The active segment: id, open file, size, next free offset.
    pub active: Option<(u64, File, u64, u64)>,
    pub next_seq: u64,
    /// The next segment, being zero-filled in the background.
    pub spare: Option<std::thread::JoinHandle<crate::Result<PreparedSegment>>>,
    /// Where the durable part of the log ends, moved forward after every synced batch (see
    /// [`DurableEnd`]).
    pub durable_end: Arc<DurableEnd>,
    /// Set while the disk has had no room for a new segment (so the transitions are logged
    /// once, not once per refused upload).
    pub disk_full: bool,
}

/// The end of the durable log: the segment and offset after the last record whose batch
/// was synced. Bytes before it never change again; bytes after it may be a batch being
/// written. `None` before the first segment exists.
#[derive(Debug, Default)]
pub struct DurableEnd(Mutex<Option<Location>>);

impl DurableEnd {
    /// Starts at `end` (what recovery found).
    pub fn new(end: Option<Location>) -> DurableEnd {
        DurableEnd(Mutex::new(end))
    }

    /// Where the durable log ends now.
    pub fn get(&self) -> Option<Location> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, end: Location) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(end);
    }
}

static PADDING: [u8; 8] = [0; 8];

impl LogWriter {
    /// Serves requests until every sender is gone.
    pub fn run(mut self, queue: Receiver<WriteRequest>) {
        while let Ok(first) = queue.recv() {
            let mut bytes = first.header.record_len();
            let mut batch = vec![first];
            while bytes < self.limits.max_batch_bytes && batch.len() < self.limits.max_batch_records {
                match queue.try_recv() {
                    Ok(next) => {
                        bytes += next.header.record_len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.write_batch(batch);
        }
        // Nothing may write into the log directory after the writer stops: a detached
        // zero-fill would keep writing to a path a later open of the vault reuses.
        if let Some(Ok(Ok(spare))) = self.spare.take().map(|h| h.join()) {
            spare.discard(&self.fs);
        }
    }

    fn write_batch(&mut self, mut batch: Vec<WriteRequest>) {
        while !batch.is_empty() {
            if let Some(reason) = self.poison.reason() {
                for request in batch {
                    let _ = request.done.send(Err(Refusal::Failed(Error::Poisoned(reason.clone()))));
                }
                return;
            }
            // Room in the active segment for the first request, or a new segment. A disk
            // without room for one refuses that request, cleanly: nothing has been written
            // for it, and the others of the batch may still fit in the active segment.
            let first_len = batch[0].header.record_len();
            let fits = matches!(&self.active, Some((_, _, size, tail)) if tail + first_len <= *size);
            if !fits {
                match self.roll(first_len) {
                    Ok(()) => {
                        if std::mem::take(&mut self.disk_full) {
                            tracing::info!("the vault's disk has room again: uploads are accepted");
                        }
                    }
                    Err(RollError::NoSpace(e)) => {
                        if !std::mem::replace(&mut self.disk_full, true) {
                            tracing::warn!(error = %e, "the vault's disk is full: uploads are refused (507) until space is freed");
                        }
                        let refused = batch.remove(0);
                        let _ = refused
                            .done
                            .send(Err(Refusal::NoSpace(format!("no room for a new log segment ({})", cause(&e)))));
                        continue;
                    }
                    Err(RollError::Fatal(e)) => {
                        let no_space = e.is_no_space();
                        let reason = format!("could not start a new log segment: {}", cause(&e));
                        self.poison.poison(reason.clone());
                        for request in batch {
                            let _ = request.done.send(Err(failure(reason.clone(), no_space)));
                        }
                        return;
                    }
                }
            }
            let Some((id, file, size, tail)) = &mut self.active else { continue };
            let start = *tail;
            let mut end = start;
            let mut count = 0;
            for request in &mut batch {
                let len = request.header.record_len();
                if end + len > *size {
                    break;
                }
                request.header.seq = self.next_seq + count as u64;
                request.header.batch_offset = start;
                end += len;
                count += 1;
            }
            let group: Vec<WriteRequest> = batch.drain(..count).collect();
            let headers: Vec<Vec<u8>> = group.iter().map(|r| r.header.encode()).collect();
            let mut bufs: Vec<&[u8]> = Vec::with_capacity(group.len() * 3);
            for (request, header) in group.iter().zip(&headers) {
                bufs.push(header);
                if !request.payload.bytes().is_empty() {
                    bufs.push(request.payload.bytes());
                }
                let unpadded = header.len() as u64 + request.payload.bytes().len() as u64;
                let pad = (align_up(unpadded) - unpadded) as usize;
                if pad > 0 {
                    bufs.push(&PADDING[..pad]);
                }
            }
            let dir = &self.dir;
            let started = std::time::Instant::now();
            let result = self.fs.log_write_and_sync(&mut *self.engine, file, start, &bufs, || segment_path(dir, *id));
            self.metrics.log_sync.observe_duration(started.elapsed());
            drop(bufs);
            match result {
                Ok(()) => {
                    self.metrics.batch_records.observe(count as u64);
                    self.metrics.batch_bytes.observe(end - start);
                    let mut offset = start;
                    for request in group {
                        let location = Location { segment: *id, offset };
                        offset += request.header.record_len();
                        let _ = request.done.send(Ok((location, request.header.seq)));
                    }
                    *tail = end;
                    self.next_seq += count as u64;
                    self.durable_end.set(Location { segment: *id, offset: end });
                }
                Err(e) => {
                    let reason = format!(
                        "write or fdatasync of {} at offset {start} failed: {e}",
                        segment_path(&self.dir, *id).display()
                    );
                    self.poison.poison(reason.clone());
                    for request in group {
                        let _ = request.done.send(Err(failure(reason.clone(), crate::error::is_no_space(&e))));
                    }
                }
            }
        }
    }

    /// Starts the next segment, large enough for a record of `record_len` bytes. The
    /// spare prepared in the background is used when it is big enough; then the one after
    /// is started, so a roll normally costs a rename and a directory sync.
    ///
    /// Until the rename, nothing about the log has changed, so a disk without room for the
    /// segment (its preparation reserves the space first) is a clean refusal. Once renamed,
    /// a failed directory sync leaves the log's state unknown: fatal.
    fn roll(&mut self, record_len: u64) -> Result<(), RollError> {
        let classify = |e: crate::Error| if e.is_no_space() { RollError::NoSpace(e) } else { RollError::Fatal(e) };
        let id = self.active.as_ref().map_or(1, |(id, ..)| id + 1);
        let needed = align_up(SEGMENT_HEADER_SIZE as u64 + record_len);
        let spare = match self.spare.take().map(|h| h.join()) {
            Some(Ok(Ok(spare))) if spare.id == id && spare.size >= needed => Some(spare),
            Some(Ok(Ok(spare))) => {
                spare.discard(&self.fs);
                None
            }
            Some(Ok(Err(e))) => {
                // Not fatal: the segment is prepared here instead, and that one's failure is.
                tracing::warn!(error = %e, "preparing the next log segment in the background failed");
                None
            }
            Some(Err(_)) => {
                tracing::warn!("the thread preparing the next log segment panicked");
                None
            }
            None => None,
        };
        let prepared = match spare {
            Some(spare) => spare,
            None => {
                prepare_segment(&self.fs, &self.dir, id, self.limits.segment_bytes.max(needed), self.clock.now_ms())
                    .map_err(classify)?
            }
        };
        let (file, id, size) = prepared.rename_into_place(&self.fs, &self.dir).map_err(classify)?;
        self.fs.sync_dir(&self.dir).map_err(RollError::Fatal)?;
        self.active = Some((id, file, size, SEGMENT_HEADER_SIZE as u64));
        let (fs, dir, size, now) = (self.fs.clone(), self.dir.clone(), self.limits.segment_bytes, self.clock.now_ms());
        self.spare = std::thread::Builder::new()
            .name(SEGMENT_PREP_THREAD.into())
            .spawn(move || prepare_segment(&fs, &dir, id + 1, size, now))
            .ok();
        Ok(())
    }
}

/// The name of the thread that prepares the next log segment ahead of use (its failures
/// are not the log's: the writer prepares the segment itself when the spare is missing).
pub const SEGMENT_PREP_THREAD: &str = "ltxvault-segment-prep";

/// What went wrong, for a message that says it once: an [`Error::NoSpace`]'s own account
/// without its advice (the [`Error::NoSpace`] the message goes into gives that), any other
/// error as it reads.
fn cause(e: &Error) -> String {
    match e {
        Error::NoSpace(what) => what.clone(),
        other => other.to_string(),
    }
}

/// A failed write's answer to a request (the vault is poisoned): [`Error::NoSpace`] when
/// the disk was full, otherwise [`Error::Poisoned`].
fn failure(reason: String, no_space: bool) -> Refusal {
    Refusal::Failed(if no_space {
        Error::NoSpace(format!("{reason}; the vault is poisoned until it is reopened"))
    } else {
        Error::Poisoned(reason)
    })
}

/// The database checksum after applying a file's pages onto the state `sums` describes
/// (`old` = its checksum, `old_commit` = its size), without changing anything. Pages the
/// database grows by that the file does not hold are zeros (that is what extending the
/// file gives), pages above `new_commit` drop out.
pub(crate) fn checksum_after(
    sums: &PageSums,
    old: Checksum,
    old_commit: u32,
    new_commit: u32,
    pages: &[(PageNo, Checksum)],
    page_size: u32,
) -> Checksum {
    let lock = PageNo::lock_page(page_size);
    let mut sum = old;
    for &(pgno, pc) in pages {
        if pgno.0 <= old_commit {
            sum = sum.toggle(sums.get(pgno).unwrap_or_default());
        }
        sum = sum.toggle(pc);
    }
    for p in (new_commit + 1..=old_commit).map(PageNo).filter(|&p| p != lock) {
        sum = sum.toggle(sums.get(p).unwrap_or_default());
    }
    for p in grown_unwritten(old_commit, new_commit, pages, lock) {
        sum = sum.toggle(zero_page_checksum(p, page_size));
    }
    sum
}

/// Applies the same change to the map.
pub(crate) fn apply_to_sums(
    sums: &mut PageSums,
    old_commit: u32,
    new_commit: u32,
    pages: &[(PageNo, Checksum)],
    page_size: u32,
) -> crate::Result<()> {
    let lock = PageNo::lock_page(page_size);
    sums.ensure_dirty()?;
    sums.resize(new_commit)?;
    for &(pgno, pc) in pages {
        sums.set(pgno, pc);
    }
    for p in grown_unwritten(old_commit, new_commit, pages, lock) {
        sums.set(p, zero_page_checksum(p, page_size));
    }
    Ok(())
}

/// Pages in `old_commit+1..=new_commit` that `pages` (sorted) does not hold, lock page
/// excepted.
fn grown_unwritten(old_commit: u32, new_commit: u32, pages: &[(PageNo, Checksum)], lock: PageNo) -> Vec<PageNo> {
    if new_commit <= old_commit {
        return Vec::new();
    }
    let first_new = pages.partition_point(|(p, _)| p.0 <= old_commit);
    let mut written = pages[first_new..].iter().map(|(p, _)| *p).peekable();
    let mut missing = Vec::new();
    for p in (old_commit + 1..=new_commit).map(PageNo) {
        if written.peek() == Some(&p) {
            written.next();
        } else if p != lock {
            missing.push(p);
        }
    }
    missing
}

fn zero_page_checksum(pgno: PageNo, page_size: u32) -> Checksum {
    static ZEROS: [u8; 65536] = [0; 65536];
    page_checksum(pgno, &ZEROS[..page_size as usize])
}

/// xxh3 of a payload, as records store it.
pub(crate) fn payload_checksum(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}
