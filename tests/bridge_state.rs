//! The state file's journey: file → watcher → hub → every client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn a_client_gets_the_state_on_connect_and_every_change() {
    let world = World::with_state("mood:\n  primary: calm\nvisitors: [Alexander]\n");
    let bridge = start(world.config()).await;

    let (mut ipad, first) = connect_with_state(&bridge, "/").await;
    assert_eq!(
        first,
        json!({"type": "state", "seq": 1, "data": {"mood": {"primary": "calm"}, "visitors": ["Alexander"]}})
    );

    world.write_state("mood:\n  primary: excited\nvisitors: [Alexander]\n");
    let second = recv(&mut ipad).await;
    assert_eq!(second["type"], "state");
    assert_eq!(second["seq"], 2);
    assert_eq!(second["data"]["mood"]["primary"], "excited");
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_rewrite_with_the_same_content_sends_nothing() {
    let world = World::with_state("a: 1\nb: [x, y]\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    // Same content, different formatting: the parsed value is equal. (Not the keys in
    // another order: clients get them in the file's order, so that is a change.) The
    // bridge has read it once its last load is a new one; only then is "nothing sent" worth
    // checking, as two writes in a row may well be read as one.
    let before = bridge.state_health().last_load;
    world.write_state("a:   1 # a comment\nb:\n  - x\n  - y\n");
    wait_until(|| (bridge.state_health().last_load != before).then_some(())).await;
    assert_nothing_pending(&mut ipad).await;
    world.write_state("a: 2\nb: [x, y]\n");
    // Had the rewrite been pushed, seq 2 would carry a == 1.
    let next = recv(&mut ipad).await;
    assert_eq!(next["seq"], 2);
    assert_eq!(next["data"]["a"], 2);
    bridge.shutdown().await;
}

#[tokio::test]
async fn invalid_yaml_keeps_the_last_good_state_until_a_valid_write() {
    let world = World::with_state("mood: calm\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    world.write_state("mood: [unclosed\n  other: : :\n");
    let health = wait_until(|| {
        let h = bridge.state_health();
        h.last_error.is_some().then_some(h)
    })
    .await;
    let error = health.last_error.unwrap();
    assert!(error.contains("line"), "the error names the line: {error}");
    assert_eq!(health.seq, 1, "clients keep state 1");
    // A new client still gets the last good state.
    let (_late, state) = connect_with_state(&bridge, "/ws").await;
    assert_eq!(state["data"], json!({"mood": "calm"}));

    world.write_state("mood: alert\n");
    let next = recv(&mut ipad).await;
    assert_eq!(
        (next["seq"].clone(), next["data"].clone()),
        (json!(2), json!({"mood": "alert"}))
    );
    assert!(bridge.state_health().last_error.is_none());
    bridge.shutdown().await;
}

#[tokio::test]
async fn deleting_keeps_the_state_and_recreating_pushes_the_new_one() {
    let world = World::with_state("v: 1\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    std::fs::remove_file(&world.state_file).unwrap();
    wait_until(|| bridge.state_health().last_error).await;
    let (_late, state) = connect_with_state(&bridge, "/ws").await;
    assert_eq!(
        state["data"],
        json!({"v": 1}),
        "the last state survives deletion"
    );

    // Re-created in place (not by rename), as `echo > file` does.
    std::fs::write(&world.state_file, "v: 2\n").unwrap();
    let next = recv(&mut ipad).await;
    assert_eq!(next["data"], json!({"v": 2}));
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_bridge_started_before_the_state_exists_sends_it_when_it_appears() {
    let world = World::new();
    let bridge = start(world.config()).await;
    let mut ipad = connect(&bridge, "/ws").await;
    // No state yet: the first message a client gets is the pong, not a state.
    assert_nothing_pending(&mut ipad).await;

    world.write_state("hello: world\n");
    let state = recv(&mut ipad).await;
    assert_eq!(
        state,
        json!({"type": "state", "seq": 1, "data": {"hello": "world"}})
    );
    bridge.shutdown().await;
}

#[tokio::test]
async fn diff_mode_sends_patches_and_resync_sends_the_whole_state() {
    let world = World::with_state("mood: calm\nitems: [1, 2]\n");
    let bridge = start(world.config()).await;
    let (mut ipad, first) = connect_with_state(&bridge, "/ws?diff=1").await;
    assert_eq!(first["seq"], 1);

    world.write_state("mood: alert\nitems: [1, 2, 3]\n");
    let patch = recv(&mut ipad).await;
    assert_eq!(patch["type"], "state_patch");
    assert_eq!(patch["seq"], 2);
    let mut doc = first["data"].clone();
    json_patch_apply(&mut doc, &patch["patch"]);
    assert_eq!(doc, json!({"mood": "alert", "items": [1, 2, 3]}));

    send(&mut ipad, json!({"type": "resync"})).await;
    let full = recv(&mut ipad).await;
    assert_eq!(
        full,
        json!({"type": "state", "seq": 2, "data": {"mood": "alert", "items": [1, 2, 3]}})
    );

    // A client without ?diff=1 on the same bridge gets whole states.
    let (mut plain, _) = connect_with_state(&bridge, "/ws").await;
    world.write_state("mood: calm\nitems: [1, 2, 3]\n");
    assert_eq!(recv(&mut plain).await["type"], "state");
    assert_eq!(recv(&mut ipad).await["type"], "state_patch");
    bridge.shutdown().await;
}

/// Applies RFC 6902 `add`, `remove` and `replace` (all the bridge's differ emits here).
fn json_patch_apply(doc: &mut serde_json::Value, patch: &serde_json::Value) {
    for op in patch.as_array().unwrap() {
        let path = op["path"].as_str().unwrap();
        let (parent_path, last) = path.rsplit_once('/').unwrap();
        let parent = if parent_path.is_empty() {
            &mut *doc
        } else {
            doc.pointer_mut(parent_path).unwrap()
        };
        match (op["op"].as_str().unwrap(), parent) {
            ("replace" | "add", serde_json::Value::Object(map)) => {
                map.insert(last.to_owned(), op["value"].clone());
            }
            ("add", serde_json::Value::Array(items)) => {
                let index = if last == "-" {
                    items.len()
                } else {
                    last.parse().unwrap()
                };
                items.insert(index, op["value"].clone());
            }
            ("replace", serde_json::Value::Array(items)) => {
                items[last.parse::<usize>().unwrap()] = op["value"].clone();
            }
            ("remove", serde_json::Value::Object(map)) => {
                map.remove(last);
            }
            ("remove", serde_json::Value::Array(items)) => {
                items.remove(last.parse::<usize>().unwrap());
            }
            (other, _) => panic!("unexpected op {other}"),
        }
    }
}

#[tokio::test]
async fn many_clients_all_get_each_change() {
    let world = World::with_state("n: 0\n");
    let bridge = start(world.config()).await;
    let mut clients = Vec::new();
    for path in ["/", "/ws", "/ws/matrix", "/ws", "/"] {
        clients.push(connect_with_state(&bridge, path).await.0);
    }
    world.write_state("n: 1\n");
    for ws in &mut clients {
        assert_eq!(recv(ws).await["data"], json!({"n": 1}));
    }
    assert_eq!(bridge.client_count(), 5);
    bridge.shutdown().await;
}

#[tokio::test]
async fn polling_mode_also_sees_changes() {
    let world = World::with_state("n: 0\n");
    let bridge = start(workshop_bridge::Config {
        poll_ms: Some(20),
        ..world.config()
    })
    .await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;
    world.write_state("n: 1\n");
    assert_eq!(recv(&mut ipad).await["data"], json!({"n": 1}));
    bridge.shutdown().await;
}
