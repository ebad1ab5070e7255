//! The `ltxvault` command line.

mod auth_cmd;
mod bench_cmd;
mod config_cmd;
mod ltx_cmd;
mod ops_cmd;
mod remote;
mod serve_cmd;
mod vault_cmd;
mod verify_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// ltxvault: a point-in-time backup vault for SQLite databases replicated as LTX files.
#[derive(Parser, Debug)]
#[command(name = "ltxvault", version, about, long_about = None)]
pub struct Cli {
    /// Format of the log on stderr: `text` for people, `json` (one object per line) for log
    /// collectors. What is logged is set by RUST_LOG (default: `info` for `serve`, `warn`
    /// for the other commands).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The values of `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields.
    Json,
}

/// Sends `tracing` events to stderr in `format`, filtered by RUST_LOG, or by
/// `default_filter` when RUST_LOG is unset or invalid. No event carries a token: requests
/// are logged by method, route, status and time, never by their headers.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    // `try_init`: a second call (tests running commands in one process) keeps the first.
    let _ = match format {
        // Colours for a terminal only: a log file or journald would keep the escapes.
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Work with LTX files directly: inspect, verify, apply.
    Ltx {
        #[command(subcommand)]
        command: ltx_cmd::LtxCommand,
    },
    /// Serve the LiteFS backup protocol over HTTP (point LITEFS_CLOUD_ENDPOINT here).
    Serve(serve_cmd::ServeArgs),
    /// Restore a database to a point in time as a plain SQLite file.
    Restore(vault_cmd::RestoreArgs),
    /// Show a database's position, HWM, size, and per level its restorable range, bytes on
    /// disk and retention.
    Info {
        #[command(flatten)]
        db: vault_cmd::DbArgs,
        #[command(flatten)]
        config: vault_cmd::ConfigArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check every stored byte, then restore each database's latest point and a random
    /// point of each level and check them with SQLite; exit 0 only if all is well.
    Verify(verify_cmd::VerifyArgs),
    /// Write a database at a point in time as a plain SQLite file or an LTX snapshot.
    Export(vault_cmd::ExportArgs),
    /// List databases with their position, size, last upload and restorable window.
    Ls(vault_cmd::LsArgs),
    /// Import a Litestream 0.5 file replica (its ltx/<level>/ tree), keeping every restore
    /// point it holds.
    ImportLitestream {
        #[command(flatten)]
        db: vault_cmd::DbArgs,
        #[command(flatten)]
        config: vault_cmd::ConfigArgs,
        /// The replica directory (the one holding ltx/).
        replica: std::path::PathBuf,
    },
    /// Clone a database, or every database of a cluster, at a point in time (the latest by
    /// default) into a new database, in the same or another cluster.
    Clone(ops_cmd::CloneArgs),
    /// Delete a database and its whole history, for good (asks for its name on a terminal,
    /// or takes --yes).
    Delete(ops_cmd::DeleteArgs),
    /// Write a database's history as a Litestream 0.5 file replica (ltx/<level>/, v3 files)
    /// that `litestream restore` reads.
    ExportLitestream(ops_cmd::ExportLitestreamArgs),
    /// The configuration file.
    Config {
        #[command(subcommand)]
        command: config_cmd::ConfigCommand,
    },
    /// API tokens for `serve`: create, list, revoke (works while `serve` runs).
    Token {
        #[command(subcommand)]
        command: auth_cmd::TokenCommand,
    },
    /// Per-cluster settings kept by the vault: reset the bound LiteFS cluster id.
    Cluster {
        #[command(subcommand)]
        command: auth_cmd::ClusterCommand,
    },
    /// Measure the vault on this machine.
    Bench {
        #[command(subcommand)]
        command: bench_cmd::BenchCommand,
    },
}

/// Parses the command line, runs the command and maps the outcome to an exit code. Errors
/// print as one line on stderr.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // `serve` is a long-running service whose operators want to see it work; the other
    // commands print their results and log only what went wrong.
    let default_filter = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    init_logging(cli.log_format, default_filter);
    let log_format = cli.log_format;
    let result = match cli.command {
        Command::Ltx { command } => ltx_cmd::run(command),
        Command::Bench { command } => bench_cmd::run(command),
        Command::Serve(args) => serve_cmd::serve(args),
        Command::Restore(args) => vault_cmd::restore(args),
        Command::Info { db, config, json } => vault_cmd::info(db, config, json),
        Command::Ls(args) => vault_cmd::ls(args),
        Command::Export(args) => vault_cmd::export(args),
        Command::Verify(args) => verify_cmd::verify(args),
        Command::ImportLitestream { db, config, replica } => vault_cmd::import(db, config, replica),
        Command::Clone(args) => ops_cmd::clone(args),
        Command::Delete(args) => ops_cmd::delete(args),
        Command::ExportLitestream(args) => ops_cmd::export_litestream(args),
        Command::Config { command } => config_cmd::run(command),
        Command::Token { command } => auth_cmd::token(command),
        Command::Cluster { command } => auth_cmd::cluster(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            match log_format {
                LogFormat::Text => eprintln!("ltxvault: {err}"),
                // A collector reading JSON lines gets the failure as one more event.
                LogFormat::Json => tracing::error!(error = %err, "command failed"),
            }
            ExitCode::FAILURE
        }
    }
}
