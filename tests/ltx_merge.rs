//! `ltx::merge` compacts contiguous files into one that applies exactly like the inputs
//! applied one by one.
//!
//! The property builds a chain of LTX files from an in-memory model database: a snapshot,
//! then incremental files that rewrite pages, grow the database, shrink it (sometimes to
//! nothing) and grow it again, each carrying the true pre- and post-apply database
//! checksums of the model. Any contiguous sub-range is merged, and the merged file applied
//! to the model state before the range must give, byte for byte, the state a naive replay
//! of the inputs gives. Shrink-then-regrow is the case to watch: a page written before a
//! shrink must come back as zeros, not as its stale content (`PageMerge`'s module doc).
//!
//! Applying is done two ways: in memory (write the pages, then resize to Commit × page
//! size) and with `ltx::apply_pages` on a real file.
//!
//! The explicit tests check what merge refuses (gaps, overlaps, page-size mismatches,
//! checksum-chain breaks, damaged inputs) and a merge across the lock page.
//!
//! Seeds: every property prints its RNG seed on stderr (shown when it fails, or with
//! `--nocapture`); `LTXVAULT_SEED=<seed>` (or proptest's own `PROPTEST_RNG_SEED`) replays it.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use common::ltxgen::{
    ALL_FORMATS, Decoded, Fill, Fills, any_format, decode_valid, encode, fill, page_bytes, rule_of, seeded,
};
use ltxvault::Error;
use ltxvault::ltx::{Checksum, Decoder, Format, Header, Rule, TxId, apply_pages, database_checksum, merge};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

// ------------------------------------------------------------------------------------------
// Applying files: the two oracles.

/// Applies a file to a database image in memory, as the spec (§5) defines apply: write
/// each page at `(pgno - 1) * page_size`, then set the length to `commit * page_size`.
fn apply_in_memory(image: &mut Vec<u8>, file: &[u8]) {
    let Decoded { header, pages, .. } = decode_valid(file);
    let page_size = header.page_size as usize;
    for (pgno, data) in pages {
        let at = (pgno as usize - 1) * page_size;
        if image.len() < at + page_size {
            image.resize(at + page_size, 0);
        }
        image[at..at + page_size].copy_from_slice(&data);
    }
    image.resize(header.commit as usize * page_size, 0);
}

/// Applies a file onto a copy of `base` on disk with `ltx::apply_pages`; returns the
/// resulting file's bytes.
fn apply_on_disk(base: &[u8], file: &[u8]) -> Vec<u8> {
    let db = tempfile::tempfile().expect("temp file");
    db.write_all_at(base, 0).expect("write base image");
    let mut decoder = Decoder::new(file).expect("decodable file");
    let page_size = decoder.header().page_size;
    apply_pages(&db, &mut decoder, page_size).expect("apply");
    let len = db.metadata().expect("stat").len() as usize;
    let mut image = vec![0; len];
    db.read_exact_at(&mut image, 0).expect("read back");
    image
}

// ------------------------------------------------------------------------------------------
// The chain generator.

/// How one incremental file changes the database size.
#[derive(Clone, Copy, Debug)]
enum Resize {
    Same,
    Grow(u32),
    Shrink(u32),
    /// To zero pages: the database is emptied (Commit 0).
    Empty,
}

#[derive(Clone, Debug)]
struct StepSpec {
    resize: Resize,
    /// Pages rewritten, as positions within the new commit; duplicates collapse.
    writes: Vec<(Index, Fill)>,
    /// Also write every page the growth adds (what Litestream does; otherwise they read as
    /// zeros after apply).
    write_growth: bool,
    txids: u64,
    format: Format,
}

#[derive(Clone, Debug)]
struct ChainSpec {
    page_size: u32,
    snapshot: Vec<Fill>,
    snapshot_txids: u64,
    snapshot_format: Format,
    steps: Vec<StepSpec>,
}

const MAX_COMMIT: u32 = 24;

fn input_format() -> impl Strategy<Value = Format> {
    prop_oneof![
        2 => Just(Format::V1 { compress: false }),
        2 => Just(Format::V1 { compress: true }),
        1 => Just(Format::V3Block),
    ]
}

