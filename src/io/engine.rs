//! The I/O engine: the one small trait through which the L0 log writer writes and syncs, and
//! the start-up choice between its two implementations.
//!
//! - `uring` submits a whole group commit (every write of the batch, then an `fdatasync`
//!   flagged `IO_DRAIN`) with one `io_uring_enter`, and waits once.
//! - `std` does the same with `pwritev`, then `fdatasync`. It works everywhere, including
//!   containers whose seccomp profile forbids io_uring.
//!
//! Both cut a batch the same way, with a `GatherPlan`: one vectored write per 1024
//! buffers or 1 GiB, remainders of short writes completed piece by piece.
//!
//! [`open_engine`] picks one. `Auto` probes io_uring (a ring, the opcodes we use, and a NOP
//! round trip, since some sandboxes let `io_uring_setup` through and block
//! `io_uring_enter`) and falls back to `std` with a note for the caller to log.
//!
//! Both engines leave error handling policy to the caller: they report the first error of a
//! batch and stay usable, but a failed `fdatasync` must not be retried (see STYLE.md): the
//! caller poisons the store.

use std::fs::File;
use std::io::{self, IoSlice};
use std::ops::Range;

use crate::error::{Error, Result};
use crate::io::std_engine::StdEngine;
use crate::io::uring::{Unavailable, UringEngine};
use Submission::{Single, Vectored};

/// Positioned writes and data syncs, as the vault's writer thread needs them. The writer thread
/// owns its engine, so every method takes `&mut self`.
pub trait IoEngine: Send {
    /// Which engine this is, for logs and benchmarks ("uring" / "std").
    fn name(&self) -> &'static str;

    /// Writes every buffer back to back starting at `offset` (a gather write: buffer i lands
    /// right after buffer i-1), completing short writes, then makes them durable with
    /// `fdatasync`. Returns only when all is on disk, or with the first error.
    ///
    /// io_uring: the writes are submitted unlinked in one go, followed by an
    /// `fsync(DATASYNC)` flagged `IO_DRAIN`, with one `submit_and_wait`; short writes are
    /// resubmitted for the remainder (and synced again).
    fn write_and_sync(&mut self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()>;

    /// Plain positioned write of all bytes (no sync).
    fn write_all_at(&mut self, file: &File, offset: u64, buf: &[u8]) -> io::Result<()>;

    /// `fdatasync`.
    fn sync_data(&mut self, file: &File) -> io::Result<()>;

    /// `fallocate` (mode 0) of `len` bytes at `offset`: extends the file if needed; no zeroing
    /// guarantees beyond what the file system gives.
    fn allocate(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()>;
}

/// Which engine the configuration asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoChoice {
    /// io_uring if it works here, else std.
    Auto,
    /// io_uring or fail.
    Uring,
    /// `pwrite` and `fdatasync`.
    Std,
}

/// Opens the engine `choice` asks for.
///
/// `Uring` fails with an error that says why io_uring is unavailable (seccomp or sysctl
/// `EPERM`, `ENOSYS`, `RLIMIT_MEMLOCK`, a kernel without the opcodes we use). `Auto` falls back
/// to std in those cases and returns a human-readable note saying why, for the caller to log.
pub fn open_engine(choice: IoChoice) -> Result<(Box<dyn IoEngine>, Option<String>)> {
    open_with(choice, UringEngine::open)
}

/// [`open_engine`] with the io_uring probe as a parameter, so that the fallback can be tested
/// on a machine where io_uring works.
fn open_with(
    choice: IoChoice,
    open_uring: impl FnOnce() -> std::result::Result<UringEngine, Unavailable>,
) -> Result<(Box<dyn IoEngine>, Option<String>)> {
    match choice {
        IoChoice::Std => Ok((Box::new(StdEngine::new()), None)),
        IoChoice::Uring => match open_uring() {
            Ok(engine) => Ok((Box::new(engine), None)),
            Err(unavailable) => Err(Error::io(
                format!("io_uring engine unavailable ({}); choose the std engine", unavailable.explain()),
                unavailable.source,
            )),
        },
        IoChoice::Auto => match open_uring() {
            Ok(engine) => Ok((Box::new(engine), None)),
            Err(unavailable) => Ok((
                Box::new(StdEngine::new()),
                Some(format!(
                    "io_uring unavailable ({}: {}); using the std engine",
                    unavailable.explain(),
                    unavailable.source
                )),
            )),
        },
    }
}

/// Largest single write either engine issues. The kernel shortens any write above
/// `MAX_RW_COUNT` (2 GiB - 4 KiB), and an io_uring SQE's length is a `u32`.
pub(crate) const MAX_WRITE_BYTES: usize = 1 << 30;
const _: () = assert!(MAX_WRITE_BYTES <= 0x7fff_f000 && MAX_WRITE_BYTES <= u32::MAX as usize);
/// Most iovecs the kernel takes in one vectored write (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Checks that `len` bytes at `offset` stay within the largest file offset (`off_t` is an
/// `i64`), so both engines refuse the same requests, before writing anything.
pub(crate) fn check_range(offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{len} bytes at offset {offset} end past the largest file offset"),
        )),
    }
}

