//! Byte layout of an LTX file. Every offset of the format is defined here and nowhere else.
//!
//! ```text
//! offset  size  field                 (all integers big-endian)
//! ------  ----  --------------------  -------------------------------------------------
//!      0     4  magic                 "LTX1" in every version
//!      4     4  flags                 v1: 0x1 = page block is one LZ4 frame
//!                                     v2/v3: 0x2 = no database checksums
//!      8     4  page size             power of two, 512..=65536
//!     12     4  commit                database size in pages after apply (0 = empty)
//!     16     8  min TXID              >= 1; 1 means the file is a snapshot
//!     24     8  max TXID              >= min TXID
//!     32     8  timestamp             ms since the Unix epoch
//!     40     8  pre-apply checksum    database checksum before apply (0 = absent)
//!     48     8  WAL offset            0 = not from a WAL
//!     56     8  WAL size
//!     64     4  WAL salt 1
//!     68     4  WAL salt 2
//!     72     8  node ID
//!     80    20  reserved              written as zero, ignored when read
//!    100     …  page block            page frames in ascending page order, end marker
//!      …     …  page index            v2/v3 only: uvarint (pgno, offset, size) triples,
//!                                     uvarint 0, then u64 length of the varint area
//!  len-16    8  post-apply checksum   database checksum after apply (0 = absent)
//!  len-8     8  file checksum         CRC-64 of the stream described in `decode`
//! ```
//!
//! Page frames:
//!
//! ```text
//! v1        u32 pgno | page (PageSize bytes)          end marker: u32 0
//! v2        u32 pgno | one LZ4 frame                  end marker: u32 0
//! v3        u32 pgno | u16 flags | payload            end marker: u32 0, u16 0
//!           flags 0x0001: u32 size N, N bytes of one raw LZ4 block   ("v3-block")
//!           flags 0x0000: one LZ4 frame                              ("v3-frame")
//! ```

use super::error::{LtxError, Result, Rule};
use super::types::{Checksum, PageNo, TxId};

/// The magic number at the start of every LTX file, whatever its version.
pub const MAGIC: [u8; 4] = *b"LTX1";

const MAGIC_OFFSET: usize = 0;
const FLAGS_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const PAGE_SIZE_OFFSET: usize = FLAGS_OFFSET + size_of::<u32>();
const COMMIT_OFFSET: usize = PAGE_SIZE_OFFSET + size_of::<u32>();
const MIN_TXID_OFFSET: usize = COMMIT_OFFSET + size_of::<u32>();
const MAX_TXID_OFFSET: usize = MIN_TXID_OFFSET + size_of::<u64>();
const TIMESTAMP_OFFSET: usize = MAX_TXID_OFFSET + size_of::<u64>();
const PRE_APPLY_OFFSET: usize = TIMESTAMP_OFFSET + size_of::<i64>();
const WAL_OFFSET_OFFSET: usize = PRE_APPLY_OFFSET + size_of::<u64>();
const WAL_SIZE_OFFSET: usize = WAL_OFFSET_OFFSET + size_of::<i64>();
const WAL_SALT1_OFFSET: usize = WAL_SIZE_OFFSET + size_of::<i64>();
const WAL_SALT2_OFFSET: usize = WAL_SALT1_OFFSET + size_of::<u32>();
const NODE_ID_OFFSET: usize = WAL_SALT2_OFFSET + size_of::<u32>();
const RESERVED_OFFSET: usize = NODE_ID_OFFSET + size_of::<u64>();
const RESERVED_SIZE: usize = 20;

/// Size of the file header.
pub const HEADER_SIZE: usize = RESERVED_OFFSET + RESERVED_SIZE;
const _: () = assert!(HEADER_SIZE == 100);

const POST_APPLY_OFFSET_IN_TRAILER: usize = 0;
const FILE_CHECKSUM_OFFSET_IN_TRAILER: usize = POST_APPLY_OFFSET_IN_TRAILER + size_of::<u64>();
/// Size of the file trailer.
pub const TRAILER_SIZE: usize = FILE_CHECKSUM_OFFSET_IN_TRAILER + size_of::<u64>();
const _: () = assert!(TRAILER_SIZE == 16);

/// Length of the page-number field that starts every page frame.
pub const PGNO_SIZE: usize = size_of::<u32>();
/// Page frame header in v1 and v2: the page number alone.
pub const V1_PAGE_HEADER_SIZE: usize = PGNO_SIZE;
/// Page frame header in v3: page number and page flags.
pub const V3_PAGE_HEADER_SIZE: usize = PGNO_SIZE + size_of::<u16>();
/// The u32 compressed length that follows a v3 page header with [`PAGE_FLAG_SIZE_PREFIX`].
pub const SIZE_PREFIX_SIZE: usize = size_of::<u32>();
/// Length of the page index's trailing length field.
pub const INDEX_LEN_SIZE: usize = size_of::<u64>();

