//! Watching the server from outside: `GET /metrics` (the vault's metrics and the server's
//! own, in the Prometheus text format), `GET /healthz` (the process serves) and
//! `GET /readyz` (the vault can take writes), and the middleware that counts and times
//! every request by route and status class and logs it at debug level.
//!
//! The per-request work is lock-free: the route is found in a fixed table, and the
//! counter and histogram of each (route, status class) are made at start-up and indexed,
//! never looked up in a map. The `Authorization` header is never logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

use super::api::{ApiError, AppState};
use super::{AuthMode, Scope};
use crate::config::MetricsAccess;
use crate::metrics::{Histogram, HistogramFamily, LATENCY_BUCKETS_US, Metrics};

/// The routes the server answers, as the `route` label names them; anything else is
/// `other`. Kept beside the router (`api::router`); a test checks each is routed.
pub const ROUTES: [&str; 14] = [
    "/pos",
    "/db/tx",
    "/db/snapshot",
    "/dbs",
    "/db/info",
    "/db/restore",
    "/db/restore/check",
    "/db/upload",
    "/db",
    "/db/clone",
    "/cluster/clone",
    "/metrics",
    "/healthz",
    "/readyz",
];

/// Status classes, as the `status` label names them.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `{route="...",status="2xx"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: &'static str,
}

/// `{route="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

/// The server's own metrics, registered with the vault's.
pub(super) struct HttpMetrics {
    /// Index `route * CLASSES.len() + class`; the last route is `other`.
    requests: Vec<Counter>,
    /// Index `route`.
    durations: Vec<Histogram>,
    /// Connections open now.
    pub connections: Gauge,
}

impl HttpMetrics {
    pub(super) fn new(metrics: &Metrics) -> HttpMetrics {
        let routes = || ROUTES.iter().copied().chain(std::iter::once("other"));
        let requests: Family<RequestLabels, Counter> = Family::default();
        let durations: HistogramFamily<RouteLabel> =
            Family::new_with_constructor(|| Histogram::seconds(LATENCY_BUCKETS_US));
        let connections = Gauge::default();
        let http = HttpMetrics {
            requests: routes()
                .flat_map(|route| CLASSES.iter().map(move |&status| RequestLabels { route, status }))
                .map(|labels| requests.get_or_create_owned(&labels))
                .collect(),
            durations: routes().map(|route| durations.get_or_create_owned(&RouteLabel { route })).collect(),
            connections: connections.clone(),
        };
        metrics.register("http_requests", "HTTP requests answered, by route and status class", None, requests);
        metrics.register(
            "http_request_duration",
            "Time from a request's head to its response's head, by route (a snapshot's body streams after)",
            Some(Unit::Seconds),
            durations,
        );
        metrics.register("http_connections", "HTTP connections open", None, connections);
        http
    }

    /// The index of `path`'s route; `ROUTES.len()` for `other`.
    fn route(path: &str) -> usize {
        ROUTES.iter().position(|r| *r == path).unwrap_or(ROUTES.len())
    }

    /// Counts one answered request of route index `route`.
    fn record(&self, route: usize, status: StatusCode, started: Instant) {
        let class = usize::from(status.as_u16() / 100).clamp(1, CLASSES.len()) - 1;
        self.requests[route * CLASSES.len() + class].inc();
        self.durations[route].observe_duration(started.elapsed());
    }
}

/// What the observing endpoints and the middleware share.
pub(super) struct Observe {
    pub http: Arc<HttpMetrics>,
    pub access: MetricsAccess,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub stopping: AtomicBool,
}

/// Counts, times and logs (debug level: method, route, status, time; never a header, and
/// not the query, which names databases) every request.
pub(super) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = HttpMetrics::route(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    state.observe.http.record(route, status, started);
    tracing::debug!(
        %method,
        route = ROUTES.get(route).copied().unwrap_or("other"),
        status = status.as_u16(),
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// `GET /metrics`: every metric, Prometheus text format 0.0.4.
pub(super) async fn get_metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if state.observe.access == MetricsAccess::Admin {
        admin_only(&state.auth, &headers)?;
    }
    let vault = state.vault.clone();
    let text = tokio::task::spawn_blocking(move || vault.metrics_text())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "EINTERNAL", format!("task failed: {e}")))?;
    let mut response = Response::new(Body::from(text));
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    Ok(response)
}

/// Refuses a request without an admin token (bare, or after `Bearer `, which is what
/// Prometheus's `authorization` setting sends).
fn admin_only(auth: &AuthMode, headers: &HeaderMap) -> Result<(), ApiError> {
    let AuthMode::Tokens(tokens) = auth else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "EFORBIDDEN",
            "server.metrics = \"admin\" needs token authentication".into(),
        ));
    };
    let presented = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "EINVALIDAUTH", "GET /metrics needs an admin token".into())
    })?;
    let token = presented
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
        .map_or(presented, |_| &presented[7..]);
    match tokens.authenticate(token) {
        Some(Scope::Admin) => Ok(()),
        Some(Scope::Cluster(_)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "EFORBIDDEN",
            "GET /metrics needs an admin token, not a cluster's".into(),
        )),
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "EINVALIDAUTH", "invalid token".into())),
    }
}

/// `GET /healthz`: 200 while the process serves.
pub(super) async fn get_healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: 200 when the vault takes writes (not poisoned, enough free disk, not
/// shutting down); 503 with the reasons otherwise.
pub(super) async fn get_readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let vault = state.vault.clone();
    let health = tokio::task::spawn_blocking(move || vault.health())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "EINTERNAL", format!("task failed: {e}")))?;
    let mut problems = health.problems();
    if state.observe.stopping.load(Ordering::Relaxed) {
        problems.push("the server is shutting down".into());
    }
    let free = health.free_bytes.ok();
    let body = |ready: bool| {
        serde_json::json!({
            "ready": ready,
            "problems": problems,
            "poisoned": health.poisoned.is_some(),
            "free_bytes": free,
            "min_free_bytes": health.min_free_bytes,
        })
    };
    if problems.is_empty() {
        return Ok(axum::Json(body(true)).into_response());
    }
    tracing::debug!(?problems, "not ready");
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body(false))).into_response();
    response.headers_mut().insert("Retry-After", HeaderValue::from_static("5"));
    Ok(response)
}

/// Shared state of the observing side of one server.
pub(super) fn observe(metrics: &Metrics, access: MetricsAccess) -> Arc<Observe> {
    Arc::new(Observe { http: metrics.extension(HttpMetrics::new), access, stopping: AtomicBool::new(false) })
}
