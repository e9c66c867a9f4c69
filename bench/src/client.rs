//! WebSocket clients of the load generator, and the cheap checks they make on frames.
//!
//! Clients never parse what they receive: a 200 KB state in 1,000 clients would make the
//! load generator the bottleneck. They look at the first bytes of a frame instead.

use std::future::Future;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Why a connection ended, when the server closed it.
pub(crate) fn closed_by_server(frame: Option<CloseFrame>) -> String {
    match frame {
        Some(f) => format!("closed by the server ({} {})", f.code, f.reason),
        None => "closed by the server".to_owned(),
    }
}

/// How big a client's buffers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buffers {
    /// tungstenite's defaults (128 KiB read buffer): for clients that receive big states.
    Large,
    /// 8 KiB: for thousands of idle clients.
    Small,
}

/// Opens a WebSocket to `127.0.0.1:port` with `query` (e.g. `?diff=1`).
pub(crate) async fn connect(port: u16, query: &str, buffers: Buffers) -> Result<Ws> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .context("TCP connect failed")?;
    tcp.set_nodelay(true).context("cannot set TCP_NODELAY")?;
    let config = match buffers {
        Buffers::Large => WebSocketConfig::default(),
        Buffers::Small => WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0),
    };
    let url = format!("ws://127.0.0.1:{port}/{query}");
    let (ws, _) = client_async_with_config(url, tcp, Some(config))
        .await
        .context("WebSocket handshake failed")?;
    Ok(ws)
}

/// Runs `open(i)` for `0..n`, `concurrency` at a time, stopping at the first failure.
/// Returns what opened and, if it stopped early, why.
pub(crate) async fn open_many<T, F, Fut>(
    n: usize,
    concurrency: usize,
    open: F,
) -> (Vec<T>, Option<anyhow::Error>)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut opened = Vec::with_capacity(n);
    let mut stream = futures_util::stream::iter(0..n)
        .map(open)
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = stream.next().await {
        match result {
            Ok(t) => opened.push(t),
            Err(e) => return (opened, Some(e)),
        }
    }
    (opened, None)
}

/// If the frame is a `state` or `state_patch`, its `seq`. Looks only at the first bytes,
/// and accepts both compact JSON and JSON with spaces after `:` and `,`.
pub(crate) fn state_seq(frame: &[u8]) -> Option<u64> {
    let head = &frame[..frame.len().min(96)];
    if find(head, b"\"state\"").is_none() && find(head, b"\"state_patch\"").is_none() {
        return None;
    }
    let after = find(head, b"\"seq\"")? + 5;
    let digits: Vec<u8> = head[after..]
        .iter()
        .copied()
        .skip_while(|b| *b == b':' || b.is_ascii_whitespace())
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// True if the frame starts like a bark this harness sent (relayed byte for byte).
pub(crate) fn is_bark(frame: &[u8]) -> bool {
    frame.starts_with(BARK_PREFIX.as_bytes())
}

pub(crate) const BARK_PREFIX: &str = r#"{"type":"bark","#;

/// True if the frame is an `ack` carrying `id` (a JSON string including its quotes).
pub(crate) fn is_ack_for(frame: &[u8], id: &str) -> bool {
    let head = &frame[..frame.len().min(128)];
    find(head, b"\"ack\"").is_some() && find(head, id.as_bytes()).is_some()
}

/// True if the frame is an `ack` at all.
pub(crate) fn is_ack(frame: &[u8]) -> bool {
    find(&frame[..frame.len().min(64)], b"\"ack\"").is_some()
}

/// True if the frame is an `error`.
pub(crate) fn is_error(frame: &[u8]) -> bool {
    find(&frame[..frame.len().min(64)], b"\"error\"").is_some()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_seq_from_every_servers_framing() {
        assert_eq!(
            state_seq(br#"{"type":"state","seq":7,"data":{"a":1}}"#),
            Some(7)
        );
        assert_eq!(
            state_seq(br#"{"type": "state", "seq": 12, "data": {}}"#),
            Some(12)
        );
        assert_eq!(
            state_seq(br#"{"type":"state_patch","seq":8,"patch":[]}"#),
            Some(8)
        );
        assert_eq!(state_seq(br#"{"type":"bark","text":"seq"}"#), None);
        assert_eq!(state_seq(br#"{"type":"ack","id":"s1-3"}"#), None);
    }

    #[test]
    fn recognises_acks_and_barks() {
        assert!(is_ack_for(br#"{"type":"ack","id":"s1-3"}"#, "\"s1-3\""));
        assert!(!is_ack_for(br#"{"type":"ack","id":"s1-30"}"#, "\"s1-3\""));
        assert!(!is_ack_for(
            br#"{"type":"message","id":"s1-3"}"#,
            "\"s1-3\""
        ));
        assert!(is_bark(br#"{"type":"bark","text":"hi","id":1}"#));
        assert!(is_error(br#"{"type":"error","code":"rate_limited"}"#));
    }
}
