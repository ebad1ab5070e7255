//! Encode then decode: whatever the encoder accepts, the decoder gives back unchanged.
//!
//! The property covers the three encodings ltxvault writes (v1 uncompressed, v1 with an LZ4
//! page block, v3-block with and without database checksums) over random page sizes,
//! commits, page sets and header fields. Besides comparing the decoded header, pages and
//! trailer with what went in, each file is walked byte by byte against
//! `docs/ltx-format.md` (frame layout, page index, file checksum recomputed with the `crc`
//! crate), so that an encoder and decoder that agree on a wrong layout are still caught.
//!
//! The second half checks that the encoder refuses what the format forbids, one explicit
//! case per rule, for every encoding.
//!
//! Seeds: every property prints its RNG seed on stderr (shown when it fails, or with
//! `--nocapture`); `LTXVAULT_SEED=<seed>` (or proptest's own `PROPTEST_RNG_SEED`) replays it.

mod common;

use std::io::Read;

use common::ltxgen::{
    ALL_FORMATS, FLAG_LZ4, FLAG_NO_CHECKSUM, Fill, Fills, HEADER_SIZE, TRAILER_SIZE, any_format, crc64, decode, encode,
    expected_post_apply, fill, page_bytes, put_uvarint, rule_of, seeded,
};
use ltxvault::ltx::{Checksum, Decoder, Encoder, Format, Header, PageNo, Rule, TxId, database_checksum, page_checksum};
use proptest::collection::vec;
use proptest::prelude::*;

// ------------------------------------------------------------------------------------------
// Helpers.

fn lock_page(page_size: u32) -> u32 {
    (0x4000_0000 / page_size) + 1
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// The 100 header bytes as the table in `docs/ltx-format.md` §2.1 lays them out, written
/// here field by field rather than with `Header::encode`, so that a field at the wrong
/// offset in both encoder and decoder still shows.
fn spec_header_bytes(h: &Header) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_SIZE);
    b.extend_from_slice(b"LTX1"); // 0
    b.extend_from_slice(&h.flags.to_be_bytes()); // 4
    b.extend_from_slice(&h.page_size.to_be_bytes()); // 8
    b.extend_from_slice(&h.commit.to_be_bytes()); // 12
    b.extend_from_slice(&h.min_txid.0.to_be_bytes()); // 16
    b.extend_from_slice(&h.max_txid.0.to_be_bytes()); // 24
    b.extend_from_slice(&h.timestamp_ms.to_be_bytes()); // 32
    b.extend_from_slice(&h.pre_apply_checksum.0.to_be_bytes()); // 40
    b.extend_from_slice(&h.wal_offset.to_be_bytes()); // 48
    b.extend_from_slice(&h.wal_size.to_be_bytes()); // 56
    b.extend_from_slice(&h.wal_salt1.to_be_bytes()); // 64
    b.extend_from_slice(&h.wal_salt2.to_be_bytes()); // 68
    b.extend_from_slice(&h.node_id.to_be_bytes()); // 72
    b.resize(HEADER_SIZE, 0); // 80: reserved, zero
    b
}

