//! An iPad on the Wi-Fi, played for real: a client in its own network namespace, joined to
//! this machine by a virtual cable (a veth pair), so the bridge sees a peer that is not
//! loopback and must ask it for the token and check the name it uses.
//!
//! Linux and root only (it needs `ip netns` and CAP_NET_ADMIN); anywhere else the test says
//! why it is skipped and passes. The client runs inside the namespace by re-running this
//! test binary under `ip netns exec`, selecting [`lan_client_when_run_inside_the_namespace`];
//! it reports what it saw as JSON lines, and the test that started it asserts on them.
//! Traffic only crosses the cable: the namespace has no route to anywhere else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::netns::ip;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Carries the bridge's address to the client run inside the namespace. Unset, the client
/// test does nothing.
const CLIENT_ENV: &str = "WORKSHOP_LAN_CLIENT";
/// The client test, run by its exact name.
const CLIENT_TEST: &str = "lan_client_when_run_inside_the_namespace";
/// How the client's observation lines begin, among the test harness's own output.
const OBSERVED: &str = "lan-observed ";
/// The extra name the bridge is told to answer to (`--allowed-host`).
const ALLOWED_HOST: &str = "workshop.test";
/// How long the whole client run may take: many checks, each bounded by [`DEADLINE`].
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);
/// The state file's content, and what every admitted client must receive first.
const STATE_YAML: &str = "mood: curious\nvisitors: [iPad]\n";

fn state_json() -> Value {
    json!({"mood": "curious", "visitors": ["iPad"]})
}

/// Without a token, from the LAN, by any name: refused. With it: served, but only under a
/// name that is the bridge's own, whatever the page's origin says.
#[tokio::test]
async fn a_lan_client_needs_the_token_and_a_name_the_bridge_answers_to() {
    let lan = match Lan::create() {
        Ok(lan) => lan,
        Err(why) => {
            support::report::skipped(
                "a_lan_client_needs_the_token_and_a_name_the_bridge_answers_to",
                why,
            );
            return;
        }
    };
    let world = World::with_state(STATE_YAML);
    let mut args = serve_args(&world);
    let bind = args.iter().position(|a| a == "--bind").unwrap() + 1;
    args[bind] = lan.host.to_string();
    for (flag, value) in [
        ("--port", "0"),
        ("--token", TOKEN),
        ("--allowed-host", ALLOWED_HOST),
    ] {
        args.extend([flag.into(), value.into()]);
    }
    let mut bridge = command(&world, &args).spawn().unwrap();
    let addr = listening(&mut bridge).await;
    assert_eq!(addr.ip(), lan.host, "the bridge listens on the cable's end");

    let seen = lan.run_client(addr).await;

    // No token from the LAN: refused, on the upgrade and on the API.
    seen.refused("ws_without_token", 401, "unauthorized");
    seen.refused("status_without_token", 401, "unauthorized");

    // With the token: the state first, and a message that is acked and recorded with
    // who sent it.
    seen.status("status_with_token", 200);
    let visit = seen.served("visit_with_token");
    assert_eq!(
        visit["ack"],
        json!({"type": "ack", "id": "lan-1"}),
        "the LAN visitor's message was not acked: saw {visit}"
    );
    // Acked means durable: the file is there the moment the ack arrives.
    let messages: Vec<Value> = world
        .inbox_files()
        .into_iter()
        .map(|(_, event)| event)
        .filter(|event| event["type"] == "message")
        .collect();
    assert_eq!(
        messages.len(),
        1,
        "one message sent, one inbox file expected: saw {messages:?}"
    );
    let event = &messages[0];
    assert_eq!(
        (&event["visitor"], &event["text"]),
        (&json!("iPad"), &json!("hello from the LAN")),
        "the inbox file does not hold the LAN visitor's message: {event}"
    );
    assert_eq!(
        event["provenance"]["admitted"], "token",
        "a LAN client is admitted by its token: inbox file {event}"
    );
    let peer: Option<SocketAddr> = event["provenance"]["peer"]
        .as_str()
        .and_then(|p| p.parse().ok());
    assert_eq!(
        peer.map(|p| p.ip()),
        Some(lan.peer.into()),
        "the inbox file names the LAN client's address as its peer: {event}"
    );

    // A name the bridge does not answer to (DNS rebinding): 421 before the upgrade,
    // even with the right token, with or without the page's Origin.
    seen.refused("ws_rebinding_host", 421, "unknown_host");
    seen.refused("ws_rebinding_host_and_origin", 421, "unknown_host");
    seen.refused("status_rebinding_host", 421, "unknown_host");

    // The name added with --allowed-host, with the token: served, to programs and to
    // the bridge's own page under that name.
    seen.status("status_allowed_host", 200);
    seen.served("ws_allowed_host");
    seen.served("ws_allowed_host_own_page");

    // Naming localhost does not make a LAN client local.
    seen.refused("ws_localhost_without_token", 401, "unauthorized");
    seen.refused("status_localhost_without_token", 401, "unauthorized");

    // Liveness answers anyone.
    seen.status("healthz", 200);
    seen.status("healthz_unknown_host", 200);

    drop(bridge);
    let (netns, veth) = (lan.netns.clone(), lan.host_veth.clone());
    drop(lan);
    assert!(
        !link_exists(&veth) && !netns_exists(&netns),
        "the namespace {netns} or the link {veth} outlived the test"
    );
}

