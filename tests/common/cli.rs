//! Running the `ltxvault` binary from a test and reading what it printed.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `ltxvault ARGS…` to completion.
pub fn ltxvault(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ltxvault")).args(args).output().expect("run ltxvault")
}

/// Asserts the command succeeded and returns its stdout.
pub fn succeeded(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

/// Asserts the command failed and returns its stderr.
pub fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got success; stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr.clone()).expect("utf-8")
}

/// A path as a command-line argument.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
