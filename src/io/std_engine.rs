//! The portable engine: plain system calls. A batch is one `pwritev` per group of the
//! [`GatherPlan`] (one call for any usual group commit), short writes completed piece by
//! piece with `pwrite`, `EINTR` retried, then `fdatasync`. It is the fallback where io_uring
//! is not allowed, and the baseline the io_uring engine is benchmarked against.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crate::io::engine::{GatherPlan, IoEngine, MAX_WRITE_BYTES, Submission, check_range};

/// `pwritev` + `fdatasync`.
#[derive(Debug)]
pub(crate) struct StdEngine {
    max_write_bytes: usize,
    /// Test hook: submit at most this many bytes per call, so that the kernel's answer is a
    /// short write and the completion path runs (0: nothing is written).
    #[cfg(test)]
    short_write_bytes: Option<usize>,
}

impl StdEngine {
    pub(crate) fn new() -> StdEngine {
        StdEngine {
            max_write_bytes: MAX_WRITE_BYTES,
            #[cfg(test)]
            short_write_bytes: None,
        }
    }

    /// Most bytes to hand one call: everything, except under the short-write test hook.
    fn submit_limit(&self) -> usize {
        #[cfg(test)]
        if let Some(limit) = self.short_write_bytes {
            return limit;
        }
        usize::MAX
    }

    fn write_batch(&mut self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        let plan = GatherPlan::new(offset, bufs, self.max_write_bytes)?;
        let limit = self.submit_limit();
        for group in plan.groups() {
            let written = retry_interrupted(|| match plan.submission(group, limit) {
                Submission::Single(bytes) => file.write_at(bytes, group.offset),
                Submission::Vectored(slices) => pwritev(file, slices, group.offset),
            })?;
            if written == group.len {
                continue;
            }
            if written == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("write of {} bytes at offset {} wrote nothing", group.len, group.offset),
                ));
            }
            for piece in plan.remainder(group, written) {
                file.write_all_at(piece.bytes, piece.offset)?;
            }
        }
        Ok(())
    }
}

/// Calls `f` again while it fails with `EINTR`.
fn retry_interrupted(mut f: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// One `pwritev` call: returns how many bytes it wrote.
fn pwritev(file: &File, slices: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
    // GatherPlan groups at most IOV_MAX slices and checked that offset fits in an off_t.
    let count = libc::c_int::try_from(slices.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix (documented by std), and each
    // one points into a buffer borrowed for this call; the kernel only reads `count` of them,
    // during the call. The descriptor belongs to `file`, borrowed (so open) for the call.
    let written = unsafe { libc::pwritev(file.as_raw_fd(), slices.as_ptr().cast(), count, offset) };
    usize::try_from(written).map_err(|_| io::Error::last_os_error())
}

impl IoEngine for StdEngine {
    fn name(&self) -> &'static str {
        "std"
    }

    fn write_and_sync(&mut self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        self.write_batch(file, offset, bufs)?;
        file.sync_data()
    }

    fn write_all_at(&mut self, file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write_batch(file, offset, &[buf])
    }

    fn sync_data(&mut self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    fn allocate(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len)?;
        if len == 0 {
            // fallocate refuses an empty range with EINVAL; there is nothing to do.
            return Ok(());
        }
        // Both fit in an off_t: check_range bounded offset + len by i64::MAX.
        let (offset, len) = (offset as libc::off_t, len as libc::off_t);
        loop {
            // SAFETY: fallocate only reads its integer arguments; the descriptor belongs to
            // `file`, which is borrowed (so open) for the whole call.
            let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
            if result == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

#[cfg(test)]
impl StdEngine {
    /// Writes cut and grouped at 64 KiB + 1, and every call handed at most 40,000 bytes, so
    /// that grouping and short-write completion run on ordinary batches.
    pub(crate) fn squeezed() -> StdEngine {
        StdEngine { max_write_bytes: 65_537, short_write_bytes: Some(40_000) }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    fn scratch_file(dir: &tempfile::TempDir) -> File {
        OpenOptions::new().read(true).write(true).create_new(true).open(dir.path().join("f")).unwrap()
    }

    #[test]
    fn short_writes_are_completed() {
        // Each call is handed at most 1000 bytes, so the vectored write of the group stops
        // after the whole pieces that fit, or in the middle of a piece: the rest must land
        // right after what was written.
        let dir = tempfile::tempdir().unwrap();
        let file = scratch_file(&dir);
        let mut engine = StdEngine::new();
        engine.short_write_bytes = Some(1000);
        let bufs: Vec<Vec<u8>> = [300, 600, 1500, 7, 2500, 999].iter().map(|&n| vec![n as u8; n]).collect();
        let refs: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        engine.write_and_sync(&file, 3, &refs).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap()[3..], bufs.concat()[..]);
    }

    #[test]
    fn zero_byte_write_is_write_zero() {
        let dir = tempfile::tempdir().unwrap();
        let file = scratch_file(&dir);
        let mut engine = StdEngine::new();
        engine.short_write_bytes = Some(0);
        let err = engine.write_and_sync(&file, 0, &[b"abc", b"def"]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero, "{err}");
    }
}
