//! HTTP: the WebSocket upgrade (after auth and limits), the status API and liveness.
//!
//! Who is asking is checked before anything else: a layer refuses every request whose
//! `Host` does not name this bridge (only `/healthz` answers anyone), and the [`Admitted`]
//! extractor checks Origin and token for the hub and the API. Every hub path (`/`, `/ws`,
//! `/ws/matrix`) reaches the same hub; `/` without an upgrade is for people and gets the
//! Workshop page (see `assets`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Admitted, Auth, Verdict};
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
    pub(crate) max_id_bytes: usize,
    pub(crate) max_json_depth: usize,
    pub(crate) assets: crate::assets::Assets,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", any(root))
        .route("/ws", any(hub_endpoint))
        .route("/ws/matrix", any(hub_endpoint))
        .route("/api/gateway/status", get(status))
        .route("/client.js", any(crate::assets::client_js))
        .fallback(crate::assets::fallback)
        // Everything above, the fallback included, but not the liveness probe below.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            known_host,
        ))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Refuses, before anything else is looked at, a request whose `Host` is not one of the
/// bridge's names: the DNS-rebinding defence for every page, the hub and the API.
async fn known_host(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if app.auth.host_kind(request.headers()).is_some() {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    log_refusal(&app, peer, "unknown host", host);
    unknown_host()
}

/// 421: the request names a host that is not this bridge.
fn unknown_host() -> Response {
    refuse(
        StatusCode::MISDIRECTED_REQUEST,
        "unknown_host",
        "this bridge does not answer to that name: open it by its address, localhost or NAME.local, or add the name with --allowed-host",
    )
}

impl FromRequestParts<AppState> for Admitted {
    type Rejection = Response;

    /// Checks Host, Origin and token; a refusal is the finished HTTP response.
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied()
        else {
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        let token = query_token(&parts.uri);
        match app.auth.check(peer, &parts.headers, token.as_deref()) {
            Verdict::Allowed(admitted) => Ok(admitted),
            // The `known_host` layer refuses these first; the check stands on its own.
            Verdict::UnknownHost => {
                log_refusal(app, peer, "unknown host", "");
                Err(unknown_host())
            }
            Verdict::ForbiddenOrigin => {
                let origin = parts
                    .headers
                    .get(header::ORIGIN)
                    .and_then(|o| o.to_str().ok())
                    .unwrap_or("");
                log_refusal(app, peer, "origin not allowed", origin);
                Err(refuse(
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    "pages from this origin may not connect; add it with --allowed-origin",
                ))
            }
            Verdict::Unauthorized(why) => {
                log_refusal(app, peer, why, "");
                Err(refuse(StatusCode::UNAUTHORIZED, "unauthorized", why))
            }
            Verdict::TooManyFailures(wait) => {
                log_refusal(app, peer, "too many wrong tokens; waiting", "");
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut response = refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_failures",
                    &format!("too many wrong tokens from this address; try again in {secs} s"),
                );
                if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                Err(response)
            }
        }
    }
}

/// Logs a refusal as one line per address per interval (see `throttle`), so a flood of
/// attempts cannot flood the log. The token is never part of what is logged.
fn log_refusal(app: &AppState, peer: SocketAddr, reason: &str, detail: &str) {
    let Some(line) = app.auth.throttle().refused(peer.ip()) else {
        return;
    };
    if line.refusals <= 1 {
        tracing::warn!(peer = %peer.ip(), reason, detail, "request refused");
    } else {
        tracing::warn!(
            peer = %peer.ip(),
            refusals = line.refusals,
            latest = reason,
            detail,
            "requests from this address refused since the last report"
        );
    }
}

/// The `?token=` of a request, if it has one.
pub(crate) fn query_token(uri: &axum::http::Uri) -> Option<String> {
    #[derive(Deserialize)]
    struct TokenParam {
        token: Option<String>,
    }
    axum::extract::Query::<TokenParam>::try_from_uri(uri)
        .ok()
        .and_then(|q| q.0.token)
}

/// Query parameters of a hub connection (the token is the extractor's).
#[derive(Debug, Default, Deserialize)]
struct ConnectParams {
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
    if !wants_upgrade(request.headers()) {
        return state.assets.serve(request).await;
    }
    let (mut parts, body) = request.into_parts();
    match Admitted::from_request_parts(&mut parts, &state).await {
        Ok(admitted) => hub_endpoint(admitted, state, peer, Request::from_parts(parts, body)).await,
        Err(refusal) => refusal,
    }
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn hub_endpoint(
    admitted: Admitted,
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let params = query_params(&request);
    let Ok(permit) = Arc::clone(&app.slots).try_acquire_owned() else {
        log_refusal(&app, peer, "too many clients", "");
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
        admitted,
        heartbeat: app.heartbeat,
        max_messages_per_sec: app.max_messages_per_sec,
        max_text_chars: app.max_text_chars,
        max_id_bytes: app.max_id_bytes,
        max_json_depth: app.max_json_depth,
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

/// A refusal: the status, a one-line JSON reason, and `Connection: close`, so a refused
/// client does not keep holding a connection (and its address's share of them).
fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    #[derive(Serialize)]
    struct Refusal<'a> {
        error: &'a str,
        message: &'a str,
    }
    let mut response = (
        status,
        Json(Refusal {
            error: code,
            message,
        }),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
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
    /// In a cluster, every node that answered: this one first among its kind, then the
    /// others (`GET /api/gateway/status` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Vec<crate::cluster::NodeStatus>>,
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
        cluster: None,
    }
}

async fn status(_: Admitted, State(app): State<AppState>) -> Json<Status> {
    let mut status = status_of(&app.hub);
    if let Some(link) = app.hub.cluster() {
        status.cluster = Some(crate::cluster::presence::cluster_status(link, &app.hub).await);
    }
    Json(status)
}
