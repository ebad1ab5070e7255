//! Group-commit latency of the two I/O engines, side by side on the same data and file:
//! `write_and_sync` of 16 x 8 KiB buffers (a typical L0 group commit) and of one 4 MiB buffer
//! (a large upload).
//!
//! The file is preallocated, zero-filled and synced before timing, as segment files are (see
//! STYLE.md, durability rules), so `fdatasync` has data to flush but no metadata. Successive
//! iterations write at successive offsets, wrapping around in the file like a log. The file
//! lives under Cargo's target directory, on the same disk as the crate (not `/tmp`, which may
//! be tmpfs, where `fdatasync` costs nothing).
//!
//! Run with `cargo bench --bench io_engines`; `cargo test --release --all-targets` runs each
//! benchmark once as a smoke test.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ltxvault::io::{IoChoice, IoEngine, open_engine};

/// Size of the preallocated file the batches cycle through.
const FILE_BYTES: u64 = 64 << 20;
const SMALL_BUFFERS: usize = 16;
const SMALL_BUFFER_BYTES: usize = 8 << 10;
const LARGE_BUFFER_BYTES: usize = 4 << 20;
const _: () = assert!(FILE_BYTES.is_multiple_of(LARGE_BUFFER_BYTES as u64));
const _: () = assert!(FILE_BYTES.is_multiple_of((SMALL_BUFFERS * SMALL_BUFFER_BYTES) as u64));

/// A zero-filled file of `FILE_BYTES`, written and synced, so every block is allocated and
/// initialised before the first timed write.
fn preallocated_file(path: &Path) -> File {
    let mut file = OpenOptions::new().read(true).write(true).create_new(true).open(path).unwrap();
    let zeros = vec![0; 1 << 20];
    for _ in 0..FILE_BYTES / zeros.len() as u64 {
        file.write_all(&zeros).unwrap();
    }
    file.sync_all().unwrap();
    file
}

fn engines() -> Vec<Box<dyn IoEngine>> {
    [IoChoice::Std, IoChoice::Uring].into_iter().map(|choice| open_engine(choice).unwrap().0).collect()
}

/// Times `write_and_sync` of `bufs` with every engine, advancing the offset by the batch
/// size after each call.
fn bench_batch(c: &mut Criterion, name: &str, file: &File, bufs: &[&[u8]]) {
    let batch_bytes: u64 = bufs.iter().map(|buf| buf.len() as u64).sum();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(batch_bytes)).measurement_time(Duration::from_secs(10));
    for mut engine in engines() {
        let mut offset = 0;
        group.bench_function(engine.name(), |b| {
            b.iter(|| {
                engine.write_and_sync(file, offset, bufs).unwrap();
                offset = (offset + batch_bytes) % FILE_BYTES;
            })
        });
    }
    group.finish();
}

fn io_engines(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = preallocated_file(&dir.path().join("log"));

    let small: Vec<Vec<u8>> = (0..SMALL_BUFFERS).map(|i| vec![i as u8 + 1; SMALL_BUFFER_BYTES]).collect();
    let small: Vec<&[u8]> = small.iter().map(Vec::as_slice).collect();
    bench_batch(c, "write_and_sync_16x8KiB", &file, &small);

    let large = vec![0xa5; LARGE_BUFFER_BYTES];
    bench_batch(c, "write_and_sync_1x4MiB", &file, &[&large]);
}

criterion_group!(benches, io_engines);
criterion_main!(benches);
