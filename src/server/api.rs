//! The HTTP API: the LiteFS backup protocol at the root (`GET /pos`, `POST /db/tx`,
//! `GET /db/snapshot`; see `docs/API.md`), with errors as JSON `{code, error, pos}`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use super::auth_limit::AuthFailures;
use super::observe::{self, Observe};
use super::{AuthMode, ClusterIdPolicy, Limits, Scope};
use crate::catalog::Position;
use crate::error::Error;
use crate::ltx::TxId;
use crate::restore::Target;
use crate::vault::SnapshotFormat;
use crate::vault::Vault;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(super) vault: Arc<Vault>,
    pub(super) auth: AuthMode,
    cluster_ids: ClusterIdPolicy,
    limits: Arc<Limits>,
    uploads: Arc<Semaphore>,
    scratch: PathBuf,
    pub(super) observe: Arc<Observe>,
    /// Failed authentications per source; `None` without tokens (nothing can fail).
    auth_failures: Option<Arc<AuthFailures>>,
}

impl AppState {
    /// State for a router over `vault` with `/metrics` open (what the fuzz target and
    /// in-process callers use; `run` chooses the access).
    pub fn new(
        vault: Arc<Vault>,
        auth: AuthMode,
        cluster_ids: ClusterIdPolicy,
        limits: Limits,
    ) -> crate::Result<AppState> {
        let observe = observe::observe(vault.metrics(), crate::config::MetricsAccess::Open);
        AppState::with_observe(vault, auth, cluster_ids, limits, observe)
    }

    /// State for a router over `vault`, counting into `observe`.
    pub(super) fn with_observe(
        vault: Arc<Vault>,
        auth: AuthMode,
        cluster_ids: ClusterIdPolicy,
        limits: Limits,
        observe: Arc<Observe>,
    ) -> crate::Result<AppState> {
        let scratch = vault.dir().join("tmp");
        crate::io::make_private_dir(&scratch)?;
        let auth_failures = matches!(auth, AuthMode::Tokens(_)).then(|| {
            Arc::new(AuthFailures::new(
                limits.auth_failure_limit,
                limits.auth_failure_window,
                limits.auth_failure_sources,
            ))
        });
        Ok(AppState {
            auth_failures,
            uploads: Arc::new(Semaphore::new(limits.max_concurrent_uploads)),
            vault,
            auth,
            cluster_ids,
            limits: Arc::new(limits),
            scratch,
            observe,
        })
    }
}

/// The routes (their paths are also listed in `observe::ROUTES`, for the metrics), every
/// request counted, timed and logged by `observe::track`. Unknown paths answer 404 and
/// known paths with another method 405, with a JSON error like every other refusal.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(observe::get_metrics))
        .route("/healthz", get(observe::get_healthz))
        .route("/readyz", get(observe::get_readyz))
        .route("/pos", get(get_pos))
        .route("/db/tx", post(post_tx))
        .route("/db/snapshot", get(get_snapshot))
        .route("/dbs", get(get_dbs))
        .route("/db/info", get(get_info))
        .route("/db/restore", post(post_restore))
        .route("/db/restore/check", get(get_restore_check))
        .route("/db/upload", post(post_upload))
        .route("/db", axum::routing::delete(delete_db))
        .route("/db/clone", post(post_clone))
        .route("/cluster/clone", post(post_cluster_clone))
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "EMETHOD",
                format!("{} does not take {method} (docs/API.md lists the endpoints)", uri.path()),
            )
        })
        .fallback(|uri: Uri| async move {
            ApiError::new(StatusCode::NOT_FOUND, "ENOTFOUND", format!("no such endpoint: {}", uri.path()))
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), limit_auth_failures))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe::track))
        .with_state(state)
}

/// Refuses a source that failed to authenticate too often (429, without looking at its
/// credentials), and counts the failures (401s) of the others. See [`AuthFailures`].
async fn limit_auth_failures(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip());
    let (Some(limiter), Some(ip)) = (state.auth_failures.as_deref(), peer) else {
        return next.run(request).await;
    };
    if let Some(wait) = limiter.blocked(ip, Instant::now()) {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "ETOOMANYFAILURES",
            format!(
                "{} failed authentications from {ip} within {} s; retry in {seconds} s with a valid token",
                limiter.limit(),
                limiter.window().as_secs()
            ),
        );
        error.retry_after_s = Some(seconds);
        return error.into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED && limiter.failed(ip, Instant::now()) {
        tracing::warn!(
            source = %ip,
            limit = limiter.limit(),
            window_s = limiter.window().as_secs(),
            "too many failed authentications; refusing this source until its window ends"
        );
    }
    response
}

