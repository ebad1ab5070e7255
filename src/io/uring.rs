//! The io_uring engine: a group commit in one `io_uring_enter`.
//!
//! `write_and_sync` cuts the batch with a [`GatherPlan`] (shared with the std engine):
//! usually one group, submitted as one `IORING_OP_WRITEV` (or `IORING_OP_WRITE` for a single
//! piece); thousands of buffers or buffers above 1 GiB make several groups, each its own
//! request at its own file offset. The writes are unlinked, so the kernel may run them in any
//! order or in parallel; they do not overlap, so the order does not matter. After the last
//! write comes one `IORING_OP_FSYNC` (`DATASYNC`) flagged `IO_DRAIN`: the kernel starts it
//! only once every earlier request has completed, so it covers all of them.
//!
//! ```text
//!   push W0 W1 … Wn F(drain) ──submit_and_wait(all)──► reap n+2 CQEs
//!        │ a Wi came back short: push one write per piece left and a new F(drain), go round again
//!        │ a Wi failed: push nothing more, reap what is in flight, return the first error
//!        └ more writes than ring slots: push what fits, wait for half, refill
//! ```
//!
//! At most `sq_entries` requests are in flight (the CQ has twice as many slots, so it cannot
//! overflow). Every CQE is reaped by the call that pushed its SQE, so no call ever sees
//! another's completions.
//!
//! Memory safety rests on one rule: an SQE points into memory borrowed by the call (the
//! caller's buffers; the file's descriptor) and the kernel may use it until the SQE's
//! completion is posted. [`Flight`] enforces this: SQEs are pushed only through it, it only
//! accepts references that outlive it, and its `Drop` waits for every completion it is owed,
//! so whatever way a call ends (success, error, `?`, panic) the borrow ends after the
//! kernel's last use.

use std::fs::File;
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{IoUring, Probe, opcode, squeue, types};

use crate::io::engine::{GatherPlan, IoEngine, MAX_WRITE_BYTES, Piece, Submission, check_range};

/// Submission queue size: more than a group commit usually holds, and bigger batches are
/// fed through it in chunks.
const RING_ENTRIES: u32 = 256;
/// `user_data` of a sync; a write carries the index of its op, which is far below this.
const SYNC: u64 = u64::MAX;
/// `user_data` of anything issued alone (NOP, a lone fsync, fallocate).
const SINGLE: u64 = u64::MAX - 1;
/// How often `io_uring_enter` may refuse for lack of kernel memory (`EAGAIN`, `EBUSY`) with
/// nothing to reap in between, 1 ms apart, before the call gives up.
const BUSY_RETRIES: u32 = 100;

/// Why io_uring cannot be used here.
#[derive(Debug)]
pub(crate) struct Unavailable {
    /// What failed: the ring setup, the opcode probe or the first round trip.
    pub(crate) step: &'static str,
    /// The error it returned.
    pub(crate) source: io::Error,
}

impl Unavailable {
    /// The failed step and, for the errors we know, what usually causes them.
    pub(crate) fn explain(&self) -> String {
        let hint = match self.source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => {
                "; blocked by a seccomp filter (common in containers) or the kernel.io_uring_disabled sysctl"
            }
            Some(libc::ENOSYS) => {
                "; the kernel has no io_uring (before 5.1, built without it) or a seccomp filter hides it"
            }
            Some(libc::ENOMEM) => {
                "; no memory for the ring: RLIMIT_MEMLOCK is too low (kernels before 5.12 charge rings to it; raise `ulimit -l`)"
            }
            Some(libc::EINVAL) => "; the kernel's io_uring is too old (this engine needs Linux 5.6)",
            _ => "",
        };
        format!("{} failed{hint}", self.step)
    }
}

/// Counters that let tests see how batches were submitted on this thread.
#[cfg(test)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(crate) writes: usize,
    pub(crate) syncs: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) last_was_sync: bool,
}

/// The io_uring engine. See the module documentation.
pub(crate) struct UringEngine {
    ring: IoUring,
    max_write_bytes: usize,
    /// Test hook: submit at most this many bytes per write, so that the kernel's answer is a
    /// short write and the resubmission path runs (0: the kernel answers 0 bytes written).
    #[cfg(test)]
    short_write_bytes: Option<usize>,
}

