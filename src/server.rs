//! HTTP: the WebSocket upgrade (after auth and limits), the status API and liveness.
//!
//! Every hub path (`/`, `/ws`, `/ws/matrix`) reaches the same hub; `/` without an upgrade
//! is for people and gets the Workshop page (see `assets`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Auth, Verdict};
use crate::connection::{self, ConnectionOptions};
use crate::hub::{ClientInfo, Hub};
use crate::state::StateHealth;

/// What every request handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) hub: Hub,
    pub(crate) auth: Arc<Auth>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) connections: TaskTracker,
    pub(crate) heartbeat: Duration,
    pub(crate) max_frame_bytes: usize,
    pub(crate) max_messages_per_sec: u32,
    pub(crate) max_text_chars: usize,
    pub(crate) assets: crate::assets::Assets,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", any(root))
        .route("/ws", any(hub_endpoint))
        .route("/ws/matrix", any(hub_endpoint))
        .route("/healthz", get(healthz))
        .route("/api/gateway/status", get(status))
        .route("/client.js", any(crate::assets::client_js))
        .fallback(crate::assets::fallback)
        .with_state(state)
}

/// Query parameters of a hub connection.
#[derive(Debug, Default, Deserialize)]
struct ConnectParams {
    token: Option<String>,
    diff: Option<String>,
    /// A stable identity the client keeps across reconnects, for exactly-once messages.
    client: Option<String>,
}

fn query_params(request: &Request) -> ConnectParams {
    axum::extract::Query::<ConnectParams>::try_from_uri(request.uri())
        .map(|q| q.0)
        .unwrap_or_default()
}

async fn root(state: State<AppState>, peer: ConnectInfo<SocketAddr>, request: Request) -> Response {
    if wants_upgrade(request.headers()) {
        return hub_endpoint(state, peer, request).await;
    }
    state.assets.serve(request).await
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn hub_endpoint(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let params = query_params(&request);
    let agent = match app
        .auth
        .check(peer, request.headers(), params.token.as_deref())
    {
        Verdict::Allowed { agent } => agent,
        Verdict::Unauthorized(why) => {
            tracing::warn!(peer = %peer, path = %request.uri().path(), reason = why, "connection refused: unauthorized");
            return refuse(StatusCode::UNAUTHORIZED, "unauthorized", why);
        }
        Verdict::ForbiddenOrigin => {
            let origin = request
                .headers()
                .get(header::ORIGIN)
                .and_then(|o| o.to_str().ok())
                .unwrap_or("");
            tracing::warn!(peer = %peer, origin, "connection refused: origin not allowed");
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                "pages from this origin may not connect; add it with --allowed-origin",
            );
        }
    };
    let Ok(permit) = Arc::clone(&app.slots).try_acquire_owned() else {
        tracing::warn!(peer = %peer, "connection refused: too many clients");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the bridge has as many clients as it allows; try again later",
        );
    };
    let path = request.uri().path().to_owned();
    // The accept loop's count of this address's connections: held while the socket is open.
    let address_slot = request
        .extensions()
        .get::<Arc<crate::accept::AddressSlot>>()
        .cloned();
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let opts = ConnectionOptions {
        peer,
        path,
        diff: matches!(params.diff.as_deref(), Some("1" | "true")),
        client: params
            .client
            .filter(|c| crate::protocol::valid_name(c, 128)),
        agent,
        heartbeat: app.heartbeat,
        max_messages_per_sec: app.max_messages_per_sec,
        max_text_chars: app.max_text_chars,
    };
    let task = app.connections.token();
    upgrade
        // Tungstenite's default reserves 128 KiB per connection for reading; visitors send
        // short messages, and a larger one is read in several chunks, so a page is enough.
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(app.max_frame_bytes)
        .max_frame_size(app.max_frame_bytes)
        .on_failed_upgrade(move |e| tracing::debug!(peer = %peer, error = %e, "upgrade failed"))
        .on_upgrade(move |socket| async move {
            connection::serve(socket, app.hub, opts, app.shutdown).await;
            drop(permit);
            drop(address_slot);
            drop(task);
        })
}

/// Bytes reserved per connection for reading frames.
const READ_BUFFER_BYTES: usize = 4096;

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    #[derive(Serialize)]
    struct Refusal<'a> {
        error: &'a str,
        message: &'a str,
    }
    (
        status,
        Json(Refusal {
            error: code,
            message,
        }),
    )
        .into_response()
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The body of `GET /api/gateway/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Registered agents.
    pub agents: Vec<AgentStatus>,
    /// Connection counts.
    pub connections: ConnectionCounts,
    /// Seconds since the bridge started.
    pub uptime_seconds: u64,
    /// The state file's health.
    pub state: StateHealth,
    /// Every connected client.
    pub clients: Vec<ClientInfo>,
}

/// One registered agent in the status.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    /// The gateway's spelling of the id.
    #[serde(rename = "agentId")]
    pub agent_id_camel: String,
    /// The Matrix spelling of the id.
    pub agent_id: String,
    /// Its role.
    pub role: String,
    /// When its connection opened.
    pub connected_since: String,
    /// Its network address.
    pub peer: SocketAddr,
}

/// How many clients are connected, registered or not.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionCounts {
    /// All connections.
    pub total: usize,
    /// Connections registered as agents.
    pub registered: usize,
    /// Connections that never registered (browsers, viewers).
    pub anonymous: usize,
}

/// The status of the hub right now.
pub(crate) fn status_of(hub: &Hub) -> Status {
    let clients = hub.clients();
    let agents: Vec<AgentStatus> = clients
        .iter()
        .filter_map(|c| {
            let id = c.agent_id.clone()?;
            Some(AgentStatus {
                agent_id_camel: id.clone(),
                agent_id: id,
                role: c.role.clone().unwrap_or_default(),
                connected_since: humantime::format_rfc3339_millis(c.connected_at).to_string(),
                peer: c.peer,
            })
        })
        .collect();
    let registered = agents.len();
    Status {
        connections: ConnectionCounts {
            total: clients.len(),
            registered,
            anonymous: clients.len() - registered,
        },
        agents,
        uptime_seconds: SystemTime::now()
            .duration_since(hub.started_at())
            .unwrap_or_default()
            .as_secs(),
        state: hub.state_health(),
        clients,
    }
}

async fn status(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let params = query_params(&request);
    match app
        .auth
        .check(peer, request.headers(), params.token.as_deref())
    {
        Verdict::Allowed { .. } => Json(status_of(&app.hub)).into_response(),
        Verdict::Unauthorized(why) => refuse(StatusCode::UNAUTHORIZED, "unauthorized", why),
        Verdict::ForbiddenOrigin => refuse(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "pages from this origin may not read the status",
        ),
    }
}
