//! Soak: the real `workshop-bridge` process under connection churn must give back what it
//! took. 500 client slots connect over and over (to `/`, `/ws` and `/ws/matrix?diff=1`),
//! read the state, send visitor messages and wait for their acks, register as agents and
//! bark, and leave politely or abruptly (a dropped socket, some with a TCP reset), while the
//! state file is rewritten a few times a second. Afterwards the bridge must be back where it
//! started: no clients, no extra file descriptors, no extra threads once the blocking pool has
//! idled, resident memory within a bound that a per-connection leak would exceed; and every
//! acknowledged message must be in the inbox exactly once.
//!
//! ```sh
//! cargo test -p workshop-bridge --test soak -- --nocapture                 # 20 s, in the test command
//! SOAK_SECS=300 cargo test -p workshop-bridge --test soak -- --nocapture   # the real soak
//! ```
//!
//! It prints one `soak:` line with the figures (for docs/RELIABILITY.md). Linux only: it
//! reads the bridge's memory, descriptors and threads from `/proc`.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

/// Client slots, each holding at most one connection at a time.
const SLOTS: usize = 500;
/// How long one expected event (a connect, an ack, a close) may take. Generous: the test
/// must pass on a loaded two-core machine, where 500 clients and the bridge share the CPU.
const EVENT_DEADLINE: Duration = Duration::from_secs(30);
/// How long the bridge may take to give back descriptors, clients and threads after the
/// churn. Tokio's idle blocking threads exit after 10 s, so this leaves ample room.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// Pace of the state file rewrites.
const STATE_EVERY: Duration = Duration::from_millis(200);
/// Descriptors the bridge may hold beyond its baseline at the end (e.g. a watcher's
/// transient handle).
const FD_SLACK: usize = 2;
/// Threads beyond the baseline at the end (a blocking-pool thread started by a late file
/// event that has not yet idled out).
const THREAD_SLACK: usize = 2;
/// Resident memory the bridge may keep beyond its baseline at the end, besides the ids
/// below, however long the run. Freed memory is not all returned to the system: glibc keeps
/// it in its arenas (one per thread that allocated, and the inbox's fsyncs run on up to a
/// hundred blocking threads), sized by the peak, not by the total. Measured on a two-core
/// machine (debug build): plain churn of 64,000 connections, 500 at a time, plateaus at
/// +8 MiB from the first 8,000 on; this soak, with its broadcasts and inbox writes, ends
/// 10 to 14 MiB up after 20 to 90 s. 24 MiB leaves room for that on a busier machine.
///
/// What it catches: a leak of 1 KiB per connection over the 9,000 connections of the default
/// 20 s run is 9 MiB, within this slack, so the quick run only catches leaks of ~3 KiB per
/// connection and more; the real soak (`SOAK_SECS=300`, ~130,000 connections) turns even
/// 200 bytes per connection into 25 MiB beyond the slack, and a leaked connection (its
/// buffers and queue, tens of KiB) into gigabytes. The detail line prints the sensitivity.
const RSS_SLACK_KIB: u64 = 24 * 1024;
/// How much more the bridge may keep at the end than after the first third of the run.
/// What it keeps on purpose does not grow with the run: the ids of messages from clients
/// without a `?client=` identity (all of this test's) go with their connection, and the
/// others' are bounded in bytes (`--max-remembered-id-bytes`). Allocator retention is sized
/// by the peak, which both periods share. So a cost per connection is what this catches: the
/// second period has twice the first's connections, and at ~5,000 connections a third in
/// the 20 s run, 1 KiB kept per connection would exceed it; in a 300 s run, 100 bytes.
const GROWTH_SLACK_KIB: u64 = 6 * 1024;

// --- the state the test writes, and checks wherever a client sees it ---------------------

const MOODS: [&str; 4] = ["contemplative", "alert", "playful", "tired"];

fn expected_state(tick: u64) -> Value {
    let items: Vec<String> = (0..tick % 6).map(|i| format!("item-{i}")).collect();
    json!({
        "tick": tick,
        "check": (tick * 7919) % 100_003,
        "mood": MOODS[(tick % 4) as usize],
        "items": items,
    })
}