/// Walks a file as `docs/ltx-format.md` lays it out (§2, §3.1) and checks every part
/// against the pages that went in; returns the file checksum the spec (§4.1) gives.
///
/// This is an independent reading of the format: it shares no code with the decoder, only
/// LZ4 (through `lz4_flex` directly) and the CRC (through the `crc` crate).
fn spec_file_checksum(bytes: &[u8], format: Format, pages: &[(u32, Vec<u8>)], post_apply: Checksum) -> Checksum {
    let header_bytes = &bytes[..HEADER_SIZE];
    let trailer_at = bytes.len() - TRAILER_SIZE;
    assert_eq!(&bytes[trailer_at..trailer_at + 8], &post_apply.0.to_be_bytes(), "post-apply checksum field");
    // The checksummed stream: header as stored, the logical page block, the page index,
    // the post-apply checksum.
    let mut stream = header_bytes.to_vec();
    match format {
        Format::V1 { compress } => {
            let mut block = Vec::new();
            for (pgno, data) in pages {
                block.extend_from_slice(&pgno.to_be_bytes());
                block.extend_from_slice(data);
            }
            block.extend_from_slice(&[0; 4]);
            let stored = &bytes[HEADER_SIZE..trailer_at];
            if compress {
                let mut plain = Vec::new();
                lz4_flex::frame::FrameDecoder::new(stored)
                    .read_to_end(&mut plain)
                    .expect("page block is one LZ4 frame");
                assert!(plain == block, "v1 LZ4 page block decompresses to the v1 frames");
            } else {
                assert!(stored == block, "v1 page block is pgno ‖ page per frame, then a 4-byte zero end marker");
            }
            stream.extend_from_slice(&block);
        }
        Format::V3Block => {
            let mut at = HEADER_SIZE;
            let mut index = Vec::new();
            for (pgno, data) in pages {
                assert_eq!(u32_at(bytes, at), *pgno, "frame at {at}: pgno");
                assert_eq!(&bytes[at + 4..at + 6], &[0, 1], "frame at {at}: page flags 0x0001");
                let size = u32_at(bytes, at + 6) as usize;
                let block = &bytes[at + 10..at + 10 + size];
                let page = lz4_flex::block::decompress(block, data.len()).expect("raw LZ4 block");
                assert!(&page == data, "frame at {at}: page {pgno} content");
                stream.extend_from_slice(&bytes[at..at + 10]);
                stream.extend_from_slice(data);
                put_uvarint(&mut index, u64::from(*pgno));
                put_uvarint(&mut index, at as u64);
                put_uvarint(&mut index, (10 + size) as u64);
                at += 10 + size;
            }
            assert_eq!(&bytes[at..at + 6], &[0; 6], "6-byte zero end marker");
            stream.extend_from_slice(&[0; 6]);
            at += 6;
            index.push(0);
            let varint_len = index.len() as u64;
            index.extend_from_slice(&varint_len.to_be_bytes());
            assert!(bytes[at..trailer_at] == index[..], "page index: (pgno, offset, size) varints, 0, u64 length");
            stream.extend_from_slice(&index);
        }
    }
    stream.extend_from_slice(&post_apply.0.to_be_bytes());
    Checksum(Checksum::FLAG | crc64(&stream))
}

// ------------------------------------------------------------------------------------------
// The round-trip property.

#[derive(Clone, Debug)]
struct FileCase {
    format: Format,
    /// The header handed to the encoder; `flags` carries the caller's NoChecksum wish.
    header: Header,
    pages: Vec<(u32, Fill)>,
    /// For files whose post-apply checksum is not computed from the pages: the low bits.
    post_apply_bits: u64,
}

impl FileCase {
    fn has_checksums(&self) -> bool {
        self.header.flags & FLAG_NO_CHECKSUM == 0 || self.format != Format::V3Block
    }
}

/// Commit and the page numbers a file stores. Snapshots hold every page up to a small
/// commit. Other files hold a sparse set under any commit, often right around the lock page
/// so that the encoder's skip of it is exercised without a 1 GiB file.
fn page_numbers(page_size: u32, snapshot: bool) -> BoxedStrategy<(u32, Vec<u32>)> {
    // At most ~256 KiB of pages (and 48 pages), so that a case costs about a millisecond.
    let max_pages = (256 * 1024 / page_size).min(48);
    if snapshot {
        return (0..=max_pages).prop_map(|commit| (commit, (1..=commit).collect())).boxed();
    }
    let lock = lock_page(page_size);
    let commit = prop_oneof![
        4 => 0..=64u32,
        2 => lock - 4..=lock + 4,
        1 => any::<u32>(),
    ];
    commit
        .prop_flat_map(move |commit| {
            let pgno = prop_oneof![
                any::<u32>().prop_map(move |r| 1 + r % commit.max(1)),
                (-4i64..=4).prop_map(move |d| (i64::from(lock) + d).clamp(1, i64::from(commit.max(1))) as u32),
            ];
            (Just(commit), vec(pgno, 0..=max_pages as usize))
        })
        .prop_map(move |(commit, mut pgnos)| {
            pgnos.retain(|&p| p != lock && p <= commit);
            pgnos.sort_unstable();
            pgnos.dedup();
            (commit, pgnos)
        })
        .boxed()
}

