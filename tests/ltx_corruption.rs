//! A damaged LTX file never decodes into data that differs from what was written.
//!
//! * Single-byte changes: in a v1 uncompressed file every byte is covered by the CRC-64 file
//!   checksum as stored, so every change must be refused. In compressed encodings the
//!   checksum covers the *decompressed* pages, and LZ4 has equivalent encodings (a changed
//!   match offset inside a run of zeros copies the same zeros), so a change there may also
//!   decode to exactly the original header, pages and trailer. Everything outside the
//!   compressed payloads (header, page headers, size prefixes, page index, trailer) is
//!   hashed as stored and must be refused in every encoding. Checked as a property over
//!   random files, positions and XOR values, and exhaustively over a few small files (every
//!   position, every single-bit change and the inverted byte).
//! * Truncation (at every length of the small files, at random and near-the-end lengths
//!   of random files) and bytes appended after the trailer are refused.
//! * The decoder never panics: random bytes, made-up files (a valid header, real and
//!   broken page frames of every version, usually a matching page index), and random edits
//!   of valid files, decoded with the version detected, with every version forced, and
//!   through `merge`.
//!
//! Besides the encodings ltxvault writes (v1, v1 LZ4, v3-block with and without
//! checksums), the files include v2 and v3-frame files (one LZ4 frame per page) built here
//! from the spec (`docs/ltx-format.md` §3.2), since the decoder must read what older
//! Litestream versions wrote.
//!
//! Seeds: every property prints its RNG seed on stderr (shown when it fails, or with
//! `--nocapture`); `LTXVAULT_SEED=<seed>` (or proptest's own `PROPTEST_RNG_SEED`) replays it.

mod common;

use std::io::Write;
use std::ops::Range;

use common::ltxgen::{
    Decoded, FLAG_LZ4, FLAG_NO_CHECKSUM, Fill, Fills, HEADER_SIZE, TRAILER_SIZE, crc64, decode, encode,
    expected_post_apply, fill, page_bytes, put_uvarint, seeded,
};
use ltxvault::ltx::{Checksum, Decoder, Format, Header, Trailer, TxId, Version, merge};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

// ------------------------------------------------------------------------------------------
// Building valid files.

/// The encodings under test. The first four come from ltxvault's encoder; the last two are
/// built by [`write_framed`] because ltxvault only reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    V1,
    V1Lz4,
    V3Block { checksums: bool },
    V3Frame { checksums: bool },
    V2 { checksums: bool },
}

impl Encoding {
    fn has_checksums(self) -> bool {
        match self {
            Encoding::V1 | Encoding::V1Lz4 => true,
            Encoding::V3Block { checksums } | Encoding::V3Frame { checksums } | Encoding::V2 { checksums } => checksums,
        }
    }

    fn version(self) -> Version {
        match self {
            Encoding::V1 | Encoding::V1Lz4 => Version::V1,
            Encoding::V3Block { .. } | Encoding::V3Frame { .. } => Version::V3,
            Encoding::V2 { .. } => Version::V2,
        }
    }
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![
        3 => Just(Encoding::V1),
        3 => Just(Encoding::V1Lz4),
        3 => any::<bool>().prop_map(|checksums| Encoding::V3Block { checksums }),
        1 => any::<bool>().prop_map(|checksums| Encoding::V3Frame { checksums }),
        1 => any::<bool>().prop_map(|checksums| Encoding::V2 { checksums }),
    ]
}

/// A valid file, and what decoding it must give.
#[derive(Debug)]
struct Valid {
    encoding: Encoding,
    bytes: Vec<u8>,
    decoded: Decoded,
}

