//! `ltxvault bench serve`: simulated LiteFS primaries against a real `ltxvault serve` on
//! loopback.
//!
//! ```text
//!  this process (one tokio thread)                    child: ltxvault serve --auth none
//!  ────────────────────────────────────────────       ─────────────────────────────────
//!  primary i  (cluster c<i mod C>, db db<i div C>)
//!    start at i/N s  ── one keep-alive connection ──►  GET /pos
//!                                                     POST /db/tx  snapshot, TXID 1
//!    every 1 s tick  ──────────────────────────────►  POST /db/tx  TXID n+1 (LZ4, chunked)
//!    every 10 s, and after any failure  ───────────►  GET /pos     (check, or resync)
//!  at the end: GET /pos once per cluster, every database at its last acknowledged position;
//!  VmHWM and CPU time of the server read from /proc, then SIGTERM; it must exit 0.
//! ```
//!
//! Each primary behaves as LiteFS's backup loop does (protocol §4): uploads are sequential
//! on its one connection, at most one per 1 s tick; a tick missed because the previous
//! request was still running is skipped, not made up in a burst. Start times are spread
//! over the first second, so the offered load is smooth at N uploads/s.
//!
//! The client stays cheap (it shares the machine with the server): an upload is built when
//! its tick comes, from a per-primary list of page checksums (the database is never held
//! in memory). Each rewritten page is regenerated from a seed (half noise, half zeros, so
//! that LZ4 has something to do), its checksum is toggled into the database checksum, and
//! the LTX file is encoded with LZ4 as LiteFS does. The server runs in its own process so
//! that its peak RSS and CPU time are its own.
//!
//! Latency is measured from the first byte of the request written to the last byte of the
//! reply read. Errors are counted by kind (`POST 409 EPOSMISMATCH`, `POST timeout`, …);
//! every `200` must carry a 16-digit lower-case `Litefs-Hwm` equal to the upload's max
//! TXID, and every position the server reports must be the one this side last saw
//! acknowledged, or the mismatch is an error too.
//!
//! The report gives the incremental uploads' latency over the whole run, after the first
//! 5 s (the start is a burst: N new databases and N 16-page snapshots in one second), and
//! per second of the run, where a periodic stall shows up (every primary's full sync falls
//! in the same second of each 10, since they all started within one). It also gives the
//! server's peak RSS split at the end into anonymous and file-backed memory (mapped log
//! segments count as resident once compaction has read them), its CPU time, the client's,
//! and that of every other process, so that a run disturbed by a compiler says so.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Rng;
use super::http::{Connection, Reply, get_pos_request, post_tx_request};
use crate::catalog::Position;
use crate::error::{Error, Result};
use crate::ltx::{Checksum, Encoder, Format, Header, PageNo, TxId, page_checksum};

/// Time between two uploads of one primary (LiteFS's backup ticker).
const TICK: Duration = Duration::from_secs(1);
/// Time between two full syncs (`GET /pos`) of one primary (LiteFS's full-sync interval).
const POS_INTERVAL: Duration = Duration::from_secs(10);
/// A request that takes longer counts as failed (and its connection is dropped).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the server gets to stop after SIGTERM (it closes the vault, which syncs).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The start of a run that `tx_steady` leaves out: every primary's snapshot lands in the
/// first second (a burst of N new databases of 16 pages), and its backlog drains in the next.
const WARMUP: Duration = Duration::from_secs(5);
/// Pages of each simulated database, at least (more if one upload rewrites more).
const DB_PAGES_MIN: u32 = 16;

/// Parameters of a serve run.
#[derive(Clone, Debug)]
pub struct ServeParams {
    /// Simulated primaries, each writing one database.
    pub primaries: usize,
    /// Clusters the databases are spread over.
    pub clusters: usize,
    /// Length of the run: ticks at or after this many seconds are not taken.
    pub seconds: u64,
    /// Pages each upload rewrites.
    pub pages_per_upload: u32,
    /// Page size.
    pub page_size: u32,
}

/// Latency percentiles of one kind of request, microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Requests measured.
    pub count: usize,
    /// Median.
    pub p50_us: u32,
    /// 90th percentile.
    pub p90_us: u32,
    /// 99th percentile.
    pub p99_us: u32,
    /// 99.9th percentile.
    pub p999_us: u32,
    /// Slowest.
    pub max_us: u32,
}

