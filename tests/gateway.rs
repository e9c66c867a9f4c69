//! The Matrix gateway on the same hub: registration, presence, routing and the status API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::*;
use workshop_bridge::Config;

/// Connects on `/ws/matrix` and registers as `id` with `role`; returns the socket after the
/// bridge confirmed the registration (its own `agent_joined`).
async fn agent(bridge: &workshop_bridge::BridgeHandle, id: &str, role: &str) -> Ws {
    let (mut ws, _) = connect_with_state(bridge, "/ws/matrix").await;
    send(
        &mut ws,
        json!({"type": "agent_register", "agentId": id, "role": role}),
    )
    .await;
    let joined = recv_type(&mut ws, "agent_joined").await;
    assert_eq!(joined["agentId"], id);
    ws
}

#[tokio::test]
async fn registering_announces_the_agent_to_everyone_in_both_spellings() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/").await;
    let _timmy = agent(&bridge, "timmy", "agent").await;
    assert_eq!(
        recv(&mut ipad).await,
        json!({"type": "agent_joined", "agentId": "timmy", "agent_id": "timmy", "role": "agent"})
    );

    // The Matrix spelling is accepted too.
    let (mut bot, _) = connect_with_state(&bridge, "/ws/matrix").await;
    send(
        &mut bot,
        json!({"type": "agent_register", "agent_id": "perplexity", "role": "bot", "id": "r1"}),
    )
    .await;
    assert_eq!(recv(&mut ipad).await["agent_id"], "perplexity");
    assert_eq!(recv_type(&mut bot, "ack").await["id"], "r1");
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_closed_or_dead_agent_connection_is_announced_as_left() {
    let world = World::with_state("a: 1\n");
    let bridge = start(Config {
        heartbeat_secs: 1,
        ..world.config()
    })
    .await;
    let (mut ipad, _) = connect_with_state(&bridge, "/").await;

    let mut closer = agent(&bridge, "closer", "bot").await;
    closer.close(None).await.unwrap();
    // Reading keeps the iPad answering pings while it waits: only the agents go silent.
    let left = recv_type(&mut ipad, "agent_left").await;
    assert_eq!(left["agentId"], "closer");
    assert_eq!(left["agent_id"], "closer");

    // An agent whose socket is half dead: it stops answering pings.
    let _ghost = agent(&bridge, "ghost", "agent").await;
    let left = recv_type(&mut ipad, "agent_left").await;
    assert_eq!(left["agentId"], "ghost");
    assert_eq!(left["reason"], "heartbeat timeout");
    bridge.shutdown().await;
}

#[tokio::test]
async fn broadcasts_reach_all_others_and_directed_messages_only_their_target() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let mut timmy = agent(&bridge, "timmy", "agent").await;
    let mut pip = agent(&bridge, "pip", "familiar").await;
    let (mut ipad, _) = connect_with_state(&bridge, "/").await;
    // Drain the presence messages each got.
    recv_type(&mut timmy, "agent_joined").await; // pip's

    send(
        &mut timmy,
        json!({"type": "agent_state", "agent_id": "timmy", "mood": "calm"}),
    )
    .await;
    assert_eq!(recv(&mut pip).await["type"], "agent_state");
    assert_eq!(recv(&mut ipad).await["type"], "agent_state");
    assert_nothing_pending(&mut timmy).await; // not echoed

    send(&mut timmy, json!({"type": "agent_message", "target_id": "pip", "text": "fetch the biscuit", "id": "d1"})).await;
    assert_eq!(recv(&mut timmy).await, json!({"type": "ack", "id": "d1"}));
    let direct = recv(&mut pip).await;
    assert_eq!(direct["text"], "fetch the biscuit");
    assert_nothing_pending(&mut ipad).await; // only the target

    send(
        &mut timmy,
        json!({"type": "agent_message", "target_id": "nobody", "id": "d2"}),
    )
    .await;
    let error = recv(&mut timmy).await;
    assert_eq!(error["code"], "unknown_target");
    assert_eq!(error["id"], "d2");
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_second_connection_takes_over_an_agent_id_and_the_first_is_told_why() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/").await;
    let mut old = agent(&bridge, "timmy", "agent").await;
    let _new = agent(&bridge, "timmy", "agent").await;

    let error = recv_type(&mut old, "error").await;
    assert_eq!(error["code"], "replaced");
    let close = recv_close(&mut old).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);

    // Observers saw two joins and no leave: the id lives on in the new connection. Checked
    // once the old connection has left the hub (its close frame comes first), since that
    // is when a leave would be announced.
    wait_until(|| (bridge.client_count() == 2).then_some(())).await;
    assert_eq!(recv(&mut ipad).await["type"], "agent_joined");
    assert_eq!(recv(&mut ipad).await["type"], "agent_joined");
    assert_nothing_pending(&mut ipad).await;
    let status = bridge.status();
    assert_eq!(status.agents.len(), 1);
    assert_eq!(status.agents[0].agent_id, "timmy");
    bridge.shutdown().await;
}

