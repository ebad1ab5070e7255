//! `ltxvault serve`: the LiteFS backup protocol over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};

use super::vault_cmd::ConfigArgs;
use crate::error::{Error, Result};
use crate::server::{AuthMode, Limits};
use crate::vault::Vault;

/// `ltxvault serve`.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// The vault directory (created if missing).
    #[arg(long)]
    pub data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2200")]
    pub listen: SocketAddr,
    /// How requests are authenticated: `none` takes the cluster from an
    /// `Authorization: cluster NAME` header (trusted networks only).
    #[arg(long, value_enum, default_value_t = AuthSwitch::None)]
    pub auth: AuthSwitch,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// The values of `--auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum AuthSwitch {
    /// No authentication: the cluster is named by the request.
    None,
}

pub(crate) fn serve(args: ServeArgs) -> Result<ExitCode> {
    let mut config = args.config.vault_config()?;
    config.background_compaction = true;
    let auth = match args.auth {
        AuthSwitch::None => {
            tracing::warn!("--auth none: any client can read and write any cluster; use only on a trusted network");
            AuthMode::None
        }
    };
    let vault = Arc::new(Vault::open(&args.data, config)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ltxvault-http")
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Error::io(format!("listen on {}", args.listen), e))?;
        let local = listener.local_addr().map_err(|e| Error::io("read the listening address", e))?;
        tracing::info!(listen = %local, data = %args.data.display(), "serving");
        eprintln!("ltxvault: serving {} on http://{local}", args.data.display());
        crate::server::run(listener, vault.clone(), auth, Limits::default(), crate::server::signals()).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    let vault =
        Arc::try_unwrap(vault).map_err(|_| Error::Invalid("requests still hold the vault at shutdown".into()))?;
    vault.close()?;
    served?;
    eprintln!("ltxvault: stopped; everything acknowledged is on disk");
    Ok(ExitCode::SUCCESS)
}