/// An error answer: status, a code LiteFS and scripts can match, a message for people,
/// and the database's position (zero when there is none), always complete.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    pos: Position,
    /// `Retry-After` in seconds (every 503 says 1).
    retry_after_s: Option<u64>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: String) -> ApiError {
        let retry_after_s = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        ApiError { status, code, message, pos: Position::default(), retry_after_s }
    }

    fn with_pos(mut self, pos: Position) -> ApiError {
        self.pos = pos;
        self
    }

    pub(super) fn timeout(message: String) -> ApiError {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "ETIMEOUT", message)
    }

    pub(super) fn bad_body(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "EBADBODY", message)
    }

    pub(super) fn too_large(size: u64, limit: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ETOOLARGE",
            format!("the request body passed {size} bytes; the limit is {limit} (server.max_body)"),
        )
    }

    fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "EINVALIDAUTH", message.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let message = e.to_string();
        let (status, code) = match &e {
            Error::PositionMismatch { position, .. } => {
                return ApiError::new(StatusCode::CONFLICT, "EPOSMISMATCH", message).with_pos(*position);
            }
            Error::Format(_) => (StatusCode::BAD_REQUEST, "EBADLTX"),
            Error::PageSizeMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "EBADHEADER"),
            Error::BadChecksum { .. } => (StatusCode::BAD_REQUEST, "EBADCHECKSUM"),
            Error::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "ETOOLARGE"),
            Error::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "EBUSY"),
            Error::Poisoned(_) => (StatusCode::SERVICE_UNAVAILABLE, "EPOISONED"),
            Error::InvalidName(_) => (StatusCode::BAD_REQUEST, "EBADDB"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "ENODB"),
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, "EBADINPUT"),
            Error::NoSuchPoint(_) => (StatusCode::NOT_FOUND, "ENOTXID"),
            Error::BadHeader(_) => (StatusCode::UNPROCESSABLE_ENTITY, "EBADHEADER"),
            Error::AlreadyExists { .. } => (StatusCode::CONFLICT, "EEXISTS"),
            Error::QuotaExceeded { .. } => (StatusCode::INSUFFICIENT_STORAGE, "EQUOTA"),
            // Nothing was written: the client may retry once space is freed.
            e if e.is_no_space() => {
                let message = match e {
                    Error::NoSpace(_) => message,
                    _ => format!("the vault's disk is full: {message}"),
                };
                tracing::debug!(error = %message, "refused: the vault's disk is full");
                return ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "ENOSPC", message);
            }
            _ => {
                tracing::error!(error = %e, "request failed inside the vault");
                (StatusCode::INTERNAL_SERVER_ERROR, "EINTERNAL")
            }
        };
        ApiError::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": self.code,
            "error": self.message,
            "pos": position_json(self.pos),
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert("Retry-After", HeaderValue::from(seconds));
        }
        response
    }
}

/// A position as LiteFS reads it: both members, 16 hex digits each.
fn position_json(pos: Position) -> serde_json::Value {
    serde_json::json!({"TXID": pos.txid.to_string(), "PostApplyChecksum": pos.checksum.to_string()})
}

/// Parses the query string into `T`, refusing unknown parameters.
fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri).map(|Query(q)| q).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "EBADINPUT", format!("bad query string: {}", e.body_text()))
    })
}