/// WAL offset, size and salts that both v1 and v3 accept: all zero, or an offset with a
/// non-zero size (v1 wants one) and any salts.
fn wal_fields() -> impl Strategy<Value = (i64, i64, u32, u32)> {
    prop_oneof![Just((0, 0, 0, 0)), (1..=i64::MAX, 1..=i64::MAX, any::<u32>(), any::<u32>())]
}

fn file_case() -> impl Strategy<Value = FileCase> {
    let page_size = prop_oneof![Just(512u32), Just(1024), Just(4096), Just(65536)];
    let snapshot = prop_oneof![1 => Just(true), 2 => Just(false)];
    (any_format(), any::<bool>(), page_size, snapshot).prop_flat_map(|(format, no_checksum, page_size, snapshot)| {
        let txids = (any::<u64>(), any::<u64>()).prop_map(move |(a, b)| {
            let (lo, hi) = (a.min(b), a.max(b));
            if snapshot { (TxId(1), TxId(hi.max(1))) } else { (TxId(lo.max(2)), TxId(hi.max(2))) }
        });
        let pages = page_numbers(page_size, snapshot).prop_flat_map(move |(commit, pgnos)| {
            let n = pgnos.len();
            (Just(commit), Just(pgnos), vec(fill(Fills::All), n))
        });
        (txids, any::<i64>(), wal_fields(), any::<u64>(), any::<u64>(), any::<u64>(), pages).prop_map(
            move |(txids, timestamp_ms, wal, node_id, pre_bits, post_apply_bits, (commit, pgnos, fills))| {
                let no_checksum = no_checksum && format == Format::V3Block;
                let pre_apply_checksum =
                    if snapshot || no_checksum { Checksum::NONE } else { Checksum(Checksum::FLAG | pre_bits) };
                let header = Header {
                    flags: if no_checksum { FLAG_NO_CHECKSUM } else { 0 },
                    page_size,
                    commit,
                    min_txid: txids.0,
                    max_txid: txids.1,
                    timestamp_ms,
                    pre_apply_checksum,
                    wal_offset: wal.0,
                    wal_size: wal.1,
                    wal_salt1: wal.2,
                    wal_salt2: wal.3,
                    node_id,
                };
                FileCase { format, header, pages: pgnos.into_iter().zip(fills).collect(), post_apply_bits }
            },
        )
    })
}

