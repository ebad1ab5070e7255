//! The crate's error type. Library code returns [`Error`]; the binary turns it into a one-line
//! message and an exit code.

use std::io;
use std::path::PathBuf;

use crate::ltx::LtxError;

/// Everything that can go wrong in ltxvault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An LTX file broke a rule of the format.
    #[error(transparent)]
    Format(#[from] LtxError),

    /// An operating-system call failed. `context` says what was being done, and to which
    /// file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The error the OS returned.
        #[source]
        source: io::Error,
    },

    /// An error about one file, with its path in front.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file the error is about.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },

    /// The caller asked for something that does not make sense (bad argument, bad name).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Wraps an I/O error with a description of the operation.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }

    /// Puts a file path in front of this error.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Error {
        Error::InFile { path: path.into(), source: Box::new(self) }
    }
}

/// Result of library operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
