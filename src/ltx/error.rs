//! The one error type of the codec: which rule a file broke, and where.

use std::fmt;

/// A rule of the LTX format (see `docs/ltx-format.md` §8, the decoder checklist). Each
/// variant names one check, so that an error says exactly what was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The input ended before the structure it was reading.
    Truncated,
    /// Bytes follow the trailer.
    TrailingBytes,
    /// The first four bytes are not `LTX1`.
    Magic,
    /// A header flag bit outside the mask of the file's version.
    HeaderFlags,
    /// Page size not a power of two in 512..=65536.
    PageSize,
    /// MinTXID is 0, or MinTXID > MaxTXID.
    TxidRange,
    /// WAL offset, size and salts contradict each other.
    WalFields,
    /// Pre-apply checksum present where it must be absent, or the reverse.
    PreApplyChecksum,
    /// Post-apply checksum present where it must be absent, the reverse, or wrong.
    PostApplyChecksum,
    /// The file checksum in the trailer does not match the content.
    FileChecksum,
    /// A page frame names page 0 (page 0 only ends the page block).
    PageNumberZero,
    /// The lock page (PENDING_BYTE page) is stored.
    LockPage,
    /// A page beyond the header's Commit.
    PageBeyondCommit,
    /// Page numbers not strictly ascending.
    PageOrder,
    /// A snapshot that misses a page between 1 and Commit.
    SnapshotIncomplete,
    /// Unknown page frame flag bits.
    PageFlags,
    /// A page payload that is not valid LZ4 or does not decompress to PageSize bytes.
    PageCompression,
    /// The end-of-pages marker is not all zero.
    EndMarker,
    /// The page index disagrees with the page frames, or is malformed.
    PageIndex,
    /// Page size differs from the other files it is combined with.
    PageSizeMismatch,
    /// Files given to a merge or an apply do not follow each other.
    NotContiguous,
    /// A page of the wrong length was handed to an encoder.
    PageLength,
}

impl Rule {
    /// A short stable name, used in messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Truncated => "truncated",
            Rule::TrailingBytes => "trailing-bytes",
            Rule::Magic => "magic",
            Rule::HeaderFlags => "header-flags",
            Rule::PageSize => "page-size",
            Rule::TxidRange => "txid-range",
            Rule::WalFields => "wal-fields",
            Rule::PreApplyChecksum => "pre-apply-checksum",
            Rule::PostApplyChecksum => "post-apply-checksum",
            Rule::FileChecksum => "file-checksum",
            Rule::PageNumberZero => "page-number-zero",
            Rule::LockPage => "lock-page",
            Rule::PageBeyondCommit => "page-beyond-commit",
            Rule::PageOrder => "page-order",
            Rule::SnapshotIncomplete => "snapshot-incomplete",
            Rule::PageFlags => "page-flags",
            Rule::PageCompression => "page-compression",
            Rule::EndMarker => "end-marker",
            Rule::PageIndex => "page-index",
            Rule::PageSizeMismatch => "page-size-mismatch",
            Rule::NotContiguous => "not-contiguous",
            Rule::PageLength => "page-length",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An LTX file (or a set of them) broke a rule of the format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("offset {offset}: {rule}: {detail}")]
pub struct LtxError {
    /// Byte offset in the file where the broken structure starts. For a v1 file with an LZ4
    /// page block, offsets inside the page block count uncompressed bytes from the start of
    /// the file, as if the block were stored uncompressed (the detail says so).
    pub offset: u64,
    /// The rule that was broken.
    pub rule: Rule,
    /// What was found, in words.
    pub detail: String,
}

impl LtxError {
    pub(crate) fn new(offset: u64, rule: Rule, detail: impl Into<String>) -> LtxError {
        LtxError { offset, rule, detail: detail.into() }
    }
}

/// Result of codec operations.
pub type Result<T, E = LtxError> = std::result::Result<T, E>;