/// v3 page flag: a u32 size and a raw LZ4 block follow (otherwise an LZ4 frame follows).
pub const PAGE_FLAG_SIZE_PREFIX: u16 = 0x0001;

/// v1 header flag: the page block (frames and end marker) is one LZ4 frame.
pub const HEADER_FLAG_COMPRESS_LZ4: u32 = 0x0000_0001;
/// v2/v3 header flag: the file carries no database checksums.
pub const HEADER_FLAG_NO_CHECKSUM: u32 = 0x0000_0002;

/// Smallest and largest page sizes SQLite allows.
pub const MIN_PAGE_SIZE: u32 = 512;
/// See [`MIN_PAGE_SIZE`].
pub const MAX_PAGE_SIZE: u32 = 65536;

/// The generations of the format. The file does not say which one it is; see
/// [`Version::detect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// LiteFS 0.5.x: 4-byte page headers, raw pages, optionally one LZ4 frame over the
    /// page block. No page index.
    V1,
    /// ltx v0.4.0 (short-lived Litestream test builds): 4-byte page headers, one LZ4 frame
    /// per page, page index.
    V2,
    /// Litestream 0.5.x: 6-byte page headers, one LZ4 block (or legacy frame) per page,
    /// page index.
    V3,
}

impl Version {
    /// Header flag bits this version allows.
    pub fn allowed_flags(self) -> u32 {
        match self {
            Version::V1 => HEADER_FLAG_COMPRESS_LZ4,
            Version::V2 | Version::V3 => HEADER_FLAG_NO_CHECKSUM,
        }
    }

    /// Length of a page frame header (and of the end marker).
    pub fn page_header_size(self) -> usize {
        match self {
            Version::V1 | Version::V2 => V1_PAGE_HEADER_SIZE,
            Version::V3 => V3_PAGE_HEADER_SIZE,
        }
    }

    /// Whether files of this version end their page block with a page index.
    pub fn has_page_index(self) -> bool {
        !matches!(self, Version::V1)
    }

    /// Works out the version of a whole file from its bytes.
    ///
    /// The four bytes before the trailer decide v1 against v2/v3: in v1 they are the end
    /// marker (always zero), in v2/v3 they are the low half of the page index length, which
    /// is never zero because the index holds at least its terminator. A v1 file with an LZ4
    /// page block is told by its header flag alone. Between v2 and v3, v2 puts an LZ4 frame
    /// magic right after the 4-byte page number of the first frame.
    pub fn detect(file: &[u8]) -> Version {
        let flags = read_u32(file, FLAGS_OFFSET).unwrap_or(0);
        if flags & HEADER_FLAG_COMPRESS_LZ4 != 0 {
            return Version::V1;
        }
        let len = file.len();
        if len < HEADER_SIZE + TRAILER_SIZE + V1_PAGE_HEADER_SIZE {
            return Version::V1;
        }
        let before_trailer = &file[len - TRAILER_SIZE - PGNO_SIZE..len - TRAILER_SIZE];
        if before_trailer == [0; 4] {
            return Version::V1;
        }
        let first_payload = HEADER_SIZE + PGNO_SIZE;
        if file.get(first_payload..first_payload + 4) == Some(&super::lz4::FRAME_MAGIC_LE[..]) {
            Version::V2
        } else {
            Version::V3
        }
    }

    /// A short name for output.
    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
            Version::V3 => "v3",
        }
    }
}

/// The 100-byte header, decoded. Construct with [`Header::snapshot`] or a struct literal,
/// check with [`Header::validate`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Header flag bits (`HEADER_FLAG_*`).
    pub flags: u32,
    /// Page size in bytes.
    pub page_size: u32,
    /// Database size in pages after the file is applied.
    pub commit: u32,
    /// First transaction the file covers.
    pub min_txid: TxId,
    /// Last transaction the file covers.
    pub max_txid: TxId,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Database checksum before the file is applied, or [`Checksum::NONE`].
    pub pre_apply_checksum: Checksum,
    /// Offset of the file's frames in the source WAL (0 = not from a WAL).
    pub wal_offset: i64,
    /// WAL bytes covered.
    pub wal_size: i64,
    /// WAL header salt 1.
    pub wal_salt1: u32,
    /// WAL header salt 2.
    pub wal_salt2: u32,
    /// The LiteFS node that wrote the file, 0 if unknown.
    pub node_id: u64,
}