/// A write request of a batch.
enum Op<'a> {
    /// A group of the plan, as first submitted.
    Group(usize),
    /// What a short write left of a piece.
    Rest(Piece<'a>),
}

impl UringEngine {
    /// Sets up a ring and checks that it works: the opcodes we use exist, and a NOP makes the
    /// round trip (some sandboxes allow `io_uring_setup` and block `io_uring_enter`).
    pub(crate) fn open() -> Result<UringEngine, Unavailable> {
        UringEngine::with_limits(RING_ENTRIES, MAX_WRITE_BYTES)
    }

    fn with_limits(entries: u32, max_write_bytes: usize) -> Result<UringEngine, Unavailable> {
        assert!(max_write_bytes > 0 && max_write_bytes <= MAX_WRITE_BYTES);
        let ring = IoUring::new(entries).map_err(|source| Unavailable { step: "io_uring_setup", source })?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|source| Unavailable { step: "probing io_uring opcodes", source })?;
        for (code, name) in [
            (opcode::Nop::CODE, "NOP"),
            (opcode::Write::CODE, "WRITE"),
            (opcode::Writev::CODE, "WRITEV"),
            (opcode::Fsync::CODE, "FSYNC"),
            (opcode::Fallocate::CODE, "FALLOCATE"),
        ] {
            if !probe.is_supported(code) {
                return Err(Unavailable {
                    step: "probing io_uring opcodes",
                    source: io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!("the kernel lacks IORING_OP_{name} (needs Linux 5.6)"),
                    ),
                });
            }
        }
        let mut engine = UringEngine {
            ring,
            max_write_bytes,
            #[cfg(test)]
            short_write_bytes: None,
        };
        engine
            .single(|flight| flight.push(opcode::Nop::new().build()))
            .map_err(|source| Unavailable { step: "io_uring_enter (a NOP round trip)", source })?;
        Ok(engine)
    }

    /// Most bytes to put in one SQE: all of a piece, except under the short-write test hook.
    fn submit_limit(&self) -> usize {
        #[cfg(test)]
        if let Some(limit) = self.short_write_bytes {
            return limit;
        }
        usize::MAX
    }

    /// Writes `bufs` back to back from `offset`, then, if `sync`, makes them durable.
    fn write_batch(&mut self, file: &File, offset: u64, bufs: &[&[u8]], sync: bool) -> io::Result<()> {
        let plan = GatherPlan::new(offset, bufs, self.max_write_bytes)?;
        let limit = self.submit_limit();
        // Every write request of the call: first one per group, then one per piece left over
        // by a short write. `user_data` is the index here.
        let mut ops: Vec<Op<'_>> = (0..plan.groups().len()).map(Op::Group).collect();
        // Ops to (re)submit, popped from the end: the groups in order, then retries.
        let mut queue: Vec<usize> = (0..ops.len()).rev().collect();
        // A sync still has to follow the last write pushed.
        let mut sync_due = sync;
        let mut first_error: Option<io::Error> = None;

        let fd = types::Fd(file.as_raw_fd());
        let mut flight = Flight::new(&mut self.ring);
        loop {
            if first_error.is_none() {
                while flight.has_room()
                    && let Some(index) = queue.pop()
                {
                    match &ops[index] {
                        Op::Group(group) => {
                            let group = &plan.groups()[*group];
                            match plan.submission(group, limit) {
                                Submission::Vectored(slices) => {
                                    flight.push_writev(file, fd, slices, group.offset, index)
                                }
                                Submission::Single(bytes) => flight.push_write(file, fd, bytes, group.offset, index),
                            }
                        }
                        Op::Rest(piece) => {
                            let bytes = &piece.bytes[..piece.bytes.len().min(limit)];
                            flight.push_write(file, fd, bytes, piece.offset, index)
                        }
                    }?;
                    sync_due = sync;
                }
                if sync_due && queue.is_empty() && flight.has_room() {
                    flight.push_sync(file, fd, true)?;
                    sync_due = false;
                }
            }
            if flight.in_flight == 0 {
                break;
            }
            // Nothing left to push: wait for everything (the usual group commit is one
            // enter). Writes waiting for ring slots: wait for half the ring, then refill.
            let waiting = first_error.is_none() && !queue.is_empty();
            let want = if waiting { (flight.in_flight / 2).max(1) } else { flight.in_flight };
            flight.submit_and_wait(want)?;
            while let Some((user_data, result)) = flight.next_completion() {
                if user_data == SYNC {
                    if result < 0 {
                        first_error.get_or_insert(io::Error::from_raw_os_error(-result));
                    }
                    continue;
                }
                let index = user_data as usize;
                let (asked, at) = match &ops[index] {
                    Op::Group(group) => (plan.groups()[*group].len, plan.groups()[*group].offset),
                    Op::Rest(piece) => (piece.bytes.len(), piece.offset),
                };
                match usize::try_from(result) {
                    Err(_) if -result == libc::EINTR => queue.push(index),
                    Err(_) => {
                        first_error.get_or_insert(io::Error::from_raw_os_error(-result));
                    }
                    Ok(0) => {
                        first_error.get_or_insert(io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("write of {asked} bytes at offset {at} wrote nothing"),
                        ));
                    }
                    Ok(written) if written == asked => {}
                    Ok(written) if written < asked => match &mut ops[index] {
                        Op::Rest(piece) => {
                            piece.bytes = &piece.bytes[written..];
                            piece.offset += written as u64;
                            queue.push(index);
                        }
                        Op::Group(group) => {
                            for piece in plan.remainder(&plan.groups()[*group], written) {
                                queue.push(ops.len());
                                ops.push(Op::Rest(piece));
                            }
                        }
                    },
                    Ok(written) => {
                        first_error.get_or_insert(io::Error::other(format!(
                            "io_uring reported {written} bytes written of {asked} at offset {at}"
                        )));
                    }
                }
            }
        }
        drop(flight);
        first_error.map_or(Ok(()), Err)
    }

    /// Runs one request alone and returns its result.
    fn single<'a>(&mut self, push: impl FnOnce(&mut Flight<'_, 'a>) -> io::Result<()>) -> io::Result<u32> {
        let mut flight = Flight::new(&mut self.ring);
        push(&mut flight)?;
        let mut outcome = None;
        // A wait interrupted after the submission returns early: wait again.
        while flight.in_flight > 0 {
            flight.submit_and_wait(flight.in_flight)?;
            while let Some((_, result)) = flight.next_completion() {
                outcome = Some(result);
            }
        }
        drop(flight);
        match outcome {
            Some(result) => u32::try_from(result).map_err(|_| io::Error::from_raw_os_error(-result)),
            None => Err(io::Error::other("io_uring returned without the completion it was waited for")),
        }
    }
}

