//! The admin HTTP server: the pipelines' status and plugin versions, hot-swap and rollback,
//! health and readiness, Prometheus metrics and a status page. Endpoints are listed in
//! `docs/operations.md`. Bound to loopback by default; elsewhere only with a bearer token.
mod page;

use crate::live::{Live, RunState, SwapError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use std::net::SocketAddr;
use std::sync::Arc;

/// Plugins are uploaded whole; a release-built wasm plugin is a few MiB.
const MAX_PLUGIN_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin server: `{0}` is not IP:PORT")]
    Address(String),
    #[error("admin server: cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct AppState {
    pipelines: Arc<Vec<Arc<Live>>>,
    token: Option<Arc<str>>,
}

impl AppState {
    fn pipeline(&self, name: &str) -> Option<Arc<Live>> {
        self.pipelines
            .iter()
            .find(|live| live.pipeline == name)
            .cloned()
    }
}

/// A running admin server; it stops when dropped.
pub struct AdminServer {
    address: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `listen` (port 0 picks a free port) and serves on a thread of its own.
    pub fn start(
        listen: &str,
        token: Option<String>,
        pipelines: Vec<Arc<Live>>,
    ) -> Result<Self, AdminError> {
        let address: SocketAddr = listen
            .parse()
            .map_err(|_| AdminError::Address(listen.to_string()))?;
        let bind_error = |source| AdminError::Bind {
            address: listen.to_string(),
            source,
        };
        let listener = std::net::TcpListener::bind(address).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        let state = AppState {
            pipelines: Arc::new(pipelines),
            token: token.map(Into::into),
        };
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(bind_error)?;
        let thread = std::thread::Builder::new()
            .name("sluice-admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            tracing::error!(%error, "admin server cannot listen");
                            return;
                        }
                    };
                    let served = axum::serve(listener, router(state))
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                    if let Err(error) = served {
                        tracing::error!(%error, "admin server failed");
                    }
                })
            })
            .map_err(bind_error)?;
        Ok(AdminServer {
            address,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/pipelines", get(list_pipelines))
        .route("/pipelines/{name}", get(show_pipeline))
        .route("/pipelines/{name}/stages/{stage}/plugin", put(swap_plugin))
        .route(
            "/pipelines/{name}/stages/{stage}/rollback",
            post(rollback_plugin),
        )
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .merge(protected)
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (status, axum::Json(body)).into_response()
}

fn unknown_pipeline(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no pipeline `{name}` runs here"),
    )
}

async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())) {
            return error(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs `Authorization: Bearer <admin.token>`",
            );
        }
    }
    next.run(request).await
}

/// Compares without returning early, so response time does not leak a token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Ready when every pipeline is running (has restored its state and consumes).
async fn ready(State(state): State<AppState>) -> Response {
    let states: Vec<(String, RunState)> = state
        .pipelines
        .iter()
        .map(|live| (live.pipeline.clone(), live.status().state))
        .collect();
    let body: String = states
        .iter()
        .map(|(name, state)| {
            format!(
                "{name}: {}\n",
                serde_json::to_value(state)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("?")
            )
        })
        .collect();
    if states.iter().all(|(_, s)| *s == RunState::Running) {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

async fn status_page(State(state): State<AppState>) -> Html<String> {
    let pipelines: Vec<_> = state.pipelines.iter().map(|live| live.snapshot()).collect();
    Html(page::render(&pipelines))
}

async fn list_pipelines(State(state): State<AppState>) -> Response {
    let pipelines: Vec<_> = state.pipelines.iter().map(|live| live.snapshot()).collect();
    axum::Json(pipelines).into_response()
}

async fn show_pipeline(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.pipeline(&name) {
        Some(live) => axum::Json(live.snapshot()).into_response(),
        None => unknown_pipeline(&name),
    }
}

async fn swap_plugin(
    State(state): State<AppState>,
    Path((name, stage)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(live) = state.pipeline(&name) else {
        return unknown_pipeline(&name);
    };
    // Compiling and checking takes a second or more: off the async workers.
    let result = tokio::task::spawn_blocking(move || live.swap(&stage, &body, "upload")).await;
    swap_response(result)
}

async fn rollback_plugin(
    State(state): State<AppState>,
    Path((name, stage)): Path<(String, String)>,
) -> Response {
    let Some(live) = state.pipeline(&name) else {
        return unknown_pipeline(&name);
    };
    let result = tokio::task::spawn_blocking(move || live.rollback(&stage)).await;
    swap_response(result)
}

fn swap_response(
    result: Result<Result<crate::stage::PluginVersion, SwapError>, tokio::task::JoinError>,
) -> Response {
    match result {
        Ok(Ok(version)) => axum::Json(serde_json::json!({ "plugin": version })).into_response(),
        Ok(Err(swap)) => {
            let status = match &swap {
                SwapError::UnknownStage { .. } => StatusCode::NOT_FOUND,
                SwapError::Refused { .. } | SwapError::NoPrevious { .. } => StatusCode::CONFLICT,
                SwapError::NotRunning(_) => StatusCode::SERVICE_UNAVAILABLE,
                SwapError::Queued { .. } => StatusCode::ACCEPTED,
            };
            error(status, swap.to_string())
        }
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, join.to_string()),
    }
}
