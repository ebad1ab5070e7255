//! `ltxvault serve`: the LiteFS backup protocol over HTTP in front of one vault.
//!
//! ```text
//!  TCP accept ─► connection limit ─► hyper http1 (header timeout) ─► axum router ─► handler
//!                                                                        │ failed-auth limit per source
//!                                                                        │ body: read with an idle and
//!                                                                        │ a total timeout, size-capped,
//!                                                                        │ spooled to disk past 8 MiB
//!                                                                        └─► spawn_blocking(Vault::…)
//! ```
//!
//! The engine is blocking (it waits for fsyncs); every call into it runs on tokio's blocking
//! pool, never on the async workers. Shutdown (SIGTERM/SIGINT, or the future given to
//! [`run`]) stops accepting, lets in-flight requests finish (bounded by a grace period),
//! then the caller closes the vault, which syncs.

pub mod api;
pub mod auth_limit;
mod body;
pub mod observe;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::vault::Vault;

pub use crate::auth::Scope;
pub use crate::config::MetricsAccess;

/// How the server decides which cluster a request belongs to.
#[derive(Clone)]
pub enum AuthMode {
    /// Tokens: the `Authorization` header is a token from `ltxvault token create`.
    Tokens(Arc<dyn Authenticate>),
    /// No authentication (trusted networks): `Authorization: cluster NAME` names the
    /// cluster, as the self-hosted LiteFS Cloud fork does.
    None,
}

/// Checks a presented `Authorization` value.
pub trait Authenticate: Send + Sync {
    /// The scope of a valid token, `None` otherwise. Must not reveal, by its timing, why a
    /// token was refused.
    fn authenticate(&self, presented: &str) -> Option<Scope>;
}

impl Authenticate for crate::auth::TokenStore {
    fn authenticate(&self, presented: &str) -> Option<Scope> {
        crate::auth::TokenStore::authenticate(self, presented)
    }
}

/// Whether the `Litefs-Cluster-Id` a cluster is first written with binds it.
#[derive(Clone)]
pub enum ClusterIdPolicy {
    /// The first write with the header binds the cluster to that id; requests with another
    /// id are refused (422) until an operator resets the binding.
    Bind(Arc<crate::auth::ClusterIds>),
    /// The header is ignored.
    Off,
}

/// Limits and timeouts of the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted.
    pub max_body_bytes: u64,
    /// Uploads handled at once; more wait for a slot up to `body_timeout`.
    pub max_concurrent_uploads: usize,
    /// Open connections at once; more are refused at accept.
    pub max_connections: usize,
    /// Time allowed to send the request line and headers.
    pub header_timeout: Duration,
    /// Longest pause between two pieces of a request body.
    pub body_idle_timeout: Duration,
    /// Longest time to receive a whole request body.
    pub body_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Failed authentications one source address may make per `auth_failure_window`
    /// before its requests are refused (429) for the rest of the window.
    pub auth_failure_limit: u32,
    /// The window of `auth_failure_limit`.
    pub auth_failure_window: Duration,
    /// Source addresses whose failures are remembered at once (the table's bound).
    pub auth_failure_sources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 30,
            max_concurrent_uploads: 64,
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
            auth_failure_limit: 10,
            auth_failure_window: Duration::from_secs(60),
            auth_failure_sources: 10_000,
        }
    }
}

/// Serves `vault` on `listener` until `shutdown` completes, then waits (up to the grace
/// period) for in-flight requests. The caller closes the vault afterwards. `metrics` says
/// who may read `GET /metrics` (`Admin` needs token authentication).
pub async fn run(
    listener: TcpListener,
    vault: Arc<Vault>,
    auth: AuthMode,
    cluster_ids: ClusterIdPolicy,
    metrics: MetricsAccess,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> crate::Result<()> {
    if metrics == MetricsAccess::Admin && matches!(auth, AuthMode::None) {
        return Err(crate::Error::Invalid(
            "server.metrics = \"admin\" needs server.auth = \"tokens\": without tokens there is no admin".into(),
        ));
    }
    let observe = observe::observe(vault.metrics(), metrics);
    let app = api::router(api::AppState::with_observe(vault, auth, cluster_ids, limits.clone(), observe.clone())?);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "too many connections; refusing one");
            drop(stream);
            continue;
        };
        let open = observe.http.connections.clone();
        open.inc();
        let _ = stream.set_nodelay(true);
        // The peer's address goes with every request, for the failed-auth limit.
        let with_peer = tower::ServiceExt::map_request(app.clone(), move |mut request: axum::http::Request<_>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            request
        });
        let service = hyper_util::service::TowerToHyperService::new(with_peer);
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            // A client that shuts its sending side after a request still gets the answer
            // (without this, hyper may drop the connection on the EOF before replying).
            .half_close(true)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    observe.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "requests still in flight after the grace period; stopping anyway");
        }
    }
    Ok(())
}

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
