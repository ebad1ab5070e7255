//! Merging page-sorted inputs: the heart of compaction and restore.
//!
//! [`PageMerge`] is a k-way merge by page number over [`PageSource`]s ordered oldest first.
//! A binary min-heap holds each source's current page number; when several sources hold
//! the same page, the one with the highest index (the newest) wins and the others are
//! skipped. Memory is the heap plus whatever one page of each source costs (nothing for
//! uncompressed or mmap'ed inputs).
//!
//! Truncation is decided per source, not only by the final Commit. If source j shrinks the
//! database below page p and a later source grows it again without writing p, then p is a
//! page of zeros in the result (that is what applying the files one by one gives: the file
//! is cut, then extended with zeros). So:
//!
//! ```text
//! limit[i]  = min(commit[i], commit[i+1], ..., commit[k-1])
//! page p, newest writer i:  p <= limit[i]          -> emit source i's page
//!                           p >  limit[i], p <= C  -> emit zeros (cut, then regrown)
//!                           p >  C                 -> drop        (C = final commit)
//! page p, no writer:        min(commit) < p <= C   -> emit zeros
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;

use super::decode::{Decoder, Page};
use super::encode::{Encoder, Format};
use super::error::{LtxError, Rule};
use super::format::{HEADER_FLAG_NO_CHECKSUM, Header, MAX_PAGE_SIZE, TRAILER_SIZE, Trailer};
use super::types::{Checksum, PageNo};
use crate::error::{Error, Result};

/// Most inputs one merge takes. Restore plans stay far below it (see `docs/DESIGN.md`); the
/// bound keeps a merge's memory and file handles finite whatever a caller passes.
pub const MAX_MERGE_INPUTS: usize = 4096;

static ZERO_PAGE: [u8; MAX_PAGE_SIZE as usize] = [0; MAX_PAGE_SIZE as usize];

/// Anything that yields pages in ascending order and knows the database size it leaves.
pub trait PageSource {
    /// Database size in pages after this source.
    fn commit(&self) -> u32;
    /// Moves to the next page; `false` at the end (and, for files, once verified).
    fn advance(&mut self) -> Result<bool>;
    /// The current page.
    fn page(&self) -> Option<Page<'_>>;
}

impl PageSource for Decoder<'_> {
    fn commit(&self) -> u32 {
        self.header().commit
    }

    fn advance(&mut self) -> Result<bool> {
        Ok(Decoder::advance(self)?)
    }

    fn page(&self) -> Option<Page<'_>> {
        Decoder::page(self)
    }
}

#[derive(Clone, Copy)]
enum Choice {
    Source(usize),
    Zero,
}

/// k-way merge of page sources, newest wins; see the module docs. Sources whose headers are
/// not yet verified can make it emit zero pages up to the Commit they claim before their
/// damage shows: verify untrusted files first ([`merge`] does).
pub struct PageMerge<S> {
    sources: Vec<S>,
    limits: Vec<u32>,
    final_commit: u32,
    min_commit: u32,
    lock_page: PageNo,
    page_size: usize,
    heap: BinaryHeap<Reverse<(u32, usize)>>,
    /// Sources whose current page was consumed and must advance before the next step.
    pending: Vec<usize>,
    started: bool,
    last_emitted: u32,
    current: Option<(PageNo, Choice)>,
}

impl<S: PageSource> PageMerge<S> {
    /// Prepares a merge of `sources`, oldest first, all with pages of `page_size` bytes.
    pub fn new(sources: Vec<S>, page_size: u32) -> Result<PageMerge<S>> {
        if sources.is_empty() || sources.len() > MAX_MERGE_INPUTS {
            return Err(Error::Invalid(format!("a merge takes 1 to {MAX_MERGE_INPUTS} inputs, not {}", sources.len())));
        }
        let mut limits = vec![0; sources.len()];
        let mut running = u32::MAX;
        for (i, source) in sources.iter().enumerate().rev() {
            running = running.min(source.commit());
            limits[i] = running;
        }
        let n = sources.len();
        Ok(PageMerge {
            final_commit: sources[n - 1].commit(),
            min_commit: limits[0],
            limits,
            lock_page: PageNo::lock_page(page_size),
            page_size: page_size as usize,
            heap: BinaryHeap::with_capacity(n),
            pending: (0..n).collect(),
            sources,
            started: false,
            last_emitted: 0,
            current: None,
        })
    }

