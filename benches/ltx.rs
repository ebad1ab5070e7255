//! Throughput of the LTX codec on realistic 4 KiB-page files: decode+verify of one file in
//! each encoding ltxvault reads, and the 16-way merge that compaction and restore run.
//!
//! Throughput is counted in bytes of *page data* (pages × 4096), never in encoded bytes,
//! so the compressed and uncompressed rows compare the work done per database page, and
//! the merge rows count every input page, including those the merge shadows and drops.
//!
//! Run with `cargo bench --bench ltx`; `cargo test --release --all-targets` runs each
//! benchmark once as a smoke test, which also asserts that every generated file verifies.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use ltxvault::ltx::{
    Checksum, Decoder, Encoder, Format, Header, PageNo, TxId, database_checksum, merge, page_checksum,
};

const PAGE_SIZE: u32 = 4096;
const PAGE: usize = PAGE_SIZE as usize;
/// 8 MiB of pages: large enough that per-file setup (header, trailer, decoder boxes) is
/// noise, small enough that a whole iteration stays well under a second.
const DB_PAGES: u32 = 2048;
/// Inputs of the merge benchmark: one snapshot and this many minus one incremental files.
const MERGE_INPUTS: usize = 16;
/// Pages each incremental merge input rewrites.
const PAGES_PER_TXN: u32 = DB_PAGES / 8;
/// Any fixed time: the decoder does not interpret it.
const TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// xorshift64*: deterministic, dependency-free and far faster than the work it feeds, so
/// every run benchmarks exactly the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Words for text columns. Real tables repeat values, and these repeats are what gives LZ4
/// matches inside a page beyond the free space.
const WORDS: [&[u8]; 16] = [
    b"alpha", b"bravo", b"delta", b"echo", b"golf", b"hotel", b"india", b"kilo", b"lima", b"mike", b"oscar", b"papa",
    b"quebec", b"romeo", b"sierra", b"tango",
];

/// Fills `page` like an SQLite table b-tree leaf: an 8-byte page header and the cell
/// pointer array at the front, zeros in the unallocated middle, and cells packed from the
/// end. Each cell is a record of an integer, a text of repeated words and a random blob,
/// so a page is part incompressible (blobs, rowids), part repetitive (text, record
/// headers) and part zeros, with a fill level that varies per page. The mix is tuned so
/// that LZ4 compresses the pages about 2x; the benchmark prints the ratio it got.
fn fill_page(rng: &mut Rng, page: &mut [u8]) {
    page.fill(0);
    // Leave 17-57% of the page unallocated, as b-tree pages between splits do.
    let free_target = PAGE / 6 + rng.below(PAGE as u64 * 2 / 5) as usize;
    let mut content_start = PAGE;
    let mut cells = 0usize;
    let mut cell = Vec::with_capacity(256);
    loop {
        cell.clear();
        let text_words = 2 + rng.below(8) as usize;
        let blob_len = 16 + rng.below(40) as usize;
        let mut text = Vec::new();
        for _ in 0..text_words {
            text.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize]);
            text.push(b' ');
        }
        // Payload size, rowid, then the record: header size, serial types (int64, text,
        // blob) and the values. Varints are clamped to one byte: the bytes only need the
        // shape of SQLite's, nothing parses them.
        let record_len = 4 + 8 + text.len() + blob_len;
        cell.push(record_len.min(127) as u8);
        cell.push(rng.below(128) as u8); // rowid
        cell.extend_from_slice(&[4, 6, (13 + 2 * text.len()).min(127) as u8, (12 + 2 * blob_len) as u8]);
        cell.extend_from_slice(&rng.next().to_be_bytes());
        cell.extend_from_slice(&text);
        cell.extend((0..blob_len).map(|_| rng.next() as u8));
        let pointer_end = 8 + 2 * (cells + 1);
        if content_start < pointer_end + free_target + cell.len() {
            break;
        }
        content_start -= cell.len();
        page[content_start..content_start + cell.len()].copy_from_slice(&cell);
        page[8 + 2 * cells..pointer_end].copy_from_slice(&(content_start as u16).to_be_bytes());
        cells += 1;
    }
    page[0] = 0x0d; // table leaf
    page[3..5].copy_from_slice(&(cells as u16).to_be_bytes());
    page[5..7].copy_from_slice(&(content_start as u16).to_be_bytes());
}