/// Builds a valid file. `pages` must suit `snapshot` (all of 1..=commit) or not.
fn build(encoding: Encoding, page_size: u32, snapshot: bool, commit: u32, pages: &[(u32, Fill)]) -> Valid {
    assert!(
        !matches!(encoding, Encoding::V2 { .. }) || !pages.is_empty(),
        "a v2 file without pages looks like v3 to version detection"
    );
    let checksums = encoding.has_checksums();
    let header = Header {
        flags: if checksums { 0 } else { FLAG_NO_CHECKSUM },
        page_size,
        commit,
        min_txid: TxId(if snapshot { 1 } else { 40 }),
        max_txid: TxId(44),
        timestamp_ms: 1_754_000_000_000,
        pre_apply_checksum: if snapshot || !checksums { Checksum::NONE } else { Checksum(0x8000_0000_1234_5678) },
        wal_offset: 4096,
        wal_size: 8272,
        wal_salt1: 0xdead_beef,
        wal_salt2: 7,
        node_id: 3,
    };
    let pages: Vec<(u32, Vec<u8>)> = pages.iter().map(|&(p, f)| (p, page_bytes(f, page_size))).collect();
    let incremental = Checksum(0x8000_0000_8765_4321);
    let post_apply = expected_post_apply(checksums, snapshot, commit, page_size, &pages, incremental);
    let bytes = match encoding {
        Encoding::V1 => encode(&header, Format::V1 { compress: false }, &pages, post_apply),
        Encoding::V1Lz4 => encode(&header, Format::V1 { compress: true }, &pages, post_apply),
        Encoding::V3Block { .. } => encode(&header, Format::V3Block, &pages, post_apply),
        Encoding::V3Frame { .. } => write_framed(&header, Version::V3, &pages, post_apply),
        Encoding::V2 { .. } => write_framed(&header, Version::V2, &pages, post_apply),
    };
    let mut header = header;
    if encoding == Encoding::V1Lz4 {
        header.flags = FLAG_LZ4;
    }
    let file_checksum = Checksum(u64::from_be_bytes(bytes[bytes.len() - 8..].try_into().unwrap()));
    let decoded = Decoded {
        version: encoding.version(),
        header,
        pages,
        trailer: Trailer { post_apply_checksum: post_apply, file_checksum },
    };
    let valid = Valid { encoding, bytes, decoded };
    // Every test below starts from a file that decodes to exactly what was written;
    // without that, a refused corruption would prove nothing.
    assert_eq!(decode(&valid.bytes).as_ref(), Ok(&valid.decoded), "{encoding:?}: the valid file itself");
    valid
}

/// Writes a v2 or v3-frame file as `docs/ltx-format.md` §2, §3.2 and §4.1 describe it: per
/// page a page header (v2: pgno; v3: pgno and flags 0) then one complete LZ4 frame with a
/// content checksum (the pierrec/lz4 default), the end marker, the page index, the
/// trailer; the file checksum covers the decompressed pages.
fn write_framed(header: &Header, version: Version, pages: &[(u32, Vec<u8>)], post_apply: Checksum) -> Vec<u8> {
    let mut out = header.encode().to_vec();
    let mut stream = out.clone();
    let mut index = Vec::new();
    for (pgno, data) in pages {
        let at = out.len();
        let mut page_header = pgno.to_be_bytes().to_vec();
        if version == Version::V3 {
            page_header.extend_from_slice(&[0, 0]);
        }
        let frame = lz4_frame(data);
        out.extend_from_slice(&page_header);
        out.extend_from_slice(&frame);
        stream.extend_from_slice(&page_header);
        stream.extend_from_slice(data);
        put_uvarint(&mut index, u64::from(*pgno));
        put_uvarint(&mut index, at as u64);
        put_uvarint(&mut index, (page_header.len() + frame.len()) as u64);
    }
    let end_marker = &[0u8; 6][..if version == Version::V3 { 6 } else { 4 }];
    out.extend_from_slice(end_marker);
    stream.extend_from_slice(end_marker);
    index.push(0);
    let varint_len = index.len() as u64;
    index.extend_from_slice(&varint_len.to_be_bytes());
    out.extend_from_slice(&index);
    stream.extend_from_slice(&index);
    stream.extend_from_slice(&post_apply.0.to_be_bytes());
    out.extend_from_slice(&post_apply.0.to_be_bytes());
    out.extend_from_slice(&(Checksum::FLAG | crc64(&stream)).to_be_bytes());
    out
}

