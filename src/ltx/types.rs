//! Domain numbers of the LTX format as newtypes, so that a TXID is never confused with a
//! page number or a checksum.

use std::fmt;

/// A transaction ID. LTX files cover a closed range `min..=max` of them; TXID 0 means "no
/// transaction yet" and never appears in a file header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(pub u64);

impl TxId {
    /// The position of a database that holds nothing.
    pub const ZERO: TxId = TxId(0);

    /// Whether this TXID comes right after `prev` (false when `prev` is the largest TXID).
    pub fn follows(self, prev: TxId) -> bool {
        prev.0.checked_add(1) == Some(self.0)
    }

    /// Parses the decimal or the 16-digit hexadecimal form (the one LTX file names use).
    pub fn parse(text: &str) -> Option<TxId> {
        if text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return u64::from_str_radix(text, 16).ok().map(TxId);
        }
        if let Some(hex) = text.strip_prefix("0x") {
            return u64::from_str_radix(hex, 16).ok().map(TxId);
        }
        text.parse().ok().map(TxId)
    }
}

/// Prints as 16 lowercase hex digits, the form of LTX file names and of the LiteFS protocol.
impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A 1-based SQLite page number. Page 0 does not exist; in a page frame header it marks the
/// end of the page block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageNo(pub u32);

impl PageNo {
    /// The page that holds SQLite's PENDING_BYTE (file offset 0x4000_0000). SQLite never
    /// writes it, LTX never stores it, and the database checksum leaves it out.
    pub fn lock_page(page_size: u32) -> PageNo {
        PageNo((LOCK_BYTE_OFFSET / page_size as u64) as u32 + 1)
    }

    /// Byte offset of this page in a database file.
    pub fn file_offset(self, page_size: u32) -> u64 {
        debug_assert!(self.0 >= 1);
        (self.0 as u64 - 1) * page_size as u64
    }
}

impl fmt::Display for PageNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// File offset of SQLite's PENDING_BYTE.
pub const LOCK_BYTE_OFFSET: u64 = 0x4000_0000;

/// A CRC-64 checksum as LTX stores it: bit 63 set when present, 0 when absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Checksum(pub u64);

impl Checksum {
    /// The bit every real checksum has, so that 0 can mean "absent".
    pub const FLAG: u64 = 1 << 63;
    /// "No checksum": written when a file carries none (Litestream's NoChecksum flag, the
    /// pre-apply checksum of a snapshot).
    pub const NONE: Checksum = Checksum(0);
    /// The database checksum of an empty database (Commit = 0).
    pub const EMPTY_DATABASE: Checksum = Checksum(Self::FLAG);

    /// Whether the value is a present checksum (bit 63 set).
    pub fn is_flagged(self) -> bool {
        self.0 & Self::FLAG != 0
    }

    /// Parses 16 hex digits.
    pub fn parse(text: &str) -> Option<Checksum> {
        if text.len() != 16 {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Checksum)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_page_for_common_sizes() {
        assert_eq!(PageNo::lock_page(4096), PageNo(262_145));
        assert_eq!(PageNo::lock_page(65536), PageNo(16_385));
        assert_eq!(PageNo::lock_page(512), PageNo(2_097_153));
    }

    #[test]
    fn txid_parses_both_forms() {
        assert_eq!(TxId::parse("42"), Some(TxId(42)));
        assert_eq!(TxId::parse("000000000000002a"), Some(TxId(42)));
        assert_eq!(TxId::parse("0x2a"), Some(TxId(42)));
        assert_eq!(TxId::parse("x"), None);
        assert_eq!(TxId(42).to_string(), "000000000000002a");
    }
}
