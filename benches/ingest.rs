//! Durable ingest, both I/O engines side by side on the same data: one small upload
//! (2 pages of 4 KiB) acknowledged at a time, and large uploads (1,000 pages). Each
//! measured ingest includes validation, the log append and its fdatasync.
//!
//! Concurrency (16 writers, 100 databases, group commit) is measured by
//! `ltxvault bench ingest` (see `tools/ingest-bench.sh`), which criterion's one-call-at-a-
//! time model does not fit.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ltxvault::io::engine::IoChoice;
use ltxvault::ltx::{Checksum, Encoder, Format, Header, PageNo, TxId, page_checksum};
use ltxvault::{Vault, VaultConfig};

/// A database of `db_pages` pages and a generator of uploads that rewrite `pages` of them.
struct Chain {
    image: Vec<u8>,
    checksum: Checksum,
    txid: u64,
    page_size: usize,
    counter: u64,
}

impl Chain {
    fn new(db_pages: u32) -> Chain {
        let page_size = 4096;
        let image: Vec<u8> = (0..db_pages as usize * page_size).map(|i| (i * 7 % 251) as u8).collect();
        let checksum = ltxvault::ltx::database_checksum(&image, page_size as u32);
        Chain { image, checksum, txid: 0, page_size, counter: 0 }
    }

    fn commit(&self) -> u32 {
        (self.image.len() / self.page_size) as u32
    }

    fn snapshot(&mut self) -> Vec<u8> {
        self.txid = 1;
        let header = Header {
            page_size: 4096,
            commit: self.commit(),
            min_txid: TxId(1),
            max_txid: TxId(1),
            ..Header::default()
        };
        let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress: false }).expect("header");
        for (i, page) in self.image.chunks(self.page_size).enumerate() {
            enc.write_page(PageNo(i as u32 + 1), page).expect("page");
        }
        enc.finish(self.checksum).expect("finish").0
    }

    /// The next upload, rewriting `pages` consecutive pages.
    fn next(&mut self, pages: u32) -> Vec<u8> {
        let ps = self.page_size;
        let pre = self.checksum;
        self.counter += 1;
        let first = (self.counter * 13 % (self.commit() - pages + 1) as u64) as u32 + 1;
        for p in first..first + pages {
            let at = (p as usize - 1) * ps;
            self.checksum = self.checksum.toggle(page_checksum(PageNo(p), &self.image[at..at + ps]));
            self.image[at..at + ps].fill((self.counter + p as u64) as u8);
            self.checksum = self.checksum.toggle(page_checksum(PageNo(p), &self.image[at..at + ps]));
        }
        self.txid += 1;
        let header = Header {
            page_size: 4096,
            commit: self.commit(),
            min_txid: TxId(self.txid),
            max_txid: TxId(self.txid),
            pre_apply_checksum: pre,
            ..Header::default()
        };
        let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress: false }).expect("header");
        for p in first..first + pages {
            let at = (p as usize - 1) * ps;
            enc.write_page(PageNo(p), &self.image[at..at + ps]).expect("page");
        }
        enc.finish(self.checksum).expect("finish").0
    }
}

fn bench_engine(c: &mut Criterion, io: IoChoice, name: &str) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on the target disk");
    let vault = Vault::open(&dir.path().join(name), VaultConfig { io, ..VaultConfig::default() }).expect("open");
    let mut group = c.benchmark_group(format!("ingest/{name}"));
    group.sample_size(20);

    let mut small = Chain::new(64);
    vault.ingest("bench", "small", small.snapshot()).expect("snapshot");
    group.throughput(Throughput::Elements(1));
    group.bench_function("small upload (2 x 4 KiB), one at a time", |b| {
        b.iter_batched(
            || small.next(2),
            |upload| vault.ingest("bench", "small", upload).expect("ingest"),
            BatchSize::SmallInput,
        )
    });

    let mut large = Chain::new(2000);
    vault.ingest("bench", "large", large.snapshot()).expect("snapshot");
    group.throughput(Throughput::Bytes(1000 * 4096));
    group.bench_function("large upload (1000 x 4 KiB)", |b| {
        b.iter_batched(
            || large.next(1000),
            |upload| vault.ingest("bench", "large", upload).expect("ingest"),
            BatchSize::LargeInput,
        )
    });
    group.finish();
    vault.close().expect("close");
}

fn ingest(c: &mut Criterion) {
    bench_engine(c, IoChoice::Std, "std");
    bench_engine(c, IoChoice::Uring, "uring");
}

criterion_group!(benches, ingest);
criterion_main!(benches);