impl Latency {
    fn of(mut samples: Vec<u32>) -> Latency {
        samples.sort_unstable();
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        Latency {
            count: samples.len(),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: samples.last().copied().unwrap_or(0),
        }
    }
}

/// What a serve run measured.
#[derive(Clone, Debug, Serialize)]
pub struct ServeReport {
    /// Primaries simulated.
    pub primaries: usize,
    /// Clusters.
    pub clusters: usize,
    /// Pages per upload.
    pub pages: u32,
    /// Page size.
    pub page_size: u32,
    /// Wall time from the first primary's start to the last reply, seconds.
    pub seconds: f64,
    /// `POST /db/tx` answered 2xx (snapshots included).
    pub uploads: usize,
    /// Of those per second.
    pub uploads_per_sec: f64,
    /// Ticks skipped because the primary's previous request was still running.
    pub ticks_missed: u64,
    /// Incremental uploads (`POST /db/tx` after the snapshot), every reply.
    pub tx: Latency,
    /// Snapshot uploads (the first `POST /db/tx` of each primary).
    pub snapshot: Latency,
    /// `GET /pos` during the run.
    pub pos: Latency,
    /// Incremental uploads that started after the warm-up (the first 5 s: the snapshot
    /// burst and its backlog); empty for runs of 5 s or less.
    pub tx_steady: Latency,
    /// Incremental uploads by the second of the run they started in.
    pub timeline: Vec<Latency>,
    /// Mean size of an incremental upload body, bytes.
    pub tx_bytes_mean: f64,
    /// Errors by kind; empty when the run was clean.
    pub errors: BTreeMap<String, u64>,
    /// Sum of `errors`.
    pub errors_total: u64,
    /// Databases whose final position the server reported exactly as last acknowledged.
    pub positions_checked: usize,
    /// Connections opened again after the server closed one or a request failed.
    pub reconnects: u64,
    /// Peak resident memory of the server process (VmHWM), KiB.
    pub server_peak_rss_kib: u64,
    /// Time from SIGTERM to the server's exit, seconds.
    pub server_stop_secs: f64,
    /// Resident memory of the server at the end of the run, KiB: anonymous (heap, stacks)
    /// and file-backed (mapped files, such as log segments and page-checksum maps).
    pub server_rss_anon_kib: u64,
    /// See `server_rss_anon_kib`.
    pub server_rss_file_kib: u64,
    /// Threads of the server at the end of the run.
    pub server_threads: u64,
    /// CPU time of the server during the run, seconds (user + system).
    pub server_cpu_secs: f64,
    /// CPU time of this process (the client) during the run, seconds.
    pub client_cpu_secs: f64,
    /// CPU time of every other process on the machine during the run, seconds: a run that
    /// shared the cores with a compiler says so here.
    pub other_cpu_secs: f64,
    /// The last lines of the server's log (stderr), when there were errors.
    pub server_log_tail: String,
}