/// Small random valid files: a few pages of 512 to 4096 bytes, snapshots and incremental
/// files, every encoding.
fn valid_file() -> impl Strategy<Value = Valid> {
    let page_size = prop_oneof![Just(512u32), Just(1024), Just(4096)];
    (encoding(), page_size, any::<bool>(), 0..=6u32)
        .prop_flat_map(|(encoding, page_size, snapshot, commit)| {
            let pgnos = if snapshot {
                Just((1..=commit).collect::<Vec<u32>>()).boxed()
            } else {
                proptest::sample::subsequence((1..=commit).collect::<Vec<u32>>(), 0..=commit as usize).boxed()
            };
            (Just(encoding), Just(page_size), Just(snapshot), Just(commit), pgnos).prop_flat_map(
                |(encoding, page_size, snapshot, commit, pgnos)| {
                    let n = pgnos.len();
                    (Just((encoding, page_size, snapshot, commit, pgnos)), vec(fill(Fills::All), n))
                },
            )
        })
        .prop_map(|((encoding, page_size, snapshot, commit, pgnos), fills)| {
            let encoding = match encoding {
                // See `build`: v2 needs a page to be told from v3.
                Encoding::V2 { checksums } if pgnos.is_empty() => Encoding::V3Frame { checksums },
                e => e,
            };
            let pages: Vec<(u32, Fill)> = pgnos.into_iter().zip(fills).collect();
            build(encoding, page_size, snapshot, commit, &pages)
        })
}

/// A few fixed small files per encoding: an incremental file with gaps and mixed pages, a
/// snapshot, and (where version detection allows) an empty database.
fn fixed_files() -> Vec<Valid> {
    let encodings = [
        Encoding::V1,
        Encoding::V1Lz4,
        Encoding::V3Block { checksums: true },
        Encoding::V3Block { checksums: false },
        Encoding::V3Frame { checksums: true },
        Encoding::V2 { checksums: false },
    ];
    let mut files = Vec::new();
    for encoding in encodings {
        let incremental = [(2, Fill::Noise(1)), (5, Fill::Zeros), (9, Fill::Runs(2))];
        files.push(build(encoding, 512, false, 9, &incremental));
        let snapshot = [(1, Fill::Runs(3)), (2, Fill::Zeros), (3, Fill::Byte(0x5a))];
        files.push(build(encoding, 512, true, 3, &snapshot));
        if !matches!(encoding, Encoding::V2 { .. }) {
            files.push(build(encoding, 1024, false, 0, &[]));
        }
    }
    files
}

/// The byte ranges of a valid file where a change may leave the decoded file unchanged:
/// the compressed payloads, which the file checksum covers only once decompressed.
/// Everything else is hashed as stored.
fn compressed_ranges(valid: &Valid) -> Vec<Range<usize>> {
    let bytes = &valid.bytes;
    let trailer_at = bytes.len() - TRAILER_SIZE;
    match valid.encoding {
        Encoding::V1 => vec![],
        Encoding::V1Lz4 => std::iter::once(HEADER_SIZE..trailer_at).collect(),
        Encoding::V3Block { .. } | Encoding::V3Frame { .. } | Encoding::V2 { .. } => {
            // Read the frames' places from the page index (the file is valid).
            let index_len = u64::from_be_bytes(bytes[trailer_at - 8..trailer_at].try_into().unwrap()) as usize;
            let mut at = trailer_at - 8 - index_len;
            let mut next = || {
                let (mut value, mut shift) = (0u64, 0);
                loop {
                    let b = bytes[at];
                    at += 1;
                    value |= u64::from(b & 0x7f) << shift;
                    shift += 7;
                    if b & 0x80 == 0 {
                        return value as usize;
                    }
                }
            };
            let payload_skip = match valid.encoding {
                Encoding::V3Block { .. } => 10, // pgno, flags, size prefix
                Encoding::V3Frame { .. } => 6,  // pgno, flags
                _ => 4,                         // pgno
            };
            let mut ranges = Vec::new();
            while next() != 0 {
                let (offset, size) = (next(), next());
                ranges.push(offset + payload_skip..offset + size);
            }
            ranges
        }
    }
}

/// What a one-byte change of `valid` at `pos` decoded to, if it decoded at all; fails the
/// test when that is anything the format should have refused.
fn check_flip(valid: &Valid, pos: usize, mask: u8) -> Result<FlipOutcome, String> {
    let mut bytes = valid.bytes.clone();
    bytes[pos] ^= mask;
    match decode(&bytes) {
        Err(_) => Ok(FlipOutcome::Refused),
        Ok(decoded) => {
            let in_payload = compressed_ranges(valid).iter().any(|r| r.contains(&pos));
            if !in_payload {
                return Err(format!(
                    "{:?}: byte {pos} ^ {mask:#04x} is hashed as stored, yet the file decoded (length {})",
                    valid.encoding,
                    bytes.len()
                ));
            }
            if decoded != valid.decoded {
                return Err(format!(
                    "{:?}: byte {pos} ^ {mask:#04x} decoded to different content: {}",
                    valid.encoding,
                    describe_difference(&valid.decoded, &decoded)
                ));
            }
            Ok(FlipOutcome::Equivalent)
        }
    }
}

