//! A streaming, verifying decoder over a whole LTX file held in memory (usually an mmap).
//!
//! The decoder is a cursor: [`Decoder::advance`] moves to the next page frame and
//! [`Decoder::page`] borrows the current page. Uncompressed v1 pages are borrowed straight
//! from the input; compressed pages are decompressed into one page-sized buffer that the
//! next `advance` reuses. Memory is therefore one page at most, whatever the file size.
//!
//! Everything is checked on the way, and nothing is handed out before its frame has been
//! checked; the whole-file checks (file checksum, page index length, trailer rules,
//! snapshot completeness and snapshot database checksum) run when `advance` reaches the
//! end marker, so a caller that drained the decoder without error holds a verified file.
//! A caller that stops early has only seen checked frames, but has not seen the file
//! checksum verified: it must not treat the file as good.
//!
//! The file checksum is a CRC-64 over this logical stream:
//!
//! ```text
//! header (100 bytes as stored)
//! per page frame: page header as stored (v3: with flags and size prefix) ‖ decompressed page
//! end marker as stored
//! page index as stored (v2/v3: varints, terminator, u64 length)
//! post-apply checksum (first 8 trailer bytes)
//! ```

use std::io::Read;

use super::checksum::{Crc64, page_checksum};
use super::error::{LtxError, Result, Rule};
use super::format::{
    HEADER_SIZE, Header, INDEX_LEN_SIZE, PAGE_FLAG_SIZE_PREFIX, PGNO_SIZE, SIZE_PREFIX_SIZE, TRAILER_SIZE, Trailer,
    Version, check_next_pgno, get_uvarint, read_header, read_u32, read_u64,
};
use super::lz4;
use super::types::{Checksum, PageNo};

/// One page handed out by a decoder: its number and its `PageSize` bytes.
#[derive(Clone, Copy, Debug)]
pub struct Page<'a> {
    /// Page number.
    pub pgno: PageNo,
    /// The page's bytes, exactly `PageSize` long.
    pub data: &'a [u8],
}

/// What a fully decoded file looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The format generation.
    pub version: Version,
    /// The header.
    pub header: Header,
    /// The trailer (verified).
    pub trailer: Trailer,
    /// Page frames stored.
    pub page_count: u32,
    /// Highest page number stored (0 when none).
    pub max_pgno: PageNo,
}

enum Body<'a> {
    /// v1 without compression: frames are read in place.
    Raw { pos: usize },
    /// v1 with one LZ4 frame over the page block. `logical` counts uncompressed bytes from
    /// the start of the file, for error offsets.
    Lz4 { reader: Box<lz4_flex::frame::FrameDecoder<&'a [u8]>>, logical: u64 },
    /// v2/v3: per-page frames followed by a page index at `index_start`.
    Indexed { pos: usize, index_start: usize, index_pos: usize },
}

#[derive(Clone, Copy)]
enum Location {
    /// The page starts at this offset of the input.
    Input(usize),
    /// The page is in the decoder's buffer.
    Buffer,
}

/// Streaming decoder; see the module docs.
pub struct Decoder<'a> {
    file: &'a [u8],
    header: Header,
    version: Version,
    body: Body<'a>,
    crc: Crc64,
    /// Running database checksum, kept for snapshots that carry checksums.
    db_checksum: Option<Checksum>,
    buffer: Vec<u8>,
    current: Option<(PageNo, Location)>,
    last_pgno: u32,
    page_count: u32,
    trailer: Option<Trailer>,
    failed: Option<LtxError>,
}