impl IoEngine for UringEngine {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn write_and_sync(&mut self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        self.write_batch(file, offset, bufs, true)
    }

    fn write_all_at(&mut self, file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write_batch(file, offset, &[buf], false)
    }

    fn sync_data(&mut self, file: &File) -> io::Result<()> {
        let fd = types::Fd(file.as_raw_fd());
        self.single(|flight| flight.push_sync(file, fd, false)).map(drop)
    }

    fn allocate(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len)?;
        if len == 0 {
            // fallocate refuses an empty range with EINVAL; there is nothing to do.
            return Ok(());
        }
        let fd = types::Fd(file.as_raw_fd());
        self.single(|flight| {
            let entry = opcode::Fallocate::new(fd, len).offset(offset).mode(0).build();
            flight.push_with(file, entry)
        })
        .map(drop)
    }
}

/// The requests of one call, from push to completion; see the module documentation.
///
/// Every reference an SQE is built from must live for `'a`, which outlives the `Flight`
/// (drop check enforces it, since `Flight` has a `Drop`), and the `Drop` waits for every
/// completion. A `Flight` is never leaked (`mem::forget`): it is a local of the call that
/// makes it, and this module is the only user.
struct Flight<'ring, 'a> {
    ring: &'ring mut IoUring,
    /// Requests pushed whose completion has not been reaped, including those still waiting in
    /// the submission queue.
    in_flight: usize,
    /// Most requests in flight: the SQ size (and so at most half the CQ size).
    limit: usize,
    _borrows: PhantomData<&'a [u8]>,
}

impl<'ring, 'a> Flight<'ring, 'a> {
    fn new(ring: &'ring mut IoUring) -> Flight<'ring, 'a> {
        let limit = ring.params().sq_entries().min(ring.params().cq_entries()) as usize;
        debug_assert!(ring.submission().is_empty() && ring.completion().is_empty(), "a call left requests behind");
        Flight { ring, in_flight: 0, limit, _borrows: PhantomData }
    }