fn state_yaml(tick: u64) -> String {
    let mut yaml = format!(
        "tick: {tick}\ncheck: {}\nmood: {}\n",
        (tick * 7919) % 100_003,
        MOODS[(tick % 4) as usize]
    );
    if tick.is_multiple_of(6) {
        yaml.push_str("items: []\n");
    } else {
        yaml.push_str("items:\n");
        for i in 0..tick % 6 {
            yaml.push_str(&format!("  - item-{i}\n"));
        }
    }
    yaml
}

/// A state is whole and self-consistent (a patch applied wrongly would break this).
fn consistent(data: &Value) -> bool {
    data["tick"]
        .as_u64()
        .is_some_and(|tick| *data == expected_state(tick))
}

/// Replaces the state file by rename, as agents do.
fn write_state(path: &std::path::Path, tick: u64) {
    let temp = path.with_file_name(".soak-state.tmp");
    std::fs::write(&temp, state_yaml(tick)).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

// --- the bridge process, seen from /proc ------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    hwm_kib: u64,
    threads: usize,
    fds: usize,
}

fn sample(pid: u32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    Sample {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: usize::try_from(field("Threads:")).unwrap(),
        fds,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Waits for the `listening on ws://ADDR` line, then keeps reading the log so the bridge
/// never blocks on a full pipe, counting warnings and keeping the first serious lines.
async fn listening(child: &mut Child, log: Arc<LogWatch>) -> SocketAddr {
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, rest)) = line.split_once("listening on ws://") {
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
        panic!("the bridge exited without listening");
    })
    .await
    .expect("no `listening on` line in time");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            log.see(&line);
        }
    });
    addr
}

#[derive(Default)]
struct LogWatch {
    warnings: AtomicU64,
    errors: AtomicU64,
    /// Disconnects the bridge logged as `send failed`.
    send_failed: AtomicU64,
    /// The first few ERROR or panic lines, for the failure message.
    serious: std::sync::Mutex<Vec<String>>,
}

impl LogWatch {
    fn see(&self, line: &str) {
        if line.contains(" WARN ") {
            self.warnings.fetch_add(1, Ordering::Relaxed);
        }
        if line.contains("send failed") {
            self.send_failed.fetch_add(1, Ordering::Relaxed);
        }
        if line.contains(" ERROR ") || line.contains("panicked") {
            self.errors.fetch_add(1, Ordering::Relaxed);
            let mut serious = self.serious.lock().unwrap();
            if serious.len() < 10 {
                serious.push(line.to_owned());
            }
        }
    }
}

// --- clients -------------------------------------------------------------------------

/// A tiny deterministic generator, so each slot's mix differs but runs are reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What one slot did and saw.
#[derive(Default)]
struct SlotStats {
    connections: u64,
    abrupt: u64,
    resets: u64,
    polite: u64,
    /// Polite closes the bridge ended without answering the close frame. A queued message
    /// sent after the client's close frame arrived used to make the writer give up without
    /// flushing the reply (about 1 in 100, logged as `send failed`); that must not happen
    /// again. What remains is a reply that could not be flushed within the bridge's 1 s
    /// farewell window while this test floods a 2-core machine: rare, and bounded below.
    close_unanswered: u64,
    /// Closed by the bridge with 1013 (this test's clients could not keep up): allowed, and
    /// counted, since on a loaded machine the test process itself may fall behind.
    too_slow: u64,
    /// Ids of visitor messages the bridge acknowledged.
    acked: Vec<String>,
    enters_acked: u64,
    /// Visitors who entered and then dropped their socket: the bridge must write their leave.
    entered_then_dropped: u64,
    leaves_acked: u64,
    barks_acked: u64,
    directed_received: u64,
    states: u64,
    patches: u64,
    relayed: u64,
    seqs: HashSet<u64>,
    failures: Vec<String>,
    failure_count: u64,
}

