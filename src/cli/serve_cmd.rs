//! `ltxvault serve`: the LiteFS backup protocol over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::vault_cmd::ConfigArgs;
use crate::config::{AuthChoice, ClusterIdChoice, MetricsAccess, ServerSettings};
use crate::error::{Error, Result};
use crate::server::{AuthMode, ClusterIdPolicy};
use crate::vault::Vault;

/// `ltxvault serve`.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// The vault directory (created if missing).
    #[arg(long)]
    pub data: PathBuf,
    /// Address to listen on [default: 127.0.0.1:2200, or server.listen].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// How requests are authenticated: `tokens` (from `ltxvault token create`), or `none`,
    /// which takes the cluster from an `Authorization: cluster NAME` header (trusted
    /// networks only) [default: tokens, or server.auth].
    #[arg(long, value_enum)]
    pub auth: Option<AuthChoice>,
    /// `bind` ties each cluster to the LiteFS cluster id of its first write; `off` ignores
    /// the header [default: bind, or server.cluster_id].
    #[arg(long, value_enum)]
    pub cluster_id: Option<ClusterIdChoice>,
    /// Who may read GET /metrics: `open` (anyone who reaches the listen address) or
    /// `admin` (an admin token) [default: open, or server.metrics].
    #[arg(long, value_enum)]
    pub metrics: Option<MetricsAccess>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub(crate) fn serve(args: ServeArgs) -> Result<ExitCode> {
    let mut config = args.config.vault_config()?;
    config.background_compaction = true;
    let mut settings = crate::config::load_server(args.config.config.as_deref(), ServerSettings::default())?;
    settings.listen = args.listen.unwrap_or(settings.listen);
    settings.auth = args.auth.unwrap_or(settings.auth);
    settings.cluster_id = args.cluster_id.unwrap_or(settings.cluster_id);
    settings.metrics = args.metrics.unwrap_or(settings.metrics);
    if settings.metrics == MetricsAccess::Admin && settings.auth == AuthChoice::None {
        return Err(Error::Invalid(
            "--metrics admin (server.metrics = \"admin\") needs --auth tokens: without tokens there is no admin".into(),
        ));
    }
    let vault = Arc::new(Vault::open(&args.data, config)?);
    let auth = match settings.auth {
        AuthChoice::None => {
            tracing::warn!("--auth none: any client can read and write any cluster; use only on a trusted network");
            AuthMode::None
        }
        AuthChoice::Tokens => {
            let tokens = crate::auth::TokenStore::open(&args.data)?;
            if tokens.list()?.is_empty() {
                tracing::warn!(
                    "no tokens yet: every request will be refused until one is made with `ltxvault token create --data {} --cluster NAME`",
                    args.data.display()
                );
            }
            AuthMode::Tokens(Arc::new(tokens))
        }
    };
    let cluster_ids = match settings.cluster_id {
        ClusterIdChoice::Bind => ClusterIdPolicy::Bind(Arc::new(crate::auth::ClusterIds::open(&args.data)?)),
        ClusterIdChoice::Off => ClusterIdPolicy::Off,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ltxvault-http")
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| Error::io(format!("listen on {}", settings.listen), e))?;
        let local = listener.local_addr().map_err(|e| Error::io("read the listening address", e))?;
        // Commands refused the vault's lock name this endpoint (see `Error::Locked`).
        if let Err(e) = vault.advertise_endpoint(&local_endpoint(local)) {
            tracing::warn!(error = %e, "could not record the endpoint in the vault's LOCK file");
        }
        tracing::info!(
            listen = %local,
            data = %args.data.display(),
            io = vault.io_engine(),
            metrics = settings.metrics.name(),
            "serving on http://{local}"
        );
        crate::server::run(
            listener,
            vault.clone(),
            auth,
            cluster_ids,
            settings.metrics,
            settings.limits.clone(),
            crate::server::signals(),
        )
        .await
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    let vault =
        Arc::try_unwrap(vault).map_err(|_| Error::Invalid("requests still hold the vault at shutdown".into()))?;
    vault.close()?;
    served?;
    tracing::info!("stopped; everything acknowledged is on disk");
    Ok(ExitCode::SUCCESS)
}

/// The URL a client on this machine reaches a server listening on `addr` at: a wildcard
/// address (0.0.0.0, [::]) is reached on the loopback address.
fn local_endpoint(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::local_endpoint;

    #[test]
    fn wildcard_addresses_are_reached_on_loopback() {
        assert_eq!(local_endpoint("0.0.0.0:2200".parse().unwrap()), "http://127.0.0.1:2200");
        assert_eq!(local_endpoint("[::]:2200".parse().unwrap()), "http://[::1]:2200");
        assert_eq!(local_endpoint("10.1.2.3:80".parse().unwrap()), "http://10.1.2.3:80");
    }
}