/// Runs the bench: starts `exe serve` over a vault in `dir/vault`, plays the primaries,
/// checks the positions, stops the server. `dir` is created; the caller removes it.
pub fn serve(dir: &Path, exe: &Path, params: &ServeParams) -> Result<ServeReport> {
    if params.primaries == 0 || params.pages_per_upload == 0 || params.seconds == 0 {
        return Err(Error::Invalid("primaries, pages and seconds must be positive".into()));
    }
    let params = &ServeParams { clusters: params.clusters.clamp(1, params.primaries), ..params.clone() };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    // Both ends of every connection live on this machine: the client's sockets here, the
    // server's in the child, which inherits the limit.
    raise_open_files_limit(params.primaries as u64 + 256)?;
    let mut server = ServerProcess::start(exe, dir)?;
    let addr = server.addr;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    let (server_cpu_before, client_cpu_before, machine_before) =
        (server.cpu_secs()?, own_cpu_secs(), machine_cpu_secs());
    let (outcomes, elapsed) = runtime.block_on(play(addr, params.clone()));
    let (server_cpu_after, client_cpu_after, machine_after) = (server.cpu_secs()?, own_cpu_secs(), machine_cpu_secs());
    let (server_cpu_secs, client_cpu_secs) =
        (server_cpu_after - server_cpu_before, client_cpu_after - client_cpu_before);
    let other_cpu_secs = (machine_after - machine_before - server_cpu_secs - client_cpu_secs).max(0.0);
    let mut errors = BTreeMap::new();
    for o in &outcomes {
        for (kind, n) in &o.errors {
            *errors.entry(kind.clone()).or_insert(0) += n;
        }
    }
    let positions_checked = runtime.block_on(check_positions(addr, params.clusters, &outcomes, &mut errors));
    drop(runtime);

    let [server_peak_rss_kib, server_rss_anon_kib, server_rss_file_kib, server_threads] =
        server.status_fields(["VmHWM:", "RssAnon:", "RssFile:", "Threads:"])?;
    let stopping = Instant::now();
    let stopped = server.stop()?;
    let server_stop_secs = stopping.elapsed().as_secs_f64();
    match stopped {
        Some(status) if status.success() => {}
        Some(status) => *errors.entry(format!("server exit: {status}")).or_insert(0) += 1,
        None => *errors.entry("server did not stop within 60 s of SIGTERM".into()).or_insert(0) += 1,
    }
    let errors_total = errors.values().sum();
    let server_log_tail = if errors_total > 0 { log_tail(&server.log, 20) } else { String::new() };

    let uploads = outcomes.iter().map(|o| o.uploads).sum::<usize>();
    let tx_bytes: u64 = outcomes.iter().map(|o| o.tx_bytes).sum();
    let tx = Latency::of(outcomes.iter().flat_map(|o| o.tx_us.iter().copied()).collect());
    let mut seconds: Vec<Vec<u32>> = vec![Vec::new(); params.seconds as usize + 1];
    for o in &outcomes {
        for (&at_ms, &us) in o.tx_at_ms.iter().zip(&o.tx_us) {
            seconds[(at_ms as usize / 1000).min(params.seconds as usize)].push(us);
        }
    }
    let warmup_secs = WARMUP.as_secs() as usize;
    let tx_steady = Latency::of(seconds.iter().skip(warmup_secs).flatten().copied().collect());
    let timeline = seconds.into_iter().map(Latency::of).collect();
    Ok(ServeReport {
        primaries: params.primaries,
        clusters: params.clusters,
        pages: params.pages_per_upload,
        page_size: params.page_size,
        seconds: elapsed.as_secs_f64(),
        uploads,
        uploads_per_sec: uploads as f64 / elapsed.as_secs_f64(),
        ticks_missed: outcomes.iter().map(|o| o.ticks_missed).sum(),
        tx_bytes_mean: if tx.count == 0 { 0.0 } else { tx_bytes as f64 / tx.count as f64 },
        tx,
        tx_steady,
        timeline,
        snapshot: Latency::of(outcomes.iter().flat_map(|o| o.snapshot_us.iter().copied()).collect()),
        pos: Latency::of(outcomes.iter().flat_map(|o| o.pos_us.iter().copied()).collect()),
        errors,
        errors_total,
        positions_checked,
        reconnects: outcomes.iter().map(|o| o.reconnects).sum(),
        server_peak_rss_kib,
        server_rss_anon_kib,
        server_rss_file_kib,
        server_threads,
        server_stop_secs,
        server_cpu_secs,
        client_cpu_secs,
        other_cpu_secs,
        server_log_tail,
    })
}

/// Runs every primary to the end of the run; returns their outcomes and the wall time from
/// the start to the last reply.
async fn play(addr: SocketAddr, params: ServeParams) -> (Vec<Outcome>, Duration) {
    let n = params.primaries;
    let params = Arc::new(params);
    // A little slack, so that the first primaries do not start late while the others are
    // still being spawned.
    let t0 = tokio::time::Instant::now() + Duration::from_millis(50);
    let deadline = t0 + Duration::from_secs(params.seconds);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let start = t0 + TICK.mul_f64(i as f64 / n as f64);
            let primary = Primary::new(i, addr, params.clone(), t0);
            tokio::spawn(primary.run(start, deadline))
        })
        .collect();
    let mut outcomes = Vec::with_capacity(n);
    for (i, task) in tasks.into_iter().enumerate() {
        outcomes.push(task.await.unwrap_or_else(|e| {
            let mut outcome = Outcome::new(i % params.clusters, format!("db{}", i / params.clusters));
            outcome.error(format!("primary task failed: {e}"));
            outcome
        }));
    }
    (outcomes, t0.elapsed())
}