    fn has_room(&self) -> bool {
        self.in_flight < self.limit
    }

    /// Queues a request that references no memory of ours (NOP).
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        self.push_entry(entry.user_data(SINGLE))
    }

    /// Queues a request on `file` (fsync, fallocate): the descriptor in `entry` must be
    /// `file`'s, which then stays open until the completion.
    fn push_with(&mut self, _file: &'a File, entry: squeue::Entry) -> io::Result<()> {
        self.push_entry(entry.user_data(SINGLE))
    }

    /// Queues a write of `bytes` at `offset` to `file` (whose descriptor is `fd`).
    fn push_write(
        &mut self,
        _file: &'a File,
        fd: types::Fd,
        bytes: &'a [u8],
        offset: u64,
        index: usize,
    ) -> io::Result<()> {
        // GatherPlan cuts pieces at MAX_WRITE_BYTES, which fits in a u32.
        let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("write longer than an SQE can hold"))?;
        let entry = opcode::Write::new(fd, bytes.as_ptr(), len).offset(offset).build().user_data(index as u64);
        self.push_entry(entry)?;
        #[cfg(test)]
        self.count(false);
        Ok(())
    }

    /// Queues a vectored write of `slices` at `offset` to `file` (whose descriptor is `fd`).
    fn push_writev(
        &mut self,
        _file: &'a File,
        fd: types::Fd,
        slices: &'a [IoSlice<'a>],
        offset: u64,
        index: usize,
    ) -> io::Result<()> {
        // GatherPlan groups at most IOV_MAX slices.
        let count = u32::try_from(slices.len()).map_err(|_| io::Error::other("too many iovecs for one SQE"))?;
        // IoSlice is ABI-compatible with iovec on Unix (documented by std).
        let iovecs = slices.as_ptr().cast::<libc::iovec>();
        let entry = opcode::Writev::new(fd, iovecs, count).offset(offset).build().user_data(index as u64);
        self.push_entry(entry)?;
        #[cfg(test)]
        self.count(false);
        Ok(())
    }

    /// Queues an `fdatasync` of `file`; `drain` makes it wait for every earlier request.
    fn push_sync(&mut self, _file: &'a File, fd: types::Fd, drain: bool) -> io::Result<()> {
        let flags = if drain { squeue::Flags::IO_DRAIN } else { squeue::Flags::empty() };
        let entry = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().flags(flags).user_data(SYNC);
        self.push_entry(entry)?;
        #[cfg(test)]
        self.count(true);
        Ok(())
    }

    fn push_entry(&mut self, entry: squeue::Entry) -> io::Result<()> {
        if !self.has_room() {
            return Err(io::Error::other("io_uring submission queue full"));
        }
        // SAFETY: every pointer in `entry` (a buffer, a descriptor) comes from a reference
        // that lives for `'a` (the typed push methods take them as such), and `'a` outlives
        // this Flight, whose Drop waits for this entry's completion before it returns. So the
        // memory stays valid and the descriptor open for as long as the kernel may use them.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Test bookkeeping, per thread (a test drives its engine from its own thread).
    #[cfg(test)]
    fn count(&mut self, sync: bool) {
        STATS.with(|stats| {
            let mut stats = stats.borrow_mut();
            if sync {
                stats.syncs += 1;
            } else {
                stats.writes += 1;
            }
            stats.last_was_sync = sync;
            stats.max_in_flight = stats.max_in_flight.max(self.in_flight);
        });
    }

    /// Submits what is queued and waits until `want` completions are ready (fewer if the
    /// wait is interrupted after the submission: the caller reaps what is there and calls
    /// again). Retries `EINTR`; on `EAGAIN`/`EBUSY` (the kernel is short of memory, or of CQ
    /// space) it returns so that reaping frees some, or backs off and retries if there is
    /// nothing to reap.
    fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        let mut busy = 0;
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY)) => {
                    if !self.ring.completion().is_empty() {
                        return Ok(());
                    }
                    busy += 1;
                    if busy > BUSY_RETRIES {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next completion, if one is ready: its `user_data` and result.
    fn next_completion(&mut self) -> Option<(u64, i32)> {
        let cqe = self.ring.completion().next()?;
        // Every CQE answers an SQE of this Flight: earlier calls reaped all of theirs, and we
        // use no multishot requests.
        debug_assert!(self.in_flight > 0, "a completion nobody asked for");
        self.in_flight = self.in_flight.saturating_sub(1);
        Some((cqe.user_data(), cqe.result()))
    }
}

impl Drop for Flight<'_, '_> {
    /// Waits for every completion still owed (after an error or a panic; on success there
    /// are none), ignoring results: the call is already failing.
    fn drop(&mut self) {
        while self.in_flight > 0 {
            match self.ring.submit_and_wait(self.in_flight) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY)) => {
                    if self.ring.completion().is_empty() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Err(e) => {
                    // The kernel may still be reading buffers whose borrow ends when we
                    // return; returning would let it read freed memory into the file. This
                    // does not happen on a ring we set up ourselves and never share.
                    eprintln!("ltxvault: cannot wait for io_uring completions ({e}); aborting");
                    std::process::abort();
                }
            }
            while self.next_completion().is_some() {}
        }
    }
}

