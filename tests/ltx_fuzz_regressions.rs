//! Replays the fuzz seed corpus and every saved fuzz finding through the checks the fuzz
//! targets run, on stable and without cargo-fuzz, so CI catches a codec regression that
//! fuzzing once found.
//!
//! The checks are `fuzz/src/ltx.rs`, included as a module rather than copied, so a replay
//! here asserts exactly the invariants the fuzzer asserted. A finding whose codec fix has
//! not landed yet gets `#[ignore = "codec bug: …"]` until it does.

#[path = "../fuzz/src/ltx.rs"]
mod harness;

mod common;

use std::path::Path;

use common::replay::{assert_every_regression_listed, files, read};

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds");
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fuzz-regressions");

/// Every saved finding, by file name. A file in the directory that is missing here fails
/// `every_regression_has_a_test`, so no finding is silently left unreplayed.
const REGRESSION_FILES: &[&str] =
    &["merge-commit-overflow.bin", "merge-txid-overflow.bin", "merge-unbounded-output.bin"];

/// The files of `dir`, sorted so failures come in a stable order. A missing directory is
/// empty: git keeps no empty directories.
/// What a replayed input must give once the codec handles it.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// Decodes (or merges) cleanly.
    Ok,
    /// Refused with an error (which one is the codec's business; not panicking is ours).
    Err,
}

/// Merges a saved finding with every check of the `ltx_merge` target (a panic fails the
/// test) and compares the result with `expect`.
fn replay_merge(name: &str, expect: Expect) {
    let bytes = read(&Path::new(REGRESSIONS).join(name));
    let result = harness::check_merge(&bytes);
    let got = if result.is_ok() { Expect::Ok } else { Expect::Err };
    assert_eq!(got, expect, "{name}: {result:?}");
}

// The three merge findings below were fixed in commit 36a3a7d. The two overflows panicked
// only where overflow checks are on (`cargo test`, the fuzz build): under `--release` they
// wrapped around and happened to return an error, so run these in a debug build as well.

/// Two files, the first with max TXID `u64::MAX`: the contiguity check computed
/// `max_txid + 1`. Must be refused, not overflow.
#[test]
fn merge_txid_overflow() {
    replay_merge("merge-txid-overflow.bin", Expect::Err);
}

/// One v1 snapshot with Commit `u32::MAX` and one good page, then truncated:
/// `PageMerge::zero_candidate` computed `max(last, min_commit) + 1` in `u32`.
#[test]
fn merge_commit_overflow() {
    replay_merge("merge-commit-overflow.bin", Expect::Err);
}

/// A valid 3-page snapshot, then a truncated file whose Commit is 889,192,453 and whose
/// second page is page 356,449: the merge wrote ~180 MB of zero pages (up to 460 GB with
/// a larger page number) before it reached the truncation. The harness caps the output at
/// 1 MiB and fails when an invalid input pushed it there.
#[test]
fn merge_unbounded_output() {
    replay_merge("merge-unbounded-output.bin", Expect::Err);
}

#[test]
fn every_regression_has_a_test() {
    assert_every_regression_listed(Path::new(REGRESSIONS), REGRESSION_FILES);
}

/// Every decode seed is a valid file and passes every check of the decode target.
#[test]
fn decode_seeds_replay() {
    let seeds = files(&Path::new(SEEDS).join("ltx_decode"));
    assert!(!seeds.is_empty(), "no decode seeds in {SEEDS}/ltx_decode");
    for path in seeds {
        let outcome = harness::check_decode(&read(&path));
        let summary = outcome.detected.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Forcing the detected version is the same decode; every other version may refuse.
        let forced = harness::VERSIONS.iter().position(|&v| v == summary.version).expect("known version");
        assert_eq!(outcome.forced[forced].as_ref().ok(), Some(&summary), "{}", path.display());
    }
}

/// Every merge seed is a chain of contiguous files that merges, and survives a round trip
/// through the seed layout.
#[test]
fn merge_seeds_replay() {
    let seeds = files(&Path::new(SEEDS).join("ltx_merge"));
    assert!(!seeds.is_empty(), "no merge seeds in {SEEDS}/ltx_merge");
    for path in seeds {
        let bytes = read(&path);
        let (inputs, format) = harness::split(&bytes);
        assert!(inputs.len() >= 2, "{}: a merge seed should merge several files", path.display());
        assert_eq!(harness::join(&inputs, format).as_deref(), Some(&bytes[..]), "{}", path.display());
        if let Err(e) = harness::check_merge(&bytes) {
            panic!("{}: {e}", path.display());
        }
    }
}
