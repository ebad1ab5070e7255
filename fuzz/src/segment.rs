//! The checks behind the `segment_record` fuzz target: arbitrary bytes read as an L0
//! segment file, through the segment header and record header decoders and the scan that
//! recovery runs over every segment at open (`ltxvault::segment::scan`).
//!
//! `tests/segment_fuzz_regressions.rs` includes this file with `#[path]` to replay the seeds
//! and every saved finding on stable, so it may use nothing but `ltxvault` and `std`.
//!
//! Input layout: one control byte, then the segment file.
//!
//! ```text
//! ctrl bit 0   rewrite every checksum first (segment::format::reseal), so that mutated
//!              bytes reach the checks behind the xxh3s instead of dying at them
//! ctrl bit 1   scan as the last segment of the log (payloads checked, torn tails cut)
//! ctrl bit 2   expect the first record to carry sequence number 1 (a later segment
//!              continuing the log) rather than taking whatever it carries
//! ```
//!
//! Every check here either returns what the scan said or panics: a panic is a finding.

use ltxvault::segment::format::{RECORD_ALIGN, RECORD_MAGIC, RecordHeader, SEGMENT_HEADER_SIZE, SegmentHeader, reseal};
use ltxvault::segment::{Scan, scan};

/// The control byte's flags; see the module docs.
pub const RESEAL: u8 = 1;
/// See the module docs.
pub const LAST: u8 = 2;
/// See the module docs.
pub const FROM_SEQ_1: u8 = 4;

/// Scans `data` (control byte, then a segment file) and checks what the scan reports
/// against the bytes: every record it returns decodes alone to the same header, re-encodes
/// to the same bytes and follows the previous one; no record a later write batch proves
/// acknowledged is left behind the tail; and in the last segment a second scan after the
/// torn tail is cut finds the same records and nothing more to cut.
pub fn check_segment(data: &[u8]) -> Result<Scan, (u64, String)> {
    let Some((&ctrl, rest)) = data.split_first() else {
        return Err((0, "empty input".into()));
    };
    let mut bytes = rest.to_vec();
    if ctrl & RESEAL != 0 {
        reseal(&mut bytes);
    }
    let is_last = ctrl & LAST != 0;
    let expected_seq = (ctrl & FROM_SEQ_1 != 0).then_some(1);

    let header = SegmentHeader::decode(&bytes);
    if let Ok(header) = &header {
        // Every byte of the header is checked: what decodes is what the encoder writes.
        assert_eq!(header.encode()[..], bytes[..SEGMENT_HEADER_SIZE], "segment header does not round-trip");
    }
    let id = header.map_or(0, |h| h.id);
    let scanned = scan(&bytes, id, is_last, expected_seq);
    let Ok(found) = &scanned else { return scanned };

    let mut next_offset = SEGMENT_HEADER_SIZE as u64;
    let mut next_seq = expected_seq;
    for (offset, record) in &found.records {
        assert_eq!(*offset, next_offset, "records are not back to back");
        assert_eq!(offset % RECORD_ALIGN as u64, 0, "record at {offset} is not aligned");
        let at = &bytes[*offset as usize..];
        let again = RecordHeader::decode(at).unwrap_or_else(|e| panic!("record at {offset} no longer decodes: {e}"));
        assert_eq!(again.as_ref(), Some(record), "record at {offset} decodes differently alone");
        assert_eq!(record.encode()[..], at[..record.header_len()], "record header at {offset} does not round-trip");
        if let Some(seq) = next_seq {
            assert_eq!(record.seq, seq, "record at {offset} breaks the sequence");
        }
        if is_last {
            record.payload(at).unwrap_or_else(|e| panic!("last segment: payload at {offset} accepted unchecked: {e}"));
        }
        next_seq = Some(record.seq.checked_add(1).expect("a record with the largest sequence number was accepted"));
        next_offset = offset + record.record_len();
    }
    assert_eq!(found.tail, next_offset, "the tail is not the end of the last record");
    assert!(found.tail as usize <= bytes.len(), "the tail is past the end of the segment");
    assert!(!found.torn || is_last, "a torn tail outside the last segment");
    if let Some(later) = later_batch(&bytes, found.tail) {
        panic!(
            "the scan ended at {} but the record at {later} belongs to a later write batch: acknowledged records would be lost",
            found.tail
        );
    }
    if is_last {
        // What recovery does next: zero a torn tail. A second open must then agree, and
        // find nothing after the tail that a later write could make look valid again.
        let mut cut = bytes.clone();
        if found.torn {
            cut[found.tail as usize..].fill(0);
        }
        let rescanned = scan(&cut, id, is_last, expected_seq).unwrap_or_else(|e| panic!("rescan after the cut: {e:?}"));
        assert_eq!(rescanned.records, found.records, "rescan after the cut found other records");
        assert_eq!(rescanned.tail, found.tail, "rescan after the cut ended elsewhere");
        assert!(!rescanned.torn, "rescan after the cut found another torn tail");
        if let Some(p) = cut[found.tail as usize..].iter().position(|&b| b != 0) {
            panic!(
                "last segment: byte {} after the tail {} is left non-zero by recovery",
                found.tail as usize + p,
                found.tail
            );
        }
    }
    scanned
}

/// The offset of a valid record header after `tail` that belongs to a write batch starting
/// after `tail`, if any (written by hand here rather than borrowed from the code under test).
fn later_batch(bytes: &[u8], tail: u64) -> Option<u64> {
    let mut at = tail as usize + RECORD_ALIGN;
    while at + RECORD_MAGIC.len() <= bytes.len() {
        if bytes[at..].starts_with(&RECORD_MAGIC)
            && let Ok(Some(h)) = RecordHeader::decode(&bytes[at..])
            && h.batch_offset > tail
        {
            return Some(at as u64);
        }
        at += RECORD_ALIGN;
    }
    None
}