impl Header {
    /// Decodes the header fields without checking them.
    pub fn decode(bytes: &[u8; HEADER_SIZE]) -> Header {
        let b = &bytes[..];
        let u32_at = |o| read_u32(b, o).unwrap_or_default();
        let u64_at = |o| read_u64(b, o).unwrap_or_default();
        Header {
            flags: u32_at(FLAGS_OFFSET),
            page_size: u32_at(PAGE_SIZE_OFFSET),
            commit: u32_at(COMMIT_OFFSET),
            min_txid: TxId(u64_at(MIN_TXID_OFFSET)),
            max_txid: TxId(u64_at(MAX_TXID_OFFSET)),
            timestamp_ms: u64_at(TIMESTAMP_OFFSET) as i64,
            pre_apply_checksum: Checksum(u64_at(PRE_APPLY_OFFSET)),
            wal_offset: u64_at(WAL_OFFSET_OFFSET) as i64,
            wal_size: u64_at(WAL_SIZE_OFFSET) as i64,
            wal_salt1: u32_at(WAL_SALT1_OFFSET),
            wal_salt2: u32_at(WAL_SALT2_OFFSET),
            node_id: u64_at(NODE_ID_OFFSET),
        }
    }

    /// Encodes the header; the reserved bytes are zero.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[MAGIC_OFFSET..FLAGS_OFFSET].copy_from_slice(&MAGIC);
        put(&mut b, FLAGS_OFFSET, &self.flags.to_be_bytes());
        put(&mut b, PAGE_SIZE_OFFSET, &self.page_size.to_be_bytes());
        put(&mut b, COMMIT_OFFSET, &self.commit.to_be_bytes());
        put(&mut b, MIN_TXID_OFFSET, &self.min_txid.0.to_be_bytes());
        put(&mut b, MAX_TXID_OFFSET, &self.max_txid.0.to_be_bytes());
        put(&mut b, TIMESTAMP_OFFSET, &self.timestamp_ms.to_be_bytes());
        put(&mut b, PRE_APPLY_OFFSET, &self.pre_apply_checksum.0.to_be_bytes());
        put(&mut b, WAL_OFFSET_OFFSET, &self.wal_offset.to_be_bytes());
        put(&mut b, WAL_SIZE_OFFSET, &self.wal_size.to_be_bytes());
        put(&mut b, WAL_SALT1_OFFSET, &self.wal_salt1.to_be_bytes());
        put(&mut b, WAL_SALT2_OFFSET, &self.wal_salt2.to_be_bytes());
        put(&mut b, NODE_ID_OFFSET, &self.node_id.to_be_bytes());
        b
    }

    /// A file starting at TXID 1 holds the whole database: a snapshot.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == TxId(1)
    }

    /// Whether the file carries database checksums (pre/post-apply).
    pub fn has_checksums(&self) -> bool {
        self.flags & HEADER_FLAG_NO_CHECKSUM == 0
    }

    /// Whether a v1 page block is one LZ4 frame.
    pub fn is_lz4_compressed(&self) -> bool {
        self.flags & HEADER_FLAG_COMPRESS_LZ4 != 0
    }

    /// The lock page for this file's page size.
    pub fn lock_page(&self) -> PageNo {
        PageNo::lock_page(self.page_size)
    }

    /// Number of pages a snapshot of this header must hold: every page up to Commit but the
    /// lock page.
    pub fn snapshot_page_count(&self) -> u32 {
        let lock = self.lock_page().0;
        self.commit - u32::from(self.commit >= lock)
    }

    /// Checks the header rules of §2.1 for a file of `version`. The error names the field's
    /// offset.
    pub fn validate(&self, version: Version) -> Result<()> {
        let fail = |offset: usize, rule, detail: String| Err(LtxError::new(offset as u64, rule, detail));
        if self.flags & !version.allowed_flags() != 0 {
            return fail(
                FLAGS_OFFSET,
                Rule::HeaderFlags,
                format!(
                    "flags {:#010x} outside the {} mask {:#x}",
                    self.flags,
                    version.name(),
                    version.allowed_flags()
                ),
            );
        }
        if !valid_page_size(self.page_size) {
            return fail(
                PAGE_SIZE_OFFSET,
                Rule::PageSize,
                format!("page size {} is not a power of two in 512..=65536", self.page_size),
            );
        }
        if self.min_txid == TxId::ZERO {
            return fail(MIN_TXID_OFFSET, Rule::TxidRange, "min TXID is 0".into());
        }
        if self.min_txid > self.max_txid {
            return fail(
                MAX_TXID_OFFSET,
                Rule::TxidRange,
                format!("min TXID {} is above max TXID {}", self.min_txid, self.max_txid),
            );
        }
        if self.wal_offset < 0 || self.wal_size < 0 {
            return fail(WAL_OFFSET_OFFSET, Rule::WalFields, "negative WAL offset or size".into());
        }
        if self.wal_offset == 0 && self.wal_size != 0 {
            return fail(WAL_SIZE_OFFSET, Rule::WalFields, "WAL size without a WAL offset".into());
        }
        if (self.wal_salt1 != 0 || self.wal_salt2 != 0) && self.wal_offset == 0 {
            return fail(WAL_SALT1_OFFSET, Rule::WalFields, "WAL salt without a WAL offset".into());
        }
        if version == Version::V1 && self.wal_offset != 0 && self.wal_size == 0 {
            return fail(WAL_SIZE_OFFSET, Rule::WalFields, "v1: WAL offset without a WAL size".into());
        }
        let pre = self.pre_apply_checksum;
        if self.is_snapshot() && pre != Checksum::NONE {
            return fail(PRE_APPLY_OFFSET, Rule::PreApplyChecksum, format!("snapshot with pre-apply checksum {pre}"));
        }
        if !self.is_snapshot() {
            if !self.has_checksums() && pre != Checksum::NONE {
                return fail(
                    PRE_APPLY_OFFSET,
                    Rule::PreApplyChecksum,
                    format!("pre-apply checksum {pre} in a file flagged without checksums"),
                );
            }
            if self.has_checksums() && !pre.is_flagged() {
                return fail(
                    PRE_APPLY_OFFSET,
                    Rule::PreApplyChecksum,
                    format!("pre-apply checksum {pre} lacks bit 63"),
                );
            }
        }
        Ok(())
    }

    /// Checks a post-apply checksum against this header's flags (not its value).
    pub(crate) fn validate_post_apply(&self, post: Checksum, offset: u64) -> Result<()> {
        if !self.has_checksums() && post != Checksum::NONE {
            return Err(LtxError::new(
                offset,
                Rule::PostApplyChecksum,
                format!("post-apply checksum {post} in a file flagged without checksums"),
            ));
        }
        if self.has_checksums() && !post.is_flagged() {
            return Err(LtxError::new(
                offset,
                Rule::PostApplyChecksum,
                format!("post-apply checksum {post} lacks bit 63"),
            ));
        }
        if self.has_checksums() && self.commit == 0 && post != Checksum::EMPTY_DATABASE {
            return Err(LtxError::new(
                offset,
                Rule::PostApplyChecksum,
                format!(
                    "empty database (commit 0) must have post-apply checksum {}, found {post}",
                    Checksum::EMPTY_DATABASE
                ),
            ));
        }
        Ok(())
    }
}