#[cfg(test)]
thread_local! {
    static STATS: std::cell::RefCell<Stats> = std::cell::RefCell::new(Stats::default());
}

#[cfg(test)]
impl UringEngine {
    /// A 4-entry ring, writes cut at 64 KiB + 1 and every write submitted short (40,000
    /// bytes at most): chunking, splitting and resubmission all run on ordinary batches.
    pub(crate) fn squeezed() -> UringEngine {
        let mut engine = UringEngine::with_limits(4, 65_537).unwrap();
        engine.short_write_bytes = Some(40_000);
        engine
    }

    /// The counters of this thread since the last call.
    fn take_stats() -> Stats {
        STATS.with(|stats| std::mem::take(&mut *stats.borrow_mut()))
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    fn scratch_file(dir: &tempfile::TempDir) -> File {
        OpenOptions::new().read(true).write(true).create_new(true).open(dir.path().join("f")).unwrap()
    }

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn short_writes_are_resubmitted_then_synced_again() {
        // The kernel is asked for 1000 bytes at a time of a 10,000-byte buffer, so each
        // completion is short. Each remainder must be resubmitted at the right offset, and a
        // sync must follow the last of them: the sync pushed with the first writes does not
        // cover writes pushed after it.
        let dir = tempfile::tempdir().unwrap();
        let file = scratch_file(&dir);
        let mut engine = UringEngine::open().unwrap();
        engine.short_write_bytes = Some(1000);
        let data = bytes(10_000);
        UringEngine::take_stats();
        engine.write_and_sync(&file, 5, &[&data]).unwrap();
        let stats = UringEngine::take_stats();
        assert_eq!(stats.writes, 10, "{stats:?}");
        assert!(stats.syncs >= 2 && stats.last_was_sync, "{stats:?}");
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap()[5..], data[..]);

        // A vectored write cut after whole pieces or inside one.
        let bufs: Vec<Vec<u8>> = [300, 600, 1500, 7, 2500, 999].iter().map(|&n| vec![n as u8; n]).collect();
        let refs: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        engine.write_and_sync(&file, 20_000, &refs).unwrap();
        let stats = UringEngine::take_stats();
        assert!(stats.writes > 6 && stats.last_was_sync, "{stats:?}");
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap()[20_000..], bufs.concat()[..]);
    }

    #[test]
    fn zero_byte_write_is_write_zero_and_engine_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let file = scratch_file(&dir);
        let mut engine = UringEngine::open().unwrap();
        engine.short_write_bytes = Some(0);
        let err = engine.write_and_sync(&file, 0, &[b"abc", b"def"]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero, "{err}");
        let err = engine.write_all_at(&file, 0, b"abc").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero, "{err}");

        engine.short_write_bytes = None;
        engine.write_and_sync(&file, 0, &[b"abc", b"def"]).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"abcdef");
    }

    #[test]
    fn batch_larger_than_ring_is_fed_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let file = scratch_file(&dir);
        // Groups of at most 64 bytes: about 60 writes through a ring of 4.
        let mut engine = UringEngine::with_limits(4, 64).unwrap();
        let bufs: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 1 + i % 7]).collect();
        let refs: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        let groups = GatherPlan::new(0, &refs, 64).unwrap().groups().len();
        assert!(groups > 50);
        UringEngine::take_stats();
        engine.write_and_sync(&file, 0, &refs).unwrap();
        let stats = UringEngine::take_stats();
        assert_eq!((stats.writes, stats.max_in_flight), (groups, 4), "{stats:?}");
        assert!(stats.last_was_sync);
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), bufs.concat());
    }

    #[test]
    fn buffers_above_the_write_limit_are_split() {
        let dir = tempfile::tempdir().unwrap();
        let file = scratch_file(&dir);
        let mut engine = UringEngine::with_limits(RING_ENTRIES, 65_537).unwrap();
        let data = bytes(200_000);
        UringEngine::take_stats();
        engine.write_and_sync(&file, 0, &[&data, b"", &data[..3]]).unwrap();
        // 200,000 = 3 x 65,537 + 3,389; the last piece shares a write with the 3-byte buffer;
        // the empty one vanishes.
        assert_eq!(UringEngine::take_stats().writes, 4);
        let got = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(got[..200_000], data[..]);
        assert_eq!(got[200_000..], data[..3]);
    }

    #[test]
    fn failed_batch_leaves_no_request_behind() {
        // A write fails at once (EBADF) while hundreds of others and the sync are in flight
        // or still queued. Returning before they complete would let the kernel read buffers
        // after the caller freed them, and hand their completions to the next call.
        let dir = tempfile::tempdir().unwrap();
        drop(scratch_file(&dir));
        let read_only = File::open(dir.path().join("f")).unwrap();
        // Writes of 1 KiB: 300 of them, more than the ring holds.
        let mut engine = UringEngine::with_limits(RING_ENTRIES, 1024).unwrap();
        let bufs: Vec<Vec<u8>> = (0..600).map(|i| vec![i as u8; 512]).collect();
        let refs: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        let err = engine.write_and_sync(&read_only, 0, &refs).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert!(engine.ring.submission().is_empty(), "requests left unsubmitted");
        assert!(engine.ring.completion().is_empty(), "completions left unreaped");
    }

    #[test]
    fn dropping_a_flight_waits_for_its_requests() {
        // A call that leaves early (an error passed up with `?`, a panic) drops its Flight
        // with requests in flight. The drop must wait for the kernel to finish with the
        // buffers: returning at once would let the caller free a buffer that a pending write
        // still reads. Here the write waits on a full pipe until a reader drains it.
        let (mut reader, writer) = std::io::pipe().unwrap();
        let writer = File::from(std::os::fd::OwnedFd::from(writer));
        // SAFETY: F_GETPIPE_SZ reads no memory of ours; the descriptor is open.
        let capacity = unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let capacity = usize::try_from(capacity).unwrap();
        std::io::Write::write_all(&mut &writer, &vec![7; capacity]).unwrap();
        let data = b"written after the wait".to_vec();
        let wait = Duration::from_millis(200);
        let drainer = std::thread::spawn(move || {
            std::thread::sleep(wait);
            let mut got = vec![0; capacity + 22];
            std::io::Read::read_exact(&mut reader, &mut got).unwrap();
            got
        });

        let mut ring = IoUring::new(4).unwrap();
        let started = std::time::Instant::now();
        {
            let mut flight = Flight::new(&mut ring);
            flight.push_write(&writer, types::Fd(writer.as_raw_fd()), &data, 0, 0).unwrap();
            flight.submit_and_wait(0).unwrap();
            assert_eq!(flight.in_flight, 1);
        }
        assert!(started.elapsed() >= wait * 3 / 4, "the drop returned before the write completed");
        assert!(ring.completion().is_empty(), "the completion was left in the ring");
        assert_eq!(drainer.join().unwrap()[capacity..], data[..]);
    }

    #[test]
    fn unavailable_explains_the_usual_causes() {
        let explain =
            |errno| Unavailable { step: "io_uring_setup", source: io::Error::from_raw_os_error(errno) }.explain();
        assert!(explain(libc::EPERM).contains("seccomp"));
        assert!(explain(libc::ENOSYS).contains("no io_uring"));
        assert!(explain(libc::ENOMEM).contains("RLIMIT_MEMLOCK"));
        assert!(explain(libc::EINVAL).contains("5.6"));
        assert_eq!(explain(libc::EIO), "io_uring_setup failed");
    }
}