/// Encodes `pages` (ascending) into one file; `post_apply` of `None` means "the snapshot
/// checksum the encoder computed".
fn encode<'a>(
    header: &Header,
    format: Format,
    pages: impl IntoIterator<Item = (u32, &'a [u8])>,
    post_apply: Option<Checksum>,
) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::new(), header, format).expect("valid header");
    for (pgno, data) in pages {
        enc.write_page(PageNo(pgno), data).expect("valid page");
    }
    let post = post_apply.or_else(|| enc.snapshot_checksum()).expect("post-apply checksum");
    enc.finish(post).expect("finish").0
}

fn snapshot_header() -> Header {
    Header {
        page_size: PAGE_SIZE,
        commit: DB_PAGES,
        min_txid: TxId(1),
        max_txid: TxId(1),
        timestamp_ms: TIMESTAMP_MS,
        ..Header::default()
    }
}

/// A whole database image of `DB_PAGES` pages, page `p` at `(p-1) * PAGE`.
fn database_image(rng: &mut Rng) -> Vec<u8> {
    let mut image = vec![0u8; DB_PAGES as usize * PAGE];
    for page in image.chunks_exact_mut(PAGE) {
        fill_page(rng, page);
    }
    image
}

fn image_pages(image: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    image.chunks_exact(PAGE).enumerate().map(|(i, p)| (i as u32 + 1, p))
}

/// Criterion's defaults (3 s warm-up, 5 s measurement, 100 samples per benchmark) would
/// make each four-benchmark group take over half a minute; these keep a group under 10 s
/// on a 2-core machine. Ten samples is criterion's minimum, and enough for iterations of
/// milliseconds whose spread comes from the machine, not the code. Flat sampling gives
/// every sample the same iteration count, which suits such long iterations (criterion's
/// linear ramp would need 55 iterations for 10 samples).
fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(400))
        .measurement_time(Duration::from_millis(1200));
}

fn bench_decode(c: &mut Criterion) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let image = database_image(&mut rng);
    let header = snapshot_header();
    let raw = encode(&header, Format::V1 { compress: false }, image_pages(&image), None);
    let lz4 = encode(&header, Format::V1 { compress: true }, image_pages(&image), None);
    let v3 = encode(&header, Format::V3Block, image_pages(&image), None);
    // The same pages as a non-snapshot file: the decoder then skips the database checksum
    // it keeps for snapshots, which isolates that cost from the file checksum's.
    let incremental_header = Header {
        commit: DB_PAGES * 2,
        min_txid: TxId(2),
        max_txid: TxId(2),
        pre_apply_checksum: Checksum(Checksum::FLAG | 1),
        ..header
    };
    let incremental = encode(
        &incremental_header,
        Format::V1 { compress: false },
        image_pages(&image),
        Some(Checksum(Checksum::FLAG | 2)),
    );
    eprintln!(
        "decode inputs: {} pages; v1 {} B, v1-lz4 {} B ({:.2}x), v3-block {} B ({:.2}x)",
        DB_PAGES,
        raw.len(),
        lz4.len(),
        raw.len() as f64 / lz4.len() as f64,
        v3.len(),
        raw.len() as f64 / v3.len() as f64
    );

    let mut group = c.benchmark_group("decode_verify");
    configure(&mut group);
    group.throughput(Throughput::Bytes(u64::from(DB_PAGES) * PAGE as u64));
    for (name, file) in
        [("v1_snapshot", &raw), ("v1_lz4_snapshot", &lz4), ("v3_block_snapshot", &v3), ("v1_incremental", &incremental)]
    {
        group.bench_function(name, |b| {
            b.iter(|| {
                // `verify` drains the decoder: every frame, then the file checksum, the
                // trailer rules and (for snapshots) the database checksum.
                let summary = Decoder::new(black_box(file)).and_then(Decoder::verify).expect("file verifies");
                assert_eq!(summary.page_count, DB_PAGES);
                summary
            })
        });
    }
    group.finish();
}

