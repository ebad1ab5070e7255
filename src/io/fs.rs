//! The file-system seam: every durable operation of the engine (create, write, sync,
//! rename, remove, fallocate, set_len, copy_file_range, directory fsync, msync of a map)
//! goes through an [`Fs`], so a test can make any one of them fail.
//!
//! An `Fs` carries an optional [`FaultPlan`] (from `VaultConfig::faults`; each vault its
//! own, so tests running side by side do not see each other's faults). Before each
//! operation it asks the plan what to do: go ahead, fail with an errno, or (for writes and
//! copies) do only the first k bytes and then fail, as a disk that fills up mid-write does.
//! Without a plan the cost is one `Option` check per operation.
//!
//! Errors come back as [`Error::Io`] with the operation and the path, or as
//! [`Error::NoSpace`] for `ENOSPC`/`EDQUOT` (see [`Error::io`]). What each caller does
//! with a failure (poison, leave the level as it was, retry later, remove its output) is
//! written next to the caller and summed up in DESIGN.md ("Failure semantics").

use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::engine::IoEngine;
use crate::io::{Sync, TempFile};

/// The kinds of operation a [`FaultPlan`] is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// Creating or opening a file for writing (`open` with `O_CREAT`).
    Create,
    /// Creating a directory.
    MakeDir,
    /// Writing bytes (`pwrite`, `write`, the log's gather write).
    Write,
    /// A kernel copy between files (`copy_file_range`).
    Copy,
    /// `fsync`, `fdatasync` or `msync` of a file.
    Sync,
    /// `fsync` of a directory.
    SyncDir,
    /// `rename`.
    Rename,
    /// Removing a file or a directory tree.
    Remove,
    /// `fallocate`.
    Allocate,
    /// `ftruncate` (growing or cutting a file).
    SetLen,
}

impl Op {
    /// Every kind, in a fixed order.
    pub const ALL: [Op; 10] = [
        Op::Create,
        Op::MakeDir,
        Op::Write,
        Op::Copy,
        Op::Sync,
        Op::SyncDir,
        Op::Rename,
        Op::Remove,
        Op::Allocate,
        Op::SetLen,
    ];

    /// Whether a fault may let part of the operation happen ([`Fault::Short`]).
    pub fn moves_bytes(self) -> bool {
        matches!(self, Op::Write | Op::Copy)
    }
}

/// What a [`FaultPlan`] decides for one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Do it.
    Proceed,
    /// Do nothing and fail with this errno.
    Fail(i32),
    /// Write or copy only the first `bytes` (fewer than asked), then fail with `errno`.
    /// Other operations fail without doing anything.
    Short {
        /// Bytes that reach the file.
        bytes: u64,
        /// The error that follows.
        errno: i32,
    },
}

/// Decides, operation by operation, whether it fails. Called on the thread about to run
/// the operation, before it runs.
pub trait FaultPlan: Send + std::marker::Sync + std::fmt::Debug {
    /// The fault for `op` on `path` (`len`: bytes to write or copy, else 0).
    fn before(&self, op: Op, path: &Path, len: u64) -> Fault;
}

/// The file-system operations of the engine, with an optional fault plan; see the module
/// docs. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Fs {
    faults: Option<Arc<dyn FaultPlan>>,
}

impl Fs {
    /// An `Fs` that asks `faults` before every operation (none: the real thing).
    pub fn new(faults: Option<Arc<dyn FaultPlan>>) -> Fs {
        Fs { faults }
    }

    fn check(&self, op: Op, path: &Path, len: u64) -> Fault {
        match &self.faults {
            None => Fault::Proceed,
            Some(plan) => plan.before(op, path, len),
        }
    }

    /// Asks the plan about an operation that moves no bytes: `Ok` to go ahead.
    fn gate(&self, op: Op, path: &Path) -> io::Result<()> {
        match self.check(op, path, 0) {
            Fault::Proceed => Ok(()),
            Fault::Fail(errno) | Fault::Short { errno, .. } => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    /// Creates `path` (or truncates it) for reading and writing, mode 0600.
    pub fn create(&self, path: &Path) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        self.gate(Op::Create, path)
            .and_then(|()| {
                std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(0o600).open(path)
            })
            .map_err(|e| Error::io(format!("create {}", path.display()), e))
    }

    /// Opens `path` for reading and writing, creating it (mode 0600) if `create` and it is
    /// missing; an existing file keeps its bytes.
    pub fn open_rw(&self, path: &Path, create: bool) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let open = || {
            if create {
                self.gate(Op::Create, path)?;
            }
            std::fs::OpenOptions::new().read(true).write(true).create(create).truncate(false).mode(0o600).open(path)
        };
        open().map_err(|e| Error::io(format!("open {}", path.display()), e))
    }