impl SlotStats {
    /// Adds another slot's (or period's) figures to these.
    fn absorb(&mut self, s: SlotStats) {
        self.connections += s.connections;
        self.abrupt += s.abrupt;
        self.resets += s.resets;
        self.polite += s.polite;
        self.close_unanswered += s.close_unanswered;
        self.too_slow += s.too_slow;
        self.acked.extend(s.acked);
        self.enters_acked += s.enters_acked;
        self.entered_then_dropped += s.entered_then_dropped;
        self.leaves_acked += s.leaves_acked;
        self.barks_acked += s.barks_acked;
        self.directed_received += s.directed_received;
        self.states += s.states;
        self.patches += s.patches;
        self.relayed += s.relayed;
        self.seqs.extend(s.seqs);
        self.failure_count += s.failure_count;
        for f in s.failures {
            if self.failures.len() < 10 {
                self.failures.push(f);
            }
        }
    }

    fn fail(&mut self, what: String) {
        self.failure_count += 1;
        if self.failures.len() < 5 {
            self.failures.push(what);
        }
    }
}

type Socket = WebSocketStream<TcpStream>;

/// How a read ended when it did not yield a message.
enum Ended {
    /// The bridge closed the connection as too slow (1013): the visit is over, no failure.
    TooSlow,
    /// Anything else unexpected.
    Failed(String),
}

struct Client {
    ws: Socket,
    /// The state as this client knows it: `(seq, data)`.
    state: Option<(u64, Value)>,
}

impl Client {
    async fn connect(addr: SocketAddr, path: &str) -> Result<Self, String> {
        let connecting = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {path}: {e}"))?;
            let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), stream)
                .await
                .map_err(|e| format!("handshake {path}: {e}"))?;
            Ok::<_, String>(ws)
        };
        let ws = tokio::time::timeout(EVENT_DEADLINE, connecting)
            .await
            .map_err(|_| format!("connect {path}: timed out"))??;
        Ok(Self { ws, state: None })
    }

    async fn send(&mut self, value: Value) -> Result<(), Ended> {
        tokio::time::timeout(
            EVENT_DEADLINE,
            self.ws.send(Message::text(value.to_string())),
        )
        .await
        .map_err(|_| Ended::Failed("send timed out".into()))?
        .map_err(|e| Ended::Failed(format!("send: {e}")))
    }

    /// The next JSON message; states and patches are checked and folded in on the way.
    async fn next(&mut self, stats: &mut SlotStats) -> Result<Value, Ended> {
        loop {
            let frame = tokio::time::timeout(EVENT_DEADLINE, self.ws.next())
                .await
                .map_err(|_| Ended::Failed("nothing from the bridge in time".into()))?;
            let text = match frame {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) == 1013 => {
                    return Err(Ended::TooSlow);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(Ended::Failed(format!("closed by the bridge: {frame:?}")));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(Ended::Failed(format!("read: {e}"))),
                None => return Err(Ended::Failed("connection ended".into())),
            };
            // Broadcasts from other clients (and presence) are most of the traffic: count
            // them without parsing, so 500 clients in one test process keep up.
            if RELAYED.iter().any(|p| text.starts_with(p)) {
                stats.relayed += 1;
                continue;
            }
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| Ended::Failed(format!("not JSON ({e}): {text}")))?;
            match v["type"].as_str() {
                Some("state") => {
                    let seq = v["seq"].as_u64().unwrap_or_default();
                    if !consistent(&v["data"]) {
                        return Err(Ended::Failed(format!("inconsistent state: {v}")));
                    }
                    if let Some((last, _)) = &self.state
                        && seq <= *last
                    {
                        return Err(Ended::Failed(format!("state went back: {last} then {v}")));
                    }
                    stats.states += 1;
                    stats.seqs.insert(seq);
                    self.state = Some((seq, v["data"].clone()));
                }
                Some("state_patch") => {
                    let seq = v["seq"].as_u64().unwrap_or_default();
                    let Some((last, data)) = &mut self.state else {
                        return Err(Ended::Failed(format!("a patch before any state: {v}")));
                    };
                    if seq != *last + 1 {
                        return Err(Ended::Failed(format!("patch {seq} after state {last}")));
                    }
                    let patch: json_patch::Patch = serde_json::from_value(v["patch"].clone())
                        .map_err(|e| Ended::Failed(format!("bad patch ({e}): {v}")))?;
                    json_patch::patch(data, &patch)
                        .map_err(|e| Ended::Failed(format!("patch does not apply ({e}): {v}")))?;
                    if !consistent(data) {
                        return Err(Ended::Failed(format!("patched state is wrong: {data}")));
                    }
                    *last = seq;
                    stats.patches += 1;
                    stats.seqs.insert(seq);
                }
                Some("error") => return Err(Ended::Failed(format!("bridge error: {v}"))),
                _ => {}
            }
            return Ok(v);
        }
    }

    /// Reads until a message satisfying `wanted` arrives.
    async fn wait_for(
        &mut self,
        stats: &mut SlotStats,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Value, Ended> {
        loop {
            let v = self.next(stats).await?;
            if wanted(&v) {
                return Ok(v);
            }
        }
    }

    /// Sends `value` (which carries `id`) and waits for its ack.
    async fn send_acked(
        &mut self,
        stats: &mut SlotStats,
        value: Value,
        id: &str,
    ) -> Result<(), Ended> {
        self.send(value).await?;
        self.wait_for(stats, |v| v["type"] == "ack" && v["id"] == id)
            .await
            .map(drop)
    }

    /// The initial state, which every hub connection gets first.
    async fn first_state(&mut self, stats: &mut SlotStats) -> Result<u64, Ended> {
        self.wait_for(stats, |v| v["type"] == "state").await?;
        Ok(self.state.as_ref().map_or(0, |(seq, _)| *seq))
    }

    /// Leaves with a close frame and waits for the end of the socket. `Ok(false)` when the
    /// bridge ended the TCP connection without answering the close frame.
    async fn close_politely(mut self) -> Result<bool, String> {
        let closing = async {
            self.ws
                .close(None)
                .await
                .map_err(|e| format!("close: {e}"))?;
            while let Some(frame) = self.ws.next().await {
                match frame {
                    Ok(_) => {}
                    Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                        return Ok(false);
                    }
                    Err(e) => return Err(format!("read after close: {e}")),
                }
            }
            Ok(true)
        };
        tokio::time::timeout(EVENT_DEADLINE, closing)
            .await
            .map_err(|_| "the close was not answered in time".to_owned())?
    }

    /// Leaves without a word: the socket is dropped; with `reset`, as a TCP RST.
    fn drop_abruptly(self, reset: bool) {
        if reset {
            let _ = self.ws.get_ref().set_zero_linger();
        }
        drop(self);
    }
}

