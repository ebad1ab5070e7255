//! Replays the `segment_record` fuzz seeds and every saved finding of that target through
//! the checks the target runs (`fuzz/src/segment.rs`, included as a module rather than
//! copied), on stable and without cargo-fuzz, so CI catches a segment decoder or recovery
//! regression that fuzzing once found.

#[path = "../fuzz/src/segment.rs"]
mod harness;

mod common;

use std::path::Path;

use common::replay::{assert_every_regression_listed, files, read};

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/segment_record");
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fuzz-regressions/segment");

/// Every saved finding, by file name; `every_regression_has_a_test` keeps this complete.
const REGRESSION_FILES: &[&str] = &[
    "segment-header-reserved.bin",
    "segment-payload-len-max.bin",
    "segment-payload-len-overflow.bin",
    "segment-seq-max.bin",
    "segment-torn-batch-start-leaves-garbage.bin",
    "segment-zeroed-header-hides-later-batches.bin",
];

/// Replays a saved finding through every check of the target (a panic fails the test) and
/// returns what the scan said.
fn replay(name: &str) -> Result<ltxvault::segment::Scan, (u64, String)> {
    harness::check_segment(&read(&Path::new(REGRESSIONS).join(name)))
}

/// Found by the fuzzer in its first minute: the segment header's reserved bytes (12..16,
/// 32..56) were covered by the header checksum but never checked, so a header with
/// non-zero reserved bytes decoded, and re-encoding it gave other bytes. "Every byte read
/// from disk is checked": the decoder now refuses it.
#[test]
fn segment_header_with_reserved_bytes_set_is_refused() {
    let (offset, reason) = replay("segment-header-reserved.bin").expect_err("refused");
    assert_eq!(offset, 0);
    assert!(reason.contains("reserved"), "{reason}");
}

/// A record header (checksum valid) whose payload length is `2^64 - header length`: the
/// record length `header + payload` wrapped to 0, which panics where overflow checks are on
/// (the fuzz build) and in release let the scan read the same record again and fail on its
/// sequence number instead of on its length. The decoder now checks the payload length
/// against the bytes left before adding anything.
#[test]
fn record_payload_length_that_wraps_is_refused() {
    let (offset, reason) = replay("segment-payload-len-overflow.bin").expect_err("refused");
    assert_eq!(offset, 64);
    assert!(reason.contains("runs past the end"), "{reason}");
}

/// Found by the fuzzer right after the fix above: a record whose payload length is
/// `u64::MAX` was refused, but the refusal's message still computed the record length
/// (header + payload), which overflowed: a panic where overflow checks are on, and in
/// release a message naming a 128-byte record. The message now gives the two lengths.
#[test]
fn record_payload_length_max_is_refused_with_its_length() {
    let (offset, reason) = replay("segment-payload-len-max.bin").expect_err("refused");
    assert_eq!(offset, 64);
    assert!(reason.contains("runs past the end") && reason.contains(&u64::MAX.to_string()), "{reason}");
}

/// Found by the fuzzer (second ten-minute run): a record (checksums valid) carrying
/// sequence number `u64::MAX`. The scan computed the next expected number as `seq + 1`,
/// which panics where overflow checks are on and in release wrapped to 0, so the record was
/// taken as a good one. No record can follow it, so it cannot be one the log wrote: the
/// scan now refuses it (here, in the last segment, as a torn tail).
#[test]
fn record_with_the_largest_sequence_number_is_refused() {
    let scanned = replay("segment-seq-max.bin").expect("a torn tail in the last segment");
    assert!(scanned.records.iter().all(|(_, h)| h.seq != u64::MAX), "{:?}", scanned.records);
    assert!(scanned.torn);
}

/// A sealed segment whose second record's header was zeroed (a lost block) while the
/// records after it, from later write batches, are intact. The scan took the zeros for the
/// end of the segment and silently dropped the acknowledged records after them (and in the
/// last segment the writer would have overwritten them). A later batch proves the zeros
/// are damage: the open must fail and say where.
#[test]
fn zeroed_record_before_later_batches_fails_the_scan() {
    let (offset, reason) = replay("segment-zeroed-header-hides-later-batches.bin").expect_err("refused");
    assert_eq!(offset, 1856);
    assert!(reason.contains("later write batch"), "{reason}");
}

/// The last segment, whose last batch's first 112 bytes never reached the disk while the
/// rest of it did (write-back order is not file order). The scan stopped at the zeros but
/// left the rest of the torn batch in place, where a record written later at the tail
/// could end exactly at a stale, checksum-valid record with the next sequence number and
/// bring a never-acknowledged upload back at the next open. The bytes after the tail are
/// now a torn tail, cut like any other.
#[test]
fn torn_batch_with_unwritten_start_is_cut() {
    let scanned = replay("segment-torn-batch-start-leaves-garbage.bin").expect("scans");
    assert_eq!(scanned.records.len(), 3);
    assert_eq!(scanned.tail, 2000);
    assert!(scanned.torn, "the rest of the batch is a torn tail");
}

#[test]
fn every_regression_has_a_test() {
    assert_every_regression_listed(Path::new(REGRESSIONS), REGRESSION_FILES);
}

/// Every seed is a segment a real vault wrote (or one with a torn tail), scans with records,
/// and passes every check of the target.
#[test]
fn seeds_replay() {
    let seeds = files(Path::new(SEEDS));
    assert!(seeds.len() >= 3, "too few segment seeds in {SEEDS}");
    for path in seeds {
        let scanned = harness::check_segment(&read(&path)).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        assert!(!scanned.records.is_empty(), "{}: no records", path.display());
    }
}