/// What one primary did.
struct Outcome {
    cluster: usize,
    db: String,
    /// The position last acknowledged (or confirmed by `GET /pos`); zero before the
    /// snapshot.
    acked: Position,
    uploads: usize,
    tx_us: Vec<u32>,
    /// When each of `tx_us` started, ms since the start of the run.
    tx_at_ms: Vec<u32>,
    snapshot_us: Vec<u32>,
    pos_us: Vec<u32>,
    tx_bytes: u64,
    ticks_missed: u64,
    reconnects: u64,
    errors: BTreeMap<String, u64>,
}

impl Outcome {
    fn new(cluster: usize, db: String) -> Outcome {
        Outcome {
            cluster,
            db,
            acked: Position::default(),
            uploads: 0,
            tx_us: Vec::new(),
            tx_at_ms: Vec::new(),
            snapshot_us: Vec::new(),
            pos_us: Vec::new(),
            tx_bytes: 0,
            ticks_missed: 0,
            reconnects: 0,
            errors: BTreeMap::new(),
        }
    }

    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }
}

/// A database as the primary knows it: its position and the checksum of every page.
#[derive(Clone)]
struct DbState {
    position: Position,
    /// `page_sums[i]` is the page checksum of page `i + 1`.
    page_sums: Vec<Checksum>,
}

/// One simulated LiteFS primary.
struct Primary {
    addr: SocketAddr,
    params: Arc<ServeParams>,
    authorization: String,
    db_pages: u32,
    rng: Rng,
    /// The database as last acknowledged; `None` before the snapshot.
    db: Option<DbState>,
    /// An upload whose outcome is unknown (failed request): the server may hold it.
    pending: Option<DbState>,
    connection: Option<Connection>,
    /// The start of the run.
    t0: tokio::time::Instant,
    page: Vec<u8>,
    out: Outcome,
}

/// How a request went wrong, as counted in the report.
type Failure = String;

impl Primary {
    fn new(index: usize, addr: SocketAddr, params: Arc<ServeParams>, t0: tokio::time::Instant) -> Primary {
        let cluster = index % params.clusters;
        let db_pages = params.pages_per_upload.max(DB_PAGES_MIN);
        Primary {
            addr,
            authorization: format!("cluster c{cluster}"),
            db_pages,
            rng: Rng((0x9e37_79b9_7f4a_7c15 ^ (index as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9)) | 1),
            db: None,
            pending: None,
            connection: None,
            t0,
            page: vec![0; params.page_size as usize],
            out: Outcome::new(cluster, format!("db{}", index / params.clusters)),
            params,
        }
    }

