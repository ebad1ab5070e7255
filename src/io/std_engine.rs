//! The portable engine: one `pwrite` loop per buffer (`FileExt::write_all_at` completes short
//! writes and retries `EINTR`), then `fdatasync`. It is the fallback where io_uring is not
//! allowed, and the baseline the io_uring engine is benchmarked against.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crate::io::engine::{IoEngine, check_range};

/// `pwrite` + `fdatasync`.
#[derive(Debug, Default)]
pub(crate) struct StdEngine;

impl StdEngine {
    pub(crate) fn new() -> StdEngine {
        StdEngine
    }
}

impl IoEngine for StdEngine {
    fn name(&self) -> &'static str {
        "std"
    }

    fn write_and_sync(&mut self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        let total = bufs.iter().map(|buf| buf.len() as u64).sum();
        check_range(offset, total)?;
        let mut at = offset;
        for buf in bufs {
            file.write_all_at(buf, at)?;
            at += buf.len() as u64;
        }
        file.sync_data()
    }

    fn write_all_at(&mut self, file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
        check_range(offset, buf.len() as u64)?;
        file.write_all_at(buf, offset)
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
