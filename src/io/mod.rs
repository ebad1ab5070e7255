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

/// Mode of every file the vault writes: the owner's alone (the umask may only narrow it).
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Mode of every directory the vault makes.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates a new file (failing if it exists) readable and writable by the owner only, open
/// for reading and writing.
pub fn private_file(path: &Path) -> Result<File> {
    private_options().create_new(true).open(path).map_err(|e| Error::io(format!("create {}", path.display()), e))
}

/// Creates `path`, or empties it if it exists (a temporary file an earlier process left),
/// open for reading and writing, with [`PRIVATE_FILE_MODE`] in both cases.
pub fn private_file_truncated(path: &Path) -> Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = private_options()
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    // An existing file kept its mode through `open`.
    file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
    Ok(file)
}

/// Options that create files with [`PRIVATE_FILE_MODE`] (read and write; the caller adds
/// how to create). An existing file keeps its mode.
pub fn private_options() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.read(true).write(true).mode(PRIVATE_FILE_MODE);
    options
}

/// Creates a directory (and its parents) readable by the owner only.
pub fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
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
    /// Creates `<dir>/.<name>.tmp-<pid>` for a file that will become `target`, readable
    /// and writable by the owner only ([`PRIVATE_FILE_MODE`]).
    pub fn create(target: &Path) -> Result<TempFile> {
        let name =
            target.file_name().ok_or_else(|| Error::Invalid(format!("{} is not a file path", target.display())))?;
        let temp = target.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        let file = private_file_truncated(&temp)?;
        Ok(TempFile { file: Some(file), temp, target: target.to_path_buf() })
    }

    /// [`TempFile::create`] for a file written for the user (a restore's or an export's
    /// output, a database an LTX file is applied to): it takes the permission bits of the
    /// file it replaces, so that a restore over an application's database leaves it as
    /// readable as it was; a new file is private (0600), as the vault's own files are,
    /// since it holds the same data. `chmod` widens it when the application runs as
    /// another user.
    pub fn create_output(target: &Path) -> Result<TempFile> {
        use std::os::unix::fs::PermissionsExt;
        let temp = TempFile::create(target)?;
        if let Ok(meta) = std::fs::metadata(target)
            && meta.is_file()
        {
            let mode = meta.permissions().mode() & 0o777;
            temp.file()
                .set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(format!("chmod {}", temp.temp.display()), e))?;
        }
        Ok(temp)
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
