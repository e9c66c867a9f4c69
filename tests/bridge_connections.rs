//! Connections over time: slow clients, dead clients, and a graceful goodbye.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::StreamExt;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use workshop_bridge::Config;

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1013_while_others_keep_up() {
    let world = World::with_state("a: 1\n");
    let bridge = start(Config {
        client_queue: 16,
        max_messages_per_sec: 1_000_000,
        ..world.config()
    })
    .await;
    let (mut agent, _) = connect_with_state(&bridge, "/ws/matrix").await;
    let (mut fast, _) = connect_with_state(&bridge, "/").await;
    let (mut stalled, _) = connect_with_state(&bridge, "/").await;

    // 64 KiB barks until the bridge decides to close the stalled client (its socket buffers
    // and its queue of 16 are full): counted, not timed. The publisher stays at most 8 barks
    // ahead of the fast client, so that one always keeps up. The stalled client then reads at
    // once, before the bridge gives up on delivering the close frame.
    let stalled_id = bridge.clients().last().unwrap().id;
    let closing = || {
        bridge
            .clients()
            .iter()
            .any(|c| c.id == stalled_id && c.closing.is_some())
    };
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let (published_tx, mut published_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let text = "x".repeat(64 * 1024);
    let reader = {
        let window = window.clone();
        tokio::spawn(async move {
            let mut expected = 0;
            while let Some(published) = published_rx.recv().await {
                while expected < published {
                    let bark = recv(&mut fast).await;
                    assert_eq!(
                        bark["n"], expected,
                        "the fast client gets every bark, in order"
                    );
                    expected += 1;
                    window.add_permits(1);
                }
            }
            fast
        })
    };
    let mut n = 0;
    while !closing() {
        assert!(n < 10_000, "the stalled client was never closed");
        window.acquire().await.unwrap().forget();
        send(&mut agent, json!({"type": "bark", "n": n, "text": text})).await;
        n += 1;
        published_tx.send(n).unwrap();
    }
    drop(published_tx);

    // The stalled client wakes up: it finds what fitted in its buffers, then the close.
    let close = recv_close(&mut stalled).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1013);
    let mut fast = reader.await.unwrap();
    wait_until(|| (bridge.client_count() == 2).then_some(())).await;
    assert_nothing_pending(&mut fast).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_two_heartbeats() {
    let world = World::with_state("a: 1\n");
    let bridge = start(Config {
        heartbeat_secs: 1,
        ..world.config()
    })
    .await;
    let mut changes = bridge.subscribe_changes();
    // This one never reads again, so it never answers the pings: dead, as far as anyone knows.
    let (_silent, _) = connect_with_state(&bridge, "/ws").await;
    // This one keeps reading (and so answers pings automatically).
    let (mut alive, _) = connect_with_state(&bridge, "/ws").await;
    let keep_alive = tokio::spawn(async move {
        while let Some(Ok(frame)) = alive.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    });
    tokio::time::timeout(DEADLINE, async {
        while bridge.client_count() != 1 {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("the silent client was pruned");
    assert!(
        !keep_alive.is_finished(),
        "the live client is still connected"
    );
    bridge.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_every_client_and_closes_with_1001() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let mut clients = Vec::new();
    for path in ["/", "/ws", "/ws/matrix"] {
        clients.push(connect_with_state(&bridge, path).await.0);
    }
    let (mut visitor, _) = connect_with_state(&bridge, "/").await;
    send(
        &mut visitor,
        json!({"type": "enter", "visitor": "Ada", "id": 1}),
    )
    .await;
    assert_eq!(recv_type(&mut visitor, "ack").await["id"], 1);

    bridge.shutdown().await;
    for ws in clients.iter_mut().chain(std::iter::once(&mut visitor)) {
        let bye = recv_type(ws, "system_status").await;
        assert_eq!(
            bye,
            json!({"type": "system_status", "data": {"status": "shutting_down"}})
        );
        let close = recv_close(ws).await.expect("a close frame");
        assert_eq!(u16::from(close.code), 1001);
    }
    // The visitor who was present is written out as leaving.
    let files = world.inbox_files();
    assert_eq!(files.len(), 2);
    assert_eq!(files[1].1["type"], "leave");
    assert_eq!(files[1].1["reason"], "bridge shutting down");
}

/// Dropping the handle without `shutdown` stops the bridge all the same: the client hears
/// the goodbye and its connection ends, and the port is free to bind again.
#[tokio::test]
async fn dropping_the_handle_stops_the_bridge_and_frees_its_port() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let addr = bridge.local_addr();
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    drop(bridge);
    let bye = recv_type(&mut ipad, "system_status").await;
    assert_eq!(bye["data"]["status"], "shutting_down");
    let close = recv_close(&mut ipad).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    let end = tokio::time::timeout(DEADLINE, ipad.next())
        .await
        .expect("the connection ends");
    assert!(
        !matches!(end, Some(Ok(_))),
        "nothing follows the close: {end:?}"
    );
    // The accept loop ends on its own time, not the connection's: the port is free once it
    // has, and binding it is the proof.
    wait_until(|| std::net::TcpListener::bind(addr).ok()).await;
}

/// The inbox's disk stops answering (frozen) while a visitor's message is being written:
/// shutdown still returns within its bound rather than waiting for the disk, and the message
/// is never acknowledged, since it was never confirmed written. (The bound itself, 1.8 s, is
/// the bridge's; the test allows far more and checks only that shutdown does not wait on
/// the disk, which here would be forever.)
#[tokio::test]
async fn shutdown_ends_within_its_bound_while_an_inbox_write_is_stalled_and_acks_nothing_unwritten()
{
    let world = World::with_state("a: 1\n");
    std::fs::create_dir_all(&world.inbox).unwrap();
    let mut disk = match disk::FreezableDisk::mount(world.dir.path(), &world.inbox) {
        Ok(disk) => disk,
        Err(e) => {
            report::skipped(
                "shutdown_ends_within_its_bound_while_an_inbox_write_is_stalled_and_acks_nothing_unwritten",
                format_args!("cannot mount a disk to freeze ({e})"),
            );
            return;
        }
    };
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws?client=ipad").await;
    let message = |id: &str| json!({"type": "message", "visitor": "Ada", "text": id, "id": id});
    send(&mut ipad, message("m-1")).await;
    assert_eq!(recv(&mut ipad).await, json!({"type": "ack", "id": "m-1"}));

    disk.freeze();
    send(&mut ipad, message("m-2")).await;
    // The write has begun once a thread of ours waits on the frozen disk.
    disk::until_a_thread_waits_on_the_disk(std::process::id()).await;

    let stopped = tokio::time::timeout(DEADLINE, bridge.shutdown()).await;
    assert!(stopped.is_ok(), "shutdown waited for the frozen disk");
    // The goodbye and nothing else: no ack for the message that was not written.
    assert_goodbye_only(&mut ipad).await;

    // The disk answers again: the write that waited finishes (unacknowledged; its sender
    // still holds the message), and the disk can be unmounted.
    disk.thaw();
    wait_until(|| {
        let names = names_in(&world.inbox);
        (names.iter().filter(|n| !n.starts_with('.')).count() == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn connections_and_disconnections_are_counted() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    assert_eq!(bridge.client_count(), 0);
    let (a, _) = connect_with_state(&bridge, "/ws").await;
    let (b, _) = connect_with_state(&bridge, "/ws/matrix").await;
    let clients = bridge.clients();
    assert_eq!(clients.len(), 2);
    assert_eq!(clients[1].path, "/ws/matrix");
    assert!(clients[0].peer.ip().is_loopback());
    drop((a, b));
    wait_until(|| (bridge.client_count() == 0).then_some(())).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_port_in_use_is_one_clear_sentence() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let world = World::new();
    let error = workshop_bridge::Bridge::start(Config {
        port: taken.local_addr().unwrap().port(),
        ..world.config()
    })
    .await
    .err()
    .expect("refused");
    let sentence = error.to_string();
    assert!(sentence.contains("already in use"), "{sentence}");
    assert!(!sentence.contains('\n'));
}