fn step() -> impl Strategy<Value = StepSpec> {
    let resize = prop_oneof![
        3 => Just(Resize::Same),
        3 => (1..=8u32).prop_map(Resize::Grow),
        3 => (1..=8u32).prop_map(Resize::Shrink),
        1 => Just(Resize::Empty),
    ];
    // Growth pages left unwritten (zeros after apply) is the more interesting case: a
    // stale page from before a shrink would show there.
    let write_growth = prop_oneof![3 => Just(false), 1 => Just(true)];
    (resize, vec((any::<Index>(), fill(Fills::ZerosOrNonZero)), 0..=6), write_growth, 1..=3u64, input_format())
        .prop_map(|(resize, writes, write_growth, txids, format)| StepSpec {
            resize,
            writes,
            write_growth,
            txids,
            format,
        })
}

fn chain_spec() -> impl Strategy<Value = ChainSpec> {
    let page_size = prop_oneof![Just(512u32), Just(1024), Just(4096)];
    (page_size, vec(fill(Fills::ZerosOrNonZero), 0..=12), 1..=3u64, input_format(), vec(step(), 1..=8)).prop_map(
        |(page_size, snapshot, snapshot_txids, snapshot_format, steps)| ChainSpec {
            page_size,
            snapshot,
            snapshot_txids,
            snapshot_format,
            steps,
        },
    )
}

/// The files of a chain, and the model database state around them: `images[i]` is the
/// database before `files[i]` (so `images[0]` is empty and `images[n]` the final state).
#[derive(Debug)]
struct Chain {
    page_size: u32,
    files: Vec<Vec<u8>>,
    images: Vec<Vec<u8>>,
}

fn build_chain(spec: &ChainSpec) -> Chain {
    let ps = spec.page_size;
    let page_size = ps as usize;
    let mut image: Vec<u8> = Vec::new();
    let mut images = vec![image.clone()];
    let mut files = Vec::new();
    let mut next_txid = 1u64;
    let mut timestamp_ms = 1_754_000_000_000i64;

    let mut push = |header: Header, format: Format, pages: Vec<(u32, Vec<u8>)>, image: &mut Vec<u8>| {
        // The model: write the pages, then cut or extend to Commit.
        for (pgno, data) in &pages {
            let at = (*pgno as usize - 1) * page_size;
            if image.len() < at + page_size {
                image.resize(at + page_size, 0);
            }
            image[at..at + page_size].copy_from_slice(data);
        }
        image.resize(header.commit as usize * page_size, 0);
        let post_apply = database_checksum(image, ps);
        files.push(encode(&header, format, &pages, post_apply));
        images.push(image.clone());
    };

    let commit = spec.snapshot.len() as u32;
    let header = Header {
        page_size: ps,
        commit,
        min_txid: TxId(next_txid),
        max_txid: TxId(next_txid + spec.snapshot_txids - 1),
        timestamp_ms,
        ..Header::default()
    };
    next_txid += spec.snapshot_txids;
    let pages = spec.snapshot.iter().enumerate().map(|(i, &f)| (i as u32 + 1, page_bytes(f, ps))).collect();
    push(header, spec.snapshot_format, pages, &mut image);

    for step in &spec.steps {
        let old_commit = (image.len() / page_size) as u32;
        let commit = match step.resize {
            Resize::Same => old_commit,
            Resize::Grow(n) => (old_commit + n).min(MAX_COMMIT),
            Resize::Shrink(n) => old_commit.saturating_sub(n),
            Resize::Empty => 0,
        };
        let mut pages = BTreeMap::new();
        if commit > 0 {
            for (index, fill) in &step.writes {
                let pgno = index.index(commit as usize) as u32 + 1;
                pages.insert(pgno, page_bytes(*fill, ps));
            }
        }
        if step.write_growth {
            for pgno in old_commit + 1..=commit {
                pages.entry(pgno).or_insert_with(|| page_bytes(Fill::Byte(pgno as u8 | 1), ps));
            }
        }
        timestamp_ms += 1000;
        let header = Header {
            page_size: ps,
            commit,
            min_txid: TxId(next_txid),
            max_txid: TxId(next_txid + step.txids - 1),
            timestamp_ms,
            pre_apply_checksum: database_checksum(&image, ps),
            ..Header::default()
        };
        next_txid += step.txids;
        push(header, step.format, pages.into_iter().collect(), &mut image);
    }
    Chain { page_size: ps, files, images }
}

