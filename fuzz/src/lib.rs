//! The checks behind the fuzz targets, kept out of the targets themselves so that
//! `tests/ltx_fuzz_regressions.rs` can replay seeds and saved crashes through exactly the
//! same code on stable Rust (it includes this file with `#[path]`). It may therefore use
//! nothing but `ltxvault` and `std`.
//!
//! Every check here either returns what the codec said or panics: a panic is a finding,
//! whether it comes from the codec or from one of the invariants asserted below.

use ltxvault::ltx::{Checksum, Decoder, Encoder, Format, Header, LtxError, PageNo, Summary, Trailer, Version, merge};

/// The versions a file can be decoded as, in the order [`check_decode`] reports them.
pub const VERSIONS: [Version; 3] = [Version::V1, Version::V2, Version::V3];

/// The encodings a merge input can ask for, chosen by the control byte (see [`split`]).
pub const MERGE_FORMATS: [Format; 3] = [Format::V1 { compress: false }, Format::V1 { compress: true }, Format::V3Block];

/// Smallest and largest number of files [`split`] makes.
pub const MERGE_FILES: std::ops::RangeInclusive<usize> = 2..=4;

/// What decoding one input gave.
#[derive(Debug)]
pub struct DecodeOutcome {
    /// `Decoder::new`, which detects the version itself.
    pub detected: Result<Summary, LtxError>,
    /// `Decoder::with_version` for each of [`VERSIONS`].
    pub forced: [Result<Summary, LtxError>; 3],
}

/// Decodes `data` as every version and checks the invariants of each successful decode.
pub fn check_decode(data: &[u8]) -> DecodeOutcome {
    let detected = check_one(data, None);
    let forced = VERSIONS.map(|v| check_one(data, Some(v)));
    // `new` is documented as `with_version(detect(..))`; a disagreement would mean the two
    // entry points can accept different files.
    let which = VERSIONS.iter().position(|&v| v == Version::detect(data)).expect("detect returns a known version");
    assert_eq!(detected, forced[which], "Decoder::new disagrees with with_version(detect)");
    DecodeOutcome { detected, forced }
}

fn open(data: &[u8], version: Option<Version>) -> Result<Decoder<'_>, LtxError> {
    match version {
        None => Decoder::new(data),
        Some(v) => Decoder::with_version(data, v),
    }
}

/// Drains one decoder with the cursor API, checking each page as it comes.
fn check_one(data: &[u8], version: Option<Version>) -> Result<Summary, LtxError> {
    let result = drain(data, version);
    // `verify` is the other way to consume a decoder; it must reach the same verdict.
    let verified = open(data, version).and_then(Decoder::verify);
    assert_eq!(result, verified, "cursor and verify() disagree");
    // The detected run repeats one of the forced runs (asserted equal in `check_decode`),
    // so only the forced runs pay for re-encoding.
    if let (Ok(summary), Some(_)) = (&result, version) {
        for format in reencode_formats(&summary.header) {
            check_reencode(data, version, summary, format);
        }
    }
    result
}