proptest! {
    #![proptest_config(seeded(1024))]

    #[test]
    fn encode_then_decode_gives_back_what_went_in(case in file_case()) {
        let page_size = case.header.page_size;
        let pages: Vec<(u32, Vec<u8>)> =
            case.pages.iter().map(|&(pgno, fill)| (pgno, page_bytes(fill, page_size))).collect();
        let snapshot = case.header.min_txid == TxId(1);
        // Independent of the encoder: for a snapshot, the database checksum of the image it
        // describes (pages 1..=commit laid end to end).
        let incremental = Checksum(Checksum::FLAG | case.post_apply_bits);
        let post_apply =
            expected_post_apply(case.has_checksums(), snapshot, case.header.commit, page_size, &pages, incremental);

        let mut encoder = Encoder::new(Vec::new(), &case.header, case.format).expect("valid header");
        for (pgno, data) in &pages {
            encoder.write_page(PageNo(*pgno), data).expect("valid page");
        }
        prop_assert_eq!(encoder.page_count() as usize, pages.len());
        if snapshot && case.has_checksums() {
            prop_assert_eq!(encoder.snapshot_checksum(), Some(post_apply));
        } else {
            prop_assert_eq!(encoder.snapshot_checksum(), None);
        }
        let written_header = *encoder.header();
        let (bytes, trailer) = encoder.finish(post_apply).expect("valid file");

        // The header as written: the caller's fields, with the flags the format dictates.
        let expected_flags = match case.format {
            Format::V1 { compress } => if compress { FLAG_LZ4 } else { 0 },
            Format::V3Block => case.header.flags & FLAG_NO_CHECKSUM,
        };
        let expected_header = Header { flags: expected_flags, ..case.header };
        prop_assert_eq!(written_header, expected_header);
        prop_assert_eq!(&bytes[..HEADER_SIZE], &spec_header_bytes(&expected_header)[..]);
        prop_assert_eq!(&bytes[bytes.len() - TRAILER_SIZE..], &trailer.encode()[..]);
        prop_assert_eq!(trailer.post_apply_checksum, post_apply);
        prop_assert_eq!(trailer.file_checksum, spec_file_checksum(&bytes, case.format, &pages, post_apply));

        let decoded = decode(&bytes).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
        let expected_version = case.format.version();
        prop_assert_eq!(decoded.version, expected_version);
        prop_assert_eq!(decoded.header, expected_header);
        prop_assert_eq!(decoded.trailer, trailer);
        prop_assert!(decoded.pages == pages, "decoded pages differ from the encoded ones");

        // Told the version instead of detecting it, and through `verify`, the same file.
        let summary = Decoder::with_version(&bytes, expected_version)
            .and_then(Decoder::verify)
            .map_err(|e| TestCaseError::fail(format!("verify: {e}")))?;
        prop_assert_eq!(summary.header, expected_header);
        prop_assert_eq!(summary.trailer, trailer);
        prop_assert_eq!(summary.page_count as usize, pages.len());
        prop_assert_eq!(summary.max_pgno, PageNo(pages.last().map_or(0, |p| p.0)));
    }
}

// ------------------------------------------------------------------------------------------
// The encoder refuses what the format forbids.

/// A valid incremental (non-snapshot) header with checksums.
fn incremental(page_size: u32, commit: u32) -> Header {
    Header {
        page_size,
        commit,
        min_txid: TxId(5),
        max_txid: TxId(7),
        timestamp_ms: 1_700_000_000_000,
        pre_apply_checksum: Checksum(Checksum::FLAG | 0x1234),
        ..Header::default()
    }
}

fn snapshot(page_size: u32, commit: u32) -> Header {
    Header { min_txid: TxId(1), pre_apply_checksum: Checksum::NONE, ..incremental(page_size, commit) }
}

/// Writes `pages` in order and returns the rule of the first refusal, from `write_page` or
/// from `finish(post_apply)`; `None` if the file was accepted.
fn first_refusal(header: &Header, format: Format, pages: &[(u32, usize)], post_apply: Checksum) -> Option<Rule> {
    let mut encoder = match Encoder::new(Vec::new(), header, format) {
        Ok(encoder) => encoder,
        Err(e) => return Some(rule_of(&e).unwrap_or_else(|| panic!("not a format error: {e}"))),
    };
    for (i, &(pgno, len)) in pages.iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
        if let Err(e) = encoder.write_page(PageNo(pgno), &data) {
            return Some(rule_of(&e).unwrap_or_else(|| panic!("not a format error: {e}")));
        }
    }
    encoder.finish(post_apply).err().map(|e| rule_of(&e).unwrap_or_else(|| panic!("not a format error: {e}")))
}

fn some_checksum() -> Checksum {
    Checksum(Checksum::FLAG | 0xabcd)
}