    async fn run(mut self, start: tokio::time::Instant, deadline: tokio::time::Instant) -> Outcome {
        let mut ticker = tokio::time::interval_at(start, TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let expected_ticks = (deadline.saturating_duration_since(start).as_secs_f64() / TICK.as_secs_f64()).ceil();
        let (mut ticks, mut last_pos) = (0u64, None::<tokio::time::Instant>);
        let mut resync = true;
        loop {
            let tick = tokio::select! {
                tick = ticker.tick() => tick,
                () = tokio::time::sleep_until(deadline) => break,
            };
            if tick >= deadline {
                break;
            }
            ticks += 1;
            if resync || last_pos.is_none_or(|at| tick.duration_since(at) >= POS_INTERVAL) {
                last_pos = Some(tick);
                match self.sync_position().await {
                    Ok(true) => resync = false,
                    // Failed: try again on the next tick, as LiteFS retries a session.
                    Ok(false) => {
                        resync = true;
                        continue;
                    }
                    // Diverged: this primary cannot go on (LiteFS would restore).
                    Err(()) => break,
                }
            }
            if !self.upload().await {
                resync = true;
            }
        }
        self.out.ticks_missed = (expected_ticks as u64).saturating_sub(ticks);
        self.out.acked = self.db.as_ref().map(|db| db.position).unwrap_or_default();
        self.out
    }

    /// Sends one request on the primary's connection (opening it if needed) and times it.
    async fn exchange(&mut self, request: &[u8]) -> std::result::Result<(Reply, u32), Failure> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => {
                let connection = Connection::connect(self.addr).await.map_err(|e| format!("connect: {}", e.kind()))?;
                if self.out.uploads + self.out.pos_us.len() > 0 {
                    self.out.reconnects += 1;
                }
                self.connection.insert(connection)
            }
        };
        let started = Instant::now();
        let reply = match tokio::time::timeout(REQUEST_TIMEOUT, connection.exchange(request)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                self.connection = None;
                return Err(format!("{}", e.kind()));
            }
            Err(_) => {
                self.connection = None;
                return Err(format!("timeout ({} s)", REQUEST_TIMEOUT.as_secs()));
            }
        };
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        if reply.close {
            self.connection = None;
        }
        Ok((reply, micros))
    }

    /// `GET /pos`: the server's position of this database must be the one last
    /// acknowledged, or that of an upload whose reply was lost (then adopted). `Ok(false)`
    /// when the request failed; `Err` when the positions diverged.
    async fn sync_position(&mut self) -> std::result::Result<bool, ()> {
        let request = get_pos_request(self.addr, &self.authorization);
        let reply = match self.exchange(&request).await {
            Ok((reply, micros)) => {
                self.out.pos_us.push(micros);
                reply
            }
            Err(e) => {
                self.out.error(format!("GET /pos {e}"));
                return Ok(false);
            }
        };
        if reply.status != 200 {
            self.out.error(format!("GET /pos {} {}", reply.status, error_code(&reply.body)));
            return Ok(false);
        }
        let server = match parse_positions(&reply.body) {
            Ok(map) => map.get(&self.out.db).copied().unwrap_or_default(),
            Err(e) => {
                self.out.error(format!("GET /pos: {e}"));
                return Ok(false);
            }
        };
        let acked = self.db.as_ref().map(|db| db.position).unwrap_or_default();
        if server == acked {
            self.pending = None;
            return Ok(true);
        }
        if let Some(pending) = self.pending.take()
            && pending.position == server
        {
            self.db = Some(pending);
            return Ok(true);
        }
        self.out.error("GET /pos: the position is not the one acknowledged (primary stopped)".into());
        Err(())
    }

    /// One `POST /db/tx`: the snapshot first, then the next transaction. Returns whether
    /// the upload was acknowledged.
    async fn upload(&mut self) -> bool {
        let (next, ltx) = match self.db.clone() {
            None => self.snapshot(),
            Some(db) => self.transaction(&db),
        };
        let (next, ltx) = match (next, ltx) {
            (next, Ok(ltx)) => (next, ltx),
            (_, Err(e)) => {
                self.out.error(format!("encode: {e}"));
                return false;
            }
        };
        let snapshot = self.db.is_none();
        let request = post_tx_request(self.addr, &self.authorization, &self.out.db, &ltx);
        let at_ms = self.t0.elapsed().as_millis() as u32;
        let (reply, micros) = match self.exchange(&request).await {
            Ok(pair) => pair,
            Err(e) => {
                self.out.error(format!("POST {e}"));
                self.pending = Some(next);
                return false;
            }
        };
        if snapshot {
            self.out.snapshot_us.push(micros);
        } else {
            self.out.tx_us.push(micros);
            self.out.tx_at_ms.push(at_ms);
            self.out.tx_bytes += ltx.len() as u64;
        }
        if !(200..300).contains(&reply.status) {
            self.out.error(format!("POST {} {}", reply.status, error_code(&reply.body)));
            // The protocol says a refused upload leaves the position; GET /pos checks.
            self.pending = Some(next);
            return false;
        }
        let expected_hwm = next.position.txid.to_string();
        if reply.hwm.as_deref() != Some(expected_hwm.as_str()) {
            self.out.error(format!("POST 200 with Litefs-Hwm {:?}, not the max TXID", reply.hwm));
        }
        self.out.uploads += 1;
        self.db = Some(next);
        true
    }

    /// Fills `self.page` with the new content of a page: noise then zeros.
    fn fill_page(&mut self) {
        let half = self.page.len() / 2;
        let mut rng = Rng(self.rng.next() | 1);
        for chunk in self.page[..half].chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
        }
        self.page[half..].fill(0);
    }

    /// The first upload: every page, TXID 1.
    fn snapshot(&mut self) -> (DbState, Result<Vec<u8>>) {
        let header = Header {
            page_size: self.params.page_size,
            commit: self.db_pages,
            min_txid: TxId(1),
            max_txid: TxId(1),
            timestamp_ms: now_ms(),
            ..Header::default()
        };
        let mut state = DbState {
            position: Position { txid: TxId(1), checksum: Checksum::EMPTY_DATABASE },
            page_sums: Vec::with_capacity(self.db_pages as usize),
        };
        let result = (|| {
            let capacity = (self.db_pages * self.params.page_size) as usize / 2 + 4096;
            let mut encoder = Encoder::new(Vec::with_capacity(capacity), &header, Format::V1 { compress: true })?;
            for pgno in (1..=self.db_pages).map(PageNo) {
                self.fill_page();
                let sum = page_checksum(pgno, &self.page);
                state.position.checksum = state.position.checksum.toggle(sum);
                state.page_sums.push(sum);
                encoder.write_page(pgno, &self.page)?;
            }
            Ok(encoder.finish(state.position.checksum)?.0)
        })();
        (state, result)
    }

    /// The next transaction: `pages_per_upload` distinct random pages rewritten, the
    /// post-apply checksum moved page by page.
    fn transaction(&mut self, db: &DbState) -> (DbState, Result<Vec<u8>>) {
        let mut chosen: Vec<u32> = if self.params.pages_per_upload >= self.db_pages {
            (1..=self.db_pages).collect()
        } else {
            let mut chosen = Vec::with_capacity(self.params.pages_per_upload as usize);
            while chosen.len() < self.params.pages_per_upload as usize {
                let pgno = (self.rng.next() % u64::from(self.db_pages)) as u32 + 1;
                if !chosen.contains(&pgno) {
                    chosen.push(pgno);
                }
            }
            chosen.sort_unstable();
            chosen
        };
        chosen.dedup();
        let txid = TxId(db.position.txid.0 + 1);
        let header = Header {
            page_size: self.params.page_size,
            commit: self.db_pages,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms: now_ms(),
            pre_apply_checksum: db.position.checksum,
            ..Header::default()
        };
        let mut next = db.clone();
        next.position.txid = txid;
        let result = (|| {
            let capacity = chosen.len() * self.params.page_size as usize / 2 + 4096;
            let mut encoder = Encoder::new(Vec::with_capacity(capacity), &header, Format::V1 { compress: true })?;
            for &pgno in &chosen {
                self.fill_page();
                let sum = page_checksum(PageNo(pgno), &self.page);
                let slot = &mut next.page_sums[pgno as usize - 1];
                next.position.checksum = next.position.checksum.toggle(*slot).toggle(sum);
                *slot = sum;
                encoder.write_page(PageNo(pgno), &self.page)?;
            }
            Ok(encoder.finish(next.position.checksum)?.0)
        })();
        (next, result)
    }
}

