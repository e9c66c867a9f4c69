//! Bridges joined through NATS: a real `nats-server` (JetStream on, a temporary store, a
//! free port, a token), an origin and relays as separate `workshop-bridge` processes, and
//! clients over real WebSockets on different nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use serde_json::{Value, json};
use support::nats::{CLUSTER_TOKEN, NatsServer};
use support::*;
use tokio::process::Child;

/// A `workshop-bridge` process and where it listens.
struct Node {
    child: Child,
    addr: SocketAddr,
    /// Its HOME (and, for the origin, its files).
    world: World,
}

impl Node {
    async fn start(world: World, args: Vec<String>) -> Self {
        let mut child = command(&world, &args).spawn().unwrap();
        let addr = listening(&mut child).await;
        Self { child, addr, world }
    }

    /// The origin: the agent's files are in `world`.
    async fn origin(nats: &NatsServer, world: World) -> Self {
        let mut args = serve_args(&world);
        args.extend(cluster_args(nats));
        Self::start(world, args).await
    }

    /// A relay: no files of its own.
    async fn relay(nats: &NatsServer) -> Self {
        Self::relay_with(nats, &[]).await
    }

    async fn relay_with(nats: &NatsServer, extra: &[&str]) -> Self {
        let world = World::new();
        let mut args: Vec<String> = ["serve", "--bind", "127.0.0.1", "--relay"]
            .map(String::from)
            .into();
        args.extend(cluster_args(nats));
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::start(world, args).await
    }

    async fn connect(&self, path_and_query: &str) -> Ws {
        connect_at(self.addr, path_and_query).await
    }

    /// Connects and waits for the state: proof that the node is linked to the cluster.
    async fn connect_with_state(&self, path_and_query: &str) -> (Ws, Value) {
        let mut ws = self.connect(path_and_query).await;
        let state = recv_type(&mut ws, "state").await;
        (ws, state)
    }

    async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }
}

fn cluster_args(nats: &NatsServer) -> Vec<String> {
    [
        "--port",
        "0",
        "--cluster",
        &nats.url(),
        "--cluster-token",
        CLUSTER_TOKEN,
    ]
    .map(String::from)
    .into()
}

/// A NATS server and an origin whose state file holds `yaml`; `None` if the server cannot
/// be run here (said in the test report; a failure under CI).
async fn origin_with(test: &str, yaml: &str) -> Option<(NatsServer, Node)> {
    let nats = NatsServer::start_or_skip(test).await?;
    let origin = Node::origin(&nats, World::with_state(yaml)).await;
    Some((nats, origin))
}

#[tokio::test]
async fn a_relay_serves_the_origins_state_in_full_and_diff_mode_and_a_late_relay_gets_it_at_once() {
    let Some((nats, origin)) = origin_with(
        "a_relay_serves_the_origins_state_in_full_and_diff_mode_and_a_late_relay_gets_it_at_once",
        "mood: calm\nitems: [1, 2]\n",
    )
    .await
    else {
        return;
    };
    let relay = Node::relay(&nats).await;
    let (mut full, first) = relay.connect_with_state("/ws").await;
    assert_eq!(first["data"], json!({"mood": "calm", "items": [1, 2]}));
    let (mut diff, _) = relay.connect_with_state("/ws?diff=1").await;
    let (mut at_origin, at_origin_first) = origin.connect_with_state("/ws").await;
    assert_eq!(
        first, at_origin_first,
        "the relay serves the origin's state as it is"
    );

    origin.world.write_state("mood: busy\nitems: [1, 2, 3]\n");
    let second = recv_type(&mut full, "state").await;
    assert_eq!(second["data"], json!({"mood": "busy", "items": [1, 2, 3]}));
    assert_eq!(second["seq"], first["seq"].as_u64().unwrap() + 1);
    let patch = recv_type(&mut diff, "state_patch").await;
    assert_eq!(patch["seq"], second["seq"]);
    assert_eq!(
        patch["patch"],
        json!([
            {"op": "replace", "path": "/mood", "value": "busy"},
            {"op": "add", "path": "/items/2", "value": 3}
        ])
    );
    assert_eq!(recv_type(&mut at_origin, "state").await, second);

    // A relay that joins now gets the current state at once, with nothing written since.
    let late = Node::relay(&nats).await;
    let (_ws, state) = late.connect_with_state("/ws").await;
    assert_eq!(state, second);
    // A relay keeps no files: its HOME holds nothing the bridge made.
    assert!(!late.world.inbox.exists() && !late.world.outbox.exists());

    // Nor does it touch the files it is pointed at: a relay on the origin's machine, given
    // the origin's folders, leaves a write in progress in its inbox alone.
    let writing = origin.world.inbox.join(".tmp-in-progress.partial");
    std::fs::write(&writing, "half a message").unwrap();
    let folders = [
        "--state-file".to_owned(),
        origin.world.state_file.display().to_string(),
        "--inbox-dir".to_owned(),
        origin.world.inbox.display().to_string(),
        "--outbox-dir".to_owned(),
        origin.world.outbox.display().to_string(),
    ];
    let folders: Vec<&str> = folders.iter().map(String::as_str).collect();
    let beside = Node::relay_with(&nats, &folders).await;
    let (_ws, state) = beside.connect_with_state("/ws").await;
    assert_eq!(state, second);
    assert!(
        writing.exists(),
        "the relay removed the origin's write in progress"
    );
}

