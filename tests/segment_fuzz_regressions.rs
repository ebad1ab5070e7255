//! Replays the `segment_record` fuzz seeds and every saved finding of that target through
//! the checks the target runs (`fuzz/src/segment.rs`, included as a module rather than
//! copied), on stable and without cargo-fuzz, so CI catches a segment decoder or recovery
//! regression that fuzzing once found.

#[path = "../fuzz/src/segment.rs"]
mod harness;

use std::fs;
use std::path::{Path, PathBuf};

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/segment_record");
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fuzz-regressions/segment");

/// Every saved finding, by file name; `every_regression_has_a_test` keeps this complete.
const REGRESSION_FILES: &[&str] = &[];

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("directory entry").path()).filter(|p| p.is_file()).collect();
    paths.sort();
    paths
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_regression_has_a_test() {
    let on_disk: Vec<String> = files(Path::new(REGRESSIONS))
        .iter()
        .map(|p| p.file_name().expect("file name").to_string_lossy().into_owned())
        .collect();
    let mut listed: Vec<&str> = REGRESSION_FILES.to_vec();
    listed.sort_unstable();
    assert_eq!(on_disk, listed, "tests/fixtures/fuzz-regressions/segment and REGRESSION_FILES disagree");
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
