//! Reading an upload body: capped in size, timed out when the client stalls, held in
//! memory while small and spooled to a file under the vault once large, so that memory per
//! upload stays bounded whatever the body size. A body that does not arrive whole (the
//! client disconnects, the chunked encoding breaks, a timeout) yields an error and leaves
//! nothing behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;

use super::api::ApiError;
use crate::ingest::Payload;
use crate::io::MappedFile;

/// Bodies up to this size stay in memory.
pub const SPILL_BYTES: usize = 8 << 20;

/// Reads `body` whole.
pub async fn read(
    body: Body,
    max_bytes: u64,
    idle: Duration,
    total: Duration,
    spool_dir: &Path,
) -> Result<Payload, ApiError> {
    match tokio::time::timeout(total, read_inner(body, max_bytes, idle, spool_dir)).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::timeout(format!("the request body did not arrive within {} s", total.as_secs()))),
    }
}

/// Reads `body` whole into a file under `spool_dir` (for bodies the engine takes as a
/// file); the file goes when the returned guard is dropped.
pub async fn read_to_file(
    body: Body,
    max_bytes: u64,
    idle: Duration,
    total: Duration,
    spool_dir: &Path,
) -> Result<SpooledFile, ApiError> {
    let read = async {
        let mut spool = Spool::create(spool_dir)?;
        let mut body = body;
        let mut received = 0u64;
        while let Some(data) = next_data(&mut body, idle).await? {
            received += data.len() as u64;
            if received > max_bytes {
                return Err(ApiError::too_large(received, max_bytes));
            }
            spool.write(&data)?;
        }
        Ok(SpooledFile(spool))
    };
    match tokio::time::timeout(total, read).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::timeout(format!("the request body did not arrive within {} s", total.as_secs()))),
    }
}

/// A request body on disk, removed when dropped.
pub struct SpooledFile(Spool);

impl SpooledFile {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0.path
    }
}

/// The next piece of data of `body`, `None` at its end.
async fn next_data(body: &mut Body, idle: Duration) -> Result<Option<axum::body::Bytes>, ApiError> {
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(ApiError::timeout(format!("the request body stalled for {} s", idle.as_secs())));
            }
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(ApiError::bad_body(format!("the request body ended early: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
}

async fn read_inner(mut body: Body, max_bytes: u64, idle: Duration, spool_dir: &Path) -> Result<Payload, ApiError> {
    let mut memory: Vec<u8> = Vec::new();
    let mut spool: Option<Spool> = None;
    let mut received = 0u64;
    while let Some(data) = next_data(&mut body, idle).await? {
        received += data.len() as u64;
        if received > max_bytes {
            return Err(ApiError::too_large(received, max_bytes));
        }
        match &mut spool {
            Some(spool) => spool.write(&data)?,
            None if memory.len() + data.len() > SPILL_BYTES => {
                let mut file = Spool::create(spool_dir)?;
                file.write(&memory)?;
                file.write(&data)?;
                memory = Vec::new();
                spool = Some(file);
            }
            None => memory.extend_from_slice(&data),
        }
    }
    match spool {
        Some(spool) => spool.into_payload(),
        None => Ok(Payload::from(memory)),
    }
}

/// A spooled body: a file in the vault's scratch directory, removed when dropped (the
/// upload failed) or once mapped (the map keeps the bytes until the payload goes).
struct Spool {
    file: std::fs::File,
    path: PathBuf,
}

impl Spool {
    fn create(dir: &Path) -> Result<Spool, ApiError> {
        crate::io::make_private_dir(dir).map_err(ApiError::from)?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("upload-{}-{n}", std::process::id()));
        let file = crate::io::private_file(&path).map_err(ApiError::from)?;
        Ok(Spool { file, path })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), ApiError> {
        // Page-cache writes: quick enough not to matter on the async worker; the vault
        // copies the bytes into its log (and syncs that) on the blocking pool.
        self.file
            .write_all(data)
            .map_err(|e| ApiError::from(crate::Error::io(format!("write {}", self.path.display()), e)))
    }

    fn into_payload(self) -> Result<Payload, ApiError> {
        let map = MappedFile::open(&self.path).map_err(ApiError::from)?;
        Ok(Payload::new(map))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
