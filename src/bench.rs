//! Load generators for `ltxvault bench`: measured workloads against a real vault on the
//! local disk. The uploads are built before the clock starts, so only the vault is timed.
//! [`serve`] drives a real `ltxvault serve` process over HTTP instead.

pub mod http;
pub mod serve;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
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

/// Fills page `pgno` of `image` with new bytes and returns the database checksum moved
/// from the old page to the new one.
fn rewrite_page(image: &mut [u8], page_size: usize, pgno: u32, rng: &mut Rng, checksum: Checksum) -> Checksum {
    let page = &mut image[(pgno as usize - 1) * page_size..pgno as usize * page_size];
    let before = page_checksum(PageNo(pgno), page);
    let v = rng.next().to_le_bytes();
    for (i, b) in page.iter_mut().enumerate() {
        *b = v[i % 8].wrapping_add(i as u8);
    }
    checksum.toggle(before).toggle(page_checksum(PageNo(pgno), page))
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
            checksum = rewrite_page(&mut image, ps, p, &mut rng, checksum);
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

/// Parameters of a restore run.
#[derive(Clone, Debug)]
pub struct RestoreParams {
    /// Database size in MiB.
    pub db_mib: u64,
    /// Transactions after the first snapshot.
    pub transactions: usize,
    /// Pages each transaction rewrites.
    pub pages_per_tx: u32,
    /// Page size.
    pub page_size: u32,
    /// Time between two transactions, ms (1 s: 3,000 transactions are 50 minutes; 60 s:
    /// two days, so the history holds daily images).
    pub spacing_ms: i64,
}

/// One measured restore, against the floor.
#[derive(Clone, Debug)]
pub struct RestoreMeasure {
    /// What was restored.
    pub case: String,
    /// Wall time of the restore command (a child process), seconds.
    pub seconds: f64,
    /// Ratio to the floor (copying the result file and syncing it).
    pub ratio: f64,
    /// Peak resident memory of the restoring process, KiB.
    pub max_rss_kib: u64,
    /// Inputs the plan merged.
    pub inputs: usize,
}

/// Builds a history in a fresh vault under `dir` (snapshot, then transactions
/// `spacing_ms` apart, compacted), then times `ltxvault restore` (run as `exe`, a child process, so its
/// memory is its own) to the latest point and to the middle of the history, each against
/// copying the same result file with a sync. With a `litestream` binary on `PATH`, the
/// history is also exported as a Litestream replica and `litestream restore` is timed to
/// the same two points (rows "litestream …"), its result checked byte for byte against
/// ltxvault's.
pub fn restore(dir: &Path, exe: &Path, params: &RestoreParams) -> Result<(f64, Vec<RestoreMeasure>)> {
    use std::process::Command;
    let page_size = params.page_size;
    let db_pages = (params.db_mib * 1024 * 1024 / u64::from(page_size)) as u32;
    let clock = crate::clock::ManualClock::new(0);
    let config = VaultConfig { background_compaction: false, ..VaultConfig::default() };
    let vault_dir = dir.join("vault");
    let vault = Vault::open_with_clock(&vault_dir, config, clock.clone())?;
    let chain = build_chain(7, page_size, db_pages, params.pages_per_tx, 0)?;
    let start_ms = 1_800_000_000_000i64;
    vault.ingest("bench", "db", retime_snapshot(&chain[0], start_ms - 1000)?)?;
    // Transactions: rewrite random pages, `spacing_ms` apart.
    let ps = page_size as usize;
    let mut rng = Rng(0x9e37_79b9);
    let mut image = vec![0u8; db_pages as usize * ps];
    {
        let mut decoder = crate::ltx::Decoder::new(&chain[0])?;
        while let Some(page) = decoder.next_page()? {
            let at = (page.pgno.0 as usize - 1) * ps;
            image[at..at + ps].copy_from_slice(page.data);
        }
    }
    let mut checksum = database_checksum(&image, page_size);
    for n in 0..params.transactions {
        let txid = TxId(n as u64 + 2);
        let mut chosen: Vec<u32> =
            (0..params.pages_per_tx).map(|_| (rng.next() % u64::from(db_pages)) as u32 + 1).collect();
        chosen.sort_unstable();
        chosen.dedup();
        let pre = checksum;
        let header = Header {
            page_size,
            commit: db_pages,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms: start_ms + n as i64 * params.spacing_ms,
            pre_apply_checksum: pre,
            ..Header::default()
        };
        let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress: true })?;
        for &p in &chosen {
            checksum = rewrite_page(&mut image, ps, p, &mut rng, checksum);
            let at = (p as usize - 1) * ps;
            enc.write_page(PageNo(p), &image[at..at + ps])?;
        }
        vault.ingest("bench", "db", enc.finish(checksum)?.0)?;
    }
    let end_ms = start_ms + params.transactions as i64 * params.spacing_ms;
    clock.set_ms(end_ms + 2 * 3_600_000);
    vault.compact_now()?;
    let mid = (start_ms + end_ms) / 2;
    // The same history as a Litestream replica, for `litestream restore` to be timed too.
    let litestream = match crate::export::litestream_on_path() {
        Some(exe) => {
            let replica = dir.join("litestream-replica");
            let report = crate::export::export_litestream(&vault, "bench", "db", &replica)?;
            // What Litestream's plan reads: the snapshot, then the level-0 files after it.
            let runs = vault.runs("bench", "db");
            let after_snapshot = |until_ms: i64| {
                1 + runs.iter().filter(|r| r.max_txid > report.snapshot && r.timestamp_ms <= until_ms).count()
            };
            Some(Litestream { exe, replica, inputs: [after_snapshot(i64::MAX), after_snapshot(mid)] })
        }
        None => None,
    };
    vault.close()?;
    drop(image);

    let out = dir.join("restored.db");
    let copy = dir.join("copy.db");
    let mut results = Vec::new();
    let mut floor = 0.0;
    for (i, (case, args)) in
        [("latest", vec![]), ("mid-history timestamp", vec!["--timestamp".to_string(), mid.to_string()])]
            .into_iter()
            .enumerate()
    {
        // Each round restores, then copies the very same result file with a sync (the
        // floor); the medians of the rounds are compared, one noisy round does not decide.
        let (mut restores, mut copies) = (Vec::new(), Vec::new());
        let (mut inputs, mut max_rss_kib) = (0, 0);
        for _ in 0..RESTORE_ROUNDS {
            let _ = std::fs::remove_file(&out);
            let started = Instant::now();
            let mut child = Command::new(exe)
                .args(["restore", "--data"])
                .arg(&vault_dir)
                .args(["--cluster", "bench", "--db", "db", "--json", "-o"])
                .arg(&out)
                .args(&args)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| Error::io(format!("run {}", exe.display()), e))?;
            let stdout = child.stdout.take();
            let (status, rusage_kib) = wait_with_rusage(&mut child)?;
            restores.push(started.elapsed().as_secs_f64());
            let mut text = String::new();
            if let Some(mut stdout) = stdout {
                use std::io::Read;
                let _ = stdout.read_to_string(&mut text);
            }
            if !status {
                return Err(Error::Invalid(format!("restore ({case}) failed")));
            }
            let report = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
            inputs = report["inputs"].as_u64().unwrap_or(0);
            // The restore process reports its own high-water mark: the rusage of a child
            // also counts what it shared with this (large) process before its exec.
            max_rss_kib = max_rss_kib.max(report["peak_rss_kib"].as_u64().unwrap_or(rusage_kib));
            let _ = std::fs::remove_file(&copy);
            let started = Instant::now();
            std::fs::copy(&out, &copy).map_err(|e| Error::io("copy the restored file", e))?;
            std::fs::File::open(&copy).and_then(|f| f.sync_all()).map_err(|e| Error::io("sync the copy", e))?;
            copies.push(started.elapsed().as_secs_f64());
        }
        let (seconds, copy_seconds) = (median(&mut restores), median(&mut copies));
        if case == "latest" {
            floor = copy_seconds;
        }
        results.push(RestoreMeasure {
            case: case.to_string(),
            seconds,
            ratio: seconds / copy_seconds,
            max_rss_kib,
            inputs: inputs as usize,
        });
        if let Some(litestream) = &litestream {
            // The same point from the exported replica, against the same floor; the result
            // must be ltxvault's byte for byte.
            let target = (i == 1).then(|| crate::export::timestamp_flag(mid));
            let theirs = dir.join("litestream.db");
            let (seconds, max_rss_kib) = litestream.restore(target.as_deref(), &theirs)?;
            if !same_bytes(&theirs, &out)? {
                return Err(Error::Invalid(format!("litestream restore ({case}) differs from ltxvault's restore")));
            }
            let _ = std::fs::remove_file(&theirs);
            results.push(RestoreMeasure {
                case: format!("litestream {}", if i == 0 { "latest" } else { "mid-history" }),
                seconds,
                ratio: seconds / copy_seconds,
                max_rss_kib,
                inputs: litestream.inputs[i],
            });
        }
    }
    Ok((floor, results))
}