fn merged(files: &[Vec<u8>], format: Format) -> Vec<u8> {
    let inputs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    merge(&inputs, Vec::new(), format).expect("merge of a valid contiguous range").0
}

// ------------------------------------------------------------------------------------------
// The property.

proptest! {
    #![proptest_config(seeded(1024))]

    #[test]
    fn merged_range_applies_like_its_inputs_one_by_one(
        spec in chain_spec(),
        start in any::<Index>(),
        len in any::<Index>(),
        len2 in any::<Index>(),
        split in any::<Index>(),
        format in any_format(),
    ) {
        let chain = build_chain(&spec);
        let n = chain.files.len();
        // Ranges lean long (the end is the later of two draws): a shrink and the regrowth
        // after it must both fall inside the range for the tricky case to arise.
        let a = start.index(n);
        let b = a + 1 + len.index(n - a).max(len2.index(n - a));
        let range = &chain.files[a..b];
        let base = &chain.images[a];

        // The naive replay: decode each input and apply it in turn. It must agree with the
        // model the chain was built from, or the test itself is broken.
        let mut replayed = base.clone();
        for file in range {
            apply_in_memory(&mut replayed, file);
        }
        prop_assert!(replayed == chain.images[b], "replay differs from the model");

        let out = merged(range, format);
        let first = decode_valid(&range[0]).header;
        let Decoded { header: last, trailer: last_trailer, .. } = decode_valid(&range[range.len() - 1]);
        let Decoded { header, pages, trailer, .. } = decode_valid(&out);

        // The header of a compaction (docs/ltx-format.md §6).
        prop_assert_eq!(header.flags, if format == (Format::V1 { compress: true }) { 1 } else { 0 });
        prop_assert_eq!(header.page_size, chain.page_size);
        prop_assert_eq!(header.commit, last.commit);
        prop_assert_eq!(header.min_txid, first.min_txid);
        prop_assert_eq!(header.max_txid, last.max_txid);
        prop_assert_eq!(header.timestamp_ms, last.timestamp_ms);
        prop_assert_eq!(header.pre_apply_checksum, first.pre_apply_checksum);
        prop_assert_eq!((header.wal_offset, header.wal_size, header.wal_salt1, header.wal_salt2), (0, 0, 0, 0));
        prop_assert_eq!(header.node_id, 0);
        prop_assert_eq!(trailer.post_apply_checksum, last_trailer.post_apply_checksum);
        prop_assert!(pages.iter().all(|(p, _)| *p <= header.commit), "pages beyond commit");

        // Applied to the state before the range, in memory and on disk.
        let mut in_memory = base.clone();
        apply_in_memory(&mut in_memory, &out);
        prop_assert!(in_memory == replayed, "merged file applied in memory differs from the replay");
        let on_disk = apply_on_disk(base, &out);
        prop_assert!(on_disk == replayed, "merged file applied with apply_pages differs from the replay");
        prop_assert_eq!(database_checksum(&replayed, chain.page_size), trailer.post_apply_checksum);

        // Merging merged files (compaction of compactions) gives the same result.
        if b - a >= 2 {
            let m = a + 1 + split.index(b - a - 1);
            let halves = [merged(&chain.files[a..m], format), merged(&chain.files[m..b], format)];
            let mut twice = base.clone();
            apply_in_memory(&mut twice, &merged(&halves, format));
            prop_assert!(twice == replayed, "merge of merges (split at {}) differs from the replay", m);
        }
    }
}

// ------------------------------------------------------------------------------------------
// What merge refuses.

fn merge_rule(files: &[&[u8]], format: Format) -> Result<(), Option<Rule>> {
    merge(files, Vec::new(), format).map(|_| ()).map_err(|e| rule_of(&e))
}

/// An incremental v1 file writing page 1 of a 2-page database, with the given TXIDs and
/// checksums.
fn incremental(page_size: u32, min: u64, max: u64, pre: u64, post: u64) -> Vec<u8> {
    let header = Header {
        page_size,
        commit: 2,
        min_txid: TxId(min),
        max_txid: TxId(max),
        pre_apply_checksum: Checksum(Checksum::FLAG | pre),
        ..Header::default()
    };
    encode(
        &header,
        Format::V1 { compress: false },
        &[(1, vec![min as u8; page_size as usize])],
        Checksum(Checksum::FLAG | post),
    )
}

