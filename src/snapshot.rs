//! A database file as a stream: one LTX v1 file holding every page of it (a snapshot, or a
//! transaction that rewrites the whole database), or the plain SQLite bytes; and the
//! checks an uploaded SQLite file must pass before it is stored.
//!
//! The input is a database image mapped into memory (a restore's scratch file, an uploaded
//! file). It is read front to back once, and the pages behind the cursor are released from
//! the mapping as it goes, so the process's memory stays flat whatever the database size;
//! output goes through a 1 MiB buffer.
//!
//! LTX output is uncompressed: the vault's own level files are too, a restore reads it
//! without decompressing, and LiteFS reads both forms. Its file checksum is therefore the
//! one the LiteFS protocol's test vectors give for an uncompressed snapshot.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::MappedFile;
use crate::ltx::format::valid_page_size;
use crate::ltx::{Checksum, Encoder, Format, Header, PageNo, Trailer, page_checksum};

/// The first 16 bytes of every SQLite database file.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Bytes of the SQLite file header.
pub const SQLITE_HEADER_SIZE: usize = 100;
/// Offset of the big-endian u16 page size in the SQLite header (1 means 65536).
const SQLITE_PAGE_SIZE_OFFSET: usize = SQLITE_MAGIC.len();
const _: () = assert!(SQLITE_PAGE_SIZE_OFFSET + 2 <= SQLITE_HEADER_SIZE);

/// Input bytes read between two releases of the input's mapping.
const RELEASE_EVERY_BYTES: usize = 8 << 20;
/// Output buffer.
const OUTPUT_BUFFER_BYTES: usize = 1 << 20;

/// Checks that `file` (a whole file's bytes) is a SQLite database the vault can store:
/// the SQLite magic, a page size SQLite allows (the header's 1 means 65536), a length that
/// is a whole, non-zero number of pages. Returns (page size, pages). The error is
/// [`Error::BadHeader`] and says what is wrong.
pub fn sqlite_geometry(file: &[u8]) -> Result<(u32, u32)> {
    let bad = |why: String| Err(Error::BadHeader(why));
    if file.len() < SQLITE_HEADER_SIZE {
        return bad(format!(
            "the file is {} bytes, shorter than a SQLite header ({SQLITE_HEADER_SIZE} bytes): not a SQLite database",
            file.len()
        ));
    }
    if &file[..SQLITE_MAGIC.len()] != SQLITE_MAGIC {
        return bad("the file does not start with \"SQLite format 3\\0\": not a SQLite database".into());
    }
    let raw = u16::from_be_bytes([file[SQLITE_PAGE_SIZE_OFFSET], file[SQLITE_PAGE_SIZE_OFFSET + 1]]);
    let page_size = if raw == 1 { 65536 } else { u32::from(raw) };
    if !valid_page_size(page_size) {
        return bad(format!(
            "the SQLite header gives page size {raw}, not one SQLite allows (a power of two from 512 to 32768, or 1 for 65536)"
        ));
    }
    let len = file.len() as u64;
    if !len.is_multiple_of(u64::from(page_size)) {
        return bad(format!(
            "the file is {len} bytes, not a whole number of {page_size}-byte pages (was it copied while being written?)"
        ));
    }
    let pages = u32::try_from(len / u64::from(page_size))
        .map_err(|_| Error::BadHeader(format!("the file holds more than {} pages", u32::MAX)))?;
    Ok((page_size, pages))
}

/// Writes the database `image` (`header.commit` pages of `header.page_size` bytes;
/// `name` is its file, for messages) as one uncompressed LTX v1 file: every page up to
/// Commit except the lock page, ascending, after `header`. The post-apply checksum is the
/// database checksum of those pages, computed on the way; when `expected` is given and the
/// pages add up to something else, the trailer is never written and the error is
/// [`Error::Corrupt`]. Returns the trailer and the bytes written.
pub fn write_ltx(
    image: &MappedFile,
    name: &Path,
    header: &Header,
    expected: Option<Checksum>,
    out: &mut dyn Write,
) -> Result<(Trailer, u64)> {
    let page_size = header.page_size as usize;
    check_image(image, name, header.page_size, header.commit)?;
    let mut counted = Counted { inner: out, bytes: 0 };
    let mut buffered = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, &mut counted);
    let mut encoder = Encoder::new(&mut buffered, header, Format::V1 { compress: false })?;
    let lock = PageNo::lock_page(header.page_size);
    let mut checksum = Checksum::EMPTY_DATABASE;
    let mut released = 0;
    for (i, page) in image[..header.commit as usize * page_size].chunks_exact(page_size).enumerate() {
        let pgno = PageNo(i as u32 + 1);
        if pgno == lock {
            continue;
        }
        checksum = checksum.toggle(page_checksum(pgno, page));
        encoder.write_page(pgno, page)?;
        let done = (i + 1) * page_size;
        if done - released >= RELEASE_EVERY_BYTES {
            image.release(released..done);
            released = done;
        }
    }
    if let Some(expected) = expected
        && expected != checksum
    {
        return Err(Error::Corrupt {
            file: name.to_path_buf(),
            offset: 0,
            reason: format!("the database's pages add up to checksum {checksum}, the vault recorded {expected}"),
        });
    }
    let (_, trailer) = encoder.finish(checksum)?;
    buffered.flush().map_err(|e| Error::io("write the LTX file", e))?;
    drop(buffered);
    Ok((trailer, counted.bytes))
}