/// Rounds of each restore measurement; the median is reported.
const RESTORE_ROUNDS: usize = 5;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The snapshot `file` stamped with `timestamp_ms` (a history's first upload is as recent as
/// the rest of it).
fn retime_snapshot(file: &[u8], timestamp_ms: i64) -> Result<Vec<u8>> {
    let mut decoder = crate::ltx::Decoder::new(file)?;
    let header = Header { timestamp_ms, ..*decoder.header() };
    let mut enc = Encoder::new(Vec::new(), &header, Format::V1 { compress: false })?;
    while let Some(page) = decoder.next_page()? {
        enc.write_page(page.pgno, page.data)?;
    }
    let post_apply = decoder.trailer().map(|t| t.post_apply_checksum).unwrap_or_default();
    Ok(enc.finish(post_apply)?.0)
}

/// A `litestream` binary and the exported replica it restores from.
struct Litestream {
    exe: std::path::PathBuf,
    replica: std::path::PathBuf,
    /// Files its plan reads for the latest point and for the mid-history one.
    inputs: [usize; 2],
}

impl Litestream {
    /// Times `litestream restore` to `out`, to the latest point or to a `-timestamp`;
    /// returns the seconds and the peak RSS in KiB.
    fn restore(&self, timestamp: Option<&str>, out: &Path) -> Result<(f64, u64)> {
        use std::process::{Command, Stdio};
        let _ = std::fs::remove_file(out);
        let mut command = Command::new(&self.exe);
        command.arg("restore").arg("-o").arg(out);
        if let Some(timestamp) = timestamp {
            command.args(["-timestamp", timestamp]);
        }
        // Its log goes to a file, never to a pipe nobody reads while it runs.
        let log_path = out.with_extension("log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| Error::io(format!("create {}", log_path.display()), e))?;
        let log_err = log.try_clone().map_err(|e| Error::io(format!("open {}", log_path.display()), e))?;
        let started = Instant::now();
        let mut child = command
            .arg(format!("file://{}", self.replica.display()))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| Error::io(format!("run {}", self.exe.display()), e))?;
        let (status, max_rss_kib) = wait_sampling_rss(&mut child)?;
        let seconds = started.elapsed().as_secs_f64();
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let _ = std::fs::remove_file(&log_path);
        if !status {
            return Err(Error::Invalid(format!("litestream restore failed: {}", text.trim())));
        }
        Ok((seconds, max_rss_kib))
    }
}

/// Waits for a child and returns (success, its peak RSS in KiB), the peak read from the
/// child's own `VmHWM` every 2 ms while it runs. The rusage `wait4` gives would not do for
/// a program that cannot report its own: a child spawned from this (large) process
/// inherits this process's high-water mark across its exec.
fn wait_sampling_rss(child: &mut std::process::Child) -> Result<(bool, u64)> {
    let pid = child.id() as libc::pid_t;
    let status_path = format!("/proc/{pid}/status");
    let mut peak_kib = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        let mut status = 0;
        // SAFETY: `status` is valid for writes; the pid is our own unreaped child
        // (Child::wait is not called), and WNOHANG returns at once if it still runs.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc < 0 {
            return Err(Error::io("wait for the restore process", std::io::Error::last_os_error()));
        }
        if rc == pid {
            return Ok((libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, peak_kib));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether two files hold the same bytes (read in chunks: they can be large).
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| {
        std::fs::File::open(p)
            .map(|f| std::io::BufReader::with_capacity(1 << 20, f))
            .map_err(|e| Error::io(format!("open {}", p.display()), e))
    };
    let (mut a_file, mut b_file) = (open(a)?, open(b)?);
    let (mut a_buf, mut b_buf) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut a_file, &mut a_buf).map_err(|e| Error::io(format!("read {}", a.display()), e))?;
        let m = read_full(&mut b_file, &mut b_buf).map_err(|e| Error::io(format!("read {}", b.display()), e))?;
        if n != m || a_buf[..n] != b_buf[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the end of the input; returns the bytes read.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Waits for a child and returns (success, its peak RSS in KiB).
fn wait_with_rusage(child: &mut std::process::Child) -> Result<(bool, u64)> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child, whose
    // pid we hold and have not reaped (Child::wait is not called).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid for writes for the duration of the call.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc < 0 {
        return Err(Error::io("wait for the restore process", std::io::Error::last_os_error()));
    }
    Ok((libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, usage.ru_maxrss as u64))
}