impl<'a> Decoder<'a> {
    /// Opens a file, working out its version from its bytes ([`Version::detect`]).
    pub fn new(file: &'a [u8]) -> Result<Decoder<'a>> {
        Decoder::with_version(file, Version::detect(file))
    }

    /// Opens a file of a known version: checks the header and sets up the page block.
    pub fn with_version(file: &'a [u8], version: Version) -> Result<Decoder<'a>> {
        let header = read_header(file)?;
        header.validate(version)?;
        let end_marker_size = version.page_header_size();
        let min_len = HEADER_SIZE
            + end_marker_size
            + if version.has_page_index() { 1 + INDEX_LEN_SIZE } else { 0 }
            + TRAILER_SIZE;
        if file.len() < min_len {
            return Err(LtxError::new(
                file.len() as u64,
                Rule::Truncated,
                format!("{} bytes, shorter than the smallest {} file ({min_len} bytes)", file.len(), version.name()),
            ));
        }
        let trailer_start = file.len() - TRAILER_SIZE;
        let body = match version {
            Version::V1 if header.is_lz4_compressed() => {
                // The LZ4 frame must end exactly where the trailer starts: the frame decoder
                // alone would stop at the end mark and never look at what follows.
                let block = &file[HEADER_SIZE..trailer_start];
                if lz4::frame_len(block) != Some(block.len()) {
                    return Err(LtxError::new(
                        HEADER_SIZE as u64,
                        Rule::PageCompression,
                        "the LZ4 page block is malformed or does not end right before the trailer",
                    ));
                }
                Body::Lz4 { reader: Box::new(lz4_flex::frame::FrameDecoder::new(block)), logical: HEADER_SIZE as u64 }
            }
            Version::V1 => Body::Raw { pos: HEADER_SIZE },
            Version::V2 | Version::V3 => {
                let len_at = trailer_start - INDEX_LEN_SIZE;
                let index_len = read_u64(file, len_at).unwrap_or(u64::MAX);
                let first_possible = HEADER_SIZE + end_marker_size;
                let index_start = (len_at as u64)
                    .checked_sub(index_len)
                    .filter(|&s| index_len >= 1 && s >= first_possible as u64)
                    .ok_or_else(|| {
                        LtxError::new(
                            len_at as u64,
                            Rule::PageIndex,
                            format!("page index length {index_len} does not fit a {}-byte file", file.len()),
                        )
                    })? as usize;
                Body::Indexed { pos: HEADER_SIZE, index_start, index_pos: index_start }
            }
        };
        let mut crc = Crc64::new();
        crc.update(&file[..HEADER_SIZE]);
        let needs_buffer = !matches!(body, Body::Raw { .. });
        Ok(Decoder {
            file,
            header,
            version,
            body,
            crc,
            db_checksum: (header.is_snapshot() && header.has_checksums()).then_some(Checksum::EMPTY_DATABASE),
            buffer: if needs_buffer { vec![0; header.page_size as usize] } else { Vec::new() },
            current: None,
            last_pgno: 0,
            page_count: 0,
            trailer: None,
            failed: None,
        })
    }

    /// The file's header (validated).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The format generation being decoded.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The trailer, once [`advance`](Self::advance) has returned `false` (everything verified).
    pub fn trailer(&self) -> Option<Trailer> {
        self.trailer
    }

    /// Page frames decoded so far.
    pub fn page_count(&self) -> u32 {
        self.page_count
    }

    /// How far into the input the decoder has read, when it reads the input in place
    /// (uncompressed v1, v2, v3; not a v1 LZ4 page block, which a frame decoder streams).
    /// Everything before it has been consumed and will not be read again.
    pub fn input_offset(&self) -> Option<usize> {
        match &self.body {
            Body::Raw { pos } | Body::Indexed { pos, .. } => Some(*pos),
            Body::Lz4 { .. } => None,
        }
    }

    /// The current page, if `advance` last returned `true`.
    pub fn page(&self) -> Option<Page<'_>> {
        let (pgno, location) = self.current?;
        let size = self.header.page_size as usize;
        let data = match location {
            Location::Input(start) => &self.file[start..start + size],
            Location::Buffer => &self.buffer[..],
        };
        Some(Page { pgno, data })
    }

    /// Moves to the next page: the next page and `true`, or `false` once the end marker has
    /// been reached and the whole file verified. An error is final: every later call
    /// returns it again.
    pub fn advance(&mut self) -> Result<bool> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.trailer.is_some() {
            return Ok(false);
        }
        let result = self.step();
        if let Err(err) = &result {
            self.current = None;
            self.failed = Some(err.clone());
        }
        result
    }

