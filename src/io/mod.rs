//! I/O: the engine trait the log writer talks to (`engine`: io_uring or pwrite, chosen at
//! open), and file-system helpers for durable writes and read-only maps.
//!
//! The rule for a new file: write it under a temporary name in the same directory,
//! `sync_data` it, rename it over the final name, then fsync the directory so the rename
//! itself survives a crash.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Durability asked of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// Leave it to the page cache.
    None,
    /// `fdatasync`: data and the metadata needed to read it back.
    Data,
    /// `fsync`: data and all metadata.
    All,
}

/// Syncs an open file as `sync` asks.
pub fn sync_file(file: &File, sync: Sync, what: &Path) -> Result<()> {
    let result = match sync {
        Sync::None => Ok(()),
        Sync::Data => file.sync_data(),
        Sync::All => file.sync_all(),
    };
    result.map_err(|e| Error::io(format!("sync {}", what.display()), e))
}

/// Fsyncs a directory, making the names created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(format!("sync directory {}", dir.display()), e))
}

/// Allocates the blocks of `len` bytes of `file` at `offset` (`fallocate`, mode 0; the file
/// grows if needed and the new bytes read as zeros), so that a disk without the room says so
/// now, with `ENOSPC`, rather than part way through a later write or, for a mapped file,
/// with a SIGBUS on the first store into an unallocated page. File systems without
/// `fallocate` get zeros written past the file's current end instead (bytes already in the
/// file are never overwritten).
pub fn preallocate(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    if len == 0 {
        return Ok(());
    }
    let (Ok(start), Ok(count)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "allocation past the largest file offset"));
    };
    loop {
        // SAFETY: a plain syscall on an open descriptor; no memory is passed.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, start, count) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP | libc::ENOSYS) => break,
            _ => return Err(e),
        }
    }
    let end = offset + len;
    let mut at = file.metadata()?.len().max(offset);
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    while at < end {
        let n = zeros.len().min((end - at) as usize);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Creates a directory (and its parents) readable by the owner only.
pub fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("create directory {}", dir.display()), e))
}

/// A file being written under a temporary name next to its final path. Dropping it without
/// [`commit`](TempFile::commit) removes the temporary file, so a failed write leaves
/// nothing behind.
pub struct TempFile {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
}

impl TempFile {
    /// Creates `<dir>/.<name>.tmp-<pid>` for a file that will become `target`.
    pub fn create(target: &Path) -> Result<TempFile> {
        let name =
            target.file_name().ok_or_else(|| Error::Invalid(format!("{} is not a file path", target.display())))?;
        let temp = target.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| Error::io(format!("create {}", temp.display()), e))?;
        Ok(TempFile { file: Some(file), temp, target: target.to_path_buf() })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("present until commit or drop")
    }

    /// The temporary path.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Syncs the data, renames over the target and syncs the directory.
    pub fn commit(self) -> Result<()> {
        let target = self.target.clone();
        self.commit_to(&target)
    }

    /// Like [`commit`](Self::commit), under a name decided only now (in the same
    /// directory), for files whose name carries something learnt while writing them.
    pub fn commit_to(mut self, target: &Path) -> Result<()> {
        let file = self.file.take().expect("present until commit or drop");
        sync_file(&file, Sync::Data, &self.temp)?;
        drop(file);
        std::fs::rename(&self.temp, target)
            .map_err(|e| Error::io(format!("rename {} to {}", self.temp.display(), target.display()), e))?;
        sync_dir(target.parent().unwrap_or(Path::new(".")))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Copies the first `len` bytes of `src` to the start of `dst` inside the kernel
/// (`copy_file_range`: a reflink where the file system shares extents, an in-kernel copy
/// otherwise), falling back to a read/write loop where the call is not supported between
/// these files. Returns the bytes copied, which is `len` unless `src` is shorter.
pub fn copy_range(src: &File, dst: &File, len: u64) -> Result<u64> {
    copy_range_at(src, 0, dst, 0, len)
}

/// [`copy_range`] of `len` bytes at `src_offset` in `src` to `dst_offset` in `dst`.
pub fn copy_range_at(src: &File, src_offset: u64, dst: &File, dst_offset: u64, len: u64) -> Result<u64> {
    use std::os::fd::AsRawFd;
    let mut done = 0u64;
    while done < len {
        let (mut off_in, mut off_out) = ((src_offset + done) as libc::loff_t, (dst_offset + done) as libc::loff_t);
        let want = (len - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the duration of the call and the offsets
        // are plain integers the kernel reads and updates; no memory is shared.
        let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), &mut off_out, want, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                    return copy_by_reading(src, src_offset + done, dst, dst_offset + done, len - done)
                        .map(|rest| done + rest);
                }
                Some(libc::EINTR) => continue,
                _ => return Err(Error::io("copy_file_range", e)),
            }
        }
        if n == 0 {
            break;
        }
        done += n as u64;
    }
    Ok(done)
}

fn copy_by_reading(src: &File, src_offset: u64, dst: &File, dst_offset: u64, len: u64) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let want = buf.len().min((len - done) as usize);
        let n = src.read_at(&mut buf[..want], src_offset + done).map_err(|e| Error::io("read for a copy", e))?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], dst_offset + done).map_err(|e| Error::io("write a copy", e))?;
        done += n as u64;
    }
    Ok(done)
}

/// Asks the kernel to start writing back `len` bytes of `file` from `offset` without
/// waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Durability still needs an
/// fsync; this only lets the disk work while the caller goes on, so that fsync finds
/// little left to do. Errors are ignored: the fsync that follows reports them.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// A whole file mapped read-only into memory.
pub struct MappedFile {
    map: Option<memmap2::Mmap>,
}

impl MappedFile {
    /// Maps `path`. An empty file maps to an empty slice.
    pub fn open(path: &Path) -> Result<MappedFile> {
        let file = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let len = file.metadata().map_err(|e| Error::io(format!("stat {}", path.display()), e))?.len();
        if len == 0 {
            return Ok(MappedFile { map: None });
        }
        // SAFETY: the map is read-only. The files we map are immutable once written (LTX
        // files, sealed segments) or owned by the caller for the duration; if another
        // process truncated one under us, reads would fault (SIGBUS) rather than return
        // wrong bytes, and everything read is checksummed before use.
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }
            .map_err(|e| Error::io(format!("mmap {}", path.display()), e))?;
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(MappedFile { map: Some(map) })
    }
}

impl MappedFile {
    /// Drops this process's mapping of the pages in `range` (rounded inward to whole
    /// pages): the data stays in the page cache and is read back transparently if touched
    /// again, but no longer counts as this process's memory. Readers that stream through
    /// large files call it behind their cursor to keep their memory flat.
    pub fn release(&self, range: std::ops::Range<usize>) {
        let Some(map) = &self.map else { return };
        const PAGE: usize = 4096;
        let start = range.start.div_ceil(PAGE) * PAGE;
        let end = range.end.min(map.len()) / PAGE * PAGE;
        if end > start {
            // SAFETY: MADV_DONTNEED on a shared, read-only file mapping only drops page
            // table entries; the next access faults the same file bytes back in. (It would
            // zero a private anonymous mapping, which this never is.)
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }
}

pub mod engine;
mod std_engine;
mod uring;

pub use engine::{IoChoice, IoEngine, open_engine};

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        self
    }
}