#[derive(Debug, PartialEq)]
enum FlipOutcome {
    Refused,
    /// An equivalent LZ4 encoding of the same content.
    Equivalent,
}

fn describe_difference(want: &Decoded, got: &Decoded) -> String {
    if want.header != got.header {
        return format!("header {:?} instead of {:?}", got.header, want.header);
    }
    if want.trailer != got.trailer {
        return format!("trailer {:?} instead of {:?}", got.trailer, want.trailer);
    }
    if want.pages.len() != got.pages.len() {
        return format!("{} pages instead of {}", got.pages.len(), want.pages.len());
    }
    for ((p, a), (q, b)) in want.pages.iter().zip(&got.pages) {
        if p != q || a != b {
            return format!("page {q} instead of page {p} (content equal: {})", a == b);
        }
    }
    format!("version {:?} instead of {:?}", got.version, want.version)
}

// ------------------------------------------------------------------------------------------
// (a) Single-byte changes.

proptest! {
    #![proptest_config(seeded(512))]

    #[test]
    fn any_single_byte_change_is_refused_or_decodes_identically(
        valid in valid_file(),
        flips in vec((any::<Index>(), 1..=255u8), 64),
    ) {
        for (index, mask) in flips {
            let pos = index.index(valid.bytes.len());
            let outcome = check_flip(&valid, pos, mask).map_err(TestCaseError::fail)?;
            if valid.encoding == Encoding::V1 {
                prop_assert_eq!(outcome, FlipOutcome::Refused, "v1 uncompressed: byte {} ^ {:#04x}", pos, mask);
            }
        }
    }
}

/// Every single-bit change, and every byte inverted. (The property above draws the other
/// XOR values; all 255 of them at every position would cost ~30 times as much.)
const EXHAUSTIVE_MASKS: [u8; 9] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff];

#[test]
fn every_single_byte_change_of_small_files_is_refused_or_decodes_identically() {
    for valid in fixed_files() {
        let mut equivalent = 0usize;
        for pos in 0..valid.bytes.len() {
            for mask in EXHAUSTIVE_MASKS {
                match check_flip(&valid, pos, mask) {
                    Ok(FlipOutcome::Refused) => {}
                    Ok(FlipOutcome::Equivalent) => equivalent += 1,
                    Err(failure) => panic!("{failure}"),
                }
            }
        }
        if valid.encoding == Encoding::V1 {
            assert_eq!(equivalent, 0, "v1 uncompressed: every change is refused");
        }
        eprintln!(
            "{:?}, {} bytes, {} pages: {} of {} changes decode to identical content",
            valid.encoding,
            valid.bytes.len(),
            valid.decoded.pages.len(),
            equivalent,
            valid.bytes.len() * EXHAUSTIVE_MASKS.len()
        );
    }
}

// ------------------------------------------------------------------------------------------
// (b) Truncation and extension.

/// Whether decoding refuses `bytes`, both with the version detected and with the
/// version of the file it came from forced.
fn refused(bytes: &[u8], version: Version) -> bool {
    decode(bytes).is_err() && Decoder::with_version(bytes, version).and_then(Decoder::verify).is_err()
}

/// The prefixes of `valid` of the given lengths must all be refused.
fn check_truncations(valid: &Valid, lengths: impl IntoIterator<Item = usize>) -> Result<(), String> {
    for len in lengths {
        if !refused(&valid.bytes[..len], valid.encoding.version()) {
            return Err(format!(
                "{:?}: truncated to {len} of {} bytes, still decodes",
                valid.encoding,
                valid.bytes.len()
            ));
        }
    }
    Ok(())
}