/// Reads until a message with `text` `marker` arrives; returns how many times each text
/// came before it.
async fn texts_until(ws: &mut Ws, marker: &str) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        let v = recv(ws).await;
        let Some(text) = v["text"].as_str() else {
            continue;
        };
        if text == marker {
            return texts;
        }
        texts.push(text.to_owned());
    }
}

#[tokio::test]
async fn broadcasts_reach_every_client_on_every_node_once_and_never_the_sender() {
    let Some((nats, origin)) = origin_with(
        "broadcasts_reach_every_client_on_every_node_once_and_never_the_sender",
        "a: 1\n",
    )
    .await
    else {
        return;
    };
    let (a, b) = (Node::relay(&nats).await, Node::relay(&nats).await);
    let mut clients = Vec::new();
    for node in [&origin, &a, &a, &b] {
        clients.push(node.connect_with_state("/ws").await.0);
    }
    // An agent on relay A barks; a visitor on relay B speaks; the origin's outbox barks.
    let (mut sender, _) = a.connect_with_state("/ws").await;
    send(&mut sender, json!({"type": "bark", "text": "from a"})).await;
    let (mut visitor, _) = b.connect_with_state("/ws").await;
    send(
        &mut visitor,
        json!({"type": "message", "visitor": "ada", "text": "from b", "id": "m1"}),
    )
    .await;
    assert_eq!(recv_type(&mut visitor, "ack").await["id"], "m1");
    origin
        .world
        .drop_in_outbox("1.json", r#"{"type": "bark", "text": "from the outbox"}"#);
    for ws in &mut clients {
        let mut heard = Vec::new();
        while heard.len() < 3 {
            let v = recv(ws).await;
            if let Some(text) = v["text"].as_str() {
                heard.push(text.to_owned());
            }
        }
        heard.sort();
        assert_eq!(heard, ["from a", "from b", "from the outbox"]);
    }
    // Then a marker from the origin: nothing came twice before it, on any node.
    let (mut last, _) = origin.connect_with_state("/ws").await;
    send(&mut last, json!({"type": "bark", "text": "marker"})).await;
    for ws in &mut clients {
        assert_eq!(texts_until(ws, "marker").await, Vec::<String>::new());
    }
    // The senders heard the others, never themselves.
    let heard = texts_until(&mut sender, "marker").await;
    assert!(!heard.contains(&"from a".to_owned()), "{heard:?}");
    let heard = texts_until(&mut visitor, "marker").await;
    assert!(!heard.contains(&"from b".to_owned()), "{heard:?}");
}

#[tokio::test]
async fn a_message_sent_to_a_relay_is_acked_after_the_origin_wrote_it_and_a_resend_is_written_once()
{
    let Some((nats, origin)) = origin_with(
        "a_message_sent_to_a_relay_is_acked_after_the_origin_wrote_it_and_a_resend_is_written_once",
        "a: 1\n",
    )
    .await
    else {
        return;
    };
    let relay = Node::relay(&nats).await;
    let (mut ws, _) = relay.connect_with_state("/ws?client=ipad-1").await;
    send(
        &mut ws,
        json!({"type": "message", "visitor": "ada", "text": "hello", "id": "m-1"}),
    )
    .await;
    assert_eq!(recv_type(&mut ws, "ack").await["id"], "m-1");
    // Acknowledged: so already on the origin's disk.
    let files = origin.world.inbox_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let event = &files[0].1;
    assert_eq!(
        (&event["type"], &event["visitor"], &event["text"]),
        (&json!("message"), &json!("ada"), &json!("hello"))
    );
    assert_eq!(event["provenance"]["relayed"], true);

    // The ack was lost: the client sends again, through another relay. Written once.
    drop(ws);
    let other = Node::relay(&nats).await;
    let (mut again, _) = other.connect_with_state("/ws?client=ipad-1").await;
    send(
        &mut again,
        json!({"type": "message", "visitor": "ada", "text": "hello", "id": "m-1"}),
    )
    .await;
    assert_eq!(recv_type(&mut again, "ack").await["id"], "m-1");
    assert_eq!(origin.world.inbox_files().len(), 1);

    // The origin holds it to its own rules, whatever node it came through.
    send(
        &mut again,
        json!({"type": "message", "visitor": "ada", "text": "x".repeat(4001), "id": "m-2"}),
    )
    .await;
    assert_eq!(
        recv_type(&mut again, "error").await["code"],
        "text_too_long"
    );
    assert_eq!(origin.world.inbox_files().len(), 1);
}

#[tokio::test]
async fn while_the_origin_is_away_relays_keep_the_state_and_refuse_messages_then_resync() {
    let Some((nats, mut origin)) = origin_with(
        "while_the_origin_is_away_relays_keep_the_state_and_refuse_messages_then_resync",
        "a: 1\n",
    )
    .await
    else {
        return;
    };
    let relay = Node::relay(&nats).await;
    let (mut ws, before) = relay.connect_with_state("/ws?client=ipad-1").await;
    origin.kill().await;

    send(
        &mut ws,
        json!({"type": "message", "visitor": "ada", "text": "anyone?", "id": "m-1"}),
    )
    .await;
    let refused = recv_type(&mut ws, "error").await;
    assert_eq!(
        (&refused["code"], &refused["id"]),
        (&json!("inbox_unavailable"), &json!("m-1"))
    );
    // A newcomer still gets the last state at once.
    let (_newcomer, state) = relay.connect_with_state("/ws").await;
    assert_eq!(state, before);

    // The origin comes back with news: the relay follows without a restart, and writes go
    // through again.
    let world = origin.world;
    world.write_state("a: 2\n");
    let origin = Node::origin(&nats, world).await;
    let state = recv_type(&mut ws, "state").await;
    assert_eq!(state["data"], json!({"a": 2}));
    send(
        &mut ws,
        json!({"type": "message", "visitor": "ada", "text": "anyone?", "id": "m-1"}),
    )
    .await;
    assert_eq!(recv_type(&mut ws, "ack").await["id"], "m-1");
    assert_eq!(origin.world.inbox_files().len(), 1);
}

#[tokio::test]
async fn a_nats_restart_is_ridden_out_refusing_messages_meanwhile() {
    let Some((mut nats, origin)) = origin_with(
        "a_nats_restart_is_ridden_out_refusing_messages_meanwhile",
        "a: 1\n",
    )
    .await
    else {
        return;
    };
    let relay = Node::relay(&nats).await;
    let (mut ws, _) = relay.connect_with_state("/ws?client=ipad-1").await;
    nats.kill().await;
    send(
        &mut ws,
        json!({"type": "message", "visitor": "ada", "text": "hello", "id": "m-1"}),
    )
    .await;
    assert_eq!(
        recv_type(&mut ws, "error").await["code"],
        "inbox_unavailable"
    );
    nats.restart().await;
    origin.world.write_state("a: 2\n");
    let state = recv_type(&mut ws, "state").await;
    assert_eq!(state["data"], json!({"a": 2}));
    // Linked again both ways: a message goes through, once, when re-sent.
    let mut acked = false;
    while !acked {
        send(
            &mut ws,
            json!({"type": "message", "visitor": "ada", "text": "hello", "id": "m-1"}),
        )
        .await;
        let answer = recv(&mut ws).await;
        match answer["type"].as_str() {
            Some("ack") => acked = true,
            Some("error") => assert_eq!(answer["code"], "inbox_unavailable"),
            _ => {}
        }
    }
    assert_eq!(origin.world.inbox_files().len(), 1);
}

async fn register(ws: &mut Ws, agent: &str) {
    send(
        ws,
        json!({"type": "agent_register", "agentId": agent, "role": "helper", "id": "r"}),
    )
    .await;
    assert_eq!(recv_type(ws, "ack").await["id"], "r");
}

#[tokio::test]
async fn agents_register_meet_and_are_taken_over_across_nodes() {
    let Some((nats, origin)) = origin_with(
        "agents_register_meet_and_are_taken_over_across_nodes",
        "a: 1\n",
    )
    .await
    else {
        return;
    };
    let (a, b) = (Node::relay(&nats).await, Node::relay(&nats).await);
    let (mut watcher, _) = origin.connect_with_state("/ws").await;
    let (mut on_b, _) = b.connect_with_state("/ws").await;
    let (mut pip, _) = a.connect_with_state("/ws").await;
    register(&mut pip, "pip").await;
    // Every node hears of it (and so knows where pip is: that comes first).
    for ws in [&mut watcher, &mut on_b] {
        assert_eq!(recv_type(ws, "agent_joined").await["agent_id"], "pip");
    }

    // A message for pip from the origin's side, and from relay B.
    let (mut timmy, _) = origin.connect_with_state("/ws").await;
    register(&mut timmy, "timmy").await;
    send(
        &mut timmy,
        json!({"type": "poke", "target_id": "pip", "text": "psst", "id": "d1"}),
    )
    .await;
    assert_eq!(recv_type(&mut timmy, "ack").await["id"], "d1");
    assert_eq!(recv_type(&mut pip, "poke").await["text"], "psst");
    send(
        &mut on_b,
        json!({"type": "poke", "target_id": "pip", "text": "from b"}),
    )
    .await;
    assert_eq!(recv_type(&mut pip, "poke").await["text"], "from b");
    // Only pip heard them.
    send(
        &mut on_b,
        json!({"type": "poke", "target_id": "nobody", "id": "d2"}),
    )
    .await;
    assert_eq!(
        recv_type(&mut on_b, "error").await["code"],
        "unknown_target"
    );

    // The status on any node shows the whole cluster.
    let status = gateway_status_at(b.addr).await;
    let nodes = status["cluster"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{status}");
    let agents: Vec<&Value> = nodes
        .iter()
        .flat_map(|n| n["agents"].as_array().unwrap())
        .collect();
    assert_eq!(agents.len(), 2, "{status}");

    // pip registers again on relay B: the old connection on A is told and closed.
    let (mut pip_again, _) = b.connect_with_state("/ws").await;
    register(&mut pip_again, "pip").await;
    assert_eq!(recv_type(&mut pip, "error").await["code"], "replaced");
    recv_close(&mut pip).await;
    while recv_type(&mut watcher, "agent_joined").await["agent_id"] != "pip" {}
    send(
        &mut timmy,
        json!({"type": "poke", "target_id": "pip", "text": "still there?"}),
    )
    .await;
    assert_eq!(
        recv_type(&mut pip_again, "poke").await["text"],
        "still there?"
    );
}

#[tokio::test]
async fn a_relay_started_after_an_agent_registered_can_reach_it() {
    let Some((nats, origin)) = origin_with(
        "a_relay_started_after_an_agent_registered_can_reach_it",
        "a: 1\n",
    )
    .await
    else {
        return;
    };
    let (mut timmy, _) = origin.connect_with_state("/ws").await;
    register(&mut timmy, "timmy").await;
    let late = Node::relay(&nats).await;
    let (mut ws, _) = late.connect_with_state("/ws").await;
    // The relay asked who is where when it joined; the answer may still be on its way.
    let mut delivered = false;
    while !delivered {
        send(
            &mut ws,
            json!({"type": "poke", "target_id": "timmy", "text": "hi", "id": "p"}),
        )
        .await;
        let answer = recv(&mut ws).await;
        match answer["type"].as_str() {
            Some("ack") => delivered = true,
            Some("error") => assert_eq!(answer["code"], "unknown_target"),
            _ => {}
        }
    }
    assert_eq!(recv_type(&mut timmy, "poke").await["text"], "hi");
}

#[tokio::test]
async fn killing_a_relay_under_load_loses_no_acknowledged_message() {
    let Some((nats, origin)) = origin_with(
        "killing_a_relay_under_load_loses_no_acknowledged_message",
        "a: 1\n",
    )
    .await
    else {
        return;
    };
    let mut relay = Node::relay(&nats).await;
    let (ws, _) = relay.connect_with_state("/ws?client=ipad-1").await;
    let (mut tx, mut rx) = futures_util::StreamExt::split(ws);
    // Messages go out steadily, under the rate a client is allowed; the relay is killed
    // after the 50th ack, with more on their way.
    let sender = tokio::spawn(async move {
        use futures_util::SinkExt;
        for i in 0..400 {
            let m = json!({"type": "message", "visitor": "ada", "text": format!("n{i}"), "id": format!("m{i}")});
            if tx
                .send(tokio_tungstenite::tungstenite::Message::text(m.to_string()))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(12)).await;
        }
    });
    let mut acked = Vec::new();
    while let Ok(Some(Ok(frame))) =
        tokio::time::timeout(DEADLINE, futures_util::StreamExt::next(&mut rx)).await
    {
        let Ok(text) = frame.to_text() else { continue };
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        if v["type"] == "ack" {
            acked.push(v["id"].as_str().unwrap().to_owned());
            if acked.len() == 50 {
                relay.kill().await;
            }
        }
    }
    sender.abort();
    assert!(acked.len() >= 50, "{}", acked.len());
    let written: Vec<String> = origin
        .world
        .inbox_files()
        .iter()
        .map(|(_, v)| v["client_id"].as_str().unwrap().to_owned())
        .collect();
    for id in &acked {
        assert!(
            written.contains(id),
            "{id} was acknowledged but not written"
        );
    }
}

#[tokio::test]
async fn relays_hold_clients_to_the_token_and_the_link_needs_the_clusters_token() {
    let Some((nats, _origin)) = origin_with(
        "relays_hold_clients_to_the_token_and_the_link_needs_the_clusters_token",
        "a: 1\n",
    )
    .await
    else {
        return;
    };
    let relay = Node::relay_with(&nats, &["--no-trust-loopback", "--token", TOKEN]).await;
    let refused = try_connect_at(relay.addr, "/ws").await.unwrap_err();
    assert_eq!(refusal(refused).0, 401);
    let (_ws, state) = relay
        .connect_with_state(&format!("/ws?token={TOKEN}"))
        .await;
    assert_eq!(state["data"], json!({"a": 1}));

    // With the wrong cluster token, NATS refuses the link: nothing reaches the relay, and
    // nothing it is sent reaches the inbox.
    let world = World::new();
    let mut args: Vec<String> = ["serve", "--bind", "127.0.0.1", "--relay", "--port", "0"]
        .map(String::from)
        .into();
    args.extend([
        "--cluster".into(),
        nats.url(),
        "--cluster-token".into(),
        "wrong".into(),
    ]);
    let outsider = Node::start(world, args).await;
    let mut ws = outsider.connect("/ws").await;
    send(
        &mut ws,
        json!({"type": "message", "visitor": "eve", "text": "let me in", "id": "x"}),
    )
    .await;
    let answer = recv(&mut ws).await;
    assert_eq!(
        (&answer["type"], &answer["code"]),
        (&json!("error"), &json!("inbox_unavailable")),
        "the first message is the refusal: no state came"
    );
}

#[tokio::test]
async fn the_agents_of_a_killed_relay_leave_with_it() {
    let Some((nats, origin)) =
        origin_with("the_agents_of_a_killed_relay_leave_with_it", "a: 1\n").await
    else {
        return;
    };
    let (mut a, b) = (Node::relay(&nats).await, Node::relay(&nats).await);
    let (mut watcher, _) = origin.connect_with_state("/ws").await;
    let (mut on_b, _) = b.connect_with_state("/ws").await;
    let (mut pip, _) = a.connect_with_state("/ws").await;
    register(&mut pip, "pip").await;
    for ws in [&mut watcher, &mut on_b] {
        assert_eq!(recv_type(ws, "agent_joined").await["agent_id"], "pip");
    }
    // Killed: it cannot say its agents left. The others notice its silence.
    a.kill().await;
    for ws in [&mut watcher, &mut on_b] {
        let left = recv_type(ws, "agent_left").await;
        assert_eq!(
            (&left["agent_id"], &left["reason"]),
            (&json!("pip"), &json!("its bridge left the cluster"))
        );
    }
    send(
        &mut on_b,
        json!({"type": "poke", "target_id": "pip", "id": "d"}),
    )
    .await;
    assert_eq!(
        recv_type(&mut on_b, "error").await["code"],
        "unknown_target"
    );
    // Each client heard it once.
    assert_nothing_pending(&mut watcher).await;
}

#[tokio::test]
async fn a_relay_stopped_for_a_while_leaves_and_comes_back_with_its_agents() {
    let Some((nats, origin)) = origin_with(
        "a_relay_stopped_for_a_while_leaves_and_comes_back_with_its_agents",
        "a: 1\n",
    )
    .await
    else {
        return;
    };
    let a = Node::relay(&nats).await;
    let (mut watcher, _) = origin.connect_with_state("/ws").await;
    let (mut pip, _) = a.connect_with_state("/ws").await;
    register(&mut pip, "pip").await;
    assert_eq!(
        recv_type(&mut watcher, "agent_joined").await["agent_id"],
        "pip"
    );
    let pid = a.child.id().unwrap().to_string();
    run_to_end("kill", &["-STOP", &pid]).unwrap();
    assert_eq!(
        recv_type(&mut watcher, "agent_left").await["agent_id"],
        "pip"
    );
    run_to_end("kill", &["-CONT", &pid]).unwrap();
    assert_eq!(
        recv_type(&mut watcher, "agent_joined").await["agent_id"],
        "pip"
    );
    // And messages find it again.
    let (mut timmy, _) = origin.connect_with_state("/ws").await;
    send(
        &mut timmy,
        json!({"type": "poke", "target_id": "pip", "text": "welcome back", "id": "w"}),
    )
    .await;
    assert_eq!(recv_type(&mut timmy, "ack").await["id"], "w");
    assert_eq!(recv_type(&mut pip, "poke").await["text"], "welcome back");
}

#[tokio::test]
async fn an_unreadable_credentials_file_stops_the_bridge_with_one_sentence_and_no_cluster_means_no_link()
 {
    let world = World::with_state("a: 1\n");
    let mut args = serve_args(&world);
    args.extend(
        [
            "--port",
            "0",
            "--cluster",
            "nats://127.0.0.1:1",
            "--cluster-creds",
            "/nonexistent/bridge.creds",
        ]
        .map(String::from),
    );
    let output = command(&world, &args).output().await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the cluster credentials file /nonexistent/bridge.creds cannot be used"),
        "{stderr}"
    );

    // Without --cluster: no link, and the status says nothing of a cluster.
    let mut args = serve_args(&world);
    args.extend(["--port", "0"].map(String::from));
    let plain = Node::start(world, args).await;
    let status = gateway_status_at(plain.addr).await;
    assert!(status.get("cluster").is_none(), "{status}");
}