fn drain(data: &[u8], version: Option<Version>) -> Result<Summary, LtxError> {
    let mut decoder = open(data, version)?;
    let header = *decoder.header();
    let page_size = header.page_size as usize;
    let lock_page = PageNo::lock_page(header.page_size);
    let mut last = 0u32;
    let mut count = 0u32;
    let end = loop {
        match decoder.advance() {
            Ok(true) => {
                let page = decoder.page().expect("advance returned true but there is no page");
                assert_eq!(page.data.len(), page_size, "page {} has the wrong length", page.pgno);
                assert!(page.pgno.0 > last, "page {} follows page {last}", page.pgno);
                assert!(page.pgno.0 <= header.commit, "page {} is beyond commit {}", page.pgno, header.commit);
                assert_ne!(page.pgno, lock_page, "the lock page was handed out");
                last = page.pgno.0;
                count += 1;
                assert_eq!(decoder.page_count(), count);
            }
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    if let Err(e) = end {
        // Documented: an error is final and the cursor holds no page after it.
        assert!(decoder.page().is_none(), "a page is still current after an error");
        assert!(decoder.trailer().is_none(), "a trailer is set after an error");
        assert_eq!(decoder.advance(), Err(e.clone()), "a second advance after an error differs");
        return Err(e);
    }
    let trailer = decoder.trailer().expect("advance returned false without a trailer");
    assert!(decoder.page().is_none(), "a page is current after the end");
    assert_eq!(decoder.advance(), Ok(false), "advance after the end did not stay at the end");
    if header.is_snapshot() {
        assert_eq!(count, header.snapshot_page_count(), "a verified snapshot misses pages");
    }
    if header.has_checksums() {
        assert!(trailer.post_apply_checksum.is_flagged(), "post-apply checksum without bit 63 was accepted");
    } else {
        assert_eq!(trailer.post_apply_checksum, Checksum::NONE, "post-apply checksum in a NoChecksum file");
    }
    assert!(trailer.file_checksum.is_flagged(), "file checksum without bit 63 was accepted");
    Ok(Summary {
        version: decoder.version(),
        header,
        trailer,
        page_count: count,
        max_pgno: PageNo(last),
    })
}

/// The encodings a decoded file is written back as. v1 always carries database checksums,
/// so a NoChecksum file only goes to v3-block.
fn reencode_formats(header: &Header) -> Vec<Format> {
    let mut formats = vec![Format::V3Block];
    if header.has_checksums() {
        formats.extend([Format::V1 { compress: false }, Format::V1 { compress: true }]);
    }
    formats
}

/// Writes the pages of a verified file with the encoder, decodes the result and compares
/// it page by page with a second pass over the original (so no page needs to be kept).
fn check_reencode(data: &[u8], version: Option<Version>, summary: &Summary, format: Format) {
    let header = summary.header;
    let mut encoder = match Encoder::new(Vec::new(), &header, format) {
        Ok(encoder) => encoder,
        // v1 alone insists that a WAL offset comes with a WAL size; every other header the
        // decoder accepts must be writable.
        Err(e) => {
            assert!(
                format.version() == Version::V1 && header.wal_offset != 0 && header.wal_size == 0,
                "encoder ({format:?}) refused a header the decoder accepted: {e}"
            );
            return;
        }
    };
    let written = *encoder.header();
    assert_eq!(Header { flags: header.flags, ..written }, header, "encoder changed more than the flags");
    let mut original = open(data, version).expect("a verified file no longer opens");
    while original.advance().expect("a verified file fails on the second pass") {
        let page = original.page().expect("advance returned true but there is no page");
        encoder
            .write_page(page.pgno, page.data)
            .unwrap_or_else(|e| panic!("encoder ({format:?}) refused page {}: {e}", page.pgno));
    }
    let (bytes, trailer) = encoder
        .finish(summary.trailer.post_apply_checksum)
        .unwrap_or_else(|e| panic!("encoder ({format:?}) refused to finish: {e}"));
    assert_eq!(trailer.post_apply_checksum, summary.trailer.post_apply_checksum);
    assert_eq!(Version::detect(&bytes), format.version(), "re-encoded {format:?} file detected as another version");

    let mut again = Decoder::new(&bytes).unwrap_or_else(|e| panic!("re-encoded {format:?} file does not open: {e}"));
    assert_eq!(*again.header(), written);
    let mut original = open(data, version).expect("a verified file no longer opens");
    loop {
        let more = again.advance().unwrap_or_else(|e| panic!("re-encoded {format:?} file does not decode: {e}"));
        assert_eq!(original.advance(), Ok(more), "re-encoded {format:?} file has a different number of pages");
        if !more {
            break;
        }
        let (a, b) = (original.page().expect("page"), again.page().expect("page"));
        assert_eq!(a.pgno, b.pgno, "re-encoded {format:?} file has other page numbers");
        assert!(a.data == b.data, "re-encoded {format:?} file changed page {}", a.pgno);
    }
    assert_eq!(again.trailer(), Some(trailer));
}

/// Cuts a merge target input into files and an output format.
///
/// Layout: one control byte (`ctrl % 3` picks 2, 3 or 4 files, `ctrl / 3 % 3` the format
/// from [`MERGE_FORMATS`]), then every file but the last as a little-endian `u16` length and
/// that many bytes, then the last file as everything left. Lengths past the end are cut
/// short, so every input splits somehow and the fuzzer never wastes a run.
pub fn split(data: &[u8]) -> (Vec<&[u8]>, Format) {
    let Some((&ctrl, mut rest)) = data.split_first() else {
        return (vec![&[], &[]], MERGE_FORMATS[0]);
    };
    let count = *MERGE_FILES.start() + usize::from(ctrl) % 3;
    let format = MERGE_FORMATS[usize::from(ctrl) / 3 % 3];
    let mut files = Vec::with_capacity(count);
    for _ in 1..count {
        let (len, after) = match rest {
            [a, b, after @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), after),
            _ => (0, &[][..]),
        };
        let (file, after) = after.split_at(len.min(after.len()));
        files.push(file);
        rest = after;
    }
    files.push(rest);
    (files, format)
}

/// The inverse of [`split`], for writing seeds. `None` if the count or format cannot be
/// expressed or a file other than the last is longer than a `u16`.
pub fn join(files: &[&[u8]], format: Format) -> Option<Vec<u8>> {
    let count = files.len().checked_sub(*MERGE_FILES.start()).filter(|&c| c < 3)?;
    let format_index = MERGE_FORMATS.iter().position(|&f| f == format)?;
    let mut out = vec![u8::try_from(count + 3 * format_index).ok()?];
    let (last, init) = files.split_last()?;
    for file in init {
        out.extend_from_slice(&u16::try_from(file.len()).ok()?.to_le_bytes());
        out.extend_from_slice(file);
    }
    out.extend_from_slice(last);
    Some(out)
}

/// Splits `data` with [`split`], merges the files, and when the merge succeeds checks that
/// every input verifies and that the output is a file of the promised shape.
pub fn check_merge(data: &[u8]) -> Result<Trailer, ltxvault::Error> {
    let (files, format) = split(data);
    let (out, trailer) = merge(&files, Vec::new(), format)?;
    // The merge promises it verified every input before writing the trailer.
    let headers: Vec<Header> = files
        .iter()
        .map(|f| {
            Decoder::new(f)
                .and_then(Decoder::verify)
                .unwrap_or_else(|e| panic!("merge accepted an input that does not verify: {e}"))
                .header
        })
        .collect();
    let summary = Decoder::new(&out)
        .and_then(Decoder::verify)
        .unwrap_or_else(|e| panic!("merge wrote a {format:?} file its own decoder refuses: {e}"));
    let (first, last) = (headers[0], headers[headers.len() - 1]);
    assert_eq!(summary.version, format.version());
    assert_eq!(summary.trailer, trailer);
    assert_eq!(summary.header.min_txid, first.min_txid);
    assert_eq!(summary.header.max_txid, last.max_txid);
    assert_eq!(summary.header.commit, last.commit);
    assert_eq!(summary.header.timestamp_ms, last.timestamp_ms);
    assert_eq!(summary.header.page_size, first.page_size);
    Ok(trailer)
}