/// The LAN client, when the test above re-runs this binary inside its namespace with the
/// bridge's address in `WORKSHOP_LAN_CLIENT`. In a normal run that variable is unset and
/// this returns at once: it is a no-op that passes.
///
/// It asserts nothing: it reports each observation as one JSON line for the test above.
#[tokio::test]
async fn lan_client_when_run_inside_the_namespace() {
    let Ok(bridge) = std::env::var(CLIENT_ENV) else {
        return;
    };
    let bridge: SocketAddr = bridge.parse().unwrap();
    let port = bridge.port();
    let own = bridge.to_string();
    let with_token = format!("/ws?token={TOKEN}");
    let bearer = format!("Bearer {TOKEN}");
    let bearer = [("Authorization", bearer.as_str())];
    let evil = format!("evil.example:{port}");
    let evil_page = format!("http://{evil}");
    let allowed = format!("{ALLOWED_HOST}:{port}");
    let allowed_page = format!("http://{allowed}");
    let localhost = format!("localhost:{port}");
    let status = "/api/gateway/status";

    report("ws_without_token", upgrade(bridge, "/ws", &own, &[]).await);
    report("status_without_token", get(bridge, status, &own, &[]).await);

    report(
        "status_with_token",
        get(bridge, status, &own, &bearer).await,
    );
    report("visit_with_token", visit(bridge, &with_token, &own).await);

    report(
        "ws_rebinding_host",
        upgrade(bridge, &with_token, &evil, &[]).await,
    );
    report(
        "ws_rebinding_host_and_origin",
        upgrade(
            bridge,
            &with_token,
            &evil,
            &[("Origin", evil_page.as_str())],
        )
        .await,
    );
    report(
        "status_rebinding_host",
        get(bridge, status, &evil, &bearer).await,
    );

    report(
        "status_allowed_host",
        get(bridge, status, &allowed, &bearer).await,
    );
    report(
        "ws_allowed_host",
        upgrade(bridge, &with_token, &allowed, &[]).await,
    );
    report(
        "ws_allowed_host_own_page",
        upgrade(
            bridge,
            &with_token,
            &allowed,
            &[("Origin", allowed_page.as_str())],
        )
        .await,
    );

    report(
        "ws_localhost_without_token",
        upgrade(bridge, "/ws", &localhost, &[]).await,
    );
    report(
        "status_localhost_without_token",
        get(bridge, status, &localhost, &[]).await,
    );

    report("healthz", get(bridge, "/healthz", &own, &[]).await);
    report(
        "healthz_unknown_host",
        get(bridge, "/healthz", &evil, &[]).await,
    );
}

// --- the client's side ----------------------------------------------------------------

#[allow(
    clippy::print_stdout,
    reason = "the client's observations go to the test that started it"
)]
fn report(check: &str, seen: Value) {
    println!("{OBSERVED}{}", json!({"check": check, "seen": seen}));
}