#[test]
fn merge_refuses_inputs_that_do_not_follow_each_other() {
    let a = incremental(512, 5, 6, 1, 2);
    let b = incremental(512, 7, 9, 2, 3);
    let c = incremental(512, 10, 10, 3, 4);
    for format in ALL_FORMATS {
        assert_eq!(merge_rule(&[&a, &b, &c], format), Ok(()), "{format:?}: a chain");
        assert_eq!(merge_rule(&[&a, &c], format), Err(Some(Rule::NotContiguous)), "{format:?}: gap");
        assert_eq!(merge_rule(&[&b, &a], format), Err(Some(Rule::NotContiguous)), "{format:?}: reversed");
        assert_eq!(merge_rule(&[&a, &a], format), Err(Some(Rule::NotContiguous)), "{format:?}: repeated");
        let overlap = incremental(512, 9, 10, 3, 4);
        assert_eq!(merge_rule(&[&a, &b, &overlap], format), Err(Some(Rule::NotContiguous)), "{format:?}: overlap");
        // TXIDs follow, but the checksums do not: `next.pre_apply != prev.post_apply`.
        let broken = incremental(512, 10, 10, 0x33, 4);
        assert_eq!(
            merge_rule(&[&a, &b, &broken], format),
            Err(Some(Rule::NotContiguous)),
            "{format:?}: checksum chain"
        );
    }
    assert!(merge(&[], Vec::new(), Format::V3Block).is_err(), "no inputs");
}

#[test]
fn merge_refuses_mixed_page_sizes() {
    let a = incremental(512, 5, 6, 1, 2);
    let b = incremental(1024, 7, 7, 2, 3);
    assert_eq!(merge_rule(&[&a, &b], Format::V3Block), Err(Some(Rule::PageSizeMismatch)));
    assert_eq!(merge_rule(&[&b, &a], Format::V1 { compress: false }), Err(Some(Rule::PageSizeMismatch)));
}

#[test]
fn merge_refuses_damaged_inputs() {
    let a = incremental(512, 5, 6, 1, 2);
    let b = incremental(512, 7, 7, 2, 3);
    // A byte of page data in the last input: only the file checksum can tell, and it is
    // checked only at the end of the file, after its pages went through the merge.
    let mut damaged = b.clone();
    damaged[100 + 4 + 10] ^= 0x40;
    for format in [Format::V1 { compress: false }, Format::V3Block] {
        assert_eq!(merge_rule(&[&a, &damaged], format), Err(Some(Rule::FileChecksum)), "{format:?}");
        assert_eq!(merge_rule(&[&damaged], format), Err(Some(Rule::FileChecksum)), "{format:?}");
    }
}

#[test]
fn merge_of_files_without_checksums_writes_none_and_refuses_v1() {
    // v3 NoChecksum inputs (all Litestream writes): the output carries no checksums
    // either, which v1 cannot express.
    let header = |min: u64, commit: u32| Header {
        flags: 0x2,
        page_size: 512,
        commit,
        min_txid: TxId(min),
        max_txid: TxId(min),
        ..Header::default()
    };
    let a = encode(&header(1, 2), Format::V3Block, &[(1, vec![1; 512]), (2, vec![2; 512])], Checksum::NONE);
    let b = encode(&header(2, 3), Format::V3Block, &[(3, vec![3; 512])], Checksum::NONE);
    let out = merged(&[a.clone(), b.clone()], Format::V3Block);
    let Decoded { header: h, pages, trailer, .. } = decode_valid(&out);
    assert_eq!(h.flags, 0x2);
    assert_eq!((h.pre_apply_checksum, trailer.post_apply_checksum), (Checksum::NONE, Checksum::NONE));
    assert_eq!(pages.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3]);
    for compress in [false, true] {
        let refused = merge(&[&a, &b], Vec::new(), Format::V1 { compress });
        assert!(matches!(refused, Err(Error::Invalid(_))), "v1 output from inputs without checksums");
    }
}

// ------------------------------------------------------------------------------------------
// Across the lock page.

/// A sparse model database for large page numbers: pages by number, and a Commit. Absent
/// pages below Commit are zeros.
#[derive(Clone, Debug, Default, PartialEq)]
struct Sparse {
    commit: u32,
    pages: BTreeMap<u32, Vec<u8>>,
}