#[test]
fn encoder_refuses_pages_out_of_order() {
    let ps = 512;
    for format in ALL_FORMATS {
        let header = incremental(ps, 10);
        let refused = |pgnos: &[u32]| {
            let pages: Vec<(u32, usize)> = pgnos.iter().map(|&p| (p, ps as usize)).collect();
            first_refusal(&header, format, &pages, some_checksum())
        };
        assert_eq!(refused(&[2, 3, 5]), None, "{format:?}: ascending with gaps is fine");
        assert_eq!(refused(&[3, 2]), Some(Rule::PageOrder), "{format:?}: descending");
        assert_eq!(refused(&[3, 3]), Some(Rule::PageOrder), "{format:?}: duplicate");
        assert_eq!(refused(&[1, 4, 9, 4]), Some(Rule::PageOrder), "{format:?}: going back");
        assert_eq!(refused(&[0]), Some(Rule::PageNumberZero), "{format:?}: page 0 is the end marker");
    }
}

#[test]
fn encoder_refuses_the_lock_page() {
    // With 64 KiB pages the lock page is 16385, so a sparse file around it is small.
    let ps = 65536;
    let lock = lock_page(ps);
    assert_eq!(lock, 16385);
    for format in ALL_FORMATS {
        let header = incremental(ps, lock + 5);
        let full = ps as usize;
        assert_eq!(
            first_refusal(&header, format, &[(lock, full)], some_checksum()),
            Some(Rule::LockPage),
            "{format:?}: the lock page alone"
        );
        assert_eq!(
            first_refusal(&header, format, &[(lock - 1, full), (lock, full), (lock + 1, full)], some_checksum()),
            Some(Rule::LockPage),
            "{format:?}: the lock page between its neighbours"
        );
        // Its neighbours are ordinary pages, and the file decodes.
        let pages = vec![(lock - 1, vec![7u8; full]), (lock + 1, vec![9u8; full])];
        let bytes = encode(&header, format, &pages, some_checksum());
        assert_eq!(decode(&bytes).expect("decodes").pages, pages, "{format:?}");
    }
}

#[test]
fn encoder_refuses_pages_beyond_commit() {
    for format in ALL_FORMATS {
        let header = incremental(1024, 5);
        assert_eq!(first_refusal(&header, format, &[(5, 1024)], some_checksum()), None, "{format:?}");
        assert_eq!(
            first_refusal(&header, format, &[(6, 1024)], some_checksum()),
            Some(Rule::PageBeyondCommit),
            "{format:?}"
        );
        assert_eq!(
            first_refusal(&header, format, &[(2, 1024), (u32::MAX, 1024)], some_checksum()),
            Some(Rule::PageBeyondCommit),
            "{format:?}"
        );
        // Commit 0 ("delete the database") can hold no page at all.
        let empty = incremental(1024, 0);
        assert_eq!(
            first_refusal(&empty, format, &[(1, 1024)], Checksum::EMPTY_DATABASE),
            Some(Rule::PageBeyondCommit),
            "{format:?}"
        );
    }
}

#[test]
fn encoder_refuses_pages_of_the_wrong_length() {
    for format in ALL_FORMATS {
        for ps in [512u32, 4096] {
            let header = incremental(ps, 4);
            let n = ps as usize;
            for len in [0, 1, n - 1, n + 1, 2 * n] {
                assert_eq!(
                    first_refusal(&header, format, &[(1, n), (2, len)], some_checksum()),
                    Some(Rule::PageLength),
                    "{format:?}: page of {len} bytes, page size {ps}"
                );
            }
        }
    }
}

