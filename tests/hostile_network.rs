//! Hostile network input: each leaves the bridge serving other clients normally.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use workshop_bridge::{BridgeHandle, Config};

/// The bridge still does its job: a new client gets the state and a bark reaches it.
async fn still_serves(bridge: &BridgeHandle) {
    still_serves_at(bridge, "/ws").await;
}

async fn still_serves_at(bridge: &BridgeHandle, path: &str) {
    let (mut a, _) = connect_with_state(bridge, path).await;
    let (mut b, _) = connect_with_state(bridge, path).await;
    send(&mut a, json!({"type": "bark", "text": "still here"})).await;
    assert_eq!(recv_type(&mut b, "bark").await["text"], "still here");
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut got))
        .await
        .expect("the server did not close the connection")
        .ok();
    got
}

#[tokio::test]
async fn a_handshake_trickled_and_never_finished_is_cut_off() {
    let world = World::with_state("a: 1\n");
    let bridge = start(Config {
        handshake_timeout_secs: 1,
        ..world.config()
    })
    .await;
    let mut slow = TcpStream::connect(bridge.local_addr()).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websock")
        .await
        .unwrap();
    // Others are served while it dawdles.
    still_serves(&bridge).await;
    let answer = read_until_closed(&mut slow).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    still_serves(&bridge).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_are_refused_with_431() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let mut stream = TcpStream::connect(bridge.local_addr()).await.unwrap();
    let huge = "x".repeat(64 * 1024);
    let request = format!("GET /ws HTTP/1.1\r\nHost: localhost\r\nX-Junk: {huge}\r\n\r\n");
    // The server may close before it has read everything: a failed write is fine.
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_until_closed(&mut stream).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    still_serves(&bridge).await;
    bridge.shutdown().await;
}

#[cfg(target_os = "linux")]
/// A TCP connection to the bridge from the loopback address `from` (Linux routes all of
/// 127.0.0.0/8 to loopback, so each is a different client address).
async fn connect_from(from: [u8; 4], bridge: &BridgeHandle) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((from, 0)))?;
    socket.connect(bridge.local_addr()).await
}

#[cfg(target_os = "linux")]
async fn websocket_from(
    from: [u8; 4],
    bridge: &BridgeHandle,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let stream = connect_from(from, bridge).await?;
    let url = format!("ws://{}/ws", bridge.local_addr());
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await?;
    Ok(ws)
}

// Linux routes all of 127.0.0.0/8 to loopback; macOS has only 127.0.0.1 unless told.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn one_address_cannot_take_more_than_its_share_of_connections() {
    let world = World::with_state("a: 1\n");
    let bridge = start(Config {
        max_connections_per_address: 3,
        ..world.config()
    })
    .await;
    let flooder = [127, 0, 0, 7];
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(websocket_from(flooder, &bridge).await.unwrap());
    }
    // A flood beyond the limit: each connection is closed at once, before any HTTP.
    for _ in 0..50 {
        let mut extra = connect_from(flooder, &bridge).await.unwrap();
        let _ = extra
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        assert!(read_until_closed(&mut extra).await.is_empty());
    }
    // Another address is unaffected.
    let mut other = websocket_from([127, 0, 0, 8], &bridge).await.unwrap();
    assert_eq!(recv_type(&mut other, "state").await["type"], "state");
    // A connection that closes gives its place back.
    held.pop().unwrap().close(None).await.unwrap();
    wait_until(|| (bridge.client_count() == 3).then_some(())).await;
    let mut again = websocket_from(flooder, &bridge).await.unwrap();
    assert_eq!(recv_type(&mut again, "state").await["type"], "state");
    still_serves(&bridge).await;
    bridge.shutdown().await;
}