/// The page-number rules every page frame must obey, checked by the decoder and the
/// encoder alike: not 0, not the lock page, within Commit, strictly ascending after `last`,
/// and, in a snapshot, exactly the next page (the lock page skipped). `offset` is where the
/// frame is, for the error.
pub(crate) fn check_next_pgno(header: &Header, last: u32, pgno: u32, offset: u64) -> Result<()> {
    if pgno == 0 {
        return Err(LtxError::new(offset, Rule::PageNumberZero, "page number 0"));
    }
    let lock = header.lock_page().0;
    if pgno == lock {
        return Err(LtxError::new(offset, Rule::LockPage, format!("page {pgno} is the lock page")));
    }
    if pgno > header.commit {
        return Err(LtxError::new(
            offset,
            Rule::PageBeyondCommit,
            format!("page {pgno} is beyond commit {}", header.commit),
        ));
    }
    if pgno <= last {
        return Err(LtxError::new(offset, Rule::PageOrder, format!("page {pgno} follows page {last}")));
    }
    if header.is_snapshot() {
        let expected = if last + 1 == lock { last + 2 } else { last + 1 };
        if pgno != expected {
            return Err(LtxError::new(
                offset,
                Rule::SnapshotIncomplete,
                format!("snapshot jumps from page {last} to page {pgno}"),
            ));
        }
    }
    Ok(())
}

/// Whether SQLite allows this page size.
pub fn valid_page_size(page_size: u32) -> bool {
    page_size.is_power_of_two() && (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size)
}