    /// Advances and returns the next page, or `None` at the (verified) end.
    pub fn next_page(&mut self) -> Result<Option<Page<'_>>> {
        if self.advance()? { Ok(self.page()) } else { Ok(None) }
    }

    /// Decodes the rest of the file and returns what it held.
    pub fn verify(mut self) -> Result<Summary> {
        let mut max_pgno = PageNo(self.last_pgno);
        while self.advance()? {
            max_pgno = PageNo(self.last_pgno);
        }
        Ok(Summary {
            version: self.version,
            header: self.header,
            trailer: self.trailer.unwrap_or_default(),
            page_count: self.page_count,
            max_pgno,
        })
    }

    fn step(&mut self) -> Result<bool> {
        self.current = None;
        let page_size = self.header.page_size as usize;
        let trailer_start = self.file.len() - TRAILER_SIZE;
        let (frame_offset, pgno, location) = match &mut self.body {
            Body::Raw { pos } => {
                let at = *pos;
                let pgno = read_u32(&self.file[..trailer_start], at).ok_or_else(|| truncated(at, "page header"))?;
                self.crc.update(&self.file[at..at + PGNO_SIZE]);
                if pgno == 0 {
                    let end = at + PGNO_SIZE;
                    *pos = end;
                    return self.finish(end as u64).map(|()| false);
                }
                let data_start = at + PGNO_SIZE;
                if data_start + page_size > trailer_start {
                    return Err(truncated(data_start, "page data"));
                }
                *pos = data_start + page_size;
                (at as u64, pgno, Location::Input(data_start))
            }
            Body::Lz4 { reader, logical } => {
                let at = *logical;
                let mut pgno_bytes = [0u8; PGNO_SIZE];
                read_lz4(reader, &mut pgno_bytes, at, "page header")?;
                *logical += PGNO_SIZE as u64;
                self.crc.update(&pgno_bytes);
                let pgno = u32::from_be_bytes(pgno_bytes);
                if pgno == 0 {
                    let mut extra = [0u8; 1];
                    return match reader.read(&mut extra) {
                        Ok(0) => {
                            let end = *logical;
                            self.finish(end).map(|()| false)
                        }
                        Ok(_) => Err(LtxError::new(
                            *logical,
                            Rule::EndMarker,
                            "data after the end marker inside the LZ4 page block",
                        )),
                        Err(e) => Err(LtxError::new(*logical, Rule::PageCompression, format!("LZ4 page block: {e}"))),
                    };
                }
                read_lz4(reader, &mut self.buffer, *logical, "page data")?;
                *logical += page_size as u64;
                (at, pgno, Location::Buffer)
            }
            Body::Indexed { pos, index_start, index_pos } => {
                let at = *pos;
                let frames = &self.file[..*index_start];
                let header_size = self.version.page_header_size();
                let pgno = read_u32(frames, at).ok_or_else(|| truncated(at, "page header"))?;
                let flags = match self.version {
                    Version::V3 => u16::from_be_bytes(
                        *frames
                            .get(at + PGNO_SIZE..)
                            .and_then(|b| b.first_chunk())
                            .ok_or_else(|| truncated(at, "page header"))?,
                    ),
                    _ => 0,
                };
                if pgno == 0 {
                    if flags != 0 {
                        return Err(LtxError::new(
                            at as u64,
                            Rule::EndMarker,
                            format!("end marker with flags {flags:#06x}"),
                        ));
                    }
                    self.crc.update(&frames[at..at + header_size]);
                    let end = at + header_size;
                    if end != *index_start {
                        return Err(LtxError::new(
                            end as u64,
                            Rule::PageIndex,
                            format!("page block ends at {end} but the page index starts at {index_start}"),
                        ));
                    }
                    let (terminator, _) = get_uvarint(&self.file[*index_pos..trailer_start - INDEX_LEN_SIZE])
                        .ok_or_else(|| LtxError::new(*index_pos as u64, Rule::PageIndex, "unterminated page index"))?;
                    if terminator != 0 || *index_pos + 1 != trailer_start - INDEX_LEN_SIZE {
                        return Err(LtxError::new(
                            *index_pos as u64,
                            Rule::PageIndex,
                            "page index holds more entries than the file has page frames",
                        ));
                    }
                    self.crc.update(&self.file[*index_start..trailer_start]);
                    return self.finish(end as u64).map(|()| false);
                }
                if flags & !PAGE_FLAG_SIZE_PREFIX != 0 {
                    return Err(LtxError::new(
                        (at + PGNO_SIZE) as u64,
                        Rule::PageFlags,
                        format!("page {pgno}: unknown page flags {flags:#06x}"),
                    ));
                }
                let payload_at = at + header_size;
                let frame_len = if flags & PAGE_FLAG_SIZE_PREFIX != 0 {
                    let size =
                        read_u32(frames, payload_at).ok_or_else(|| truncated(payload_at, "size prefix"))? as usize;
                    let block_at = payload_at + SIZE_PREFIX_SIZE;
                    let block = frames
                        .get(block_at..block_at.saturating_add(size))
                        .ok_or_else(|| truncated(block_at, "LZ4 block"))?;
                    match lz4_flex::block::decompress_into(block, &mut self.buffer) {
                        Ok(n) if n == page_size => {}
                        Ok(n) => {
                            return Err(LtxError::new(
                                block_at as u64,
                                Rule::PageCompression,
                                format!("page {pgno}: LZ4 block holds {n} bytes, not {page_size}"),
                            ));
                        }
                        Err(e) => {
                            return Err(LtxError::new(
                                block_at as u64,
                                Rule::PageCompression,
                                format!("page {pgno}: LZ4 block: {e}"),
                            ));
                        }
                    }
                    header_size + SIZE_PREFIX_SIZE + size
                } else {
                    let frame = &frames[payload_at.min(frames.len())..];
                    let len = lz4::frame_len(frame).ok_or_else(|| {
                        LtxError::new(
                            payload_at as u64,
                            Rule::PageCompression,
                            format!("page {pgno}: malformed or truncated LZ4 frame"),
                        )
                    })?;
                    lz4::decompress_frame_exact(&frame[..len], &mut self.buffer).map_err(|e| {
                        LtxError::new(payload_at as u64, Rule::PageCompression, format!("page {pgno}: {e}"))
                    })?;
                    header_size + len
                };
                // Checksummed as stored: page header, and the size prefix when present.
                let stored_header_len =
                    header_size + if flags & PAGE_FLAG_SIZE_PREFIX != 0 { SIZE_PREFIX_SIZE } else { 0 };
                self.crc.update(&frames[at..at + stored_header_len]);
                // The page index must name this very frame.
                let index = &self.file[..trailer_start - INDEX_LEN_SIZE];
                let mut entry = [0u64; 3];
                for value in &mut entry {
                    let (v, n) = get_uvarint(index.get(*index_pos..).unwrap_or_default()).ok_or_else(|| {
                        LtxError::new(*index_pos as u64, Rule::PageIndex, "malformed page index entry")
                    })?;
                    *value = v;
                    *index_pos += n;
                }
                if entry != [u64::from(pgno), at as u64, frame_len as u64] {
                    return Err(LtxError::new(
                        at as u64,
                        Rule::PageIndex,
                        format!(
                            "page index says page {} at offset {} size {}, the frame is page {pgno} at {at} size {frame_len}",
                            entry[0], entry[1], entry[2]
                        ),
                    ));
                }
                *pos = at + frame_len;
                (at as u64, pgno, Location::Buffer)
            }
        };
        check_next_pgno(&self.header, self.last_pgno, pgno, frame_offset)?;
        let pgno = PageNo(pgno);
        let data = match location {
            Location::Input(start) => &self.file[start..start + page_size],
            Location::Buffer => &self.buffer[..],
        };
        self.crc.update(data);
        if let Some(sum) = self.db_checksum {
            self.db_checksum = Some(sum.toggle(page_checksum(pgno, data)));
        }
        self.last_pgno = pgno.0;
        self.page_count += 1;
        self.current = Some((pgno, location));
        Ok(true)
    }

    /// Whole-file checks once the end marker has been read; `end` is where it ended.
    fn finish(&mut self, end: u64) -> Result<()> {
        let trailer_start = self.file.len() - TRAILER_SIZE;
        if let Body::Raw { .. } = self.body
            && end as usize != trailer_start
        {
            return Err(LtxError::new(
                end,
                Rule::TrailingBytes,
                format!("{} bytes between the end marker and the trailer", trailer_start as u64 - end),
            ));
        }
        let trailer_bytes = self.file[trailer_start..].first_chunk::<TRAILER_SIZE>().copied().unwrap_or_default();
        let trailer = Trailer::decode(&trailer_bytes);
        self.crc.update(&trailer_bytes[..Trailer::CHECKSUMMED_LEN]);
        let computed = Checksum(Checksum::FLAG | self.crc.value());
        if trailer.file_checksum != computed {
            return Err(LtxError::new(
                (trailer_start + Trailer::CHECKSUMMED_LEN) as u64,
                Rule::FileChecksum,
                format!("file checksum is {}, content gives {computed}", trailer.file_checksum),
            ));
        }
        self.header.validate_post_apply(trailer.post_apply_checksum, trailer_start as u64)?;
        if self.header.is_snapshot() && self.page_count != self.header.snapshot_page_count() {
            return Err(LtxError::new(
                end,
                Rule::SnapshotIncomplete,
                format!(
                    "snapshot holds {} pages, commit {} needs {}",
                    self.page_count,
                    self.header.commit,
                    self.header.snapshot_page_count()
                ),
            ));
        }
        if let Some(sum) = self.db_checksum
            && sum != trailer.post_apply_checksum
        {
            return Err(LtxError::new(
                trailer_start as u64,
                Rule::PostApplyChecksum,
                format!("snapshot pages give database checksum {sum}, trailer says {}", trailer.post_apply_checksum),
            ));
        }
        self.trailer = Some(trailer);
        Ok(())
    }
}

fn truncated(offset: usize, what: &str) -> LtxError {
    LtxError::new(offset as u64, Rule::Truncated, format!("file ends inside a {what}"))
}

fn read_lz4(reader: &mut lz4_flex::frame::FrameDecoder<&[u8]>, out: &mut [u8], offset: u64, what: &str) -> Result<()> {
    reader.read_exact(out).map_err(|e| {
        let rule = if e.kind() == std::io::ErrorKind::UnexpectedEof { Rule::Truncated } else { Rule::PageCompression };
        LtxError::new(offset, rule, format!("LZ4 page block (uncompressed offset) while reading {what}: {e}"))
    })
}