/// After the run: one `GET /pos` per cluster; every database must be listed at exactly the
/// position its primary last saw acknowledged, and no other database may be listed.
/// Returns how many matched; mismatches go into `errors`.
async fn check_positions(
    addr: SocketAddr,
    clusters: usize,
    outcomes: &[Outcome],
    errors: &mut BTreeMap<String, u64>,
) -> usize {
    let mut error = |kind: &str| *errors.entry(format!("final GET /pos: {kind}")).or_insert(0) += 1;
    let mut matched = 0;
    for cluster in 0..clusters {
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.cluster == cluster).collect();
        if mine.is_empty() {
            continue;
        }
        let request = get_pos_request(addr, &format!("cluster c{cluster}"));
        let reply = match Connection::connect(addr).await {
            Ok(mut connection) => tokio::time::timeout(REQUEST_TIMEOUT, connection.exchange(&request)).await,
            Err(e) => Ok(Err(e)),
        };
        let positions = match reply {
            Ok(Ok(reply)) if reply.status == 200 => match parse_positions(&reply.body) {
                Ok(map) => map,
                Err(_) => {
                    error("not a position map");
                    continue;
                }
            },
            Ok(Ok(reply)) => {
                error(&format!("status {}", reply.status));
                continue;
            }
            Ok(Err(e)) => {
                error(&format!("{}", e.kind()));
                continue;
            }
            Err(_) => {
                error("timeout");
                continue;
            }
        };
        for outcome in &mine {
            if positions.get(&outcome.db).copied().unwrap_or_default() == outcome.acked {
                matched += 1;
            } else {
                error("a position differs from the last acknowledged one");
            }
        }
        for db in positions.keys() {
            if !mine.iter().any(|o| &o.db == db) {
                error("a database no primary wrote");
            }
        }
    }
    matched
}