/// The cluster a request acts on, from its credential and the optional `cluster` parameter.
fn cluster_of(state: &AppState, headers: &HeaderMap, requested: Option<&str>) -> Result<String, ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.to_str().map_err(|_| ApiError::unauthorized("the Authorization header is not text")))
        .transpose()?;
    let scope = match &state.auth {
        // No authentication: a named cluster (parameter first, then the header) is reachable.
        AuthMode::None => match requested.or_else(|| presented.and_then(|v| v.strip_prefix("cluster ")).map(str::trim))
        {
            Some(name) => Scope::Cluster(name.to_string()),
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "EBADCLUSTER",
                    "no cluster: send \"Authorization: cluster NAME\" or ?cluster=NAME".into(),
                ));
            }
        },
        AuthMode::Tokens(tokens) => {
            let Some(presented) = presented else {
                return Err(ApiError::unauthorized(
                    "missing Authorization header: send the token from \"ltxvault token create\"",
                ));
            };
            tokens.authenticate(presented).ok_or_else(|| ApiError::unauthorized("invalid token"))?
        }
    };
    let cluster = match (scope, requested) {
        (Scope::Cluster(own), Some(other)) if own != other => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "EFORBIDDEN",
                format!("this token belongs to cluster \"{own}\", not \"{other}\""),
            ));
        }
        (Scope::Cluster(own), _) => own,
        (Scope::Admin, Some(cluster)) => cluster.to_string(),
        (Scope::Admin, None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "EBADCLUSTER",
                "an admin token must name the cluster with ?cluster=NAME".into(),
            ));
        }
    };
    crate::names::validate("cluster", &cluster)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "EBADCLUSTER", e.to_string()))?;
    if let ClusterIdPolicy::Bind(ids) = &state.cluster_ids {
        ids.check(&cluster, presented_cluster_id(headers)?).map_err(cluster_id_error)?;
    }
    Ok(cluster)
}

/// The `Litefs-Cluster-Id` header, if the request has one.
fn presented_cluster_id(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("Litefs-Cluster-Id")
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "EBADCLUSTERID",
                    "the Litefs-Cluster-Id header is not text".into(),
                )
            })
        })
        .transpose()
}

fn cluster_id_error(e: crate::auth::ClusterIdError) -> ApiError {
    use crate::auth::ClusterIdError;
    match e {
        ClusterIdError::Mismatch(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "ECLUSTERID", m.to_string()),
        ClusterIdError::Malformed(m) => ApiError::new(StatusCode::BAD_REQUEST, "EBADCLUSTERID", m),
        ClusterIdError::Store(e) => ApiError::from(e),
    }
}

fn db_name(db: Option<&str>) -> Result<&str, ApiError> {
    let db = db.ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "EBADDB", "missing ?db=NAME".into()))?;
    crate::names::validate("database", db)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "EBADDB", e.to_string()))?;
    Ok(db)
}

