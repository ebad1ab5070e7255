//! ltxvault: a self-hosted point-in-time backup vault for SQLite databases replicated as
//! LTX files. See `docs/DESIGN.md` for the architecture.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod auth;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod compact;
pub mod config;
pub mod error;
pub mod export;
pub mod image;
pub mod import;
pub mod ingest;
pub mod io;
pub mod ltx;
pub mod metrics;
pub mod names;
pub mod quota;
pub mod report;
pub mod restore;
pub mod retention;
pub(crate) mod sealed;
pub mod segment;
pub mod server;
pub mod snapshot;
pub mod vault;

pub use error::{Error, Result};
pub use vault::{Ack, Vault, VaultConfig};