#[tokio::test]
async fn re_registering_updates_and_a_malformed_registration_changes_nothing() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let mut ws = agent(&bridge, "scout", "bot").await;
    send(
        &mut ws,
        json!({"type": "agent_register", "agentId": "scout-2", "role": "agent"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["agentId"], "scout"); // agent_left for the old id
    assert_eq!(recv(&mut ws).await["agentId"], "scout-2");

    send(
        &mut ws,
        json!({"type": "agent_register", "role": "agent", "id": 5}),
    )
    .await;
    let error = recv(&mut ws).await;
    assert_eq!(
        (error["code"].clone(), error["id"].clone()),
        (json!("bad_register"), json!(5))
    );
    let status = bridge.status();
    assert_eq!(status.agents.len(), 1);
    assert_eq!(
        (
            status.agents[0].agent_id.as_str(),
            status.agents[0].role.as_str()
        ),
        ("scout-2", "agent")
    );
    bridge.shutdown().await;
}

#[tokio::test]
async fn unknown_types_and_fields_pass_through_byte_for_byte() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let mut sender = agent(&bridge, "builder", "agent").await;
    // Connected after the registration: the first thing it gets after the state is relayed.
    let (mut viewer, _) = connect_with_state(&bridge, "/ws/matrix").await;

    let frames = [
        r#"{"zeta":1,"type":"scene_batch","ops":[{"op":"add","id":"tower","pos":[1.5,0,-2]}],"alpha":{"nested":[true,null]}}"#,
        r#"{"type":"payment_flow","amount_sats":2100,"memo":"café ☕"}"#,
        r#"{"type":"something_new_2027","x":   1,  "weird spacing":"kept"}"#,
    ];
    for frame in frames {
        send_text(&mut sender, frame).await;
        assert_eq!(recv_text(&mut viewer).await, frame);
    }
    for kind in [
        "agent_state",
        "agent_move",
        "agent_behavior",
        "bark",
        "agent_message",
        "scene_add",
        "scene_update",
        "scene_remove",
        "scene_clear",
        "scene_batch",
        "world_register",
        "world_load",
        "world_unregister",
        "zone_add",
        "zone_remove",
        "task_created",
        "task_update",
        "task_action",
        "payment_flow",
    ] {
        let frame = format!(r#"{{"type":"{kind}","agent_id":"builder","extra":{{"k":[1,2]}}}}"#);
        send_text(&mut sender, &frame).await;
        assert_eq!(recv_text(&mut viewer).await, frame, "{kind}");
    }
    // `system_status` is the bridge's own word (see tests/attacks.rs).
    send_text(&mut sender, r#"{"type":"system_status","id":9}"#).await;
    assert_eq!(recv(&mut sender).await["code"], "reserved_type");
    bridge.shutdown().await;
}

#[tokio::test]
async fn an_agents_bark_reaches_a_workshop_client_on_the_root_path() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let (mut workshop, _) = connect_with_state(&bridge, "/").await;
    let mut timmy = agent(&bridge, "timmy", "agent").await;
    recv_type(&mut workshop, "agent_joined").await;
    send(
        &mut timmy,
        json!({"type": "bark", "text": "Slowly.", "agent_id": "timmy", "emotion": "calm"}),
    )
    .await;
    let bark = recv(&mut workshop).await;
    assert_eq!(
        bark,
        json!({"type": "bark", "text": "Slowly.", "agent_id": "timmy", "emotion": "calm"})
    );
    bridge.shutdown().await;
}

#[tokio::test]
async fn with_an_agent_token_viewers_may_watch_and_talk_but_not_speak_as_agents() {
    let world = World::with_state("a: 1\n");
    let bridge = start(Config {
        agent_token: Some(AGENT_TOKEN.into()),
        no_trust_loopback: true,
        ..world.config()
    })
    .await;
    let (mut viewer, _) = connect_with_state(&bridge, &format!("/ws?token={TOKEN}")).await;
    send(
        &mut viewer,
        json!({"type": "agent_register", "agentId": "timmy", "id": 1}),
    )
    .await;
    assert_eq!(recv(&mut viewer).await["code"], "forbidden");
    send(
        &mut viewer,
        json!({"type": "bark", "text": "I am Timmy, honest", "id": 2}),
    )
    .await;
    assert_eq!(recv(&mut viewer).await["code"], "forbidden");
    send(
        &mut viewer,
        json!({"type": "message", "text": "hello Timmy", "visitor": "Ada", "id": 3}),
    )
    .await;
    assert_eq!(recv(&mut viewer).await, json!({"type": "ack", "id": 3}));

    let (mut real, _) =
        connect_with_state(&bridge, &format!("/ws/matrix?token={AGENT_TOKEN}")).await;
    send(
        &mut real,
        json!({"type": "agent_register", "agentId": "timmy", "role": "agent"}),
    )
    .await;
    assert_eq!(recv(&mut real).await["type"], "agent_joined");
    assert_eq!(recv(&mut viewer).await["type"], "agent_joined");
    send(&mut real, json!({"type": "bark", "text": "Hello, Ada."})).await;
    assert_eq!(recv(&mut viewer).await["text"], "Hello, Ada.");
    bridge.shutdown().await;
}

#[tokio::test]
async fn the_status_api_lists_agents_roles_connections_and_state_health() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let _timmy = agent(&bridge, "timmy", "agent").await;
    let _bot = agent(&bridge, "perplexity", "bot").await;
    let (_ipad, _) = connect_with_state(&bridge, "/").await;

    let (status, body) = http_get(&bridge, "/api/gateway/status", &[]).await;
    assert_eq!(status, 200);
    let status: Value = serde_json::from_str(&body).unwrap();
    let agents: Vec<(&str, &str, &str)> = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["agentId"].as_str().unwrap(),
                a["agent_id"].as_str().unwrap(),
                a["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        agents,
        [
            ("timmy", "timmy", "agent"),
            ("perplexity", "perplexity", "bot")
        ]
    );
    assert!(
        status["agents"][0]["connected_since"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(
        status["connections"],
        json!({"total": 3, "registered": 2, "anonymous": 1})
    );
    assert!(status["uptime_seconds"].is_u64());
    assert_eq!(status["state"]["seq"], 1);
    assert_eq!(status["state"]["last_error"], Value::Null);
    assert!(
        status["state"]["path"]
            .as_str()
            .unwrap()
            .ends_with("workshop-state.yaml")
    );
    bridge.shutdown().await;
}

#[tokio::test]
async fn shutdown_notifies_agents_and_viewers_alike() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let mut timmy = agent(&bridge, "timmy", "agent").await;
    let (mut ipad, _) = connect_with_state(&bridge, "/").await;
    bridge.shutdown().await;
    for ws in [&mut timmy, &mut ipad] {
        assert_eq!(
            recv_type(ws, "system_status").await["data"]["status"],
            "shutting_down"
        );
        assert_eq!(u16::from(recv_close(ws).await.unwrap().code), 1001);
    }
}

/// The original gateway's acceptance story, end to end: a Matrix 3D client connects, the
/// agent's cognitive bridge connects and sends `agent_state`, `bark` and `agent_move`; the 3D
/// client receives all three in order, and two browsers at once both receive them.
#[tokio::test]
async fn the_original_gateway_acceptance_story() {
    let world = World::with_state(include_str!("../examples/workshop-state.yaml"));
    let bridge = start(world.config()).await;

    let (mut matrix_3d, state) = connect_with_state(&bridge, "/ws/matrix").await;
    assert_eq!(state["data"]["identity"]["name"], "Timmy");
    send(
        &mut matrix_3d,
        json!({"type": "agent_register", "agentId": "matrix-3d", "role": "browser"}),
    )
    .await;
    recv_type(&mut matrix_3d, "agent_joined").await;
    let (mut browser_a, _) = connect_with_state(&bridge, "/").await;
    let (mut browser_b, _) = connect_with_state(&bridge, "/ws").await;

    let mut cognitive = agent(&bridge, "timmy", "agent").await;
    let story = [
        json!({"type": "agent_state", "agent_id": "timmy", "state": "thinking", "mood": "contemplative"}),
        json!({"type": "bark", "agent_id": "timmy", "text": "Slowly. But the stones know where they go.", "emotion": "calm"}),
        json!({"type": "agent_move", "agent_id": "timmy", "to": {"x": 2.1, "y": 0, "z": -1.3}}),
    ];
    for message in &story {
        send(&mut cognitive, message.clone()).await;
    }
    for ws in [&mut matrix_3d, &mut browser_a, &mut browser_b] {
        let joined = recv(ws).await;
        assert_eq!(
            (joined["type"].as_str(), joined["agentId"].as_str()),
            (Some("agent_joined"), Some("timmy"))
        );
        for expected in &story {
            assert_eq!(&recv(ws).await, expected);
        }
    }
    bridge.shutdown().await;
}