/// The current position of a database, zero if unknown.
fn position_of(vault: &Vault, cluster: &str, db: &str) -> Position {
    vault.position(cluster, db).map(|(p, _)| p).unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterQuery {
    cluster: Option<String>,
}

/// `GET /pos`: every database of the cluster with its position.
async fn get_pos(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let q: ClusterQuery = query(&uri)?;
    let cluster = cluster_of(&state, &headers, q.cluster.as_deref())?;
    let map: BTreeMap<String, serde_json::Value> =
        state.vault.positions(&cluster).into_iter().map(|(db, pos)| (db, position_json(pos))).collect();
    Ok(axum::Json(map).into_response())
}

/// `GET /dbs`: every database of the cluster with its position, size and, per level, its
/// restorable range (the shape of `ltxvault info --json`).
async fn get_dbs(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let q: ClusterQuery = query(&uri)?;
    let cluster = cluster_of(&state, &headers, q.cluster.as_deref())?;
    let config = state.vault.config();
    let databases: Vec<_> =
        state.vault.databases(Some(&cluster)).iter().map(|info| crate::report::info_json(info, config)).collect();
    let usage = crate::report::usage_json(state.vault.usage(&cluster));
    Ok(axum::Json(serde_json::json!({"cluster": cluster, "usage": usage, "databases": databases})).into_response())
}

/// `GET /db/info?db=NAME`: one database, as in `GET /dbs`.
async fn get_info(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let q: DbQuery = query(&uri)?;
    let cluster = cluster_of(&state, &headers, q.cluster.as_deref())?;
    let db = db_name(q.db.as_deref())?;
    let info = state
        .vault
        .databases(Some(&cluster))
        .into_iter()
        .find(|info| info.db == db)
        .ok_or_else(|| ApiError::from(Error::NotFound { cluster: cluster.clone(), db: db.to_string() }))?;
    Ok(axum::Json(crate::report::info_json(&info, state.vault.config())).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DbQuery {
    db: Option<String>,
    cluster: Option<String>,
}

/// `POST /db/tx?db=NAME`: one LTX file, appended if it continues the stored position.
async fn post_tx(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let q: DbQuery = query(&uri)?;
    let cluster = cluster_of(&state, &headers, q.cluster.as_deref())?;
    let db = db_name(q.db.as_deref())?.to_string();
    let pos = || position_of(&state.vault, &cluster, &db);
    if let Some(length) =
        headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && length > state.limits.max_body_bytes
    {
        return Err(ApiError::too_large(length, state.limits.max_body_bytes).with_pos(pos()));
    }
    let _slot = tokio::time::timeout(state.limits.body_timeout, state.uploads.clone().acquire_owned())
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "EBUSY", "too many uploads at once".into()))?
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "EBUSY", "the server is stopping".into()))?;
    let limits = &state.limits;
    let payload =
        super::body::read(body, limits.max_body_bytes, limits.body_idle_timeout, limits.body_timeout, &state.scratch)
            .await
            .map_err(|e| e.with_pos(pos()))?;
    if payload.bytes().is_empty() {
        return Err(ApiError::bad_body("the request body is empty; send one LTX file".into()).with_pos(pos()));
    }
    let vault = state.vault.clone();
    let (c, d) = (cluster.clone(), db.clone());
    let ack = tokio::task::spawn_blocking(move || vault.ingest(&c, &d, payload)).await.map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "EINTERNAL", format!("ingest task failed: {e}"))
    })?;
    match ack {
        Ok(ack) => {
            if let (ClusterIdPolicy::Bind(ids), Ok(Some(id))) = (&state.cluster_ids, presented_cluster_id(&headers)) {
                match ids.bind(&cluster, id) {
                    Ok(crate::auth::Binding::NewlyBound) => {
                        tracing::info!(cluster, cluster_id = id, "cluster bound to its LiteFS cluster id");
                    }
                    Ok(_) => {}
                    // The upload is stored; a race with another first write lost the binding.
                    Err(e) => tracing::warn!(cluster, error = %e, "could not bind the cluster id"),
                }
            }
            let mut response = StatusCode::OK.into_response();
            let hwm = HeaderValue::from_str(&ack.hwm.to_string()).expect("16 hex digits are a header value");
            response.headers_mut().insert("Litefs-Hwm", hwm);
            Ok(response)
        }
        Err(e) => {
            let error = ApiError::from(e);
            let pos = if error.code == "EPOSMISMATCH" { error.pos } else { pos() };
            Err(error.with_pos(pos))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotQuery {
    db: Option<String>,
    cluster: Option<String>,
    format: Option<String>,
    txid: Option<String>,
    timestamp: Option<String>,
}

/// `GET /db/snapshot?db=NAME[&format=ltx|sqlite][&txid=N|&timestamp=T]`: the database at
/// its current position (or at a point), as an LTX v1 snapshot or a plain SQLite file,
/// streamed.
async fn get_snapshot(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let q: SnapshotQuery = query(&uri)?;
    let cluster = cluster_of(&state, &headers, q.cluster.as_deref())?;
    let db = db_name(q.db.as_deref())?.to_string();
    let format = match q.format.as_deref() {
        None | Some("ltx") => SnapshotFormat::Ltx,
        Some("sqlite") => SnapshotFormat::Sqlite,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "EBADFORMAT",
                format!("format \"{other}\": expected ltx or sqlite"),
            ));
        }
    };
    let target = target_of(q.txid.as_deref(), q.timestamp.as_deref())?;
    // Resolve first, so that an unknown database or point is a proper error status rather
    // than a broken stream.
    let (plan, page_size) = state
        .vault
        .plan_restore(&cluster, &db, target)
        .map_err(|e| ApiError::from(e).with_pos(position_of(&state.vault, &cluster, &db)))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let (ready, started) = tokio::sync::oneshot::channel::<Result<(), Error>>();
    let vault = state.vault.clone();
    let (c, d) = (cluster.clone(), db.clone());
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter { tx, buf: Vec::with_capacity(ChannelWriter::CHUNK), ready: Some(ready) };
        // The point resolved above, by TXID: a timestamp or "latest" must not move while
        // this runs.
        let result = vault.write_snapshot(&c, &d, Target::TxId(plan.txid), format, &mut out);
        match result.and_then(|_| std::io::Write::flush(&mut out).map_err(|e| Error::io("send the snapshot", e))) {
            Ok(()) => out.start(),
            // Before the first byte (the restore into a scratch file failed, e.g. on a full
            // disk): the reply is an error status.
            Err(e) if out.ready.is_some() => {
                if let Some(ready) = out.ready.take() {
                    let _ = ready.send(Err(e));
                }
            }
            Err(e) => {
                tracing::error!(cluster = c, db = d, error = %e, "snapshot stream failed");
                let _ = out.tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    // The status waits for the restore: nothing is streamed before it has been verified.
    match started.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ApiError::from(e).with_pos(position_of(&state.vault, &cluster, &db))),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "EINTERNAL",
                "the snapshot task stopped without an answer".into(),
            ));
        }
    }
    let mut response = Response::new(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)));
    let headers = response.headers_mut();
    headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    // The point the body is, so a client can check what it receives.
    for (name, value) in [
        ("Ltxvault-Txid", plan.txid.to_string()),
        ("Ltxvault-Checksum", plan.checksum.to_string()),
        ("Ltxvault-Commit", plan.commit.to_string()),
        ("Ltxvault-Page-Size", page_size.to_string()),
    ] {
        headers.insert(name, HeaderValue::from_str(&value).expect("digits are a header value"));
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointQuery {
    db: Option<String>,
    cluster: Option<String>,
    txid: Option<String>,
    timestamp: Option<String>,
}

/// Runs blocking engine work off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> crate::Result<T> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "EINTERNAL", format!("task failed: {e}")))?
        .map_err(ApiError::from)
}