/// What everyone shares.
struct Shared {
    addr: SocketAddr,
    /// The churn is over: finish the current visit and stop.
    stop: CancellationToken,
}

/// How broadcasts this test's clients never wait for begin (as sent: the bridge relays
/// the raw text, and `json!` keeps `type` first).
const RELAYED: [&str; 6] = [
    r#"{"type":"visitor_message""#,
    r#"{"type":"enter""#,
    r#"{"type":"leave""#,
    r#"{"type":"bark""#,
    r#"{"type":"agent_joined""#,
    r#"{"type":"agent_left""#,
];

/// The mix of visits, in percent; agents take the rest. Visitor messages, barks and
/// presence are broadcast to every connected client, about 500 deliveries each, so they are
/// kept to a fraction of the visits: this is a soak of connection churn, not a fan-out
/// benchmark. (Clients that fall behind anyway are closed with 1013 and counted.)
const QUICK: u64 = 35;
const VIEWER: u64 = 45;
const VISITOR: u64 = 13;

const PATHS: [&str; 3] = ["/", "/ws", "/ws/matrix?diff=1"];

/// One slot: visit after visit until the churn is over.
async fn slot(shared: Arc<Shared>, slot: usize) -> SlotStats {
    let mut rng = Rng::new(slot as u64 + 1);
    let mut stats = SlotStats::default();
    let mut visit = 0;
    while !shared.stop.is_cancelled() {
        visit += 1;
        let path = PATHS[rng.below(3) as usize];
        let mut client = match Client::connect(shared.addr, path).await {
            Ok(client) => client,
            Err(e) => {
                stats.fail(e);
                continue;
            }
        };
        stats.connections += 1;
        let abrupt = rng.below(10) < 4;
        match one_visit(
            &shared,
            &mut client,
            &mut rng,
            &mut stats,
            slot,
            visit,
            abrupt,
        )
        .await
        {
            Ok(()) => {}
            Err(Ended::TooSlow) => {
                stats.too_slow += 1;
                continue;
            }
            Err(Ended::Failed(why)) => {
                stats.fail(format!("{path}: {why}"));
                continue;
            }
        }
        if abrupt {
            stats.abrupt += 1;
            let reset = rng.below(2) == 0;
            stats.resets += u64::from(reset);
            client.drop_abruptly(reset);
        } else {
            match client.close_politely().await {
                Ok(answered) => {
                    stats.polite += 1;
                    stats.close_unanswered += u64::from(!answered);
                }
                Err(e) => stats.fail(format!("{path}: {e}")),
            }
        }
    }
    stats
}

