//! Asking the running bridge who is connected: `GET /api/gateway/status`, over loopback,
//! with the token from the same config.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::Config;

/// How long the bridge has to answer; it answers at once when it runs.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// The largest status read (it lists every client).
const MAX_STATUS_BYTES: usize = 4 * 1024 * 1024;

/// Where the bridge of a config listens, and how to ask it.
#[derive(Debug, Clone)]
pub(crate) struct BridgeAddress {
    addr: Option<SocketAddr>,
    token: Option<String>,
}

/// What the status API says, as far as the tools need it.
#[derive(Debug, Deserialize)]
pub(crate) struct Status {
    pub(crate) connections: Connections,
    #[serde(default)]
    pub(crate) clients: Vec<Client>,
}

/// Connection counts.
#[derive(Debug, Deserialize)]
pub(crate) struct Connections {
    pub(crate) total: usize,
}

/// One connected client.
#[derive(Debug, Deserialize)]
pub(crate) struct Client {
    pub(crate) admitted: String,
    pub(crate) connected_at: String,
    #[serde(rename = "agentId")]
    pub(crate) agent_id: Option<String>,
    pub(crate) role: Option<String>,
    pub(crate) visitor: Option<String>,
}

impl BridgeAddress {
    pub(crate) fn new(config: &Config) -> Self {
        let ip = match config.bind {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Self {
            // Port 0 means a free port picked at start: there is no telling which.
            addr: (config.port != 0).then(|| SocketAddr::new(ip, config.port)),
            token: if config.no_auth {
                None
            } else {
                config.token.clone()
            },
        }
    }

    /// `ws://127.0.0.1:8765`, for results.
    pub(crate) fn describe(&self) -> String {
        match self.addr {
            Some(addr) => format!("ws://{addr}"),
            None => "port 0 (a port the bridge picks when it starts)".to_owned(),
        }
    }

    /// The status of the running bridge, or why none answered, in one sentence.
    pub(crate) async fn status(&self) -> Result<Status, String> {
        let Some(addr) = self.addr else {
            return Err(
                "the config sets port 0, so there is no knowing where a running bridge listens"
                    .to_owned(),
            );
        };
        match tokio::time::timeout(ANSWER_WITHIN, self.ask(addr)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "the bridge at {} did not answer within {} s",
                self.describe(),
                ANSWER_WITHIN.as_secs()
            )),
        }
    }

    async fn ask(&self, addr: SocketAddr) -> Result<Status, String> {
        let none = |e: std::io::Error| {
            format!(
                "no bridge answers at {} ({}); start it with `workshop-bridge serve` or the menu-bar app",
                self.describe(),
                e.kind()
            )
        };
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(none)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("the bridge at {} did not speak HTTP: {e}", self.describe()))?;
        let driver = tokio::spawn(connection);
        // Loopback by name: a client on this machine that says `localhost` is trusted unless
        // the bridge says otherwise; the token covers that case.
        let host = if addr.ip().is_loopback() {
            format!("localhost:{}", addr.port())
        } else {
            addr.to_string()
        };
        let mut request = hyper::Request::get("/api/gateway/status").header(header::HOST, host);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot ask the bridge: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("the bridge at {} did not answer: {e}", self.describe()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_STATUS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read the bridge's status: {e}"))?
            .to_bytes();
        driver.abort();
        if !status.is_success() {
            return Err(format!(
                "the bridge at {} refused the status request ({status}): {}; is the token in the config file the bridge's?",
                self.describe(),
                String::from_utf8_lossy(&body).trim()
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| format!("the bridge's status cannot be read: {e}"))
    }
}