/// Exactly one of `txid` and `timestamp`.
fn required_target(q: &PointQuery) -> Result<Target, ApiError> {
    match target_of(q.txid.as_deref(), q.timestamp.as_deref())? {
        Target::Latest => Err(ApiError::new(StatusCode::BAD_REQUEST, "EBADINPUT", "give txid=N or timestamp=T".into())),
        target => Ok(target),
    }
}

/// `POST /db/restore?db=NAME&txid=N|timestamp=T`: the database goes back to that point by
/// a new transaction (its history stays; connected LiteFS nodes follow within a full sync).
async fn post_restore(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    restore_point(state, headers, uri, false).await
}

/// `GET /db/restore/check?db=NAME&txid=N|timestamp=T`: what a restore would go back to.
async fn get_restore_check(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    restore_point(state, headers, uri, true).await
}

async fn restore_point(state: AppState, headers: HeaderMap, uri: Uri, dry_run: bool) -> Result<Response, ApiError> {
    let q: PointQuery = query(&uri)?;
    let cluster = cluster_of(&state, &headers, q.cluster.as_deref())?;
    let db = db_name(q.db.as_deref())?.to_string();
    let target = required_target(&q)?;
    let vault = state.vault.clone();
    let (c, d) = (cluster.clone(), db.clone());
    let done = blocking(move || vault.restore_in_place(&c, &d, target, dry_run))
        .await
        .map_err(|e| e.with_pos(position_of(&state.vault, &cluster, &db)))?;
    Ok(axum::Json(serde_json::json!({
        "txID": done.position.txid.to_string(),
        "timestamp": crate::report::rfc3339(done.target.timestamp_ms),
        "target": {"txid": done.target.txid.to_string(), "timestamp_ms": done.target.timestamp_ms,
                   "checksum": done.target.checksum.to_string(), "commit": done.target.commit},
        "pos": position_json(done.position),
        "applied": done.applied,
    }))
    .into_response())
}

/// `POST /db/upload?db=NAME`: a plain SQLite file becomes the database's newest state (a
/// new database, or a new transaction over an existing one).
async fn post_upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let q: DbQuery = query(&uri)?;
    let cluster = cluster_of(&state, &headers, q.cluster.as_deref())?;
    let db = db_name(q.db.as_deref())?.to_string();
    let _slot = state
        .uploads
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "EBUSY", "the server is stopping".into()))?;
    let limits = &state.limits;
    let file = super::body::read_to_file(
        body,
        limits.max_body_bytes,
        limits.body_idle_timeout,
        limits.body_timeout,
        &state.scratch,
    )
    .await?;
    let vault = state.vault.clone();
    let (c, d) = (cluster.clone(), db.clone());
    let ack = blocking(move || {
        let ack = vault.upload_sqlite(&c, &d, file.path());
        drop(file);
        ack
    })
    .await
    .map_err(|e| e.with_pos(position_of(&state.vault, &cluster, &db)))?;
    Ok(axum::Json(serde_json::json!({"txID": ack.position.txid.to_string(), "pos": position_json(ack.position)}))
        .into_response())
}

