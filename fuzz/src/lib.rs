//! The checks behind every fuzz target, one module per target family. The targets in
//! `fuzz_targets/` only call into these; the regression tests of the main crate
//! (`tests/*_fuzz_regressions.rs`) include the same files with `#[path]` and replay the
//! committed seeds and every saved finding through them on stable Rust.

pub mod http;
pub mod ltx;
pub mod segment;

pub use ltx::*;
