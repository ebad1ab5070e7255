//! Load generators for `ltxvault bench`: measured workloads against a real vault on the
//! local disk. The uploads are built before the clock starts, so only the vault is timed.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::io::engine::IoChoice;
use crate::ltx::{Checksum, Encoder, Format, Header, PageNo, TxId, database_checksum, page_checksum};
use crate::vault::{Vault, VaultConfig};

/// Parameters of an ingest run.
#[derive(Clone, Debug)]
pub struct IngestParams {
    /// I/O engine of the log writer.
    pub io: IoChoice,
    /// Concurrent writer threads.
    pub writers: usize,
    /// Databases (split evenly among writers).
    pub databases: usize,
    /// Pages each upload changes.
    pub pages_per_upload: u32,
    /// Page size.
    pub page_size: u32,
    /// Uploads in total (after each database's first snapshot).
    pub uploads: usize,
    /// Offered load in uploads/s over all writers; `None` = as fast as possible.
    pub rate: Option<f64>,
}

/// What an ingest run measured.
#[derive(Clone, Debug)]
pub struct IngestReport {
    /// The engine actually used.
    pub engine: String,
    /// Uploads acknowledged (snapshots excluded).
    pub uploads: usize,
    /// Wall time of the timed phase.
    pub elapsed: Duration,
    /// Uploads per second.
    pub uploads_per_sec: f64,
    /// Page data per second, MiB.
    pub mib_per_sec: f64,
    /// Ack latency percentiles, microseconds: p50, p90, p99, max.
    pub latency_us: [u64; 4],
}

/// A tiny xorshift generator: benchmark data needs to be cheap, not good.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The uploads of one database: a snapshot, then `count` incremental files each rewriting
/// `pages` random pages of a database of `db_pages` pages, with correct checksums.
fn build_chain(seed: u64, page_size: u32, db_pages: u32, pages: u32, count: usize) -> Result<Vec<Vec<u8>>> {
    let ps = page_size as usize;
    let mut rng = Rng(seed | 1);
    let mut image = vec![0u8; db_pages as usize * ps];
    for chunk in image.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
    }
    let mut checksum = database_checksum(&image, page_size);
    let mut out = Vec::with_capacity(count + 1);
    let header = Header { page_size, commit: db_pages, min_txid: TxId(1), max_txid: TxId(1), ..Header::default() };
    let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress: false })?;
    for (i, page) in image.chunks(ps).enumerate() {
        enc.write_page(PageNo(i as u32 + 1), page)?;
    }
    out.push(enc.finish(checksum)?.0);
    for n in 0..count {
        let txid = TxId(n as u64 + 2);
        let mut chosen: Vec<u32> = (0..pages).map(|_| (rng.next() % db_pages as u64) as u32 + 1).collect();
        chosen.sort_unstable();
        chosen.dedup();
        let pre = checksum;
        for &p in &chosen {
            let at = (p as usize - 1) * ps;
            checksum = checksum.toggle(page_checksum(PageNo(p), &image[at..at + ps]));
            let v = rng.next().to_le_bytes();
            for (i, b) in image[at..at + ps].iter_mut().enumerate() {
                *b = v[i % 8].wrapping_add(i as u8);
            }
            checksum = checksum.toggle(page_checksum(PageNo(p), &image[at..at + ps]));
        }
        let header = Header {
            page_size,
            commit: db_pages,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms: 1_700_000_000_000 + n as i64,
            pre_apply_checksum: pre,
            ..Header::default()
        };
        let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress: false })?;
        for &p in &chosen {
            let at = (p as usize - 1) * ps;
            enc.write_page(PageNo(p), &image[at..at + ps])?;
        }
        out.push(enc.finish(checksum)?.0);
    }
    debug_assert_ne!(checksum, Checksum::NONE);
    Ok(out)
}

/// Runs one ingest measurement in a fresh vault under `dir`.
pub fn ingest(dir: &Path, params: &IngestParams) -> Result<IngestReport> {
    let writers = params.writers.max(1);
    let databases = params.databases.max(writers);
    let per_db = params.uploads.div_ceil(databases);
    let db_pages = (params.pages_per_upload * 4).max(16);
    let chains: Vec<Vec<Vec<u8>>> = (0..databases)
        .map(|d| build_chain(d as u64 + 1, params.page_size, db_pages, params.pages_per_upload, per_db))
        .collect::<Result<_>>()?;
    let upload_bytes = (params.pages_per_upload * params.page_size) as f64;
    let config = VaultConfig { io: params.io, ..VaultConfig::default() };
    let vault = Vault::open(dir, config)?;
    let engine = vault.io_engine().to_string();
    // Snapshots first, untimed.
    for (d, chain) in chains.iter().enumerate() {
        vault.ingest("bench", &format!("db{d}"), chain[0].clone())?;
    }
    let interval = params.rate.map(|r| Duration::from_secs_f64(writers as f64 / r));
    let start = Instant::now();
    let results: Vec<Result<Vec<u64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let vault = &vault;
                let chains = &chains;
                s.spawn(move || -> Result<Vec<u64>> {
                    // Round robin over this writer's databases, each in TXID order.
                    let mine: Vec<(String, &Vec<Vec<u8>>)> =
                        (w..databases).step_by(writers).map(|d| (format!("db{d}"), &chains[d])).collect();
                    let order =
                        (1..=per_db).flat_map(|step| mine.iter().map(move |(name, chain)| (name, &chain[step])));
                    let mut latencies = Vec::with_capacity(per_db * mine.len());
                    let mut next_send = Instant::now();
                    for (name, upload) in order {
                        if let Some(interval) = interval {
                            let now = Instant::now();
                            if next_send > now {
                                std::thread::sleep(next_send - now);
                            }
                            next_send += interval;
                        }
                        let sent = Instant::now();
                        vault.ingest("bench", name, upload.clone())?;
                        latencies.push(sent.elapsed().as_micros() as u64);
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Ok(Vec::new()))).collect()
    });
    let elapsed = start.elapsed();
    let mut latencies = Vec::new();
    for r in results {
        latencies.extend(r?);
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let uploads = latencies.len();
    let secs = elapsed.as_secs_f64();
    vault.close()?;
    Ok(IngestReport {
        engine,
        uploads,
        elapsed,
        uploads_per_sec: uploads as f64 / secs,
        mib_per_sec: uploads as f64 * upload_bytes / secs / (1024.0 * 1024.0),
        latency_us: [pct(0.50), pct(0.90), pct(0.99), latencies.last().copied().unwrap_or(0)],
    })
}