/// Parses a `GET /pos` body: database name to position.
fn parse_positions(body: &[u8]) -> std::result::Result<HashMap<String, Position>, String> {
    #[derive(serde::Deserialize)]
    struct Pos {
        #[serde(rename = "TXID")]
        txid: String,
        #[serde(rename = "PostApplyChecksum")]
        checksum: String,
    }
    let map: HashMap<String, Pos> = serde_json::from_slice(body).map_err(|e| format!("not a position map: {e}"))?;
    map.into_iter()
        .map(|(db, pos)| {
            let hex = |text: &str| {
                (text.len() == 16)
                    .then(|| u64::from_str_radix(text, 16).ok())
                    .flatten()
                    .ok_or_else(|| format!("position of {db} is not 16 hex digits"))
            };
            let position = Position { txid: TxId(hex(&pos.txid)?), checksum: Checksum(hex(&pos.checksum)?) };
            Ok((db, position))
        })
        .collect()
}

/// The `code` of a JSON error body, or `-` when there is none.
fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The child `ltxvault serve` process; killed if dropped while running.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `exe serve` on a free loopback port over `dir/vault`, logging to
    /// `dir/serve.log`, and waits until it accepts connections.
    fn start(exe: &Path, dir: &Path) -> Result<ServerProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("find a free loopback port", e))?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.join("serve.log");
        let log_file = std::fs::File::create(&log).map_err(|e| Error::io(format!("create {}", log.display()), e))?;
        let child = Command::new(exe)
            .args(["serve", "--auth", "none", "--data"])
            .arg(dir.join("vault"))
            .args(["--listen", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| Error::io(format!("run {} serve", exe.display()), e))?;
        let mut server = ServerProcess { child, addr, log };
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait().map_err(|e| Error::io("wait for the server", e))? {
                return Err(Error::Invalid(format!(
                    "the server exited ({status}) before listening: {}",
                    log_tail(&server.log, 10)
                )));
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::Invalid(format!(
                    "the server did not listen on {addr} within {} s",
                    START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn proc_file(&self, name: &str) -> Result<String> {
        let path = format!("/proc/{}/{name}", self.child.id());
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("read {path}"), e))
    }

    /// User + system CPU time so far, seconds.
    fn cpu_secs(&self) -> Result<f64> {
        let stat = self.proc_file("stat")?;
        // Fields after the command name (which may hold spaces) start with the state,
        // field 3; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok((ticks(11) + ticks(12)) as f64 / per_sec)
    }

    /// Numeric fields of `/proc/PID/status` (memory in KiB), 0 when missing.
    fn status_fields<const N: usize>(&self, names: [&str; N]) -> Result<[u64; N]> {
        let status = self.proc_file("status")?;
        Ok(names.map(|name| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        }))
    }

    /// SIGTERM, then waits; `None` if it did not exit in time (then it is killed).
    fn stop(&mut self) -> Result<Option<std::process::ExitStatus>> {
        // SAFETY: signalling our own child, which has not been reaped (no wait succeeded).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if let Some(status) = self.child.try_wait().map_err(|e| Error::io("wait for the server", e))? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(None)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `lines` lines of a log file.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// CPU time of this process so far, seconds.
fn own_cpu_secs() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid for writes for the duration of the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Busy CPU time of the whole machine so far (all cores), seconds; 0 if unknown.
fn machine_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next().and_then(|l| l.strip_prefix("cpu ")) else { return 0.0 };
    // user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    let ticks: Vec<u64> = cpu.split_whitespace().take(8).filter_map(|f| f.parse().ok()).collect();
    if ticks.len() < 8 {
        return 0.0;
    }
    let busy = ticks.iter().sum::<u64>() - ticks[3] - ticks[4];
    // SAFETY: sysconf has no preconditions.
    busy as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// Raises the soft limit of open files to at least `needed` (up to the hard limit).
fn raise_open_files_limit(needed: u64) -> Result<()> {
    // SAFETY: an all-zero rlimit is a valid value for getrlimit to fill.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is valid for writes for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(Error::io("read the open files limit", std::io::Error::last_os_error()));
    }
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max < needed {
        return Err(Error::Invalid(format!(
            "{needed} open files are needed but the hard limit is {}; raise it (ulimit -Hn)",
            limit.rlim_max
        )));
    }
    limit.rlim_cur = needed;
    // SAFETY: `limit` is a valid rlimit within the hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(Error::io("raise the open files limit", std::io::Error::last_os_error()));
    }
    Ok(())
}