/// Writes the first `commit` pages of the database `image` (`name` is its file, for
/// messages) as plain SQLite bytes, the lock page as zeros. Returns the bytes written.
pub fn write_sqlite(image: &MappedFile, name: &Path, page_size: u32, commit: u32, out: &mut dyn Write) -> Result<u64> {
    check_image(image, name, page_size, commit)?;
    let end = commit as usize * page_size as usize;
    let lock_start = PageNo::lock_page(page_size).file_offset(page_size) as usize;
    let lock_end = lock_start + page_size as usize;
    let zeros = vec![0u8; page_size as usize];
    let mut at = 0;
    while at < end {
        if at == lock_start {
            out.write_all(&zeros).map_err(|e| Error::io("write the database", e))?;
            at = lock_end;
            continue;
        }
        let stop = if at < lock_start { lock_start.min(end) } else { end };
        let chunk_end = stop.min(at + OUTPUT_BUFFER_BYTES);
        out.write_all(&image[at..chunk_end]).map_err(|e| Error::io("write the database", e))?;
        image.release(at..chunk_end);
        at = chunk_end;
    }
    out.flush().map_err(|e| Error::io("write the database", e))?;
    Ok(end as u64)
}

/// Checks that `image` holds at least `commit` whole pages.
fn check_image(image: &MappedFile, name: &Path, page_size: u32, commit: u32) -> Result<()> {
    let needed = u64::from(commit) * u64::from(page_size);
    if (image.len() as u64) < needed {
        return Err(Error::Corrupt {
            file: name.to_path_buf(),
            offset: image.len() as u64,
            reason: format!("{} bytes, {commit} pages of {page_size} bytes expected", image.len()),
        });
    }
    Ok(())
}

/// Counts the bytes that pass through to a writer.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    bytes: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::TxId;

    fn sqlite_file(raw_page_size: u16, pages: usize, page_size: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; pages * page_size];
        bytes[..16].copy_from_slice(SQLITE_MAGIC);
        bytes[16..18].copy_from_slice(&raw_page_size.to_be_bytes());
        bytes
    }

    /// Compares what is written with `expected`, except that `zeros` must be zeros.
    struct Compare<'a> {
        expected: &'a [u8],
        zeros: std::ops::Range<usize>,
        at: usize,
    }

    impl Write for Compare<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            for (i, &byte) in buf.iter().enumerate() {
                let at = self.at + i;
                let want = if self.zeros.contains(&at) { 0 } else { self.expected[at] };
                assert_eq!(byte, want, "byte {at}");
            }
            self.at += buf.len();
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// An image of 64 KiB pages reaching one page past the lock page (a sparse file), with
    /// garbage in the lock page: the SQLite form writes zeros there, the LTX form leaves the
    /// page out (and its checksum with it).
    #[test]
    fn the_lock_page_never_leaves_an_image() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.db");
        let page_size = 65536u32;
        let lock = PageNo::lock_page(page_size);
        let commit = lock.0 + 1;
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(u64::from(commit) * u64::from(page_size)).unwrap();
        file.write_all_at(&[0xee; 100], lock.file_offset(page_size)).unwrap();
        file.write_all_at(&[0x77; 100], PageNo(commit).file_offset(page_size)).unwrap();
        let image = MappedFile::open(&path).unwrap();
        let lock_at = lock.file_offset(page_size) as usize;

        let mut out = Compare { expected: &image, zeros: lock_at..lock_at + page_size as usize, at: 0 };
        assert_eq!(write_sqlite(&image, &path, page_size, commit, &mut out).unwrap(), image.len() as u64);
        assert_eq!(out.at, image.len());

        let header = Header { page_size, commit, min_txid: TxId(1), max_txid: TxId(1), ..Header::default() };
        // The database checksum leaves the lock page out too.
        let expected = crate::ltx::database_file_checksum(&path, page_size).unwrap();
        let (trailer, bytes) = write_ltx(&image, &path, &header, Some(expected), &mut std::io::sink()).unwrap();
        assert_eq!(trailer.post_apply_checksum, expected);
        let frames = u64::from(commit - 1) * (4 + u64::from(page_size));
        assert_eq!(bytes, 100 + frames + 4 + 16, "every page but the lock page, uncompressed");
    }

    #[test]
    fn sqlite_headers_are_checked() {
        assert_eq!(sqlite_geometry(&sqlite_file(4096, 3, 4096)).unwrap(), (4096, 3));
        assert_eq!(sqlite_geometry(&sqlite_file(1, 2, 65536)).unwrap(), (65536, 2), "1 means 65536");
        assert_eq!(sqlite_geometry(&sqlite_file(512, 1, 512)).unwrap(), (512, 1));
        let bad = |bytes: &[u8], says: &str| {
            let err = sqlite_geometry(bytes).unwrap_err();
            assert!(matches!(&err, Error::BadHeader(m) if m.contains(says)), "{err}");
        };
        bad(b"SQLite format 3\0", "shorter than a SQLite header");
        let mut not_sqlite = sqlite_file(4096, 1, 4096);
        not_sqlite[0] = b's';
        bad(&not_sqlite, "does not start with");
        bad(&sqlite_file(1000, 1, 4096), "page size 1000");
        bad(&sqlite_file(256, 16, 256), "page size 256");
        bad(&sqlite_file(0, 1, 4096), "page size 0");
        let mut torn = sqlite_file(4096, 2, 4096);
        torn.pop();
        bad(&torn, "not a whole number of 4096-byte pages");
    }
}
