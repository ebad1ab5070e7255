//! The LTX file format: every version LiteFS and Litestream write.
//!
//! An LTX file holds the pages one or more SQLite transactions changed, with checksums to
//! chain files together and to verify the database they produce. This module owns every
//! byte offset of the format ([`format`]), the CRC-64 and rolling database checksum
//! ([`checksum`]), a streaming verifying [`Decoder`], an [`Encoder`] for v1 and v3-block,
//! a k-way page merge ([`merge`]) and apply onto a database file ([`apply`]). It does no
//! I/O policy of its own: callers hand it byte slices (usually mmaps) and writers.
//!
//! The full specification lives in `docs/ltx-format.md`.

pub mod apply;
pub mod checksum;
pub mod decode;
pub mod encode;
pub mod error;
pub mod format;
pub mod lz4;
pub mod merge;
pub mod types;

pub use apply::apply_pages;
pub use checksum::{
    Crc64, crc64, database_checksum, database_checksum_of_prefix, database_file_checksum, page_checksum,
};
pub use decode::{Decoder, Page, Summary};
pub use encode::{Encoder, Format};
pub use error::{LtxError, Rule};
pub use format::{Header, Trailer, Version, file_name, parse_file_name};
pub use merge::{PageMerge, PageSource, merge};
pub use types::{Checksum, PageNo, TxId};
