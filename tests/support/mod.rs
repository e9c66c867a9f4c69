//! Shared helpers for the integration tests: a temporary world (state file, inbox, outbox),
//! a bridge on a free port, and WebSocket clients that wait for events with a deadline.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::process::Stdio;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use workshop_bridge::{Bridge, BridgeHandle, Config};

pub mod disk;
pub mod nats;
pub mod netns;
pub mod report;

/// How long any single expected event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub const TOKEN: &str = "7e57000000000000000000000000000000000000000000000000000000000001";
pub const AGENT_TOKEN: &str = "a6e7000000000000000000000000000000000000000000000000000000000042";

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A temporary home for one bridge: its state file, inbox and outbox.
pub struct World {
    pub dir: TempDir,
    pub state_file: PathBuf,
    pub inbox: PathBuf,
    pub outbox: PathBuf,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state_file = dir.path().join("timmy").join("workshop-state.yaml");
        let inbox = dir.path().join("timmy").join("inbox");
        let outbox = dir.path().join("timmy").join("outbox");
        Self {
            dir,
            state_file,
            inbox,
            outbox,
        }
    }

    /// A world whose state file already holds `yaml`.
    pub fn with_state(yaml: &str) -> Self {
        let world = Self::new();
        std::fs::create_dir_all(world.state_file.parent().unwrap()).unwrap();
        world.write_state(yaml);
        world
    }

    /// Settings for a bridge on a free loopback port in this world.
    pub fn config(&self) -> Config {
        Config {
            port: 0,
            bind: "127.0.0.1".parse().unwrap(),
            state_file: self.state_file.clone(),
            inbox_dir: self.inbox.clone(),
            outbox_dir: self.outbox.clone(),
            token: Some(TOKEN.to_owned()),
            ..Config::default()
        }
    }

    /// Replaces the state file the way agents and editors do: write aside, then rename.
    pub fn write_state(&self, yaml: &str) {
        let dir = self.state_file.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let temp = dir.join(".state.tmp");
        std::fs::write(&temp, yaml).unwrap();
        std::fs::rename(&temp, &self.state_file).unwrap();
    }

    /// Drops a file into the outbox atomically (written under a dot-name, then renamed).
    pub fn drop_in_outbox(&self, name: &str, content: &str) {
        let temp = self.outbox.join(format!(".{name}.tmp"));
        std::fs::write(&temp, content).unwrap();
        std::fs::rename(&temp, self.outbox.join(name)).unwrap();
    }

    /// The inbox's event files (not dot-files), sorted by name, with their parsed content.
    pub fn inbox_files(&self) -> Vec<(String, Value)> {
        let mut files: Vec<(String, Value)> = std::fs::read_dir(&self.inbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .map(|n| {
                let text = std::fs::read_to_string(self.inbox.join(&n)).unwrap();
                let value = serde_json::from_str(&text).unwrap();
                (n, value)
            })
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        files
    }

    /// Every name in the inbox, dot-files included.
    pub fn inbox_names_all(&self) -> Vec<String> {
        std::fs::read_dir(&self.inbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Waits until the inbox holds `n` event files (files have no event to await).
    pub async fn wait_for_inbox(&self, n: usize) -> Vec<(String, Value)> {
        wait_until(|| {
            let files = self.inbox_files();
            (files.len() >= n).then_some(files)
        })
        .await
    }
}

/// Polls `check` until it returns `Some`, failing the test after [`DEADLINE`].
pub async fn wait_until<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a bridge with `config`; installs a test log subscriber once.
pub async fn start(config: Config) -> BridgeHandle {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    Bridge::start(config).await.unwrap()
}

/// Connects to `path_and_query` (e.g. `/ws?diff=1`) on the bridge.
pub async fn connect(bridge: &BridgeHandle, path_and_query: &str) -> Ws {
    try_connect(bridge, path_and_query, &[]).await.unwrap()
}

/// Connects to `path_and_query` on a bridge at `addr` (one in another process, say).
pub async fn connect_at(addr: std::net::SocketAddr, path_and_query: &str) -> Ws {
    try_connect_at(addr, path_and_query).await.unwrap()
}

/// Connects to a bridge at `addr`; the error carries the HTTP refusal if there was one.
pub async fn try_connect_at(
    addr: std::net::SocketAddr,
    path_and_query: &str,
) -> Result<Ws, WsError> {
    let url = format!("ws://{addr}{path_and_query}");
    let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")?;
    Ok(ws)
}

/// Connects with extra headers; the error carries the HTTP refusal if there was one.
pub async fn try_connect(
    bridge: &BridgeHandle,
    path_and_query: &str,
    headers: &[(&'static str, &str)],
) -> Result<Ws, WsError> {
    let url = format!("ws://{}{path_and_query}", bridge.local_addr());
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect timed out")?;
    Ok(ws)
}

/// Connects from the local address `from` (any of 127.0.0.0/8 on Linux), so one test can
/// play many clients on different addresses.
pub async fn try_connect_from(
    from: std::net::IpAddr,
    bridge: &BridgeHandle,
    path_and_query: &str,
) -> Result<Ws, WsError> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    let stream = socket.connect(bridge.local_addr()).await.unwrap();
    let url = format!("ws://{}{path_and_query}", bridge.local_addr());
    let (ws, _) = tokio::time::timeout(
        DEADLINE,
        tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("connect timed out")?;
    Ok(ws)
}

/// The HTTP status of a refused upgrade, and its JSON body.
pub fn refusal(error: WsError) -> (u16, Value) {
    match error {
        WsError::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap())
                .unwrap_or(Value::Null);
            (status, body)
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// The next text message, as raw text (pings and pongs are skipped).
pub async fn recv_text(ws: &mut Ws) -> String {
    loop {
        let frame = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("no message in time")
            .expect("connection ended")
            .expect("read error");
        match frame {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The next text message, parsed.
pub async fn recv(ws: &mut Ws) -> Value {
    serde_json::from_str(&recv_text(ws).await).unwrap()
}

/// The next message of type `kind`, skipping others (e.g. presence or state).
pub async fn recv_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = recv(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

/// Reads until the bridge closes the connection; returns the close frame.
pub async fn recv_close(ws: &mut Ws) -> Option<CloseFrame> {
    loop {
        let frame = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("no close in time");
        match frame {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Reads until the bridge closes the connection; returns the messages heard on the way and
/// the close frame. Panics if the connection ends without one.
pub async fn recv_all_until_close(ws: &mut Ws) -> (Vec<Value>, Option<CloseFrame>) {
    let mut heard = Vec::new();
    loop {
        match tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("no close in time")
        {
            Some(Ok(Message::Text(text))) => heard.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => return (heard, frame),
            Some(Ok(_)) => {}
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    }
}

/// Reads until the bridge closes the connection, and checks it heard only the shutdown
/// goodbye and then a 1001 close.
pub async fn assert_goodbye_only(ws: &mut Ws) {
    let (heard, close) = recv_all_until_close(ws).await;
    assert_eq!(u16::from(close.expect("a close frame").code), 1001);
    assert_eq!(
        heard,
        [serde_json::json!({"type": "system_status", "data": {"status": "shutting_down"}})],
        "the goodbye and nothing else"
    );
}

/// Runs `program args…` to its end; `Err` holds what it said when it failed or could not
/// run.
pub fn run_to_end(program: &str, args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Proves that nothing was queued for `ws` before now: a ping sent now must be answered
/// by the very next message. Faster and surer than waiting to see if something arrives.
pub async fn assert_nothing_pending(ws: &mut Ws) {
    send(ws, serde_json::json!({"type": "ping", "id": "probe"})).await;
    let next = recv(ws).await;
    assert_eq!(
        next,
        serde_json::json!({"type": "pong", "id": "probe"}),
        "something was sent before the probe's answer"
    );
}

/// Connects and reads the initial state message.
pub async fn connect_with_state(bridge: &BridgeHandle, path_and_query: &str) -> (Ws, Value) {
    let mut ws = connect(bridge, path_and_query).await;
    let state = recv_type(&mut ws, "state").await;
    (ws, state)
}

/// A plain HTTP GET over a raw socket; returns status and body.
pub async fn http_get(
    bridge: &BridgeHandle,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    http_get_at(bridge.local_addr(), path, headers).await
}

/// A plain HTTP GET to any address (a bridge in another process, say).
pub async fn http_get_at(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let (status, _, body) = http_get_with_head(addr, path, headers).await;
    (status, body)
}

/// A plain HTTP GET; returns the status, the response's head (status line and headers,
/// in lower case) and the body.
pub async fn http_get_with_head(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The value of the header `name` (in lower case) in a head from [`http_get_with_head`].
pub fn header_in<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

/// `GET /api/gateway/status` from a bridge process that trusts loopback, as JSON.
pub async fn gateway_status_at(addr: std::net::SocketAddr) -> Value {
    let (status, body) = http_get_at(addr, "/api/gateway/status", &[]).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Files in `dir` (not recursive), sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

// --- the real binary -------------------------------------------------------------

/// A `workshop-bridge` process with its own HOME and a clean environment.
pub fn command<S: AsRef<std::ffi::OsStr>>(
    world: &World,
    args: impl IntoIterator<Item = S>,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_workshop-bridge"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WORKSHOP_BRIDGE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", world.dir.path())
        .env("XDG_CONFIG_HOME", world.dir.path().join(".config"))
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "1")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

pub fn serve_args(world: &World) -> Vec<String> {
    vec![
        "serve".into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--state-file".into(),
        world.state_file.display().to_string(),
        "--inbox-dir".into(),
        world.inbox.display().to_string(),
        "--outbox-dir".into(),
        world.outbox.display().to_string(),
    ]
}

/// Reads stderr until the `listening on ws://ADDR` line; returns the address.
pub async fn listening(child: &mut Child) -> std::net::SocketAddr {
    listening_after(child).await.0
}

/// Reads stderr until the `listening on ws://ADDR` line; returns the address and every
/// line before it.
pub async fn listening_after(child: &mut Child) -> (std::net::SocketAddr, Vec<String>) {
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut before = Vec::new();
    let addr = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, rest)) = line.split_once("listening on ws://") {
                let addr = rest.split_whitespace().next().unwrap();
                return addr.parse().unwrap();
            }
            before.push(line);
        }
        panic!("the bridge exited without listening: {before:?}");
    })
    .await
    .expect("no `listening on` line in time");
    // Keep draining stderr so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (addr, before)
}
