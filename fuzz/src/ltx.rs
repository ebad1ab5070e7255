//! The checks behind the LTX fuzz targets (`ltx_decode`, `ltx_merge`), kept out of the
//! targets themselves so that `tests/ltx_fuzz_regressions.rs` can replay seeds and saved
//! crashes through exactly the same code on stable Rust (it includes this file with
//! `#[path]`). It may therefore use nothing but `ltxvault` and `std`.
//!
//! Every check here either returns what the codec said or panics: a panic is a finding,
//! whether it comes from the codec or from one of the invariants asserted below.

use std::cell::Cell;
use std::io::{self, Write};

use ltxvault::ltx::format::MAGIC;
use ltxvault::ltx::{Checksum, Decoder, Encoder, Format, Header, LtxError, PageNo, Summary, Trailer, Version, merge};

/// The versions a file can be decoded as, in the order [`check_decode`] reports them.
pub const VERSIONS: [Version; 3] = [Version::V1, Version::V2, Version::V3];

/// The encodings a merge input can ask for, chosen by the control byte (see [`split`]).
pub const MERGE_FORMATS: [Format; 3] = [Format::V1 { compress: false }, Format::V1 { compress: true }, Format::V3Block];

/// Most files [`split`] makes.
pub const MAX_MERGE_FILES: usize = 4;

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
        // The detected run walks the file the way ingest does (`Vault::ingest`: `next_page`
        // until `None`), the forced runs with `advance` and `page`; `check_decode` then
        // asserts both ways reached the same result.
        let next = if version.is_none() {
            decoder.next_page().map(|page| page.map(|p| (p.pgno, p.data.len())))
        } else {
            decoder.advance().map(|more| {
                more.then(|| decoder.page().expect("advance returned true but there is no page"))
                    .map(|p| (p.pgno, p.data.len()))
            })
        };
        match next {
            Ok(Some((pgno, len))) => {
                assert_eq!(decoder.page().map(|p| p.pgno), Some(pgno), "the current page is not the one handed out");
                assert_eq!(len, page_size, "page {pgno} has the wrong length");
                assert!(pgno.0 > last, "page {pgno} follows page {last}");
                assert!(pgno.0 <= header.commit, "page {pgno} is beyond commit {}", header.commit);
                assert_ne!(pgno, lock_page, "the lock page was handed out");
                last = pgno.0;
                count += 1;
                assert_eq!(decoder.page_count(), count);
            }
            Ok(None) => break Ok(()),
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
    Ok(Summary { version: decoder.version(), header, trailer, page_count: count, max_pgno: PageNo(last) })
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
/// Layout: one control byte (`ctrl % 3` picks the format from [`MERGE_FORMATS`]), then the
/// files back to back, each starting a new file where `LTX1` appears, up to
/// [`MAX_MERGE_FILES`] (the last one takes the rest). Cutting at the magic rather than at
/// length prefixes keeps the files apart when the fuzzer inserts or erases bytes inside
/// one of them, and lets `cargo fuzz tmin` shrink one file without wrecking the others.
/// Inputs with a single `LTX1` make a one-file merge, which is a valid merge as well.
pub fn split(data: &[u8]) -> (Vec<&[u8]>, Format) {
    let Some((&ctrl, rest)) = data.split_first() else {
        return (Vec::new(), MERGE_FORMATS[0]);
    };
    let format = MERGE_FORMATS[usize::from(ctrl) % MERGE_FORMATS.len()];
    let mut cuts: Vec<usize> = (1..rest.len().saturating_sub(MAGIC.len() - 1))
        .filter(|&i| rest[i..].starts_with(&MAGIC))
        .take(MAX_MERGE_FILES - 1)
        .collect();
    cuts.push(rest.len());
    let mut files = Vec::with_capacity(cuts.len());
    let mut start = 0;
    for end in cuts {
        files.push(&rest[start..end]);
        start = end;
    }
    (files, format)
}

/// The inverse of [`split`], for writing seeds. `None` if [`split`] would cut the result
/// differently: too many files, or a file that does not start with `LTX1` or holds it again.
pub fn join(files: &[&[u8]], format: Format) -> Option<Vec<u8>> {
    let format_index = MERGE_FORMATS.iter().position(|&f| f == format)?;
    let mut out = vec![u8::try_from(format_index).ok()?];
    if files.is_empty() || files.len() > MAX_MERGE_FILES {
        return None;
    }
    for file in files {
        let again = file.windows(MAGIC.len()).skip(1).any(|w| w == MAGIC);
        if !file.starts_with(&MAGIC) || again {
            return None;
        }
        out.extend_from_slice(file);
    }
    Some(out)
}

/// Most bytes a merge may write in the harness: above what a valid 4 KiB input expands to
/// (LZ4 tops out near 255:1), and small enough that an ASan build writes it in well under a
/// second. Valid inputs may legitimately ask for more (zero pages up to a large Commit);
/// those merges are cut short rather than allowed to eat the run's time and memory.
pub const MAX_MERGE_OUTPUT: usize = 1 << 20;

/// A `Vec` writer that fails once [`MAX_MERGE_OUTPUT`] would be passed, and says so in
/// `hit` (the writer itself is gone once `merge` returns an error).
struct CappedVec<'a> {
    bytes: Vec<u8>,
    hit: &'a Cell<bool>,
}

impl Write for CappedVec<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_MERGE_OUTPUT {
            self.hit.set(true);
            return Err(io::Error::other("merge output cap reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Splits `data` with [`split`], merges the files, and when the merge succeeds checks that
/// every input verifies and that the output is a file of the promised shape.
///
/// The output is capped at [`MAX_MERGE_OUTPUT`]. Hitting the cap is fine when every input
/// is valid (a Commit far above the pages written asks for that many zero pages), but not
/// when one is invalid: then the merge did unbounded work for a file it was going to refuse
/// (found by this target once: `tests/fixtures/fuzz-regressions/merge-unbounded-output.bin`).
pub fn check_merge(data: &[u8]) -> Result<Trailer, ltxvault::Error> {
    let (files, format) = split(data);
    let hit = Cell::new(false);
    let (out, trailer) = match merge(&files, CappedVec { bytes: Vec::new(), hit: &hit }, format) {
        Ok((out, trailer)) => (out.bytes, trailer),
        Err(e) => {
            if hit.get() {
                let bad = files.iter().position(|f| Decoder::new(f).and_then(Decoder::verify).is_err());
                if let Some(i) = bad {
                    panic!("merge wrote {MAX_MERGE_OUTPUT} bytes before noticing that input {i} is invalid");
                }
            }
            return Err(e);
        }
    };
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