/// What a client does between connecting and leaving.
async fn one_visit(
    shared: &Shared,
    client: &mut Client,
    rng: &mut Rng,
    stats: &mut SlotStats,
    slot: usize,
    visit: u64,
    abrupt: bool,
) -> Result<(), Ended> {
    let seq = client.first_state(stats).await?;
    match rng.below(100) {
        // Look and go.
        r if r < QUICK => Ok(()),
        // A viewer: stays for the next one to three state changes (or the end of the churn).
        r if r < QUICK + VIEWER => {
            let wanted = seq + 1 + rng.below(3);
            tokio::select! {
                () = shared.stop.cancelled() => Ok(()),
                seen = client.wait_for(stats, |v| {
                    matches!(v["type"].as_str(), Some("state" | "state_patch"))
                        && v["seq"].as_u64().is_some_and(|s| s >= wanted)
                }) => seen.map(drop),
            }
        }
        // A visitor: maybe enters, says one to three things, leaves politely if polite.
        r if r < QUICK + VIEWER + VISITOR => {
            let visitor = format!("soak-{slot}");
            let entered = rng.below(2) == 0;
            if entered {
                let id = format!("e-{slot}-{visit}");
                let enter = json!({"type": "enter", "visitor": visitor, "id": id});
                client.send_acked(stats, enter, &id).await?;
                stats.enters_acked += 1;
            }
            for k in 0..1 + rng.below(3) {
                let id = format!("v-{slot}-{visit}-{k}");
                let message = json!({
                    "type": "visitor_message",
                    "id": id,
                    "text": format!("soak ✓ {slot}/{visit}/{k}"),
                    "visitor": visitor,
                });
                client.send_acked(stats, message, &id).await?;
                stats.acked.push(id);
            }
            if entered && !abrupt {
                let id = format!("l-{slot}-{visit}");
                let leave = json!({"type": "leave", "visitor": visitor, "id": id});
                client.send_acked(stats, leave, &id).await?;
                stats.leaves_acked += 1;
            }
            // The socket is dropped next (see `slot`).
            stats.entered_then_dropped += u64::from(entered && abrupt);
            Ok(())
        }
        // An agent: registers, barks to everyone, and sometimes sends itself a directed
        // message (routing by `target_id`).
        _ => {
            let agent = format!("soak-agent-{slot}-{visit}");
            let id = format!("r-{slot}-{visit}");
            let register =
                json!({"type": "agent_register", "agentId": agent, "role": "soak", "id": id});
            client.send_acked(stats, register, &id).await?;
            let id = format!("b-{slot}-{visit}");
            let bark = json!({
                "type": "bark",
                "text": format!("bark {slot}/{visit}"),
                "mood": MOODS[(visit % 4) as usize],
                "id": id,
            });
            client.send_acked(stats, bark, &id).await?;
            stats.barks_acked += 1;
            if rng.below(2) == 0 {
                let note = format!("note-{slot}-{visit}");
                let direct = json!({"type": "agent_message", "target_id": agent, "text": note});
                client.send(direct).await?;
                client
                    .wait_for(stats, |v| v["type"] == "agent_message" && v["text"] == note)
                    .await?;
                stats.directed_received += 1;
            }
            Ok(())
        }
    }
}