/// Bytes still to write and where they go.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Piece<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) offset: u64,
}

/// Consecutive pieces of a [`GatherPlan`] that one vectored write covers.
#[derive(Clone, Debug)]
pub(crate) struct Group {
    /// Indexes of the pieces.
    pub(crate) pieces: Range<usize>,
    /// File offset of the first.
    pub(crate) offset: u64,
    /// Their total length.
    pub(crate) len: usize,
}

/// What to hand the kernel for (the start of) a group.
pub(crate) enum Submission<'p, 'a> {
    /// Several whole pieces: `pwritev` / `IORING_OP_WRITEV`.
    Vectored(&'p [IoSlice<'a>]),
    /// One piece or the start of one: `pwrite` / `IORING_OP_WRITE`.
    Single(&'a [u8]),
}

/// A gather write cut to the kernel's measure, shared by both engines: buffers are cut into
/// pieces of at most `max_write_bytes` (empty buffers vanish), and consecutive pieces are
/// grouped into vectored writes of at most `IOV_MAX` pieces and `max_write_bytes` bytes.
///
/// One vectored write per group rather than one write per buffer: a batch of 16 x 8 KiB
/// took 21 us as one `IORING_OP_WRITEV` against 48 us as 16 `IORING_OP_WRITE`s (and 17 us
/// as one `pwritev` against 39 us as 16 `pwrite`s), on ext4 on virtio, Linux 6.18.
///
/// A write that comes back short leaves a [`remainder`](GatherPlan::remainder): pieces the
/// engines then write one by one (short writes are rare, and this keeps the iovec array
/// immutable while the kernel may read it).
pub(crate) struct GatherPlan<'a> {
    pieces: Vec<Piece<'a>>,
    /// `slices[i]` holds the bytes of `pieces[i]`, as an iovec.
    slices: Vec<IoSlice<'a>>,
    groups: Vec<Group>,
}

impl<'a> GatherPlan<'a> {
    /// Plans writing `bufs` back to back from `offset`; fails if the end would pass the
    /// largest file offset.
    pub(crate) fn new(offset: u64, bufs: &[&'a [u8]], max_write_bytes: usize) -> io::Result<GatherPlan<'a>> {
        assert!(max_write_bytes > 0 && max_write_bytes <= MAX_WRITE_BYTES);
        let total = bufs.iter().map(|buf| buf.len() as u64).sum();
        check_range(offset, total)?;
        let mut plan = GatherPlan {
            pieces: Vec::with_capacity(bufs.len()),
            slices: Vec::with_capacity(bufs.len()),
            groups: Vec::new(),
        };
        let mut at = offset;
        for chunk in bufs.iter().flat_map(|buf| buf.chunks(max_write_bytes)) {
            let index = plan.pieces.len();
            match plan.groups.last_mut() {
                Some(group) if group.pieces.len() < IOV_MAX && group.len + chunk.len() <= max_write_bytes => {
                    group.pieces.end = index + 1;
                    group.len += chunk.len();
                }
                _ => plan.groups.push(Group { pieces: index..index + 1, offset: at, len: chunk.len() }),
            }
            plan.pieces.push(Piece { bytes: chunk, offset: at });
            plan.slices.push(IoSlice::new(chunk));
            at += chunk.len() as u64;
        }
        debug_assert_eq!(at, offset + total);
        Ok(plan)
    }

    pub(crate) fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// What to submit for `group`, at most `max_bytes` of it (less than the whole group only
    /// when tests provoke short writes): the longest run of whole pieces that fits, or the
    /// start of the first piece.
    pub(crate) fn submission(&self, group: &Group, max_bytes: usize) -> Submission<'_, 'a> {
        let pieces = &self.pieces[group.pieces.clone()];
        let mut count = pieces.len();
        if max_bytes < group.len {
            let mut bytes = 0;
            count = pieces
                .iter()
                .take_while(|piece| {
                    bytes += piece.bytes.len();
                    bytes <= max_bytes
                })
                .count();
        }
        match count {
            0 => Single(&pieces[0].bytes[..max_bytes]),
            1 => Single(pieces[0].bytes),
            _ => Vectored(&self.slices[group.pieces.start..group.pieces.start + count]),
        }
    }

    /// The pieces of `group` left after its first `written` bytes.
    pub(crate) fn remainder(&self, group: &Group, written: usize) -> impl Iterator<Item = Piece<'a>> {
        let mut skip = written;
        self.pieces[group.pieces.clone()].iter().filter_map(move |piece| {
            if skip >= piece.bytes.len() {
                skip -= piece.bytes.len();
                return None;
            }
            let rest = Piece { bytes: &piece.bytes[skip..], offset: piece.offset + skip as u64 };
            skip = 0;
            Some(rest)
        })
    }
}

#[cfg(test)]
mod tests {
    //! One suite, run against every engine: std and io_uring as opened in production, and
    //! both squeezed (writes cut and grouped at an odd size, every write made short, and for
    //! io_uring a 4-entry ring), so that splitting, chunking and short-write completion run
    //! on every test.

    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use super::*;