    /// Database size in pages after the merged result.
    pub fn commit(&self) -> u32 {
        self.final_commit
    }

    /// The sources, for reading their headers and trailers once the merge is done.
    pub fn sources(&self) -> &[S] {
        &self.sources
    }

    /// The next page of the result, or `None` once every source is exhausted (and every
    /// file source verified).
    pub fn next_page(&mut self) -> Result<Option<Page<'_>>> {
        if self.advance()? { Ok(self.page()) } else { Ok(None) }
    }

    /// Moves to the next result page; see [`next_page`](Self::next_page).
    pub fn advance(&mut self) -> Result<bool> {
        self.started = true;
        self.current = None;
        for i in std::mem::take(&mut self.pending) {
            if self.sources[i].advance()? {
                let pgno = self.sources[i].page().map_or(0, |p| p.pgno.0);
                self.heap.push(Reverse((pgno, i)));
            }
        }
        loop {
            let zero_candidate = self.zero_candidate();
            let written = self.heap.peek().map(|Reverse((pgno, _))| *pgno);
            let pgno = match (written, zero_candidate) {
                (None, None) => return Ok(false),
                (Some(w), Some(z)) if z < w => return Ok(self.emit(z, Choice::Zero)),
                (None, Some(z)) => return Ok(self.emit(z, Choice::Zero)),
                (Some(w), _) => w,
            };
            // Pop every source at this page; the newest (highest index) wins.
            let mut winner = 0;
            while let Some(&Reverse((p, i))) = self.heap.peek() {
                if p != pgno {
                    break;
                }
                self.heap.pop();
                winner = winner.max(i);
                self.pending.push(i);
            }
            if pgno <= self.limits[winner] {
                return Ok(self.emit(pgno, Choice::Source(winner)));
            }
            if pgno <= self.final_commit {
                return Ok(self.emit(pgno, Choice::Zero));
            }
            // Truncated for good: skip it, advance those sources, look again.
            for i in std::mem::take(&mut self.pending) {
                if self.sources[i].advance()? {
                    let p = self.sources[i].page().map_or(0, |p| p.pgno.0);
                    self.heap.push(Reverse((p, i)));
                }
            }
        }
    }

    /// The current result page.
    pub fn page(&self) -> Option<Page<'_>> {
        let (pgno, choice) = self.current?;
        let data = match choice {
            Choice::Source(i) => self.sources[i].page()?.data,
            Choice::Zero => &ZERO_PAGE[..self.page_size],
        };
        Some(Page { pgno, data })
    }

    /// The lowest page that must be zeros unless a source writes it: above the smallest
    /// commit, up to the final commit, after what was emitted, never the lock page.
    fn zero_candidate(&self) -> Option<u32> {
        let mut p = u64::from(self.last_emitted.max(self.min_commit)) + 1;
        if p == u64::from(self.lock_page.0) {
            p += 1;
        }
        (p <= u64::from(self.final_commit)).then_some(p as u32)
    }

    fn emit(&mut self, pgno: u32, choice: Choice) -> bool {
        debug_assert!(pgno > self.last_emitted);
        self.last_emitted = pgno;
        self.current = Some((PageNo(pgno), choice));
        true
    }
}

/// The unverified trailer of a file, read from its last 16 bytes. Only for planning: the
/// decoder verifies it before a merge completes.
fn stored_trailer(file: &[u8]) -> Trailer {
    file.len()
        .checked_sub(TRAILER_SIZE)
        .and_then(|start| file[start..].first_chunk::<TRAILER_SIZE>())
        .map(Trailer::decode)
        .unwrap_or_default()
}

