//! ltxvault: a self-hosted point-in-time backup vault for SQLite databases replicated as
//! LTX files. See `docs/DESIGN.md` for the architecture.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod cli;
pub mod error;
pub mod io;
pub mod ltx;

pub use error::{Error, Result};