/// `valid` with bytes appended must be refused: zeros (which shift the trailer), and a
/// second copy of the trailer (a trailer written twice).
fn check_extensions(valid: &Valid) -> Result<(), String> {
    let trailer = &valid.bytes[valid.bytes.len() - TRAILER_SIZE..];
    let extras = [&[0u8][..], &[0; 4], &[0; 16], trailer];
    for extra in extras {
        let mut longer = valid.bytes.clone();
        longer.extend_from_slice(extra);
        if !refused(&longer, valid.encoding.version()) {
            return Err(format!("{:?}: {} bytes appended, still decodes", valid.encoding, extra.len()));
        }
    }
    Ok(())
}

#[test]
fn small_files_truncated_at_every_length_or_extended_are_refused() {
    for valid in fixed_files() {
        check_truncations(&valid, 0..valid.bytes.len()).unwrap_or_else(|failure| panic!("{failure}"));
        check_extensions(&valid).unwrap_or_else(|failure| panic!("{failure}"));
    }
}

proptest! {
    #![proptest_config(seeded(256))]

    /// Random cut points, plus every one of the last 48 bytes (trailer, page index length,
    /// end marker, LZ4 end mark and content checksum: where a cut is easiest to miss).
    /// Every length of every file would cost seconds per case: decoding a checksummed
    /// snapshot computes a page checksum per page.
    #[test]
    fn truncated_or_extended_files_are_refused(valid in valid_file(), cuts in vec(any::<Index>(), 32)) {
        let n = valid.bytes.len();
        let tail = n.saturating_sub(48)..n;
        check_truncations(&valid, cuts.iter().map(|i| i.index(n)).chain(tail)).map_err(TestCaseError::fail)?;
        check_extensions(&valid).map_err(TestCaseError::fail)?;
    }
}

/// Codec bug: in a v1 file with an LZ4 page block, the decoder reads the LZ4 frame up to
/// its end mark and stops; it never checks that the frame ends where the trailer starts.
/// `lz4_flex`'s `FrameDecoder::read` returns `Ok(0)` at an end mark without looking
/// further, and also when the input ends where a block header should be. So a file with
/// bytes between the frame and the trailer (here: a junk string, or the trailer written
/// twice) decodes as valid, and so does a frame cut just before its end mark (the content
/// checksum is then never checked). The uncompressed v1 path refuses the same shapes with
/// `Rule::TrailingBytes`, and `docs/ltx-format.md` §2/§3.1 allows nothing between the
/// frame and the trailer. The file checksum still protects the pages, so no wrong data
/// comes out; the decoder just accepts files no encoder writes.
#[test]

fn v1_lz4_bytes_between_page_block_and_trailer_are_refused() {
    let valid = build(Encoding::V1Lz4, 512, false, 2, &[(1, Fill::Byte(7))]);
    let bytes = &valid.bytes;
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_SIZE);

    let junk_before_trailer = [body, b"any junk at all", trailer].concat();
    assert!(refused(&junk_before_trailer, Version::V1), "junk between the LZ4 frame and the trailer");

    let trailer_twice = [bytes, trailer].concat();
    assert!(refused(&trailer_twice, Version::V1), "trailer written twice");

    // The frame ends with its end mark (4 zero bytes) and content checksum (4 bytes).
    let without_end_mark = [&body[..body.len() - 8], trailer].concat();
    assert!(refused(&without_end_mark, Version::V1), "LZ4 frame without end mark and content checksum");
}

// ------------------------------------------------------------------------------------------
// (c) The decoder never panics.

/// Decodes `bytes` every way there is (detected version, each version forced, through a
/// merge) and checks the cursor's promises on the way: pages are page-sized and ascending,
/// a finished decoder has a trailer, an error is final. Panics are the failure looked for.
fn decode_every_way(bytes: &[u8]) -> Result<(), TestCaseError> {
    let attempts = [None, Some(Version::V1), Some(Version::V2), Some(Version::V3)];
    for version in attempts {
        let opened = match version {
            None => Decoder::new(bytes),
            Some(v) => Decoder::with_version(bytes, v),
        };
        let Ok(mut decoder) = opened else { continue };
        let page_size = decoder.header().page_size as usize;
        let mut last = 0;
        loop {
            match decoder.next_page() {
                Ok(Some(page)) => {
                    prop_assert_eq!(page.data.len(), page_size);
                    prop_assert!(page.pgno.0 > last, "page {} after page {}", page.pgno.0, last);
                    last = page.pgno.0;
                }
                Ok(None) => {
                    prop_assert!(decoder.trailer().is_some());
                    break;
                }
                Err(e) => {
                    prop_assert_eq!(decoder.advance(), Err(e), "an error is final");
                    prop_assert!(decoder.page().is_none());
                    break;
                }
            }
        }
    }
    for format in [Format::V1 { compress: true }, Format::V3Block] {
        let _ = merge(&[bytes], Vec::new(), format);
    }
    Ok(())
}

