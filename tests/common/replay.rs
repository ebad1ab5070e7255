//! Saved inputs for the fuzz-target replay tests: the files of a directory, in order, and
//! the check that every saved finding is named by a test.

use std::path::{Path, PathBuf};

/// The files (not directories) in `dir`, sorted; none when it does not exist.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("directory entry").path()).filter(|p| p.is_file()).collect();
    paths.sort();
    paths
}

/// The bytes of `path`.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files in `dir` are exactly `listed`: a finding saved without a test naming it, or a
/// test naming a finding that is not there, fails.
pub fn assert_every_regression_listed(dir: &Path, listed: &[&str]) {
    let on_disk: Vec<String> =
        files(dir).iter().map(|p| p.file_name().expect("file name").to_string_lossy().into_owned()).collect();
    let mut listed = listed.to_vec();
    listed.sort_unstable();
    assert_eq!(on_disk, listed, "{} and REGRESSION_FILES disagree", dir.display());
}