    /// Creates `path` for reading and writing, mode 0600; fails if it exists.
    pub fn create_new(&self, path: &Path) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        self.gate(Op::Create, path)
            .and_then(|()| std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path))
            .map_err(|e| Error::io(format!("create {}", path.display()), e))
    }

    /// Creates a directory (and its parents) readable by the owner only.
    pub fn make_dir(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        self.gate(Op::MakeDir, dir)
            .and_then(|()| std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir))
            .map_err(|e| Error::io(format!("create directory {}", dir.display()), e))
    }

    /// Writes all of `buf` at `offset` of `file` (at `path`).
    pub fn write_all_at(&self, file: &File, buf: &[u8], offset: u64, path: &Path) -> Result<()> {
        self.write_at(file, buf, offset, path)
            .map_err(|e| Error::io(format!("write {} at byte {offset}", path.display()), e))
    }

    fn write_at(&self, file: &File, buf: &[u8], offset: u64, path: &Path) -> io::Result<()> {
        match self.check(Op::Write, path, buf.len() as u64) {
            Fault::Proceed => file.write_all_at(buf, offset),
            Fault::Fail(errno) => Err(io::Error::from_raw_os_error(errno)),
            Fault::Short { bytes, errno } => {
                file.write_all_at(&buf[..short(bytes, buf.len())], offset)?;
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }

    /// A writer at `file`'s cursor (for encoders and other `io::Write` users); each
    /// `write` call is one [`Op::Write`].
    pub fn writer<'a>(&'a self, file: &'a File, path: &'a Path) -> FileWriter<'a> {
        FileWriter { fs: self, file, path }
    }

    /// Syncs `file` (at `path`) as `sync` asks.
    pub fn sync(&self, file: &File, sync: Sync, path: &Path) -> Result<()> {
        if sync == Sync::None {
            return Ok(());
        }
        self.gate(Op::Sync, path)
            .and_then(|()| if sync == Sync::Data { file.sync_data() } else { file.sync_all() })
            .map_err(|e| Error::io(format!("sync {}", path.display()), e))
    }

    /// `msync` of `range` of a writable map of the file at `path`.
    pub fn sync_map(&self, map: &memmap2::MmapMut, range: Range<usize>, path: &Path) -> Result<()> {
        self.gate(Op::Sync, path)
            .and_then(|()| map.flush_range(range.start, range.len()))
            .map_err(|e| Error::io(format!("sync {}", path.display()), e))
    }

    /// Fsyncs a directory, making the names created, renamed or removed in it durable.
    pub fn sync_dir(&self, dir: &Path) -> Result<()> {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        self.gate(Op::SyncDir, dir)
            .and_then(|()| File::open(dir))
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("sync directory {}", dir.display()), e))
    }

    /// Renames `from` to `to` (replacing `to`).
    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.gate(Op::Rename, from)
            .and_then(|()| std::fs::rename(from, to))
            .map_err(|e| Error::io(format!("rename {} to {}", from.display(), to.display()), e))
    }

    /// Removes a file; `Ok(false)` if it was not there.
    pub fn remove_file(&self, path: &Path) -> Result<bool> {
        match self.gate(Op::Remove, path).and_then(|()| std::fs::remove_file(path)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
        }
    }

    /// Removes a directory and everything in it; `Ok(false)` if it was not there.
    pub fn remove_dir_all(&self, path: &Path) -> Result<bool> {
        match self.gate(Op::Remove, path).and_then(|()| std::fs::remove_dir_all(path)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
        }
    }

    /// Allocates the blocks of `len` bytes at `offset` of `file` (`fallocate` mode 0: the
    /// file grows if needed and new bytes read as zeros), so that a disk without the room
    /// says so now, with `ENOSPC`, rather than part way through a later write or, for a
    /// mapped file, with a SIGBUS on the first store into a page with no block behind it.
    /// File systems without `fallocate` get zeros written past the file's current end
    /// instead (bytes already in the file are never overwritten).
    pub fn allocate(&self, file: &File, offset: u64, len: u64, path: &Path) -> Result<()> {
        use std::os::fd::AsRawFd;
        if len == 0 {
            return Ok(());
        }
        let allocate = || {
            self.gate(Op::Allocate, path)?;
            let (offset, len) = match (i64::try_from(offset), i64::try_from(len)) {
                (Ok(offset), Ok(len)) => (offset, len),
                _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
            };
            loop {
                // SAFETY: a plain syscall on an open descriptor; no memory is passed.
                if unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) } == 0 {
                    return Ok(());
                }
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
        };
        match allocate() {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {
                self.zero_fill(file, offset, len, path)
            }
            Err(e) => Err(Error::io(format!("allocate {len} bytes in {}", path.display()), e)),
        }
    }

    /// Writes zeros from the file's end (or `offset`, if past it) up to `offset + len`.
    fn zero_fill(&self, file: &File, offset: u64, len: u64, path: &Path) -> Result<()> {
        let end = offset.saturating_add(len);
        let size = file.metadata().map_err(|e| Error::io(format!("stat {}", path.display()), e))?.len();
        let mut at = size.max(offset);
        let zeros = vec![0u8; (end.saturating_sub(at)).min(1 << 20) as usize];
        while at < end {
            let n = zeros.len().min((end - at) as usize);
            self.write_all_at(file, &zeros[..n], at, path)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Sets the length of `file` (at `path`).
    pub fn set_len(&self, file: &File, len: u64, path: &Path) -> Result<()> {
        self.gate(Op::SetLen, path)
            .and_then(|()| file.set_len(len))
            .map_err(|e| Error::io(format!("set the length of {} to {len}", path.display()), e))
    }

    /// Copies `len` bytes at `src_offset` of `src` to `dst_offset` of `dst` (at `dst_path`)
    /// in the kernel; see [`crate::io::copy_range_at`]. Returns the bytes copied.
    pub fn copy_range_at(
        &self,
        src: &File,
        src_offset: u64,
        dst: &File,
        dst_offset: u64,
        len: u64,
        dst_path: &Path,
    ) -> Result<u64> {
        let fault =
            |errno: i32| Error::io(format!("copy into {}", dst_path.display()), io::Error::from_raw_os_error(errno));
        match self.check(Op::Copy, dst_path, len) {
            Fault::Proceed => crate::io::copy_range_at(src, src_offset, dst, dst_offset, len),
            Fault::Fail(errno) => Err(fault(errno)),
            Fault::Short { bytes, errno } => {
                crate::io::copy_range_at(src, src_offset, dst, dst_offset, short(bytes, len as usize) as u64)?;
                Err(fault(errno))
            }
        }
    }

    /// A new file under a temporary name next to `target`; see [`TempFile`].
    pub fn temp_file(&self, target: &Path) -> Result<TempFile> {
        let name =
            target.file_name().ok_or_else(|| Error::Invalid(format!("{} is not a file path", target.display())))?;
        let temp = target.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        let file = self.create(&temp)?;
        Ok(TempFile::new(self.clone(), file, temp, target.to_path_buf()))
    }

    /// The log writer's group commit: `engine.write_and_sync` of `bufs` at `offset` of the
    /// segment `file` (at `path`). A plan is asked about the write (all the bytes) and then
    /// the sync; a failed sync comes after the bytes were written, as it does on a real disk.
    pub fn log_write_and_sync(
        &self,
        engine: &mut dyn IoEngine,
        file: &File,
        offset: u64,
        bufs: &[&[u8]],
        path: impl FnOnce() -> PathBuf,
    ) -> io::Result<()> {
        if self.faults.is_none() {
            return engine.write_and_sync(file, offset, bufs);
        }
        let path = path();
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        // Writes the first `limit` bytes of the batch without syncing.
        let mut write_prefix = |limit: u64| -> io::Result<()> {
            let mut at = offset;
            for buf in bufs {
                let n = buf.len().min((offset + limit).saturating_sub(at) as usize);
                if n == 0 {
                    break;
                }
                engine.write_all_at(file, at, &buf[..n])?;
                at += buf.len() as u64;
            }
            Ok(())
        };
        match self.check(Op::Write, &path, total) {
            Fault::Proceed => {}
            Fault::Fail(errno) => return Err(io::Error::from_raw_os_error(errno)),
            Fault::Short { bytes, errno } => {
                write_prefix(short(bytes, total as usize) as u64)?;
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        match self.check(Op::Sync, &path, 0) {
            Fault::Proceed => engine.write_and_sync(file, offset, bufs),
            Fault::Fail(errno) | Fault::Short { errno, .. } => {
                write_prefix(total)?;
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}

/// A short write's byte count: fewer than `len` (none of an empty buffer).
fn short(bytes: u64, len: usize) -> usize {
    (bytes as usize).min(len.saturating_sub(1))
}

/// `io::Write` at a file's cursor through an [`Fs`]; see [`Fs::writer`].
pub struct FileWriter<'a> {
    fs: &'a Fs,
    file: &'a File,
    path: &'a Path,
}

impl Write for FileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.fs.check(Op::Write, self.path, buf.len() as u64) {
            Fault::Proceed => self.file.write(buf),
            Fault::Fail(errno) => Err(io::Error::from_raw_os_error(errno)),
            Fault::Short { bytes, errno } => {
                self.file.write_all(&buf[..short(bytes, buf.len())])?;
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Fails every operation of one kind, once, in the way given; records what it saw.
    #[derive(Debug)]
    struct Once {
        op: Op,
        fault: Fault,
        seen: Mutex<Vec<(Op, PathBuf, u64)>>,
    }

    impl FaultPlan for Once {
        fn before(&self, op: Op, path: &Path, len: u64) -> Fault {
            let mut seen = self.seen.lock().unwrap();
            seen.push((op, path.to_path_buf(), len));
            if op == self.op && seen.iter().filter(|(o, ..)| *o == op).count() == 1 {
                self.fault
            } else {
                Fault::Proceed
            }
        }
    }

    fn fs_failing(op: Op, fault: Fault) -> (Fs, Arc<Once>) {
        let plan = Arc::new(Once { op, fault, seen: Mutex::new(Vec::new()) });
        (Fs::new(Some(plan.clone())), plan)
    }

    #[test]
    fn a_short_write_leaves_the_prefix_and_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let (fs, plan) = fs_failing(Op::Write, Fault::Short { bytes: 3, errno: libc::ENOSPC });
        let file = fs.create(&path).unwrap();
        let err = fs.write_all_at(&file, b"abcdefgh", 2, &path).unwrap_err();
        assert!(matches!(err, Error::NoSpace(_)), "{err}");
        assert!(err.to_string().contains("disk is full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0abc");
        // Only once: the next write goes through.
        fs.write_all_at(&file, b"xy", 0, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"xyabc");
        let seen = plan.seen.lock().unwrap();
        assert_eq!(seen[1], (Op::Write, path.clone(), 8));
    }

    #[test]
    fn allocation_without_fallocate_writes_zeros_past_the_end_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let fs = Fs::new(None);
        let file = fs.create(&path).unwrap();
        fs.write_all_at(&file, b"abc", 0, &path).unwrap();
        // The fallback for file systems without fallocate: the bytes there stay.
        fs.zero_fill(&file, 0, 3 << 20, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 3 << 20);
        assert_eq!(&bytes[..3], b"abc");
        assert!(bytes[3..].iter().all(|&b| b == 0));
        // A range past the end starts where it says.
        fs.zero_fill(&file, 4 << 20, 10, &path).unwrap();
        assert_eq!(file.metadata().unwrap().len(), (4 << 20) + 10);
        // Nothing to allocate is not an error (fallocate itself refuses a length of 0).
        fs.allocate(&file, 0, 0, &path).unwrap();
        fs.allocate(&file, 5 << 20, 4096, &path).unwrap();
        assert_eq!(file.metadata().unwrap().len(), (5 << 20) + 4096);
    }

    #[test]
    fn failed_operations_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"a").unwrap();

        let (fs, _) = fs_failing(Op::Rename, Fault::Fail(libc::EIO));
        let err = fs.rename(&a, &b).unwrap_err();
        assert!(matches!(&err, Error::Io { source, .. } if source.raw_os_error() == Some(libc::EIO)), "{err}");
        assert!(a.exists() && !b.exists());

        let (fs, _) = fs_failing(Op::Remove, Fault::Fail(libc::EIO));
        assert!(fs.remove_file(&a).is_err());
        assert!(a.exists());
        assert!(fs.remove_file(&a).unwrap(), "the second try goes through");
        assert!(!fs.remove_file(&a).unwrap(), "a missing file is not an error");

        let (fs, _) = fs_failing(Op::Create, Fault::Fail(libc::ENOSPC));
        assert!(matches!(fs.create(&b), Err(Error::NoSpace(_))));
        assert!(!b.exists());

        let (fs, _) = fs_failing(Op::SetLen, Fault::Fail(libc::EIO));
        let file = fs.create(&b).unwrap();
        assert!(fs.set_len(&file, 100, &b).is_err());
        assert_eq!(file.metadata().unwrap().len(), 0);

        let (fs, _) = fs_failing(Op::Allocate, Fault::Fail(libc::ENOSPC));
        assert!(matches!(fs.allocate(&file, 0, 4096, &b), Err(Error::NoSpace(_))));
        fs.allocate(&file, 0, 4096, &b).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 4096);

        let (fs, _) = fs_failing(Op::Sync, Fault::Fail(libc::EIO));
        assert!(fs.sync(&file, Sync::Data, &b).is_err());
        fs.sync(&file, Sync::None, &b).unwrap();
        let (fs, _) = fs_failing(Op::SyncDir, Fault::Fail(libc::EIO));
        assert!(fs.sync_dir(dir.path()).is_err());
    }

    #[test]
    fn a_temp_file_that_fails_to_commit_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let listing = || {
            let mut names: Vec<String> =
                std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            names.sort();
            names
        };
        for op in [Op::Sync, Op::Rename] {
            let (fs, _) = fs_failing(op, Fault::Fail(libc::EIO));
            let temp = fs.temp_file(&target).unwrap();
            temp.write_all_at(b"data", 0).unwrap();
            assert!(temp.commit().is_err(), "{op:?}");
            assert!(listing().is_empty(), "after a failed {op:?}: {:?}", listing());
        }
        // A failed directory sync comes after the rename: `commit` leaves the complete file,
        // `commit_or_discard` removes it.
        let (fs, _) = fs_failing(Op::SyncDir, Fault::Fail(libc::EIO));
        let temp = fs.temp_file(&target).unwrap();
        temp.write_all_at(b"data", 0).unwrap();
        assert!(temp.commit().is_err());
        assert_eq!(listing(), ["out"]);
        assert_eq!(std::fs::read(&target).unwrap(), b"data");
        std::fs::remove_file(&target).unwrap();
        let (fs, _) = fs_failing(Op::SyncDir, Fault::Fail(libc::EIO));
        let temp = fs.temp_file(&target).unwrap();
        assert!(temp.commit_or_discard().is_err());
        assert!(listing().is_empty(), "{:?}", listing());
    }

    #[test]
    fn a_short_copy_copies_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let (src_path, dst_path) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::write(&src_path, vec![7u8; 10_000]).unwrap();
        let (fs, _) = fs_failing(Op::Copy, Fault::Short { bytes: 4096, errno: libc::EIO });
        let (src, dst) = (File::open(&src_path).unwrap(), fs.create(&dst_path).unwrap());
        assert!(fs.copy_range_at(&src, 0, &dst, 0, 10_000, &dst_path).is_err());
        assert_eq!(std::fs::read(&dst_path).unwrap(), vec![7u8; 4096]);
        assert_eq!(fs.copy_range_at(&src, 0, &dst, 0, 10_000, &dst_path).unwrap(), 10_000);
    }

    #[test]
    fn the_log_write_fails_before_or_after_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let (mut engine, _) = crate::io::open_engine(crate::io::IoChoice::Std).unwrap();
        let file = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let bufs: [&[u8]; 3] = [b"abc", b"defg", b"hi"];

        let (fs, _) = fs_failing(Op::Write, Fault::Short { bytes: 5, errno: libc::EIO });
        assert!(fs.log_write_and_sync(&mut *engine, &file, 0, &bufs, || path.clone()).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"abcde");

        let (fs, _) = fs_failing(Op::Sync, Fault::Fail(libc::EIO));
        let err = fs.log_write_and_sync(&mut *engine, &file, 10, &bufs, || path.clone()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert_eq!(&std::fs::read(&path).unwrap()[10..], b"abcdefghi", "the bytes went out before the sync failed");

        Fs::default().log_write_and_sync(&mut *engine, &file, 0, &bufs, || unreachable!()).unwrap();
    }
}
