//! CRC-64 as LTX uses it, and the database ("rolling") checksum.
//!
//! Every checksum in LTX is CRC-64 with the ISO polynomial exactly as Go's `hash/crc64`
//! computes it (catalogue name CRC-64/GO-ISO: reflected, init and xorout all ones, check
//! value `0xb90956c775a41001`). `crc-fast` computes it with carry-less multiplication, about
//! six times faster than a slicing-by-16 table; the tests cross-check it against the `crc`
//! crate's table implementation.
//!
//! The database checksum of an image is `1<<63 | XOR of crc(u32be(pgno) ‖ page)` over every
//! page but the lock page. XOR makes it order-free and cheap to update:
//!
//! ```text
//! change page p:   C' = C ^ pc(p, old) ^ pc(p, new)      (bit 63 stays set)
//! grow / shrink:   XOR in / out the pages that appear / disappear
//! empty database:  C  = 1<<63
//! ```

use std::fs::File;
use std::path::Path;

use crc_fast::{CrcAlgorithm, Digest};

use super::types::{Checksum, PageNo};
use crate::error::{Error, Result};

const ALGORITHM: CrcAlgorithm = CrcAlgorithm::Crc64GoIso;

/// A running CRC-64/GO-ISO.
pub struct Crc64(Digest);