// --- the soak ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_bridge_gives_back_what_churn_took() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let world = World::with_state(&state_yaml(0));
    let mut args = serve_args(&world);
    args.extend(
        [
            "--port",
            "0",
            "--no-auth",
            "--max-connections-per-address",
            "100000",
            // Every acknowledged message stays in the inbox until the end, for the check.
            "--max-inbox-files",
            "100000000",
        ]
        .map(String::from),
    );
    let mut child = command(&world, &args).spawn().unwrap();
    let pid = child.id().unwrap();
    let log = Arc::new(LogWatch::default());
    let addr = listening(&mut child, Arc::clone(&log)).await;

    // Warm-up: one client does a bit of everything, so lazily made things (the blocking
    // pool, the inbox's first write, buffers) exist before the baseline is taken.
    let mut warm = SlotStats::default();
    {
        let mut client = Client::connect(addr, "/ws").await.unwrap();
        let warm_up = async {
            client.first_state(&mut warm).await?;
            let message = json!({"type": "visitor_message", "id": "warm-up", "text": "hello", "visitor": "soak"});
            client.send_acked(&mut warm, message, "warm-up").await?;
            let register =
                json!({"type": "agent_register", "agentId": "soak-warm", "id": "warm-r"});
            client.send_acked(&mut warm, register, "warm-r").await?;
            let bark = json!({"type": "bark", "text": "warm", "id": "warm-b"});
            client.send_acked(&mut warm, bark, "warm-b").await
        };
        match warm_up.await {
            Ok(()) => {}
            Err(Ended::Failed(why)) => panic!("warm-up: {why}"),
            Err(Ended::TooSlow) => panic!("warm-up: closed as too slow"),
        }
        assert!(client.close_politely().await.unwrap());
    }
    warm.acked.push("warm-up".into());
    let baseline = settle(addr, pid, None).await;
    let first_seq = gateway_status_at(addr).await["state"]["seq"]
        .as_u64()
        .unwrap();

    // The churn, in two periods with a pause between them: what the bridge keeps after the
    // first third must be about what it keeps at the end, however long the second period
    // ran. A cost per connection would grow with it; allocator retention, sized by the peak,
    // does not.
    let started = Instant::now();
    let first_secs = (secs / 3).max(1);
    let first = churn(addr, pid, 0, first_secs, world.state_file.clone(), 0).await;
    let middle = settle(addr, pid, Some(baseline)).await;
    let second = churn(
        addr,
        pid,
        1,
        secs - first_secs,
        world.state_file.clone(),
        first.last_tick,
    )
    .await;
    let last_tick = second.last_tick;
    let peak = Sample {
        rss_kib: first.peak.rss_kib.max(second.peak.rss_kib),
        fds: first.peak.fds.max(second.peak.fds),
        threads: first.peak.threads.max(second.peak.threads),
        ..second.peak
    };
    let mut total = warm;
    let mut seqs = HashSet::new();
    for period in [first.total, second.total] {
        seqs.extend(period.seqs.iter().copied());
        total.absorb(period);
    }
    let churn_secs = started.elapsed().as_secs_f64();

    // The bridge has the last state the test wrote, and serves it to a newcomer.
    let mut last = SlotStats::default();
    {
        let mut client = Client::connect(addr, "/ws").await.unwrap();
        let want = json!(last_tick);
        let seen = client
            .wait_for(&mut last, |v| {
                v["type"] == "state" && v["data"]["tick"] == want
            })
            .await;
        assert!(seen.is_ok(), "the last state ({last_tick}) is served");
        assert!(client.close_politely().await.unwrap());
    }

    // Everyone is gone: the bridge must give back descriptors and threads.
    let end = settle(addr, pid, Some(baseline)).await;
    let status = gateway_status_at(addr).await;

    // The inbox: every acknowledged message exactly once.
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let (mut enters, mut leaves, mut leaves_by_bridge) = (0, 0, 0);
    let inbox = world.inbox_files();
    for (name, event) in &inbox {
        match event["type"].as_str() {
            Some("message") => {
                let id = event["client_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}"));
                *by_id.entry(id.to_owned()).or_default() += 1;
            }
            Some("enter") => enters += 1,
            Some("leave") => {
                leaves += 1;
                leaves_by_bridge += usize::from(event["reason"].is_string());
            }
            other => panic!("{name}: unexpected type {other:?}"),
        }
    }
    let acked: HashSet<&String> = total.acked.iter().collect();
    assert_eq!(acked.len(), total.acked.len(), "ids are unique");
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !by_id.contains_key(**id))
        .collect();
    let twice: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    let unacked_written = by_id.keys().filter(|id| !acked.contains(id)).count();

    let rss_bound = baseline.rss_kib + RSS_SLACK_KIB;
    eprintln!(
        "soak: {secs} s, {SLOTS} slots: {} connections ({} polite, {} of them unanswered; {} abrupt, {} as RST; {} closed as too slow), {} messages acked, {} barks acked, {} directed, {} state versions seen ({} made by the bridge from {} writes); RSS baseline/peak/after a third/end {}/{}/{}/{} MiB (bound {}); fds baseline/peak/end {}/{}/{}; threads baseline/peak/end {}/{}/{}",
        total.connections,
        total.polite,
        total.close_unanswered,
        total.abrupt,
        total.resets,
        total.too_slow,
        total.acked.len(),
        total.barks_acked,
        total.directed_received,
        seqs.len(),
        status["state"]["seq"].as_u64().unwrap() - first_seq,
        last_tick,
        mib(baseline.rss_kib),
        mib(end.hwm_kib),
        mib(middle.rss_kib),
        mib(end.rss_kib),
        mib(rss_bound),
        baseline.fds,
        peak.fds,
        end.fds,
        baseline.threads,
        peak.threads,
        end.threads,
    );
    eprintln!(
        "soak detail: churn {churn_secs:.1} s; clients read {} states, {} patches, {} relayed messages; inbox {} files ({} enters, {} leaves of which {} by the bridge), {} written but not acked; bridge log {} warnings, {} disconnects for `send failed`; RSS slack {} MiB = {} bytes per connection",
        total.states,
        total.patches,
        total.relayed,
        inbox.len(),
        enters,
        leaves,
        leaves_by_bridge,
        unacked_written,
        log.warnings.load(Ordering::Relaxed),
        log.send_failed.load(Ordering::Relaxed),
        RSS_SLACK_KIB / 1024,
        RSS_SLACK_KIB * 1024 / total.connections.max(1),
    );

    assert_eq!(
        total.failure_count, 0,
        "clients met no failure: {:#?}",
        total.failures
    );
    assert_eq!(
        log.errors.load(Ordering::Relaxed),
        0,
        "no errors or panics in the bridge's log: {:#?}",
        log.serious.lock().unwrap()
    );
    assert!(
        missing.is_empty(),
        "acked but not in the inbox: {missing:?}"
    );
    assert!(twice.is_empty(), "in the inbox more than once: {twice:?}");
    assert!(
        unacked_written as u64 <= total.too_slow,
        "{unacked_written} messages written but not acked, more than the {} connections closed as too slow",
        total.too_slow
    );
    assert_eq!(enters, leaves, "every enter has its leave");
    // The bridge writes a leave for every visitor who entered and dropped the socket (and
    // for those it closed as too slow).
    assert!(
        (total.entered_then_dropped..=total.entered_then_dropped + total.too_slow)
            .contains(&(leaves_by_bridge as u64)),
        "{leaves_by_bridge} leaves written by the bridge for {} visitors who entered and dropped their socket",
        total.entered_then_dropped
    );
    assert_eq!(
        log.send_failed.load(Ordering::Relaxed),
        0,
        "no writer gave up on a connection the client was closing"
    );
    assert!(
        total.close_unanswered * 200 <= total.polite,
        "{} of {} polite closes were not answered",
        total.close_unanswered,
        total.polite
    );
    assert_eq!(status["connections"]["total"], 0, "{status}");
    assert_eq!(status["state"]["last_error"], Value::Null, "{status}");
    assert!(
        total.connections > SLOTS as u64,
        "the churn ran: {} connections",
        total.connections
    );
    assert!(!seqs.is_empty(), "clients saw state versions");
    assert!(
        end.rss_kib <= middle.rss_kib + GROWTH_SLACK_KIB,
        "resident memory grew with the run: {} KiB after the first third, {} KiB at the end",
        middle.rss_kib,
        end.rss_kib,
    );
    assert!(
        end.rss_kib <= rss_bound,
        "resident memory {} KiB is within {} KiB of the baseline {} KiB (bound {rss_bound} KiB)",
        end.rss_kib,
        rss_bound - baseline.rss_kib,
        baseline.rss_kib,
    );

    // And it still stops cleanly.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the bridge exits after SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

