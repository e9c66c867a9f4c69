//! The inbox across nodes: a relay asks the origin to write a visitor's event (request-reply
//! on `workshop.inbox`), and acknowledges its client only when the origin answers that the
//! event is on its disk. The origin checks everything it is sent as if a client had sent
//! it, and remembers message ids as for its own clients, so a re-send after a lost ack is
//! written once, whichever node it comes through.
//!
//! While the origin or NATS cannot be reached, a relay answers `inbox_unavailable`: never an
//! ack for a message that may not be written.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{INBOX_TIMEOUT, Link, subject};
use crate::auth::Admission;
use crate::hub::Hub;
use crate::inbox::{Event, Provenance};
use crate::protocol::{ClientError, ErrorCode, valid_name};

/// Events the origin writes at once for relays; more wait in NATS.
const CONCURRENT_WRITES: usize = 256;

/// A visitor event on its way to the origin.
#[derive(Debug, Serialize, Deserialize)]
struct Forwarded {
    #[serde(rename = "type")]
    kind: String,
    visitor: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    via: Option<String>,
    #[serde(default)]
    client_id: Option<Box<RawValue>>,
    admitted: Admission,
    #[serde(default)]
    origin: Option<String>,
    peer: SocketAddr,
    /// The identity and message id a re-send is recognised by.
    #[serde(default)]
    dedup: Option<(String, String)>,
}

/// The origin's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    /// On disk: `true` if this request wrote it, `false` if it was written before.
    Written(bool),
    /// Refused, as a client would be.
    Refused { code: ErrorCode, message: String },
}

/// A relay's side: asks the origin to write `event`; `Ok(false)` when it was written
/// before (a re-send).
pub(crate) async fn forward(
    link: &Link,
    event: &Event<'_>,
    dedup: Option<(String, String)>,
) -> Result<bool, ClientError> {
    let unavailable = || {
        ClientError::new(
            ErrorCode::InboxUnavailable,
            "the agent's bridge cannot be reached through the cluster right now; send the message again later",
        )
    };
    if !link.connected() {
        return Err(unavailable());
    }
    let forwarded = Forwarded {
        kind: event.kind.to_owned(),
        visitor: event.visitor.to_owned(),
        text: event.text.map(ToOwned::to_owned),
        reason: event.reason.map(ToOwned::to_owned),
        via: event.via.map(ToOwned::to_owned),
        client_id: event.client_id.map(ToOwned::to_owned),
        admitted: event.provenance.admitted,
        origin: event.provenance.origin.clone(),
        peer: event.provenance.peer,
        dedup,
    };
    let payload = serde_json::to_vec(&forwarded).map_err(|_| unavailable())?;
    // Boxed: the NATS request's future is large, and inline it would make the future of
    // every connection's reader that much larger, on every bridge, cluster or not.
    let reply = tokio::time::timeout(
        INBOX_TIMEOUT,
        Box::pin(link.client().request(subject::INBOX, payload.into())),
    )
    .await;
    let reply = match reply {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the origin did not take a visitor's message");
            return Err(unavailable());
        }
        Err(_) => {
            tracing::warn!("the origin did not answer in time for a visitor's message");
            return Err(unavailable());
        }
    };
    match serde_json::from_slice::<Answer>(&reply.payload) {
        Ok(Answer::Written(wrote)) => Ok(wrote),
        Ok(Answer::Refused { code, message }) => Err(ClientError::new(code, message)),
        Err(_) => Err(unavailable()),
    }
}

/// What the origin holds a forwarded event to: the limits its own clients have.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_text_chars: usize,
    pub(crate) max_id_bytes: usize,
    pub(crate) max_frame_bytes: usize,
}