    fn open_rw(path: &Path) -> File {
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap()
    }

    /// Deterministic bytes that differ at every offset that matters (a shifted or dropped
    /// buffer shows), seeded so that two buffers never look alike.
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    /// Compares without printing megabytes on failure.
    fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        if let Some(at) = got.iter().zip(want).position(|(g, w)| g != w) {
            panic!("{what}: first difference at byte {at}: got {:#04x}, want {:#04x}", got[at], want[at]);
        }
    }

    fn gather_write_lands_back_to_back(engine: &mut dyn IoEngine) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let before = vec![b'x'; 64 * 1024];
        std::fs::write(&path, &before).unwrap();
        let file = open_rw(&path);
        let bufs: Vec<Vec<u8>> =
            [1, 0, 4096, 3, 12_345, 0, 7].iter().enumerate().map(|(i, &n)| pattern(n, i as u64)).collect();
        let refs: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        let offset = 1000;
        engine.write_and_sync(&file, offset, &refs).unwrap();

        let mut want = before.clone();
        let data = bufs.concat();
        want[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
        assert_bytes_eq(&std::fs::read(&path).unwrap(), &want, "file after gather write");
    }

    fn many_small_buffers(engine: &mut dyn IoEngine) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = open_rw(&path);
        // Far more buffers than the 256-entry ring, of sizes that keep nothing aligned.
        let bufs: Vec<Vec<u8>> = (0..5000).map(|i| pattern(1 + i % 61, i as u64)).collect();
        let refs: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        engine.write_and_sync(&file, 17, &refs).unwrap();

