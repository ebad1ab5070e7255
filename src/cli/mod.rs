//! The `ltxvault` command line.

mod bench_cmd;
mod ltx_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ltxvault: a point-in-time backup vault for SQLite databases replicated as LTX files.
#[derive(Parser, Debug)]
#[command(name = "ltxvault", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Work with LTX files directly: inspect, verify, apply.
    Ltx {
        #[command(subcommand)]
        command: ltx_cmd::LtxCommand,
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
    let result = match cli.command {
        Command::Ltx { command } => ltx_cmd::run(command),
        Command::Bench { command } => bench_cmd::run(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ltxvault: {err}");
            ExitCode::FAILURE
        }
    }
}
