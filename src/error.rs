//! The crate's error type. Library code returns [`Error`]; the binary turns it into a one-line
//! message and an exit code.

use std::io;
use std::path::PathBuf;

use crate::catalog::Position;
use crate::ltx::{Checksum, LtxError};

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

    /// The caller asked for something that does not make sense (bad argument).
    #[error("{0}")]
    Invalid(String),

    /// A cluster or database name that is not allowed.
    #[error("{0}")]
    InvalidName(String),

    /// An upload does not continue the stored history. Carries the stored position, which
    /// the LiteFS protocol returns with EPOSMISMATCH.
    #[error("position mismatch: {reason} (stored position {position})")]
    PositionMismatch {
        /// The stored position (zero for a database the vault does not have).
        position: Position,
        /// Why the upload does not fit.
        reason: String,
    },

    /// An upload's page size differs from the stored database's.
    #[error("page size {got} does not match the stored database's {expected}")]
    PageSizeMismatch {
        /// The database's page size.
        expected: u32,
        /// The upload's.
        got: u32,
    },

    /// An upload's post-apply checksum is not the checksum of the database it produces.
    #[error("post-apply checksum {claimed} is wrong: applying the upload gives {computed}")]
    BadChecksum {
        /// What the file says.
        claimed: Checksum,
        /// What the vault computed.
        computed: Checksum,
    },

    /// An upload larger than the configured limit.
    #[error("upload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes offered.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// An upload would take its cluster past its quota (see `quota`). Nothing was stored.
    /// (HTTP: 507 `EQUOTA`.)
    #[error(
        "upload refused: cluster \"{cluster}\" stores {} of its {} quota ({used} of {quota} bytes) and this upload needs {needed} bytes more; \
         free space (delete databases, shorten retention) or raise quotas.default / quotas.clusters.{cluster}",
        crate::quota::human_bytes(*used),
        crate::quota::human_bytes(*quota)
    )]
    QuotaExceeded {
        /// The cluster.
        cluster: String,
        /// Bytes it stores.
        used: u64,
        /// Its quota.
        quota: u64,
        /// Bytes the upload would add.
        needed: u64,
    },

    /// The ingest queue stayed full for the configured wait; try again.
    #[error("vault busy: the ingest queue stayed full for {0} ms; retry later")]
    Busy(u64),

    /// The file system is full (`ENOSPC`) or the quota is used up (`EDQUOT`): what was
    /// being done, with the path. [`Error::io`] makes this of every such I/O error, so a
    /// full disk is told apart from other I/O failures wherever it strikes. Where the vault
    /// refuses cleanly (a new log segment, a page-checksum map, a level file) nothing was
    /// written and the request can be retried once space is freed. (HTTP: 507 `ENOSPC`.)
    #[error("the vault's disk is full: {0}; free space on it (retention deletes expired history) and retry")]
    NoSpace(String),

    /// A write failed earlier; the vault refuses writes until it is reopened.
    #[error("vault is poisoned after a failed write ({0}); reopen it to recover")]
    Poisoned(String),

    /// Another process holds the vault.
    #[error("{}", locked_message(dir, holder, endpoint.as_deref()))]
    Locked {
        /// The vault directory.
        dir: PathBuf,
        /// What the lock file says about its holder (`process 12345 (ltxvault serve)`).
        holder: String,
        /// Where the holder serves the vault, if it is a server.
        endpoint: Option<String>,
    },

    /// No such database.
    #[error("no database \"{db}\" in cluster \"{cluster}\"")]
    NotFound {
        /// Cluster name.
        cluster: String,
        /// Database name.
        db: String,
    },

    /// A restore target the database has no restore point for: a TXID after its current
    /// one, inside a stored run or before its retained history, or a timestamp before its
    /// oldest point. The message says which and gives the restorable window. (HTTP: 404
    /// `ENOTXID`.)
    #[error("{0}")]
    NoSuchPoint(String),

    /// An uploaded database file whose header the vault cannot take: not a SQLite file, a
    /// page size SQLite does not allow, a length that is not whole pages. (HTTP: 422
    /// `EBADHEADER`, like [`Error::PageSizeMismatch`].)
    #[error("{0}")]
    BadHeader(String),

    /// The destination of a clone already holds a database. (HTTP: 409.)
    #[error("database \"{db}\" already exists in cluster \"{cluster}\"; delete it first or clone to another name")]
    AlreadyExists {
        /// Cluster name.
        cluster: String,
        /// Database name.
        db: String,
    },

    /// Stored data failed a check: which file, where, and what was wrong.
    #[error("corrupt data in {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged structure.
        offset: u64,
        /// What check failed.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with a description of the operation; `ENOSPC` and `EDQUOT`
    /// become [`Error::NoSpace`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        if is_no_space(&source) {
            return Error::NoSpace(format!("{}: {source}", context.into()));
        }
        Error::Io { context: context.into(), source }
    }

    /// Whether this error says the file system is out of space: [`Error::NoSpace`], or an
    /// OS error `ENOSPC` (or `EDQUOT`, a user quota used up), also inside [`Error::InFile`].
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::NoSpace { .. } => true,
            Error::Io { source, .. } => matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)),
            Error::InFile { source, .. } => source.is_no_space(),
            _ => false,
        }
    }

    /// Puts a file path in front of this error.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Error {
        Error::InFile { path: path.into(), source: Box::new(self) }
    }
}

/// Whether an I/O error says the file system is full or the quota used up.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// The message of [`Error::Locked`]: who holds the vault and, when that is a server, how
/// to go through it instead.
fn locked_message(dir: &std::path::Path, holder: &str, endpoint: Option<&str>) -> String {
    let dir = dir.display();
    match endpoint {
        Some(endpoint) => format!(
            "vault {dir} is in use by {holder}, which serves it at {endpoint}; only one process may open a vault. \
             Ask the server instead: replace --data {dir} with --endpoint {endpoint} --token T \
             (or stop the server first)"
        ),
        None => {
            format!("vault {dir} is in use by {holder}; only one process may open a vault: stop that process first")
        }
    }
}

/// Result of library operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