/// The merge inputs: a snapshot of a fresh image, then `MERGE_INPUTS - 1` transactions
/// each rewriting a random `PAGES_PER_TXN` pages, chained by their checksums. Returns the
/// files, their total page count, and the final image's database checksum.
fn merge_inputs(rng: &mut Rng, format: Format) -> (Vec<Vec<u8>>, u64, Checksum) {
    let mut image = database_image(rng);
    let header = snapshot_header();
    let mut files = vec![encode(&header, format, image_pages(&image), None)];
    let mut post_apply =
        Decoder::new(&files[0]).and_then(Decoder::verify).expect("snapshot verifies").trailer.post_apply_checksum;
    let mut page_count = u64::from(DB_PAGES);
    let mut all_pgnos: Vec<u32> = (1..=DB_PAGES).collect();
    let mut new_page = vec![0u8; PAGE];
    for txid in 2..=MERGE_INPUTS as u64 {
        // A partial Fisher-Yates shuffle draws distinct pages; files need them ascending.
        for i in 0..PAGES_PER_TXN as usize {
            let j = i + rng.below((all_pgnos.len() - i) as u64) as usize;
            all_pgnos.swap(i, j);
        }
        let mut pgnos = all_pgnos[..PAGES_PER_TXN as usize].to_vec();
        pgnos.sort_unstable();
        // Apply each change to the model image and fold it into the database checksum:
        // XOR the old page's checksum out and the new page's in.
        let pre_apply = post_apply;
        for &pgno in &pgnos {
            let slot = &mut image[(pgno as usize - 1) * PAGE..pgno as usize * PAGE];
            fill_page(rng, &mut new_page);
            post_apply =
                post_apply.toggle(page_checksum(PageNo(pgno), slot)).toggle(page_checksum(PageNo(pgno), &new_page));
            slot.copy_from_slice(&new_page);
        }
        let header = Header { min_txid: TxId(txid), max_txid: TxId(txid), pre_apply_checksum: pre_apply, ..header };
        let pages = pgnos.iter().map(|&p| (p, &image[(p as usize - 1) * PAGE..p as usize * PAGE]));
        files.push(encode(&header, format, pages, Some(post_apply)));
        page_count += u64::from(PAGES_PER_TXN);
    }
    let expected = database_checksum(&image, PAGE_SIZE);
    assert_eq!(post_apply, expected, "incremental checksums drifted from the model image");
    (files, page_count, expected)
}

fn bench_merge(c: &mut Criterion) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let raw_inputs = merge_inputs(&mut rng, Format::V1 { compress: false });
    let lz4_inputs = merge_inputs(&mut rng, Format::V1 { compress: true });

    let mut group = c.benchmark_group("merge16");
    configure(&mut group);
    // One output buffer reused across iterations: the benchmark measures the codec, not
    // the page faults of a fresh 8 MiB allocation each time.
    let mut out = Vec::with_capacity(DB_PAGES as usize * (PAGE + 4) + 4096);
    let cases = [
        ("v1_to_v1", &raw_inputs, Format::V1 { compress: false }),
        ("v1_to_v1_lz4", &raw_inputs, Format::V1 { compress: true }),
        ("v1_to_v3_block", &raw_inputs, Format::V3Block),
        ("v1_lz4_to_v1_lz4", &lz4_inputs, Format::V1 { compress: true }),
    ];
    for (name, (files, page_count, expected), format) in cases {
        let inputs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        // Check once, outside the timing, that the result is the model image: the merged
        // snapshot verifies (page set and database checksum) and ends where the inputs do.
        out.clear();
        merge(&inputs, &mut out, format).expect("merge");
        let summary = Decoder::new(&out).and_then(Decoder::verify).expect("merged file verifies");
        assert_eq!((summary.page_count, summary.trailer.post_apply_checksum), (DB_PAGES, *expected));

        group.throughput(Throughput::Bytes(page_count * PAGE as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                merge(black_box(&inputs), &mut out, format).expect("merge").1
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decode, bench_merge);
criterion_main!(benches);