impl Sparse {
    fn apply(&mut self, file: &[u8]) {
        let Decoded { header, pages, .. } = decode_valid(file);
        self.pages.extend(pages);
        self.commit = header.commit;
        self.pages.retain(|&p, _| p <= header.commit);
        self.pages.retain(|_, data| data.iter().any(|&b| b != 0));
    }
}

#[test]
fn merge_across_the_lock_page_applies_like_its_inputs() {
    // 64 KiB pages put the lock page at 16385 (a 1 GiB file offset). The database shrinks
    // below it and grows past it again: pages written before the shrink must come back
    // as zeros, and the lock page must never be written. The database files on disk are
    // sparse, so only the pages near the lock page take space.
    let ps = 65536u32;
    let lock = 16385u32;
    let page = |b: u8| vec![b; ps as usize];
    // Pre/post-apply checksums only need to chain here: merge checks linkage, not values
    // (the model base is not materialised). Each is a distinct flagged value.
    let chained = |i: u64| Checksum::FLAG | (0x1000 + i);
    let file = |i: u64, commit: u32, pages: &[(u32, Vec<u8>)]| {
        let header = Header {
            page_size: ps,
            commit,
            min_txid: TxId(10 + i),
            max_txid: TxId(10 + i),
            pre_apply_checksum: Checksum(chained(i)),
            ..Header::default()
        };
        encode(&header, Format::V1 { compress: true }, pages, Checksum(chained(i + 1)))
    };
    let files = [
        file(0, lock + 5, &[(1, page(1)), (lock - 1, page(2)), (lock + 1, page(3)), (lock + 5, page(4))]),
        file(1, lock - 2, &[(2, page(5))]),
        file(2, lock + 3, &[(lock + 2, page(6))]),
        file(3, lock + 4, &[(lock + 4, page(7))]),
    ];
    let base_pages = [(1, page(9)), (lock - 3, page(10)), (lock + 3, page(11))];

    let mut sparse = Sparse { commit: lock + 5, pages: base_pages.iter().cloned().collect() };
    let base = sparse.clone();
    let replay_disk = tempfile::tempfile().unwrap();
    let merged_disk = tempfile::tempfile().unwrap();
    for db in [&replay_disk, &merged_disk] {
        db.set_len(u64::from(base.commit) * u64::from(ps)).unwrap();
        for (pgno, data) in &base_pages {
            db.write_all_at(data, u64::from(pgno - 1) * u64::from(ps)).unwrap();
        }
    }
    let apply_file = |db: &File, bytes: &[u8]| {
        let mut decoder = Decoder::new(bytes).unwrap();
        apply_pages(db, &mut decoder, ps).unwrap();
    };
    for f in &files {
        sparse.apply(f);
        apply_file(&replay_disk, f);
    }

    let out = merged(&files, Format::V3Block);
    let Decoded { header, pages, .. } = decode_valid(&out);
    assert!(pages.iter().all(|(p, _)| *p != lock), "the lock page is never stored");
    assert_eq!(header.commit, lock + 4);
    let mut merged_sparse = base.clone();
    merged_sparse.apply(&out);
    assert_eq!(merged_sparse, sparse, "merged file applied in memory differs from the replay");
    // The pages written before the shrink and not rewritten are zeros now.
    assert!(!sparse.pages.contains_key(&(lock - 1)) && !sparse.pages.contains_key(&(lock + 1)));

    apply_file(&merged_disk, &out);
    let read = |db: &File, pgno: u32| {
        let mut data = page(0);
        db.read_exact_at(&mut data, u64::from(pgno - 1) * u64::from(ps)).unwrap();
        data
    };
    let len = |db: &File| db.metadata().unwrap().len();
    assert_eq!(len(&merged_disk), len(&replay_disk));
    assert_eq!(len(&replay_disk), u64::from(lock + 4) * u64::from(ps));
    for pgno in [1, 2, 3].into_iter().chain(lock - 4..=lock + 4) {
        assert!(read(&merged_disk, pgno) == read(&replay_disk, pgno), "page {pgno} on disk");
        let want = sparse.pages.get(&pgno).cloned().unwrap_or_else(|| page(0));
        assert!(read(&replay_disk, pgno) == want, "page {pgno}: apply_pages and the sparse model disagree");
    }
}