/// A text frame with `payload` as is (not necessarily UTF-8).
fn raw_frame(opcode: OpCode, is_final: bool, payload: &[u8]) -> Message {
    Message::Frame(Frame::from_payload(
        FrameHeader {
            is_final,
            opcode,
            ..FrameHeader::default()
        },
        Bytes::copy_from_slice(payload),
    ))
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_that_client_with_1007() {
    let not_utf8 = b"{\"type\":\"bark\",\"text\":\"\xff\xfe\"}";
    a_bad_frame_closes_its_client_with(raw_frame(OpCode::Data(Data::Text), true, not_utf8), 1007)
        .await;
}

/// Sends `frame` from one client: that client is closed with `code`, the others are served.
async fn a_bad_frame_closes_its_client_with(frame: Message, code: u16) {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let (mut bad, _) = connect_with_state(&bridge, "/ws").await;
    bad.send(frame).await.unwrap();
    let close = recv_close(&mut bad).await.expect("a close frame");
    assert_eq!(u16::from(close.code), code);
    still_serves(&bridge).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn fragmented_messages_with_pings_between_the_pieces_are_put_together() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let (mut sender, _) = connect_with_state(&bridge, "/ws").await;
    let (mut listener, _) = connect_with_state(&bridge, "/ws").await;
    let message = json!({"type": "bark", "text": "in pieces"}).to_string();
    let (first, rest) = message.as_bytes().split_at(10);
    let (middle, last) = rest.split_at(10);
    sender
        .send(raw_frame(OpCode::Data(Data::Text), false, first))
        .await
        .unwrap();
    sender
        .send(Message::Ping(Bytes::from_static(b"between")))
        .await
        .unwrap();
    sender
        .send(raw_frame(OpCode::Data(Data::Continue), false, middle))
        .await
        .unwrap();
    sender
        .send(Message::Ping(Bytes::from_static(b"again")))
        .await
        .unwrap();
    sender
        .send(raw_frame(OpCode::Data(Data::Continue), true, last))
        .await
        .unwrap();
    assert_eq!(recv_type(&mut listener, "bark").await["text"], "in pieces");
    // The pings were answered, in order, while the message was still in pieces.
    let mut pongs = Vec::new();
    while pongs.len() < 2 {
        match tokio::time::timeout(DEADLINE, sender.next()).await.unwrap() {
            Some(Ok(Message::Pong(data))) => pongs.push(data),
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
    assert_eq!(pongs, [&b"between"[..], &b"again"[..]]);
    still_serves(&bridge).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_continuation_without_a_start_closes_that_client_with_1002() {
    a_bad_frame_closes_its_client_with(
        raw_frame(OpCode::Data(Data::Continue), true, b"orphan"),
        1002,
    )
    .await;
}

#[tokio::test]
async fn compression_is_never_negotiated_so_deflate_bombs_cannot_land() {
    let world = World::with_state("a: 1\n");
    let bridge = start(world.config()).await;
    let mut stream = TcpStream::connect(bridge.local_addr()).await.unwrap();
    let request = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    // A frame with the compression bit (RSV1) set is a protocol error, not inflated.
    // FIN + RSV1 + text, masked, 4-byte payload "abcd" with a zero mask.
    stream
        .write_all(&[0b1100_0001, 0x84, 0, 0, 0, 0, b'a', b'b', b'c', b'd'])
        .await
        .unwrap();
    let rest = read_until_closed(&mut stream).await;
    // The close frame (opcode 8) carries 1002, protocol error.
    let close_at = rest
        .windows(4)
        .position(|w| w[0] == 0x88 && u16::from_be_bytes([w[2], w[3]]) == 1002);
    assert!(close_at.is_some(), "no 1002 close in {rest:?}");
    still_serves(&bridge).await;
    bridge.shutdown().await;
}

/// Near misses are refused like any wrong token. Each address gets only a few tries before
/// it has to wait (see tests/attacks.rs), so the thousand guesses come from two hundred
/// loopback addresses, five each.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_thousand_wrong_tokens_are_each_refused_and_the_right_one_still_works() {
    let world = World::with_state("a: 1\n");
    let bridge = start(Config {
        no_trust_loopback: true,
        ..world.config()
    })
    .await;
    let token = world.config().token.unwrap();
    for i in 0..1000 {
        // Guesses of every length, including the right length with one byte wrong.
        let guess = if i % 2 == 0 {
            format!("guess-{i}")
        } else {
            let mut near = token.clone().into_bytes();
            let at = i % near.len();
            near[at] ^= 1;
            String::from_utf8(near).unwrap()
        };
        let from = std::net::Ipv4Addr::new(127, 0, 1, (i / 5) as u8 + 1);
        let refused = try_connect_from(from.into(), &bridge, &format!("/ws?token={guess}")).await;
        let (status, _) = refusal(refused.unwrap_err());
        assert_eq!(status, 401, "guess {i}");
    }
    let mut ws = connect(&bridge, &format!("/ws?token={token}")).await;
    assert_eq!(recv_type(&mut ws, "state").await["type"], "state");
    still_serves_at(&bridge, &format!("/ws?token={token}")).await;
    bridge.shutdown().await;
}