        let mut want = vec![0; 17];
        want.extend(bufs.concat());
        assert_bytes_eq(&std::fs::read(&path).unwrap(), &want, "file after 5000 small writes");
    }

    fn large_buffer(engine: &mut dyn IoEngine) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = open_rw(&path);
        let big = pattern(64 << 20, 1);
        let tail = pattern(100, 2);
        engine.write_and_sync(&file, 4096, &[&big, &tail]).unwrap();

        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 4096 + big.len() + tail.len());
        assert!(got[..4096].iter().all(|&b| b == 0));
        assert_bytes_eq(&got[4096..4096 + big.len()], &big, "64 MiB buffer");
        assert_bytes_eq(&got[4096 + big.len()..], &tail, "buffer after the 64 MiB one");
    }

    fn writes_beyond_eof(engine: &mut dyn IoEngine) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = open_rw(&path);
        let a = pattern(10, 3);
        let b = pattern(5000, 4);
        let far = (1 << 20) + 3;
        engine.write_and_sync(&file, far, &[&a, &b]).unwrap();
        let c = pattern(33, 5);
        engine.write_all_at(&file, 2 * far, &c).unwrap();
        engine.sync_data(&file).unwrap();

        let got = std::fs::read(&path).unwrap();
        let far = far as usize;
        assert_eq!(got.len(), 2 * far + c.len());
        assert!(got[..far].iter().all(|&x| x == 0), "hole before the first write reads as zeros");
        assert_bytes_eq(&got[far..far + 10], &a, "first buffer");
        assert_bytes_eq(&got[far + 10..far + 5010], &b, "second buffer");
        assert!(got[far + 5010..2 * far].iter().all(|&x| x == 0), "hole between the writes");
        assert_bytes_eq(&got[2 * far..], &c, "write_all_at");
    }

    fn allocate_then_write(engine: &mut dyn IoEngine) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = open_rw(&path);
        let len = 1 << 20;
        engine.allocate(&file, 0, len).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), len, "fallocate mode 0 extends the file");
        assert!(meta.blocks() * 512 >= len, "fallocate reserved blocks ({} of 512 bytes)", meta.blocks());

        let data = pattern(8192, 6);
        engine.write_and_sync(&file, 4096, &[&data]).unwrap();
        // Allocating inside the file changes neither its length nor its bytes.
        engine.allocate(&file, 0, 4096).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len() as u64, len, "a write inside the allocation keeps the length");
        assert!(got[..4096].iter().all(|&x| x == 0));
        assert_bytes_eq(&got[4096..4096 + 8192], &data, "write into allocated space");
        assert!(got[4096 + 8192..].iter().all(|&x| x == 0));

        // Allocating past the end extends again.
        engine.allocate(&file, 2 * len, 10).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 2 * len + 10);
    }

    fn read_only_file_fails_and_engine_recovers(engine: &mut dyn IoEngine) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"unchanged").unwrap();
        let read_only = File::open(&path).unwrap();
        let bufs: Vec<Vec<u8>> = (0..300).map(|i| pattern(100, i)).collect();
        let refs: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();

        let err = engine.write_and_sync(&read_only, 0, &refs).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "write_and_sync: {err}");
        let err = engine.write_all_at(&read_only, 0, b"no").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "write_all_at: {err}");
        let err = engine.allocate(&read_only, 0, 4096).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "allocate: {err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"unchanged");

        // The engine is still usable afterwards.
        let other = dir.path().join("g");
        let file = open_rw(&other);
        engine.write_and_sync(&file, 0, &refs).unwrap();
        assert_bytes_eq(&std::fs::read(&other).unwrap(), &bufs.concat(), "write after the failed ones");
    }

    fn empty_batch_only_syncs(engine: &mut dyn IoEngine) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let file = open_rw(&path);
        engine.write_and_sync(&file, 1, &[]).unwrap();
        engine.write_and_sync(&file, 1, &[b"", b""]).unwrap();
        engine.write_all_at(&file, 1, b"").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
    }

    fn offset_overflow_is_invalid_input(engine: &mut dyn IoEngine) {
        let dir = tempfile::tempdir().unwrap();
        let file = open_rw(&dir.path().join("f"));
        // Past the largest file offset (i64::MAX): refused before anything is written.
        let err = engine.write_and_sync(&file, i64::MAX as u64 - 1, &[b"ab", b"c"]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let err = engine.write_all_at(&file, u64::MAX, b"a").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let err = engine.allocate(&file, i64::MAX as u64, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert_eq!(file.metadata().unwrap().len(), 0);
    }

    macro_rules! engine_suite {
        ($module:ident, $make:expr) => {
            mod $module {
                use super::*;

                fn engine() -> Box<dyn IoEngine> {
                    $make
                }

                #[test]
                fn gather_write_lands_back_to_back() {
                    super::gather_write_lands_back_to_back(&mut *engine());
                }

                #[test]
                fn many_small_buffers() {
                    super::many_small_buffers(&mut *engine());
                }

                #[test]
                fn large_buffer() {
                    super::large_buffer(&mut *engine());
                }

                #[test]
                fn writes_beyond_eof() {
                    super::writes_beyond_eof(&mut *engine());
                }

                #[test]
                fn allocate_then_write() {
                    super::allocate_then_write(&mut *engine());
                }

                #[test]
                fn read_only_file_fails_and_engine_recovers() {
                    super::read_only_file_fails_and_engine_recovers(&mut *engine());
                }

                #[test]
                fn empty_batch_only_syncs() {
                    super::empty_batch_only_syncs(&mut *engine());
                }

                #[test]
                fn offset_overflow_is_invalid_input() {
                    super::offset_overflow_is_invalid_input(&mut *engine());
                }
            }
        };
    }

    engine_suite!(std_engine, Box::new(StdEngine::new()));
    engine_suite!(std_squeezed, Box::new(StdEngine::squeezed()));
    engine_suite!(uring, Box::new(UringEngine::open().unwrap()));
    engine_suite!(uring_squeezed, Box::new(UringEngine::squeezed()));

    #[test]
    fn plan_groups_within_kernel_limits() {
        let bufs: Vec<Vec<u8>> = (0..3000).map(|i| vec![i as u8; i % 3]).collect();
        let refs: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        let plan = GatherPlan::new(10, &refs, 100).unwrap();
        let mut at = 10;
        let mut next_piece = 0;
        for group in plan.groups() {
            assert!(group.pieces.len() <= IOV_MAX && group.len <= 100, "{group:?}");
            assert_eq!((group.pieces.start, group.offset), (next_piece, at), "groups are contiguous");
            let pieces = &plan.pieces[group.pieces.clone()];
            assert!(pieces.iter().all(|piece| !piece.bytes.is_empty()), "empty buffers vanish");
            assert_eq!(pieces.iter().map(|piece| piece.bytes.len()).sum::<usize>(), group.len);
            next_piece = group.pieces.end;
            at += group.len as u64;
        }
        assert_eq!(at - 10, bufs.iter().map(|buf| buf.len() as u64).sum::<u64>());
        // Groups are as large as the limits allow: the next piece would not have fitted.
        for pair in plan.groups().windows(2) {
            assert!(pair[0].len + plan.pieces[pair[1].pieces.start].bytes.len() > 100, "{pair:?}");
        }

        let many: Vec<&[u8]> = vec![b"x"; 2 * IOV_MAX + 1];
        assert_eq!(GatherPlan::new(0, &many, MAX_WRITE_BYTES).unwrap().groups().len(), 3, "cut at IOV_MAX");
    }

    #[test]
    fn plan_remainder_and_short_submission() {
        let bufs: [&[u8]; 3] = [b"abc", b"defg", b"hi"];
        let plan = GatherPlan::new(100, &bufs, 1000).unwrap();
        let group = &plan.groups()[0];
        let rest: Vec<(Vec<u8>, u64)> =
            plan.remainder(group, 5).map(|piece| (piece.bytes.to_vec(), piece.offset)).collect();
        assert_eq!(rest, [(b"fg".to_vec(), 105), (b"hi".to_vec(), 107)]);
        assert_eq!(plan.remainder(group, 3).count(), 2);
        assert_eq!(plan.remainder(group, 9).count(), 0);

        let submitted = |max| match plan.submission(group, max) {
            Vectored(slices) => slices.iter().map(|slice| slice.to_vec()).collect::<Vec<_>>(),
            Single(bytes) => vec![bytes.to_vec()],
        };
        assert_eq!(submitted(usize::MAX), [&b"abc"[..], b"defg", b"hi"]);
        assert_eq!(submitted(8), [&b"abc"[..], b"defg"]);
        assert_eq!(submitted(7), [&b"abc"[..], b"defg"], "a run that fits exactly");
        assert_eq!(submitted(6), [b"abc"]);
        assert_eq!(submitted(2), [b"ab"]);
    }

    #[test]
    fn auto_picks_uring_here() {
        // io_uring is enabled on the machines this suite runs on; a fallback here would mean
        // the probe is wrong.
        let (engine, note) = open_engine(IoChoice::Auto).unwrap();
        assert_eq!((engine.name(), note), ("uring", None));
        let (engine, note) = open_engine(IoChoice::Uring).unwrap();
        assert_eq!((engine.name(), note), ("uring", None));
    }

    #[test]
    fn std_choice_gives_std() {
        let (engine, note) = open_engine(IoChoice::Std).unwrap();
        assert_eq!((engine.name(), note), ("std", None));
    }

    fn blocked() -> std::result::Result<UringEngine, Unavailable> {
        Err(Unavailable { step: "io_uring_setup", source: io::Error::from_raw_os_error(libc::EPERM) })
    }

    #[test]
    fn auto_falls_back_to_std_with_a_note() {
        let (engine, note) = open_with(IoChoice::Auto, blocked).unwrap();
        assert_eq!(engine.name(), "std");
        let note = note.unwrap();
        assert!(note.contains("io_uring_setup") && note.contains("seccomp") && note.contains("std engine"), "{note}");
    }

    #[test]
    fn uring_choice_fails_clearly() {
        let Err(err) = open_with(IoChoice::Uring, blocked) else { panic!("io_uring choice must fail when blocked") };
        let message = err.to_string();
        assert!(message.contains("io_uring_setup") && message.contains("seccomp"), "{message}");
        assert!(matches!(err, Error::Io { ref source, .. } if source.raw_os_error() == Some(libc::EPERM)));
    }

    #[test]
    fn choice_names_in_config() {
        for (choice, name) in [(IoChoice::Auto, "\"auto\""), (IoChoice::Uring, "\"uring\""), (IoChoice::Std, "\"std\"")]
        {
            assert_eq!(serde_json::to_string(&choice).unwrap(), name);
            assert_eq!(serde_json::from_str::<IoChoice>(name).unwrap(), choice);
        }
    }
}
