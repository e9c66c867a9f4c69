//! Crash safety: the bridge is killed with SIGKILL while clients flood it with messages.
//! Every message it acknowledged must be in the inbox exactly once, no partial file may be
//! visible, and a restarted bridge must serve the last state to the clients that come back.
//!
//! `CRASH_ROUNDS=200 cargo test --test crash` for a longer run; the default is quick.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

mod support;

use std::collections::{HashMap, HashSet};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const SENDERS: usize = 4;

/// One client sending messages one after another, reporting each acknowledged id.
async fn flood(
    addr: std::net::SocketAddr,
    sender: usize,
    round: usize,
    acked: mpsc::UnboundedSender<String>,
) {
    let Ok((mut ws, _)) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?client=s{sender}")).await
    else {
        return;
    };
    for n in 0.. {
        let id = format!("r{round}-s{sender}-m{n}");
        let msg = json!({"type": "message", "text": format!("message {n}"), "visitor": "crash test", "id": id});
        if ws.send(Message::text(msg.to_string())).await.is_err() {
            return;
        }
        // Wait for this message's ack; anything else (state, relays) is skipped.
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "ack" && v["id"] == id.as_str() {
                        let _ = acked.send(id.clone());
                        break;
                    }
                }
                Some(Ok(_)) => {}
                // Killed: whatever was not acknowledged may or may not be in the inbox.
                Some(Err(_)) | None => return,
            }
        }
    }
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill_exactly_once() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(8);
    let world = World::with_state("round: 0\n");
    let mut acked_total = 0;
    let mut seen: HashSet<String> = HashSet::new();
    for round in 0..rounds {
        let mut args = serve_args(&world);
        args.extend([
            "--port".into(),
            "0".into(),
            "--no-auth".into(),
            "--max-messages-per-sec".into(),
            "100000".into(),
        ]);
        let mut child = command(&world, &args).spawn().unwrap();
        let addr = listening(&mut child).await;

        // The restarted bridge serves the last state (written before the previous kill).
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        let state = recv_type(&mut ws, "state").await;
        assert_eq!(state["data"], json!({"round": round}), "round {round}");
        drop(ws);

        let (tx, mut rx) = mpsc::unbounded_channel();
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| tokio::spawn(flood(addr, s, round, tx.clone())))
            .collect();
        drop(tx);
        // Kill after a different number of acknowledged messages each round: a cheap way to
        // land the kill at many different moments of the write path.
        let kill_after = 5 + (round * 37) % 120;
        let mut acked = Vec::new();
        while acked.len() < kill_after {
            acked.push(
                tokio::time::timeout(DEADLINE, rx.recv())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
        for s in senders {
            s.await.unwrap();
        }
        while let Ok(id) = rx.try_recv() {
            acked.push(id);
        }

        let mut counts: HashMap<String, usize> = HashMap::new();
        for name in world.inbox_names_all() {
            assert!(
                name.starts_with('.') || name.ends_with(".json"),
                "only complete event files are visible: {name}"
            );
        }
        for (_, event) in world.inbox_files() {
            if let Some(id) = event["client_id"].as_str() {
                *counts.entry(id.to_owned()).or_default() += 1;
            }
        }
        for id in &acked {
            assert_eq!(
                counts.get(id),
                Some(&1),
                "acknowledged {id} is in the inbox exactly once"
            );
        }
        assert!(counts.values().all(|&c| c == 1), "nothing written twice");
        acked_total += acked.len();
        seen.extend(acked);

        world.write_state(&format!("round: {}\n", round + 1));
    }
    assert_eq!(seen.len(), acked_total);
    // The next start removes the partial files the kills left behind.
    let mut args = serve_args(&world);
    args.extend(["--port".into(), "0".into(), "--no-auth".into()]);
    let mut child = command(&world, &args).spawn().unwrap();
    listening(&mut child).await;
    assert!(
        world
            .inbox_names_all()
            .iter()
            .all(|n| !n.starts_with(".tmp-"))
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