/// One edit of a file's bytes.
#[derive(Clone, Debug)]
enum Edit {
    Xor(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    /// Copies a stretch of the file over another place (duplicated frames, index entries).
    Copy {
        from: Index,
        to: Index,
        len: usize,
    },
    /// Writes a big-endian u32 (a page number, size prefix or length) somewhere.
    Word(Index, u32),
}

fn edit() -> impl Strategy<Value = Edit> {
    let word = prop_oneof![0..=16u32, any::<u32>(), Just(u32::MAX), (1u32..=8).prop_map(|k| 1 << (k + 8))];
    prop_oneof![
        3 => (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Edit::Xor(i, m)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        1 => (any::<Index>(), vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (any::<Index>(), 1..64usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => (any::<Index>(), any::<Index>(), 1..64usize).prop_map(|(from, to, len)| Edit::Copy { from, to, len }),
        2 => (any::<Index>(), word).prop_map(|(i, w)| Edit::Word(i, w)),
    ]
}

fn apply_edit(bytes: &mut Vec<u8>, edit: &Edit) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match edit {
        Edit::Xor(i, m) => bytes[i.index(n)] ^= m,
        Edit::Set(i, b) => bytes[i.index(n)] = *b,
        Edit::Insert(i, new) => {
            let at = i.index(n + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Edit::Delete(i, len) => {
            let at = i.index(n);
            bytes.drain(at..(at + len).min(n));
        }
        Edit::Truncate(i) => bytes.truncate(i.index(n)),
        Edit::Copy { from, to, len } => {
            let (from, to) = (from.index(n), to.index(n));
            let len = (*len).min(n - from).min(n - to);
            bytes.copy_within(from..from + len, to);
        }
        Edit::Word(i, w) => {
            let at = i.index(n);
            let end = (at + 4).min(n);
            bytes[at..end].copy_from_slice(&w.to_be_bytes()[..end - at]);
        }
    }
}

/// A piece of a made-up page block: enough structure (plausible page numbers, flags and
/// sizes, LZ4 magic, varints) that decoding gets past the first frame header, with random
/// bytes between.
#[derive(Clone, Debug)]
enum Piece {
    Noise(Vec<u8>),
    /// A v3 page header with a size prefix (when the flag says so).
    PageHeader {
        pgno: u32,
        flags: u16,
        size: u32,
    },
    /// A v1/v2 page header.
    Pgno(u32),
    Lz4Magic,
    Varint(u64),
    /// A well-formed page frame of the header's page size, in one of the encodings.
    Page {
        pgno: u32,
        fill: Fill,
        shape: FrameShape,
    },
    /// An end marker (v3: 6 zero bytes, v1/v2: 4).
    EndMarker {
        v3: bool,
    },
}

#[derive(Clone, Copy, Debug)]
enum FrameShape {
    V1,
    V2,
    V3Block,
    V3Frame,
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        1 => vec(any::<u8>(), 1..600).prop_map(Piece::Noise),
        2 => (0..=9u32, 0..=2u16, prop_oneof![0..=40u32, 0..=1100u32, any::<u32>()])
            .prop_map(|(pgno, flags, size)| Piece::PageHeader { pgno, flags, size }),
        1 => (0..=9u32).prop_map(Piece::Pgno),
        1 => Just(Piece::Lz4Magic),
        1 => prop_oneof![0..=300u64, any::<u64>()].prop_map(Piece::Varint),
        8 => (1..=9u32, fill(Fills::All), prop_oneof![
            Just(FrameShape::V1),
            Just(FrameShape::V2),
            Just(FrameShape::V3Block),
            Just(FrameShape::V3Frame),
        ])
            .prop_map(|(pgno, fill, shape)| Piece::Page { pgno, fill, shape }),
        2 => any::<bool>().prop_map(|v3| Piece::EndMarker { v3 }),
    ]
}

fn lz4_frame(data: &[u8]) -> Vec<u8> {
    let info = lz4_flex::frame::FrameInfo::new().content_checksum(true);
    let mut frame = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
    frame.write_all(data).unwrap();
    frame.finish().unwrap()
}

/// A header that passes validation, a made-up page block, usually the page index that
/// matches its frames, and a random trailer: so that decoding, with every version forced,
/// reaches the frames, the index checks and the trailer instead of stopping at the header
/// or the index length.
fn plausible_file() -> impl Strategy<Value = Vec<u8>> {
    let flags = prop_oneof![Just(0u32), Just(1), Just(2)];
    let page_size = prop_oneof![Just(512u32), Just(1024)];
    let matching_index = prop_oneof![2 => Just(true), 1 => Just(false)];
    let index_len = prop_oneof![3 => 1..=64u64, 1 => any::<u64>()];
    let header = (flags, page_size, 0..=8u32, any::<bool>());
    (header, vec(piece(), 0..8), matching_index, index_len, any::<[u8; 16]>()).prop_map(
        |((flags, page_size, commit, snapshot), pieces, matching_index, index_len, trailer)| {
            let header = Header {
                flags,
                page_size,
                commit,
                min_txid: TxId(if snapshot { 1 } else { 9 }),
                max_txid: TxId(9),
                pre_apply_checksum: if snapshot || flags == 2 { Checksum::NONE } else { Checksum(Checksum::FLAG | 1) },
                ..Header::default()
            };
            let mut bytes = header.encode().to_vec();
            // (pgno, offset, size) of each page frame written, for a matching index.
            let mut frames = Vec::new();
            for piece in pieces {
                let at = bytes.len();
                match piece {
                    Piece::Noise(noise) => bytes.extend(noise),
                    Piece::PageHeader { pgno, flags, size } => {
                        bytes.extend(pgno.to_be_bytes());
                        bytes.extend(flags.to_be_bytes());
                        if flags & 1 != 0 {
                            bytes.extend(size.to_be_bytes());
                        }
                    }
                    Piece::Pgno(pgno) => bytes.extend(pgno.to_be_bytes()),
                    Piece::Lz4Magic => bytes.extend(0x184D_2204u32.to_le_bytes()),
                    Piece::Varint(v) => put_uvarint(&mut bytes, v),
                    Piece::Page { pgno, fill, shape } => {
                        let page = page_bytes(fill, page_size);
                        bytes.extend(pgno.to_be_bytes());
                        match shape {
                            FrameShape::V1 => bytes.extend(page),
                            FrameShape::V2 => bytes.extend(lz4_frame(&page)),
                            FrameShape::V3Block => {
                                let block = lz4_flex::block::compress(&page);
                                bytes.extend(1u16.to_be_bytes());
                                bytes.extend((block.len() as u32).to_be_bytes());
                                bytes.extend(block);
                            }
                            FrameShape::V3Frame => {
                                bytes.extend(0u16.to_be_bytes());
                                bytes.extend(lz4_frame(&page));
                            }
                        }
                        frames.push((pgno, at, bytes.len() - at));
                    }
                    Piece::EndMarker { v3 } => bytes.extend(&[0u8; 6][..if v3 { 6 } else { 4 }]),
                }
            }
            if matching_index {
                let mut index = Vec::new();
                for (pgno, offset, size) in frames {
                    put_uvarint(&mut index, u64::from(pgno));
                    put_uvarint(&mut index, offset as u64);
                    put_uvarint(&mut index, size as u64);
                }
                index.push(0);
                bytes.extend(&index);
                bytes.extend((index.len() as u64).to_be_bytes());
            } else {
                bytes.extend(index_len.to_be_bytes());
            }
            bytes.extend(trailer);
            bytes
        },
    )
}

proptest! {
    #![proptest_config(seeded(2048))]

    #[test]
    fn decoder_never_panics_on_random_bytes(bytes in vec(any::<u8>(), 0..3000)) {
        decode_every_way(&bytes)?;
    }

    #[test]
    fn decoder_never_panics_on_made_up_files(bytes in plausible_file()) {
        decode_every_way(&bytes)?;
    }

    #[test]
    fn decoder_never_panics_on_edited_valid_files(valid in valid_file(), edits in vec(edit(), 1..=6)) {
        let mut bytes = valid.bytes.clone();
        for e in &edits {
            apply_edit(&mut bytes, e);
        }
        decode_every_way(&bytes)?;
    }
}