#[test]
fn encoder_refuses_incomplete_snapshots() {
    for format in ALL_FORMATS {
        let header = snapshot(512, 4);
        let pages = |pgnos: &[u32]| pgnos.iter().map(|&p| (p, 512usize)).collect::<Vec<_>>();
        // The post-apply checksum is irrelevant here: completeness is checked first, at
        // the page that skips or at `finish` for missing trailing pages.
        let any = some_checksum();
        assert_eq!(first_refusal(&header, format, &pages(&[2, 3, 4]), any), Some(Rule::SnapshotIncomplete));
        assert_eq!(first_refusal(&header, format, &pages(&[1, 3]), any), Some(Rule::SnapshotIncomplete));
        assert_eq!(first_refusal(&header, format, &pages(&[1, 2, 3]), any), Some(Rule::SnapshotIncomplete));
        assert_eq!(first_refusal(&header, format, &pages(&[]), any), Some(Rule::SnapshotIncomplete));
    }
}

#[test]
fn encoder_refuses_a_wrong_snapshot_post_apply_checksum() {
    let ps = 1024;
    let image: Vec<u8> = (1..=3).flat_map(|i| page_bytes(Fill::Noise(i), ps)).collect();
    let right = database_checksum(&image, ps);
    let pages: Vec<(u32, Vec<u8>)> =
        image.chunks(ps as usize).enumerate().map(|(i, d)| (i as u32 + 1, d.to_vec())).collect();
    for format in ALL_FORMATS {
        let finish = |post: Checksum| {
            let mut encoder = Encoder::new(Vec::new(), &snapshot(ps, 3), format).unwrap();
            for (pgno, data) in &pages {
                encoder.write_page(PageNo(*pgno), data).unwrap();
            }
            assert_eq!(encoder.snapshot_checksum(), Some(right), "{format:?}");
            encoder.finish(post).map(|_| ()).map_err(|e| rule_of(&e))
        };
        assert_eq!(finish(right), Ok(()), "{format:?}");
        assert_eq!(finish(Checksum(right.0 ^ 1)), Err(Some(Rule::PostApplyChecksum)), "{format:?}: one bit off");
        assert_eq!(finish(some_checksum()), Err(Some(Rule::PostApplyChecksum)), "{format:?}: another database");
        assert_eq!(finish(Checksum::NONE), Err(Some(Rule::PostApplyChecksum)), "{format:?}: absent");
        assert_eq!(finish(Checksum(right.0 & !Checksum::FLAG)), Err(Some(Rule::PostApplyChecksum)), "{format:?}");
    }
    // Without checksums (v3 NoChecksum) the post-apply checksum must be absent.
    let header = Header { flags: FLAG_NO_CHECKSUM, ..snapshot(ps, 3) };
    let page_list = [(1, ps as usize), (2, ps as usize), (3, ps as usize)];
    assert_eq!(first_refusal(&header, Format::V3Block, &page_list, Checksum::NONE), None);
    assert_eq!(first_refusal(&header, Format::V3Block, &page_list, right), Some(Rule::PostApplyChecksum));
}

#[test]
fn encoder_refuses_wrong_post_apply_checksums_of_incremental_files() {
    for format in ALL_FORMATS {
        let header = incremental(512, 2);
        let pages = [(1, 512usize)];
        assert_eq!(first_refusal(&header, format, &pages, Checksum::NONE), Some(Rule::PostApplyChecksum));
        assert_eq!(first_refusal(&header, format, &pages, Checksum(0x1234)), Some(Rule::PostApplyChecksum));
        // An empty database has exactly one checksum.
        let empty = incremental(512, 0);
        assert_eq!(first_refusal(&empty, format, &[], Checksum::EMPTY_DATABASE), None);
        assert_eq!(first_refusal(&empty, format, &[], some_checksum()), Some(Rule::PostApplyChecksum));
    }
    let no_checksum = Header { flags: FLAG_NO_CHECKSUM, pre_apply_checksum: Checksum::NONE, ..incremental(512, 2) };
    assert_eq!(
        first_refusal(&no_checksum, Format::V3Block, &[(1, 512)], some_checksum()),
        Some(Rule::PostApplyChecksum)
    );
}