/// The origin's side: subscribes, then returns the task that writes what relays send.
pub(crate) async fn serve(
    link: Link,
    hub: Hub,
    limits: Limits,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Result<impl Future<Output = ()>, async_nats::SubscribeError> {
    let mut requests = link.client().subscribe(subject::INBOX).await?;
    let slots = Arc::new(Semaphore::new(CONCURRENT_WRITES));
    Ok(async move {
        loop {
            let request = tokio::select! {
                () = shutdown.cancelled() => return,
                request = requests.next() => request,
            };
            let Some(request) = request else { return };
            let Some(reply) = request.reply else { continue };
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (link, hub) = (link.clone(), hub.clone());
            // Runs to its end even if the bridge starts shutting down, like a client's
            // write: the answer is sent only once the event is on disk.
            tasks.spawn(async move {
                let answer = match check(&request.payload, limits) {
                    Ok(forwarded) => write(&hub, &forwarded).await,
                    Err(e) => {
                        tracing::warn!(error = %e.message, "refused a visitor's message from a relay");
                        Answer::Refused {
                            code: e.code,
                            message: e.message,
                        }
                    }
                };
                if let Ok(json) = serde_json::to_vec(&answer) {
                    link.client().publish(reply, json.into()).await.ok();
                }
                drop(permit);
            });
        }
    })
}

async fn write(hub: &Hub, f: &Forwarded) -> Answer {
    let provenance = Provenance {
        admitted: f.admitted,
        origin: f.origin.clone(),
        peer: f.peer,
        relayed: true,
    };
    let event = Event {
        kind: &f.kind,
        visitor: &f.visitor,
        text: f.text.as_deref(),
        reason: f.reason.as_deref(),
        via: f.via.as_deref(),
        client_id: f.client_id.as_deref(),
        provenance: &provenance,
    };
    let slot = f
        .dedup
        .as_ref()
        .map(|(client, id)| hub.inbox().slot(client, id));
    match hub.inbox().write_once(slot, &event).await {
        Ok(wrote) => Answer::Written(wrote),
        Err(e) => Answer::Refused {
            code: e.code,
            message: e.message,
        },
    }
}

/// Checks a forwarded event as the origin checks a client's: shape, sizes, names.
fn check(payload: &[u8], limits: Limits) -> Result<Forwarded, ClientError> {
    let bad = |message: &str| ClientError::new(ErrorCode::BadMessage, message);
    // The event's text, id and names, with room for the envelope around them.
    if payload.len() > limits.max_frame_bytes.saturating_add(4096) {
        return Err(bad("the message is larger than a client may send"));
    }
    let f: Forwarded = serde_json::from_slice(payload)
        .map_err(|_| bad("a relay sent a message the bridge cannot read"))?;
    if !matches!(f.kind.as_str(), "message" | "enter" | "leave") {
        return Err(bad("only messages, `enter` and `leave` go to the inbox"));
    }
    if !valid_name(&f.visitor, 64) {
        return Err(bad("`visitor` must be 1 to 64 printable characters"));
    }
    match (f.kind.as_str(), f.text.as_deref()) {
        ("message", Some(text)) if !text.trim().is_empty() => {
            if text.chars().count() > limits.max_text_chars {
                return Err(ClientError::new(
                    ErrorCode::TextTooLong,
                    format!("`text` is longer than {} characters", limits.max_text_chars),
                ));
            }
        }
        ("message", _) => return Err(bad("`text` must not be empty")),
        (_, Some(_)) => return Err(bad("only a message has `text`")),
        (_, None) => {}
    }
    if !matches!(
        (f.kind.as_str(), f.via.as_deref()),
        (_, None) | ("message", Some("visitor_message" | "chat_message"))
    ) {
        return Err(bad("`via` names the Matrix type a message came in as"));
    }
    if f.reason
        .as_deref()
        .is_some_and(|r| f.kind != "leave" || r.len() > 256 || r.chars().any(char::is_control))
    {
        return Err(bad("only a `leave` has a reason, of one short line"));
    }
    if let Some(id) = &f.client_id {
        let raw = id.get();
        let is_scalar =
            raw.starts_with('"') || raw.starts_with(|c: char| c == '-' || c.is_ascii_digit());
        if raw.len() > limits.max_id_bytes + 2 || !is_scalar {
            return Err(ClientError::new(
                ErrorCode::BadId,
                format!(
                    "`id` must be a string or number of at most {} bytes",
                    limits.max_id_bytes
                ),
            ));
        }
    }
    if let Some((client, id)) = &f.dedup
        && (client.len() > 256 || id.len() > limits.max_id_bytes + 2)
    {
        return Err(ClientError::new(
            ErrorCode::BadId,
            "the message's identity is too long",
        ));
    }
    if f.origin
        .as_deref()
        .is_some_and(|o| o.len() > 512 || o.chars().any(char::is_control))
    {
        return Err(bad("the page's origin is not one line"));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_text_chars: 10,
        max_id_bytes: 8,
        max_frame_bytes: 1024,
    };

    fn forwarded(patch: serde_json::Value) -> Vec<u8> {
        let mut base = serde_json::json!({
            "type": "message", "visitor": "ada", "text": "hello",
            "admitted": "token", "peer": "10.0.0.2:5000"
        });
        for (k, v) in patch.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::to_vec(&base).unwrap()
    }

    #[test]
    fn the_origin_checks_what_a_relay_forwards_as_a_clients_message() {
        assert!(check(&forwarded(serde_json::json!({})), LIMITS).is_ok());
        let refused = [
            (serde_json::json!({"type": "bark"}), ErrorCode::BadMessage),
            (serde_json::json!({"visitor": ""}), ErrorCode::BadMessage),
            (
                serde_json::json!({"visitor": "a\nb"}),
                ErrorCode::BadMessage,
            ),
            (serde_json::json!({"text": "   "}), ErrorCode::BadMessage),
            (
                serde_json::json!({"text": "x".repeat(11)}),
                ErrorCode::TextTooLong,
            ),
            (serde_json::json!({"type": "enter"}), ErrorCode::BadMessage),
            (serde_json::json!({"via": "state"}), ErrorCode::BadMessage),
            (serde_json::json!({"reason": "gone"}), ErrorCode::BadMessage),
            (serde_json::json!({"client_id": {"a": 1}}), ErrorCode::BadId),
            (
                serde_json::json!({"client_id": "123456789"}),
                ErrorCode::BadId,
            ),
        ];
        for (patch, code) in refused {
            let e = check(&forwarded(patch.clone()), LIMITS).unwrap_err();
            assert_eq!(e.code, code, "{patch}");
        }
        let huge = forwarded(serde_json::json!({"text": "x".repeat(8000)}));
        assert!(check(&huge, LIMITS).is_err());
        assert!(check(b"not json", LIMITS).is_err());
    }
}