/// Opens a WebSocket to `path` on `bridge`, naming it `host`, with `headers`. A refusal is
/// its status and JSON body; any other failure, its description.
async fn open(
    bridge: SocketAddr,
    path: &str,
    host: &str,
    headers: &[(&'static str, &str)],
) -> Result<Ws, Value> {
    let mut request = format!("ws://{bridge}{path}")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert("Host", host.parse().unwrap());
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let attempt = async {
        let stream = TcpStream::connect(bridge).await?;
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await
    };
    match tokio::time::timeout(DEADLINE, attempt).await {
        Err(_) => Err(json!({"error": "no answer to the upgrade in time"})),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(response))) => Err(json!({
            "status": response.status().as_u16(),
            "body": response.body().as_deref().map(body_value),
        })),
        Ok(Err(e)) => Err(json!({"error": e.to_string()})),
    }
}

/// The next text message, parsed; pings and pongs are skipped.
async fn next_json(ws: &mut Ws) -> Result<Value, String> {
    loop {
        let frame = match tokio::time::timeout(DEADLINE, ws.next()).await {
            Err(_) => return Err("no message in time".into()),
            Ok(None) => return Err("the connection ended".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str()).map_err(|e| format!("{e}: {text}"));
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return Err(format!("not a text message: {other:?}")),
        }
    }
}