/// `DELETE /db?db=NAME`: the database and all its history, for good.
async fn delete_db(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let q: DbQuery = query(&uri)?;
    let cluster = cluster_of(&state, &headers, q.cluster.as_deref())?;
    let db = db_name(q.db.as_deref())?.to_string();
    let vault = state.vault.clone();
    let (c, d) = (cluster.clone(), db.clone());
    blocking(move || vault.delete_database(&c, &d)).await?;
    tracing::info!(cluster, db, "database deleted");
    Ok(axum::Json(serde_json::json!({"deleted": db})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloneQuery {
    db: Option<String>,
    cluster: Option<String>,
    to_cluster: Option<String>,
    to_db: Option<String>,
    txid: Option<String>,
    timestamp: Option<String>,
}

/// `POST /db/clone?db=NAME&to_db=NEW[&to_cluster=C][&txid=N|&timestamp=T]`: the database at
/// a point (default: now) becomes a new database; the credential must reach both clusters.
async fn post_clone(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let q: CloneQuery = query(&uri)?;
    let cluster = cluster_of(&state, &headers, q.cluster.as_deref())?;
    let db = db_name(q.db.as_deref())?.to_string();
    let to_cluster = cluster_of(&state, &headers, Some(q.to_cluster.as_deref().unwrap_or(&cluster)))?;
    let to_db = db_name(q.to_db.as_deref().or(Some(&db)))?.to_string();
    let target = target_of(q.txid.as_deref(), q.timestamp.as_deref())?;
    let vault = state.vault.clone();
    let ack = blocking(move || vault.clone_database((&cluster, &db), (&to_cluster, &to_db), target)).await?;
    Ok(axum::Json(serde_json::json!({"txID": ack.position.txid.to_string(), "pos": position_json(ack.position)}))
        .into_response())
}

/// `POST /cluster/clone?cluster=C&to_cluster=D[&txid=N|&timestamp=T]`: every database of a
/// cluster at a point into another cluster; databases without a point there are skipped and
/// listed.
async fn post_cluster_clone(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let q: CloneQuery = query(&uri)?;
    if q.db.is_some() || q.to_db.is_some() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "EBADINPUT", "a cluster clone takes no db or to_db".into()));
    }
    let cluster = cluster_of(&state, &headers, q.cluster.as_deref())?;
    let to_cluster = q
        .to_cluster
        .as_deref()
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "EBADCLUSTER", "missing to_cluster=NAME".into()))?;
    let to_cluster = cluster_of(&state, &headers, Some(to_cluster))?;
    let target = target_of(q.txid.as_deref(), q.timestamp.as_deref())?;
    let vault = state.vault.clone();
    let report = blocking(move || vault.clone_cluster(&cluster, &to_cluster, target)).await?;
    let cloned: Vec<_> = report
        .cloned
        .iter()
        .map(|(db, ack)| serde_json::json!({"db": db, "txID": ack.position.txid.to_string()}))
        .collect();
    let skipped: Vec<_> =
        report.skipped.iter().map(|(db, e)| serde_json::json!({"db": db, "error": e.to_string()})).collect();
    Ok(axum::Json(serde_json::json!({"cloned": cloned, "skipped": skipped})).into_response())
}

fn target_of(txid: Option<&str>, timestamp: Option<&str>) -> Result<Target, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "EBADINPUT", m);
    match (txid, timestamp) {
        (Some(_), Some(_)) => Err(bad("give txid or timestamp, not both".into())),
        (Some(t), None) => TxId::parse(t)
            .map(Target::TxId)
            .ok_or_else(|| bad(format!("txid \"{t}\": expected decimal or 16 hex digits"))),
        (None, Some(ts)) => Target::parse_timestamp(ts).map(Target::Timestamp).map_err(|e| bad(e.to_string())),
        (None, None) => Ok(Target::Latest),
    }
}

/// A `Write` that hands 256 KiB chunks to the response body; blocks while the client is
/// slow (the channel holds four chunks), so memory per download stays bounded. Its first
/// write (or the end of an empty body) tells the handler, through `ready`, that the
/// snapshot has been restored and verified and the reply may start.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    ready: Option<tokio::sync::oneshot::Sender<Result<(), Error>>>,
}

impl ChannelWriter {
    const CHUNK: usize = 256 << 10;

    /// Lets the reply start (once).
    fn start(&mut self) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.start();
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
