//! `ltxvault serve` in-process on a loopback port, over a vault the test opened (and may
//! keep a handle on, to compact or run retention between requests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ltxvault::Vault;
use ltxvault::server::{AuthMode, ClusterIdPolicy, Limits, MetricsAccess};

/// A running server; stopped on drop. The vault is closed when its last `Arc` goes.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Serves `vault` on 127.0.0.1 (a free port) until the returned server is dropped,
/// `/metrics` open to all.
pub fn serve(vault: Arc<Vault>, auth: AuthMode, ids: ClusterIdPolicy, limits: Limits) -> TestServer {
    serve_with(vault, auth, ids, MetricsAccess::Open, limits)
}

/// [`serve`] with `access` deciding who may read `/metrics`.
pub fn serve_with(
    vault: Arc<Vault>,
    auth: AuthMode,
    ids: ClusterIdPolicy,
    access: MetricsAccess,
    limits: Limits,
) -> TestServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        runtime
            .block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                ltxvault::server::run(listener, vault, auth, ids, access, limits, async {
                    let _ = stopped.await;
                })
                .await
            })
            .expect("serve");
        runtime.shutdown_timeout(Duration::from_secs(5));
    });
    TestServer { addr, stop: Some(stop), thread: Some(thread) }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