impl Crc64 {
    /// Starts an empty checksum.
    pub fn new() -> Crc64 {
        Crc64(Digest::new(ALGORITHM))
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The CRC of everything fed so far.
    pub fn value(&self) -> u64 {
        self.0.finalize()
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Crc64::new()
    }
}

/// CRC-64/GO-ISO of `bytes`.
pub fn crc64(bytes: &[u8]) -> u64 {
    crc_fast::checksum(ALGORITHM, bytes)
}

/// The checksum of one page as the database checksum uses it: `1<<63 | crc(u32be(pgno) ‖
/// page)`.
pub fn page_checksum(pgno: PageNo, page: &[u8]) -> Checksum {
    let mut crc = Crc64::new();
    crc.update(&pgno.0.to_be_bytes());
    crc.update(page);
    Checksum(Checksum::FLAG | crc.value())
}

impl Checksum {
    /// XORs a page checksum in or out of a database checksum (the same operation both
    /// ways). The result keeps bit 63 set.
    #[must_use]
    pub fn toggle(self, page: Checksum) -> Checksum {
        Checksum(Checksum::FLAG | (self.0 ^ page.0))
    }
}

/// Database checksum of an image held in memory (or an mmap): `image.len()` must be a whole
/// number of pages. The lock page is left out.
pub fn database_checksum(image: &[u8], page_size: u32) -> Checksum {
    assert!(image.len().is_multiple_of(page_size as usize), "image is not a whole number of pages");
    let lock = PageNo::lock_page(page_size);
    let mut sum = Checksum::EMPTY_DATABASE;
    for (i, page) in image.chunks_exact(page_size as usize).enumerate() {
        let pgno = PageNo(i as u32 + 1);
        if pgno != lock {
            sum = sum.toggle(page_checksum(pgno, page));
        }
    }
    sum
}

/// Database checksum of a database file on disk, read in 1 MiB chunks so that memory
/// stays flat for any database size.
pub fn database_file_checksum(path: &Path, page_size: u32) -> Result<Checksum> {
    let len = std::fs::metadata(path).map_err(|e| Error::io(format!("stat {}", path.display()), e))?.len();
    if !len.is_multiple_of(page_size as u64) {
        return Err(Error::Invalid(format!(
            "{}: size {len} is not a multiple of the page size {page_size}",
            path.display()
        )));
    }
    database_checksum_of_prefix(path, len, page_size)
}

/// The database checksum of the first `len` bytes (whole pages) of the file at `path`: a
/// database followed by something else, such as an image's footer.
pub fn database_checksum_of_prefix(path: &Path, len: u64, page_size: u32) -> Result<Checksum> {
    use std::os::unix::fs::FileExt;
    assert!(len.is_multiple_of(u64::from(page_size)), "whole pages");
    let file = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let lock = PageNo::lock_page(page_size);
    let chunk_pages = ((1 << 20) / page_size as usize).max(1);
    let mut buf = vec![0u8; chunk_pages * page_size as usize];
    let mut sum = Checksum::EMPTY_DATABASE;
    let mut pgno = 1u32;
    let mut at = 0u64;
    while at < len {
        let n = buf.len().min((len - at) as usize);
        file.read_exact_at(&mut buf[..n], at).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        for page in buf[..n].chunks_exact(page_size as usize) {
            if PageNo(pgno) != lock {
                sum = sum.toggle(page_checksum(PageNo(pgno), page));
            }
            pgno += 1;
        }
        at += n as u64;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `crc` crate's table implementation of the same algorithm: an independent oracle.
    fn oracle(bytes: &[u8]) -> u64 {
        crc::Crc::<u64>::new(&crc::CRC_64_GO_ISO).checksum(bytes)
    }

    #[test]
    fn check_value() {
        assert_eq!(crc64(b"123456789"), 0xb909_56c7_75a4_1001);
        assert_eq!(oracle(b"123456789"), 0xb909_56c7_75a4_1001);
    }

    #[test]
    fn streaming_matches_oracle_at_every_split() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for split in [0, 1, 3, 8, 15, 16, 17, 100, 4096, 4999, 5000] {
            let mut c = Crc64::new();
            c.update(&data[..split]);
            c.update(&data[split..]);
            assert_eq!(c.value(), oracle(&data), "split at {split}");
        }
    }

    #[test]
    fn page_checksums_match_litefs_vectors() {
        // Values from the LiteFS protocol spec §11.1 (page size 512).
        let page = |b: u8| vec![b; 512];
        assert_eq!(page_checksum(PageNo(1), &page(1)), Checksum(0xe4e4aaa102377eee));
        assert_eq!(page_checksum(PageNo(2), &page(2)), Checksum(0xc9c9554231044ddd));
        assert_eq!(page_checksum(PageNo(1), &page(3)), Checksum(0xc24e177cdfeaa333));
        let mut both = page(1);
        both.extend(page(2));
        assert_eq!(database_checksum(&both, 512), Checksum(0xad2dffe333333333));
        let mut both = page(3);
        both.extend(page(2));
        assert_eq!(database_checksum(&both, 512), Checksum(0x8b87423eeeeeeeee));
        assert_eq!(database_checksum(&page(5), 512), Checksum(0x99b1d11ab98cc555));
        assert_eq!(database_checksum(&page(b'1'), 512), Checksum(0xeb1a999231044ddd));
        assert_eq!(database_checksum(&[b'3'; 1024], 512), Checksum(0x80d21cd000000000));
        assert_eq!(database_checksum(&[], 512), Checksum::EMPTY_DATABASE);
    }

    #[test]
    fn page_checksum_matches_oracle() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i ^ (i >> 5)) as u8).collect();
        let mut stream = 77u32.to_be_bytes().to_vec();
        stream.extend(&data);
        assert_eq!(page_checksum(PageNo(77), &data).0, Checksum::FLAG | oracle(&stream));
    }

    #[test]
    fn incremental_update_equals_recompute() {
        let mut image = vec![0u8; 8 * 512];
        for (i, b) in image.iter_mut().enumerate() {
            *b = (i * 31 % 251) as u8;
        }
        let before = database_checksum(&image, 512);
        let old = image[3 * 512..4 * 512].to_vec();
        image[3 * 512..4 * 512].fill(9);
        let updated =
            before.toggle(page_checksum(PageNo(4), &old)).toggle(page_checksum(PageNo(4), &image[3 * 512..4 * 512]));
        assert_eq!(updated, database_checksum(&image, 512));
        // Shrink by two pages: XOR them out.
        let shrunk = updated
            .toggle(page_checksum(PageNo(8), &image[7 * 512..]))
            .toggle(page_checksum(PageNo(7), &image[6 * 512..7 * 512]));
        assert_eq!(shrunk, database_checksum(&image[..6 * 512], 512));
    }
}
