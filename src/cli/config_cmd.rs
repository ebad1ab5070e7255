//! `ltxvault config example`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::config;
use crate::error::Result;
use crate::vault::VaultConfig;

/// What to do with configuration files.
#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// Print a complete configuration file: every key at its default, each explained.
    Example,
}

pub(crate) fn run(command: ConfigCommand) -> Result<ExitCode> {
    match command {
        ConfigCommand::Example => {
            print!("{}", config::example(&VaultConfig::default(), &config::ServerSettings::default()))
        }
    }
    Ok(ExitCode::SUCCESS)
}