/// Checks the magic number of a file and decodes its header.
pub fn read_header(file: &[u8]) -> Result<Header> {
    let Some(bytes) = file.first_chunk::<HEADER_SIZE>() else {
        return Err(LtxError::new(
            0,
            Rule::Truncated,
            format!("{} bytes, shorter than the {HEADER_SIZE}-byte header", file.len()),
        ));
    };
    if bytes[MAGIC_OFFSET..FLAGS_OFFSET] != MAGIC {
        return Err(LtxError::new(
            MAGIC_OFFSET as u64,
            Rule::Magic,
            format!("magic {:02x?} is not \"LTX1\"", &bytes[MAGIC_OFFSET..FLAGS_OFFSET]),
        ));
    }
    Ok(Header::decode(bytes))
}

/// The 16-byte trailer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trailer {
    /// Database checksum after the file is applied, or [`Checksum::NONE`].
    pub post_apply_checksum: Checksum,
    /// CRC-64 of the file's logical stream, bit 63 set.
    pub file_checksum: Checksum,
}

impl Trailer {
    /// Decodes a trailer.
    pub fn decode(bytes: &[u8; TRAILER_SIZE]) -> Trailer {
        Trailer {
            post_apply_checksum: Checksum(read_u64(bytes, POST_APPLY_OFFSET_IN_TRAILER).unwrap_or_default()),
            file_checksum: Checksum(read_u64(bytes, FILE_CHECKSUM_OFFSET_IN_TRAILER).unwrap_or_default()),
        }
    }

    /// Encodes a trailer.
    pub fn encode(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        put(&mut b, POST_APPLY_OFFSET_IN_TRAILER, &self.post_apply_checksum.0.to_be_bytes());
        put(&mut b, FILE_CHECKSUM_OFFSET_IN_TRAILER, &self.file_checksum.0.to_be_bytes());
        b
    }

    /// Offset of the file checksum field inside the trailer: the bytes before it are part of
    /// the checksummed stream.
    pub const CHECKSUMMED_LEN: usize = FILE_CHECKSUM_OFFSET_IN_TRAILER;
}

/// Name of an LTX file as LiteFS and Litestream write it: `<min>-<max>.ltx`, 16 lowercase hex
/// digits each.
pub fn file_name(min: TxId, max: TxId) -> String {
    format!("{min}-{max}.ltx")
}

/// Parses a name written by [`file_name`]; anything else (upper-case hex included) is `None`.
pub fn parse_file_name(name: &str) -> Option<(TxId, TxId)> {
    let stem = name.strip_suffix(".ltx")?;
    let (min, max) = stem.split_once('-')?;
    let hex16 = |s: &str| {
        (s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    Some((TxId(hex16(min)?), TxId(hex16(max)?)))
}

pub(crate) fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_be_bytes(*bytes.get(offset..)?.first_chunk()?))
}

pub(crate) fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_be_bytes(*bytes.get(offset..)?.first_chunk()?))
}

fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
    buf[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// Unsigned LEB128, as Go's `binary.AppendUvarint` writes it.
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an unsigned LEB128 value; `None` if it runs past the input or overflows 64 bits.
pub(crate) fn get_uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let low = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None;
        }
        value |= low << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            flags: 1,
            page_size: 4096,
            commit: 7,
            min_txid: TxId(3),
            max_txid: TxId(9),
            timestamp_ms: 1_700_000_000_123,
            pre_apply_checksum: Checksum(0x8000_0000_0000_0abc),
            wal_offset: 32,
            wal_size: 4152,
            wal_salt1: 5,
            wal_salt2: 6,
            node_id: 77,
        };
        let bytes = h.encode();
        assert_eq!(&bytes[..4], b"LTX1");
        assert_eq!(Header::decode(&bytes), h);
        assert_eq!(h.validate(Version::V1), Ok(()));
        assert_eq!(h.validate(Version::V3).map_err(|e| e.rule), Err(Rule::HeaderFlags));
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name(TxId(1), TxId(255)), "0000000000000001-00000000000000ff.ltx");
        assert_eq!(parse_file_name("0000000000000001-00000000000000ff.ltx"), Some((TxId(1), TxId(255))));
        assert_eq!(parse_file_name("0000000000000001-00000000000000FF.ltx"), None);
        assert_eq!(parse_file_name("1-2.ltx"), None);
    }

    #[test]
    fn uvarint_round_trips() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_uvarint(&mut out, v);
            assert_eq!(get_uvarint(&out), Some((v, out.len())));
        }
        assert_eq!(get_uvarint(&[0x80]), None);
        assert_eq!(get_uvarint(&[0xff; 10]), None);
    }
}