/// An upgrade attempt: the refusal, or `101` and the first message.
async fn upgrade(
    bridge: SocketAddr,
    path: &str,
    host: &str,
    headers: &[(&'static str, &str)],
) -> Value {
    let mut ws = match open(bridge, path, host, headers).await {
        Ok(ws) => ws,
        Err(refusal) => return refusal,
    };
    let first = next_json(&mut ws).await;
    let _ = ws.close(None).await;
    match first {
        Ok(first) => json!({"status": 101, "first": first}),
        Err(e) => json!({"status": 101, "error": e}),
    }
}

/// A visit as the iPad makes it: connect, read the state, say hello, wait for the ack.
async fn visit(bridge: SocketAddr, path: &str, host: &str) -> Value {
    let mut ws = match open(bridge, path, host, &[]).await {
        Ok(ws) => ws,
        Err(refusal) => return refusal,
    };
    let mut seen = json!({"status": 101});
    match next_json(&mut ws).await {
        Ok(first) => seen["first"] = first,
        Err(e) => {
            seen["error"] = e.into();
            return seen;
        }
    }
    let hello =
        json!({"type": "message", "text": "hello from the LAN", "visitor": "iPad", "id": "lan-1"});
    if let Err(e) = ws.send(Message::text(hello.to_string())).await {
        seen["error"] = format!("sending: {e}").into();
        return seen;
    }
    // Other messages (the message relayed, presence) may come first.
    loop {
        match next_json(&mut ws).await {
            Ok(reply) if reply["type"] == "ack" => {
                seen["ack"] = reply;
                break;
            }
            Ok(_) => continue,
            Err(e) => {
                seen["error"] = format!("waiting for the ack: {e}").into();
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    seen
}

/// A GET whose request head is written by hand, so `Host` is exactly `host`.
async fn get(bridge: SocketAddr, path: &str, host: &str, headers: &[(&str, &str)]) -> Value {
    let exchange = async {
        let mut stream = TcpStream::connect(bridge).await?;
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = match tokio::time::timeout(DEADLINE, exchange).await {
        Err(_) => return json!({"error": "no response in time"}),
        Ok(Err(e)) => return json!({"error": e.to_string()}),
        Ok(Ok(response)) => String::from_utf8_lossy(&response).into_owned(),
    };
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(status) => json!({"status": status, "body": body_value(body.as_bytes())}),
        None => json!({"error": format!("not an HTTP response: {response:?}")}),
    }
}

/// A body as JSON if it is JSON, else as text.
fn body_value(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| String::from_utf8_lossy(body).into())
}

// --- the test's side ------------------------------------------------------------------

/// What the client reported, by check.
struct Observations {
    seen: BTreeMap<String, Value>,
    output: String,
}

impl Observations {
    fn get(&self, check: &str) -> &Value {
        self.seen.get(check).unwrap_or_else(|| {
            panic!(
                "the LAN client reported nothing for `{check}`; its output:\n{}",
                self.output
            )
        })
    }

    fn status(&self, check: &str, status: u16) -> &Value {
        let seen = self.get(check);
        assert_eq!(
            seen["status"], status,
            "`{check}` from the LAN: expected HTTP {status}, saw {seen}"
        );
        seen
    }

    /// Refused with `status` and the JSON error `error`.
    fn refused(&self, check: &str, status: u16, error: &str) {
        let seen = self.status(check, status);
        assert_eq!(
            seen["body"]["error"], error,
            "`{check}` from the LAN: expected the error `{error}`, saw {seen}"
        );
    }

    /// Upgraded, and the state came first.
    fn served(&self, check: &str) -> &Value {
        let seen = self.status(check, 101);
        let first = &seen["first"];
        assert!(
            first["type"] == "state" && first["seq"].is_u64() && first["data"] == state_json(),
            "`{check}` from the LAN: expected the state {} first, saw {seen}",
            state_json()
        );
        seen
    }
}

/// A network namespace joined to this machine by a veth pair, removed again on drop (a
/// failed assertion included).
struct Lan {
    netns: String,
    /// The pair's end on this machine; deleting it deletes the other end too.
    host_veth: String,
    /// This machine's address on the cable, where the bridge listens.
    host: Ipv4Addr,
    /// The namespace's address: the LAN client's.
    peer: Ipv4Addr,
}

impl Lan {
    /// Creates the namespace and the cable; `Err` says why this machine cannot (the test is
    /// then skipped). Any later step that fails panics, and what was made is removed.
    fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let netns = format!("workshop-lan-{pid}");
        support::netns::add(&netns, "the LAN test")?;
        // A /30 of its own in 10.231.77.0/24, by process id, so two runs at once do not
        // share an address.
        let base = u8::try_from(pid % 64).unwrap() * 4;
        let lan = Self {
            netns,
            host_veth: format!("wb{pid}h"),
            host: Ipv4Addr::new(10, 231, 77, base + 1),
            peer: Ipv4Addr::new(10, 231, 77, base + 2),
        };
        let peer_veth = format!("wb{pid}n");
        let (netns, host_veth) = (lan.netns.as_str(), lan.host_veth.as_str());
        let (host, peer) = (format!("{}/30", lan.host), format!("{}/30", lan.peer));
        ip(&[
            "link", "add", host_veth, "type", "veth", "peer", "name", &peer_veth,
        ]);
        ip(&["link", "set", &peer_veth, "netns", netns]);
        ip(&["addr", "add", &host, "dev", host_veth]);
        ip(&["link", "set", host_veth, "up"]);
        ip(&["-n", netns, "addr", "add", &peer, "dev", &peer_veth]);
        ip(&["-n", netns, "link", "set", &peer_veth, "up"]);
        ip(&["-n", netns, "link", "set", "lo", "up"]);
        Ok(lan)
    }

    /// Runs [`lan_client_when_run_inside_the_namespace`] inside the namespace against
    /// `bridge`, and collects what it reports.
    async fn run_client(&self, bridge: SocketAddr) -> Observations {
        let exe = std::env::current_exe().unwrap();
        let mut client = tokio::process::Command::new("ip");
        client
            .args(["netns", "exec", &self.netns])
            .arg(exe)
            .args([CLIENT_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CLIENT_ENV, bridge.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(CLIENT_DEADLINE, client.output())
            .await
            .unwrap_or_else(|_| panic!("the LAN client did not finish in {CLIENT_DEADLINE:?}"))
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let text = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(
            output.status.success(),
            "the LAN client failed ({}):\n{text}",
            output.status
        );
        let seen = stdout
            .lines()
            // The harness may print the test's name on the same line, before the first one.
            .filter_map(|line| line.split_once(OBSERVED).map(|(_, observed)| observed))
            .map(|line| {
                let line: Value = serde_json::from_str(line).unwrap();
                (
                    line["check"].as_str().unwrap().to_owned(),
                    line["seen"].clone(),
                )
            })
            .collect();
        Observations { seen, output: text }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting one end of the pair deletes both, even while the other is in the namespace.
        if link_exists(&self.host_veth) {
            try_ip(&["link", "del", &self.host_veth]);
        }
        try_ip(&["netns", "del", &self.netns]);
    }
}

/// Runs `ip ARGS` while cleaning up: a failure is reported, never a panic (a panic while
/// another unwinds would abort).
fn try_ip(args: &[&str]) {
    match StdCommand::new("ip").args(args).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "cleaning up: `ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("cleaning up: cannot run `ip {}`: {e}", args.join(" ")),
    }
}

fn link_exists(name: &str) -> bool {
    StdCommand::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn netns_exists(name: &str) -> bool {
    StdCommand::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|line| line.split_whitespace().next() == Some(name))
        })
}
