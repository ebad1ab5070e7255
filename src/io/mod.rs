//! I/O: the engine trait the log writer talks to (`engine`: io_uring or pwrite, chosen at
//! open), and file-system helpers for durable writes and read-only maps.
//!
//! The rule for a new file: write it under a temporary name in the same directory,
//! `sync_data` it, rename it over the final name, then fsync the directory so the rename
//! itself survives a crash.

use std::fs::File;
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

/// Syncs an open file as `sync` asks (no fault plan; the engine's own files go through
/// [`Fs::sync`]).
pub fn sync_file(file: &File, sync: Sync, what: &Path) -> Result<()> {
    Fs::default().sync(file, sync, what)
}

/// Fsyncs a directory, making the names created, renamed or removed in it durable (no
/// fault plan; see [`Fs::sync_dir`]).
pub fn sync_dir(dir: &Path) -> Result<()> {
    Fs::default().sync_dir(dir)
}

/// Bytes an unprivileged user may still write on the file system holding `path`
/// (`statvfs`: `f_bavail` blocks of `f_frsize` bytes; the blocks reserved for root are not
/// counted).
pub fn free_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("{} contains a NUL byte", path.display())))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stat` points
    // to writable memory the size of a `statvfs`, which the call fills when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::io(format!("statvfs {}", path.display()), std::io::Error::last_os_error()));
    }
    // SAFETY: statvfs returned 0, so it filled the whole struct.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast, reason = "fsblkcnt_t and c_ulong are u64 on 64-bit Linux, not everywhere")]
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
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

/// Options that create files with [`PRIVATE_FILE_MODE`] (read and write; the caller adds
/// how to create). An existing file keeps its mode.
pub fn private_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).mode(PRIVATE_FILE_MODE);
    options
}

/// Creates a directory (and its parents) readable by the owner only (no fault plan; see
/// [`Fs::make_dir`]).
pub fn make_private_dir(dir: &Path) -> Result<()> {
    Fs::default().make_dir(dir)
}

/// A file being written under a temporary name next to its final path. Dropping it without
/// a successful [`commit`](TempFile::commit) removes the temporary file, so a failed write
/// (or a failed sync or rename) leaves nothing behind.
pub struct TempFile {
    fs: Fs,
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
}

impl TempFile {
    /// Creates `<dir>/.<name>.tmp-<pid>` for a file that will become `target` (no fault
    /// plan; the engine uses [`Fs::temp_file`]).
    pub fn create(target: &Path) -> Result<TempFile> {
        Fs::default().temp_file(target)
    }

    pub(crate) fn new(fs: Fs, file: File, temp: PathBuf, target: PathBuf) -> TempFile {
        TempFile { fs, file: Some(file), temp, target }
    }

    /// [`TempFile::create`] for a file written for the user (a restore's or an export's
    /// output, a database an LTX file is applied to): it takes the permission bits of the
    /// file it replaces, so that a restore over an application's database leaves it as
    /// readable as it was; a new file is private (0600), as the vault's own files are,
    /// since it holds the same data. `chmod` widens it when the application runs as
    /// another user.
    pub fn create_output(target: &Path) -> Result<TempFile> {
        let temp = TempFile::create(target)?;
        temp.take_mode_of_target()?;
        Ok(temp)
    }

    /// Gives the temporary file the permission bits of the file it will replace, if there
    /// is one (see [`TempFile::create_output`]).
    pub fn take_mode_of_target(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&self.target)
            && meta.is_file()
        {
            let mode = meta.permissions().mode() & 0o777;
            self.file()
                .set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(format!("chmod {}", self.temp.display()), e))?;
        }
        Ok(())
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("present until commit or drop")
    }

    /// The temporary path.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// The file-system seam this file was created through.
    pub fn fs(&self) -> &Fs {
        &self.fs
    }

    /// A writer at the file's cursor; see [`Fs::writer`].
    pub fn writer(&self) -> fs::FileWriter<'_> {
        self.fs.writer(self.file(), &self.temp)
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.fs.write_all_at(self.file(), buf, offset, &self.temp)
    }

    /// Syncs the data, renames over the target and syncs the directory.
    pub fn commit(self) -> Result<()> {
        let target = self.target.clone();
        self.commit_to(&target)
    }

    /// Like [`commit`](Self::commit), under a name decided only now (in the same
    /// directory), for files whose name carries something learnt while writing them.
    ///
    /// A failed sync or rename removes the temporary file. A failed directory sync comes
    /// after the rename: the file is complete at `target`, but whether its name would
    /// survive a crash is unknown; it is left there (replacing it again is how a caller
    /// retries) and the error returned.
    pub fn commit_to(mut self, target: &Path) -> Result<()> {
        self.install(target).map_err(|(e, _)| e)
    }

    /// [`commit`](Self::commit), and on a failed directory sync also removes the target,
    /// for callers that promise to leave nothing behind on error (a restore's output).
    pub fn commit_or_discard(mut self) -> Result<()> {
        let target = self.target.clone();
        self.install(&target).map_err(|(e, renamed)| {
            if renamed {
                let _ = self.fs.remove_file(&target);
            }
            e
        })
    }

    /// Sync, rename, directory sync; an error says whether the rename had happened.
    fn install(&mut self, target: &Path) -> std::result::Result<(), (Error, bool)> {
        self.fs.sync(self.file(), Sync::Data, &self.temp).map_err(|e| (e, false))?;
        self.fs.rename(&self.temp, target).map_err(|e| (e, false))?;
        self.file = None;
        self.fs.sync_dir(target.parent().unwrap_or(Path::new("."))).map_err(|e| (e, true))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = self.fs.remove_file(&self.temp);
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
pub mod fs;
mod std_engine;
mod uring;

pub use engine::{IoChoice, IoEngine, open_engine};
pub use fs::{Fault, FaultPlan, Fs, Op};

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        self
    }
}