/// Compacts contiguous LTX files (oldest first) into one, written to `out` in `format`.
///
/// The output covers `first.min_txid..=last.max_txid`, carries the first input's pre-apply
/// checksum and the last input's post-apply checksum, the last input's Commit and
/// timestamp, and is a snapshot when the first input is one. Inputs must follow each other
/// exactly (`next.min == prev.max + 1`) and, where both carry checksums, chain
/// (`next.pre_apply == prev.post_apply`). Nothing is trusted before it is verified: the
/// output trailer is written only after every input decoded cleanly; on error the bytes
/// already written to `out` are garbage and must be discarded.
pub fn merge<W: Write>(files: &[&[u8]], out: W, format: Format) -> Result<(W, Trailer)> {
    // The last input is verified before a byte is written: its header's Commit bounds
    // every page the merge can emit (pages above it are dropped, zero pages stop at it), so
    // a damaged header cannot make the merge write up to a bogus Commit. Damage anywhere
    // else still fails the merge pass before the output trailer is written.
    if let Some(last) = files.last() {
        let i = files.len() - 1;
        Decoder::new(last)
            .and_then(|d| d.verify())
            .map_err(|e| LtxError { detail: format!("input {i}: {}", e.detail), ..e })?;
    }
    let decoders = files.iter().map(|f| Decoder::new(f)).collect::<Result<Vec<_>, LtxError>>()?;
    let first = *decoders.first().ok_or_else(|| Error::Invalid("merge needs at least one input".into()))?.header();
    let mut prev: Option<(Header, Trailer)> = None;
    let mut all_checksums = true;
    for (i, (decoder, file)) in decoders.iter().zip(files).enumerate() {
        let header = *decoder.header();
        all_checksums &= header.has_checksums();
        if header.page_size != first.page_size {
            return Err(LtxError::new(
                0,
                Rule::PageSizeMismatch,
                format!("input {i} has page size {}, input 0 has {}", header.page_size, first.page_size),
            )
            .into());
        }
        if let Some((p, t)) = prev {
            if !header.min_txid.follows(p.max_txid) {
                return Err(LtxError::new(
                    0,
                    Rule::NotContiguous,
                    format!("input {i} starts at TXID {}, input {} ends at {}", header.min_txid, i - 1, p.max_txid),
                )
                .into());
            }
            if header.has_checksums() && p.has_checksums() && header.pre_apply_checksum != t.post_apply_checksum {
                return Err(LtxError::new(
                    0,
                    Rule::NotContiguous,
                    format!(
                        "input {i} pre-apply checksum {} does not continue input {} post-apply {}",
                        header.pre_apply_checksum,
                        i - 1,
                        t.post_apply_checksum
                    ),
                )
                .into());
            }
        }
        prev = Some((header, stored_trailer(file)));
    }
    let (last, last_trailer) = prev.unwrap_or_default();
    if matches!(format, Format::V1 { .. }) && !all_checksums {
        return Err(Error::Invalid(
            "cannot write v1 (which always carries database checksums) from inputs without checksums".into(),
        ));
    }
    let header = Header {
        flags: if all_checksums { 0 } else { HEADER_FLAG_NO_CHECKSUM },
        page_size: first.page_size,
        commit: last.commit,
        min_txid: first.min_txid,
        max_txid: last.max_txid,
        timestamp_ms: last.timestamp_ms,
        pre_apply_checksum: if all_checksums { first.pre_apply_checksum } else { Checksum::NONE },
        ..Header::default()
    };
    let post_apply = if all_checksums { last_trailer.post_apply_checksum } else { Checksum::NONE };
    let mut encoder = Encoder::new(out, &header, format)?;
    let mut pages = PageMerge::new(decoders, first.page_size)?;
    while let Some(page) = pages.next_page()? {
        encoder.write_page(page.pgno, page.data)?;
    }
    debug_assert!(pages.sources().iter().all(|d| d.trailer().is_some()));
    encoder.finish(post_apply)
}
