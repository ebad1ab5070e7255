//! Writers for the formats ltxvault produces: v1 (what LiteFS reads back from a backup
//! service), uncompressed or with one LZ4 frame over the page block, and v3-block (what
//! Litestream 0.5 reads).
//!
//! The encoder enforces the same rules the decoder checks (page order, lock page, pages
//! within Commit, complete snapshots, checksum flags), so it cannot write a file that our
//! own decoder would refuse. For snapshots that carry checksums it computes the database
//! checksum of the pages itself and refuses a post-apply checksum that disagrees.

use std::io::Write;

use super::checksum::{Crc64, page_checksum};
use super::error::{LtxError, Rule};
use super::format::{
    HEADER_FLAG_COMPRESS_LZ4, HEADER_FLAG_NO_CHECKSUM, HEADER_SIZE, Header, PAGE_FLAG_SIZE_PREFIX, Trailer, Version,
    check_next_pgno, put_uvarint,
};
use super::types::{Checksum, PageNo};
use crate::error::{Error, Result};

/// Which encoding to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// LiteFS's format. `compress` puts the page block through one LZ4 frame (64 KiB
    /// independent blocks, content checksum), as LiteFS does by default.
    V1 {
        /// Compress the page block.
        compress: bool,
    },
    /// Litestream 0.5.16+'s format: one raw LZ4 block per page, and a page index.
    V3Block,
}

impl Format {
    /// The format generation this encoding belongs to.
    pub fn version(self) -> Version {
        match self {
            Format::V1 { .. } => Version::V1,
            Format::V3Block => Version::V3,
        }
    }
}

enum Sink<W: Write> {
    Plain(W),
    Lz4(Box<lz4_flex::frame::FrameEncoder<W>>),
}

impl<W: Write> Sink<W> {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(bytes),
            Sink::Lz4(w) => w.write_all(bytes),
        }
    }
}

/// Streams one LTX file into a writer. Call [`write_page`](Self::write_page) in ascending
/// page order, then [`finish`](Self::finish).
pub struct Encoder<W: Write> {
    sink: Sink<W>,
    header: Header,
    format: Format,
    crc: Crc64,
    db_checksum: Option<Checksum>,
    last_pgno: u32,
    page_count: u32,
    /// Bytes written to the file so far (v3: offsets for the page index).
    offset: u64,
    index: Vec<u8>,
    block: Vec<u8>,
}