#[test]
fn encoder_refuses_invalid_headers() {
    let good = incremental(4096, 3);
    let cases: Vec<(&str, Header, Rule)> = vec![
        ("min TXID 0", Header { min_txid: TxId(0), ..good }, Rule::TxidRange),
        ("min above max", Header { min_txid: TxId(8), max_txid: TxId(7), ..good }, Rule::TxidRange),
        ("page size 0", Header { page_size: 0, ..good }, Rule::PageSize),
        ("page size 256", Header { page_size: 256, ..good }, Rule::PageSize),
        ("page size 1000", Header { page_size: 1000, ..good }, Rule::PageSize),
        ("page size 131072", Header { page_size: 131_072, ..good }, Rule::PageSize),
        ("negative WAL offset", Header { wal_offset: -1, wal_size: 8, ..good }, Rule::WalFields),
        ("negative WAL size", Header { wal_offset: 32, wal_size: -1, ..good }, Rule::WalFields),
        ("WAL size without offset", Header { wal_size: 8, ..good }, Rule::WalFields),
        ("salt without offset", Header { wal_salt2: 1, ..good }, Rule::WalFields),
        (
            "snapshot with pre-apply",
            Header { pre_apply_checksum: some_checksum(), ..snapshot(4096, 0) },
            Rule::PreApplyChecksum,
        ),
        ("pre-apply absent", Header { pre_apply_checksum: Checksum::NONE, ..good }, Rule::PreApplyChecksum),
        ("pre-apply lacks bit 63", Header { pre_apply_checksum: Checksum(5), ..good }, Rule::PreApplyChecksum),
    ];
    for format in ALL_FORMATS {
        for (what, header, rule) in &cases {
            let refused = Encoder::new(Vec::new(), header, format).err().map(|e| rule_of(&e));
            assert_eq!(refused, Some(Some(*rule)), "{format:?}: {what}");
        }
    }
    // v1 (ltx ≤ v0.3) also wants a WAL size with a WAL offset; v3 dropped that rule.
    let offset_only = Header { wal_offset: 32, ..good };
    for compress in [false, true] {
        let refused = Encoder::new(Vec::new(), &offset_only, Format::V1 { compress }).err().map(|e| rule_of(&e));
        assert_eq!(refused, Some(Some(Rule::WalFields)));
    }
    assert!(Encoder::new(Vec::new(), &offset_only, Format::V3Block).is_ok());
    // NoChecksum forbids a pre-apply checksum (v3 only: v1 has no such flag and always
    // carries checksums, so the encoder drops the flag).
    let no_checksum = Header { flags: FLAG_NO_CHECKSUM, ..good };
    let refused = Encoder::new(Vec::new(), &no_checksum, Format::V3Block).err().map(|e| rule_of(&e));
    assert_eq!(refused, Some(Some(Rule::PreApplyChecksum)));
    let v1 = Encoder::new(Vec::new(), &no_checksum, Format::V1 { compress: false }).expect("v1 drops NoChecksum");
    assert_eq!(v1.header().flags, 0);
}

// ------------------------------------------------------------------------------------------
// The database checksum's building block.

/// `page_checksum(p, page)` is `1<<63 | CRC-64(u32be(p) ‖ page)` (`docs/ltx-format.md`
/// §4.2), here recomputed with the `crc` crate's table implementation. The round trip
/// relies on it: snapshot post-apply checksums are computed with `database_checksum`.
#[test]
fn page_checksum_is_the_crc_of_the_page_number_then_the_page() {
    for (i, ps) in [512u32, 1024, 4096, 65536].into_iter().enumerate() {
        for pgno in [1u32, 2, 255, 256, 65_537, lock_page(ps) - 1, u32::MAX] {
            let page = page_bytes(Fill::Runs(i as u64 ^ u64::from(pgno)), ps);
            let stream = [&pgno.to_be_bytes()[..], &page].concat();
            assert_eq!(
                page_checksum(PageNo(pgno), &page),
                Checksum(Checksum::FLAG | crc64(&stream)),
                "page {pgno}, {ps}"
            );
        }
    }
}