/// What one period of churn produced.
struct Churn {
    total: SlotStats,
    last_tick: u64,
    peak: Sample,
}

/// Runs every slot against the bridge for `secs` while the state file is rewritten (ticks
/// after `first_tick`), then waits for every slot to finish its visit. Each `period` has
/// slots of its own numbers, so visitor names and message ids never repeat across periods.
async fn churn(
    addr: SocketAddr,
    pid: u32,
    period: usize,
    secs: u64,
    state_file: std::path::PathBuf,
    first_tick: u64,
) -> Churn {
    let shared = Arc::new(Shared {
        addr,
        stop: CancellationToken::new(),
    });
    let slots: Vec<_> = (0..SLOTS)
        .map(|n| tokio::spawn(slot(Arc::clone(&shared), period * SLOTS + n)))
        .collect();
    let stop = shared.stop.clone();
    let writer = tokio::spawn(async move {
        let mut tick = first_tick;
        let mut pace = tokio::time::interval(STATE_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return tick,
                _ = pace.tick() => {}
            }
            tick += 1;
            let path = state_file.clone();
            tokio::task::spawn_blocking(move || write_state(&path, tick))
                .await
                .unwrap();
        }
    });
    let stop = shared.stop.clone();
    let monitor = tokio::spawn(async move {
        let mut peak = sample(pid);
        let mut pace = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = stop.cancelled() => return peak,
                _ = pace.tick() => {}
            }
            let now = sample(pid);
            peak.rss_kib = peak.rss_kib.max(now.rss_kib);
            peak.fds = peak.fds.max(now.fds);
            peak.threads = peak.threads.max(now.threads);
        }
    });
    tokio::time::sleep(Duration::from_secs(secs)).await;
    shared.stop.cancel();
    let last_tick = writer.await.unwrap();
    let peak = monitor.await.unwrap();
    let mut total = SlotStats::default();
    for handle in slots {
        let s = tokio::time::timeout(EVENT_DEADLINE * 2, handle)
            .await
            .expect("every slot finishes its visit")
            .unwrap();
        total.absorb(s);
    }
    Churn {
        total,
        last_tick,
        peak,
    }
}

/// Waits until the bridge has no clients and, with a `baseline`, until its descriptors and
/// threads are back to it (with slack); returns a sample taken then. Without a baseline,
/// waits for the descriptor count to hold still (the warm-up's socket closing).
async fn settle(addr: SocketAddr, pid: u32, baseline: Option<Sample>) -> Sample {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    let mut previous: Option<Sample> = None;
    loop {
        let status = gateway_status_at(addr).await;
        let clients = status["connections"]["total"].as_u64();
        let now = sample(pid);
        let settled = clients == Some(0)
            && match baseline {
                Some(base) => {
                    now.fds <= base.fds + FD_SLACK && now.threads <= base.threads + THREAD_SLACK
                }
                None => previous.is_some_and(|p| p.fds == now.fds),
            };
        if settled {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge did not settle in {SETTLE_DEADLINE:?}: {clients:?} clients, {now:?}, baseline {baseline:?}"
        );
        previous = Some(now);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