impl<W: Write> Encoder<W> {
    /// Validates `header` for `format` and writes it. The LZ4 flag is set from `format`;
    /// for v3 the caller's NoChecksum flag is kept.
    pub fn new(mut out: W, header: &Header, format: Format) -> Result<Encoder<W>> {
        let mut header = *header;
        header.flags = match format {
            Format::V1 { compress: true } => HEADER_FLAG_COMPRESS_LZ4,
            Format::V1 { compress: false } => 0,
            Format::V3Block => header.flags & HEADER_FLAG_NO_CHECKSUM,
        };
        header.validate(format.version())?;
        let bytes = header.encode();
        out.write_all(&bytes).map_err(|e| Error::io("write LTX header", e))?;
        let mut crc = Crc64::new();
        crc.update(&bytes);
        let sink = match format {
            Format::V1 { compress: true } => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent)
                    .content_checksum(true);
                Sink::Lz4(Box::new(lz4_flex::frame::FrameEncoder::with_frame_info(info, out)))
            }
            _ => Sink::Plain(out),
        };
        let block_bound = match format {
            Format::V3Block => lz4_flex::block::get_maximum_output_size(header.page_size as usize),
            Format::V1 { .. } => 0,
        };
        Ok(Encoder {
            sink,
            header,
            format,
            crc,
            db_checksum: (header.is_snapshot() && header.has_checksums()).then_some(Checksum::EMPTY_DATABASE),
            last_pgno: 0,
            page_count: 0,
            offset: HEADER_SIZE as u64,
            index: Vec::new(),
            block: vec![0; block_bound],
        })
    }

    /// The header as written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Pages written so far.
    pub fn page_count(&self) -> u32 {
        self.page_count
    }

    /// Appends one page. Pages must come in ascending order, within Commit, never the lock
    /// page, and for a snapshot without gaps.
    pub fn write_page(&mut self, pgno: PageNo, data: &[u8]) -> Result<()> {
        self.check_page(pgno, data)?;
        let pgno_bytes = pgno.0.to_be_bytes();
        match self.format {
            Format::V1 { .. } => {
                self.crc.update(&pgno_bytes);
                self.sink.write_all(&pgno_bytes).map_err(write_err)?;
                self.sink.write_all(data).map_err(write_err)?;
                self.offset += (pgno_bytes.len() + data.len()) as u64;
            }
            Format::V3Block => {
                let size = lz4_flex::block::compress_into(data, &mut self.block)
                    .map_err(|e| Error::Invalid(format!("LZ4 compression of page {pgno}: {e}")))?;
                let mut frame_header = [0u8; 10];
                frame_header[..4].copy_from_slice(&pgno_bytes);
                frame_header[4..6].copy_from_slice(&PAGE_FLAG_SIZE_PREFIX.to_be_bytes());
                frame_header[6..].copy_from_slice(&(size as u32).to_be_bytes());
                self.crc.update(&frame_header);
                self.sink.write_all(&frame_header).map_err(write_err)?;
                self.sink.write_all(&self.block[..size]).map_err(write_err)?;
                let frame_len = (frame_header.len() + size) as u64;
                put_uvarint(&mut self.index, u64::from(pgno.0));
                put_uvarint(&mut self.index, self.offset);
                put_uvarint(&mut self.index, frame_len);
                self.offset += frame_len;
            }
        }
        self.crc.update(data);
        if let Some(sum) = self.db_checksum {
            self.db_checksum = Some(sum.toggle(page_checksum(pgno, data)));
        }
        self.last_pgno = pgno.0;
        self.page_count += 1;
        Ok(())
    }

    /// The database checksum of the pages written so far, for snapshots that carry
    /// checksums (the value `finish` expects); `None` otherwise.
    pub fn snapshot_checksum(&self) -> Option<Checksum> {
        self.db_checksum
    }

    /// Writes the end marker, the page index (v3) and the trailer; returns the writer and
    /// the trailer. `post_apply` must be [`Checksum::NONE`] for files without checksums.
    pub fn finish(mut self, post_apply: Checksum) -> Result<(W, Trailer)> {
        let offset = self.offset;
        self.header.validate_post_apply(post_apply, offset)?;
        if self.header.is_snapshot() && self.page_count != self.header.snapshot_page_count() {
            return Err(LtxError::new(
                offset,
                Rule::SnapshotIncomplete,
                format!(
                    "snapshot has {} pages, commit {} needs {}",
                    self.page_count,
                    self.header.commit,
                    self.header.snapshot_page_count()
                ),
            )
            .into());
        }
        if let Some(sum) = self.db_checksum
            && sum != post_apply
        {
            return Err(LtxError::new(
                offset,
                Rule::PostApplyChecksum,
                format!("snapshot pages give database checksum {sum}, not {post_apply}"),
            )
            .into());
        }
        let end_marker = [0u8; 6];
        let end_marker = &end_marker[..self.format.version().page_header_size()];
        self.crc.update(end_marker);
        self.sink.write_all(end_marker).map_err(write_err)?;
        let mut out = match self.sink {
            Sink::Plain(w) => w,
            Sink::Lz4(enc) => enc.finish().map_err(|e| Error::io("finish LZ4 page block", std::io::Error::other(e)))?,
        };
        if self.format == Format::V3Block {
            put_uvarint(&mut self.index, 0);
            let len = (self.index.len() as u64).to_be_bytes();
            self.index.extend_from_slice(&len);
            self.crc.update(&self.index);
            out.write_all(&self.index).map_err(write_err)?;
        }
        let post_bytes = post_apply.0.to_be_bytes();
        self.crc.update(&post_bytes);
        let trailer =
            Trailer { post_apply_checksum: post_apply, file_checksum: Checksum(Checksum::FLAG | self.crc.value()) };
        out.write_all(&trailer.encode()).map_err(write_err)?;
        Ok((out, trailer))
    }

    fn check_page(&self, pgno: PageNo, data: &[u8]) -> Result<(), LtxError> {
        let offset = self.offset;
        let page_size = self.header.page_size as usize;
        if data.len() != page_size {
            return Err(LtxError::new(
                offset,
                Rule::PageLength,
                format!("page {pgno} has {} bytes, page size is {page_size}", data.len()),
            ));
        }
        check_next_pgno(&self.header, self.last_pgno, pgno.0, offset)
    }
}

fn write_err(e: std::io::Error) -> Error {
    Error::io("write LTX page block", e)
}
