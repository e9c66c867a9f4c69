//! One client's life: a reader and a writer joined together.
//!
//! The writer owns the socket's sending half and is the only place frames are sent from:
//! the newest state (never a backlog of old ones), queued messages, heartbeats and the
//! closing frame. The reader parses what the client sends, acts on it through the hub, and
//! answers through the client's own queue.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::auth::Admitted;
use crate::dedup::RecentIds;
use crate::hub::{Farewell, Hub, Kick, Membership, Meter, Outbound, Replies};
use crate::inbox::{Event, Provenance, REMEMBER_IDS_FOR};
use crate::protocol::{
    ClientError, ErrorCode, Head, RESERVED_TYPES, Register, ServerMessage, SystemStatus,
    VISITOR_TYPES, VisitorFields, close, nested_deeper_than, valid_name,
};
use crate::state::SnapshotRx;

/// Most queued messages written before one flush.
const MAX_BATCH: usize = 64;
/// Most bytes written before one flush: what the socket's write buffer holds beyond the
/// queue's own bound.
const MAX_BATCH_BYTES: usize = 64 * 1024;
/// Message ids remembered per connection, for clients without a `?client=` identity (their
/// ids cannot recur on another connection, so they go when the connection goes).
const CONNECTION_IDS_BYTES: usize = 64 * 1024;

/// How long a last frame (goodbye, close) may take before the connection is just dropped.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// What the HTTP layer decided about a connection before upgrading it.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionOptions {
    /// Who is connecting.
    pub(crate) peer: SocketAddr,
    /// Which path (`/`, `/ws`, `/ws/matrix`).
    pub(crate) path: String,
    /// The client asked for `state_patch` messages (`?diff=1`).
    pub(crate) diff: bool,
    /// The identity the client keeps across reconnects (`?client=`), if it sent one.
    pub(crate) client: Option<String>,
    /// How the client was let in, from which page, and whether it may act as an agent.
    pub(crate) admitted: Admitted,
    /// Heartbeat interval.
    pub(crate) heartbeat: Duration,
    /// Messages per second allowed.
    pub(crate) max_messages_per_sec: u32,
    /// Longest visitor text, in characters.
    pub(crate) max_text_chars: usize,
    /// Longest message `id`, in bytes.
    pub(crate) max_id_bytes: usize,
    /// Deepest nesting of a message.
    pub(crate) max_json_depth: usize,
}

/// Runs the connection to its end. `shutdown` is the bridge's (the hub ends every
/// connection when it is cancelled).
pub(crate) async fn serve(
    socket: WebSocket,
    hub: Hub,
    opts: ConnectionOptions,
    shutdown: CancellationToken,
) {
    let (membership, count) = hub.join(opts.peer, opts.path.clone(), opts.admitted.admission);
    let Membership {
        id,
        rx,
        replies,
        meter,
        kick,
        snapshots,
    } = membership;
    tracing::info!(peer = %opts.peer, path = %opts.path, client = id, admitted = ?opts.admitted.admission, clients = count, "client connected");

    let (sink, stream) = socket.split();
    // Cancelled when the reader or the writer ends; it stops the other.
    let end = CancellationToken::new();
    // Should this task be dropped before the connection ends, the reader stops too.
    let _stop_reader = end.clone().drop_guard();
    let last_seen = Arc::new(LastSeen::new());
    let opts = Arc::new(opts);

    let writer = Writer {
        sink,
        rx,
        meter,
        snapshots,
        diff: opts.diff,
        last_seq: None,
        heartbeat: opts.heartbeat,
        last_seen: Arc::clone(&last_seen),
    };
    let reader = Reader {
        id,
        hub: hub.clone(),
        opts: Arc::clone(&opts),
        replies,
        kick: Arc::clone(&kick),
        last_seen,
        rate: RateWindow::new(opts.max_messages_per_sec),
        present: None,
        provenance: Provenance {
            admitted: opts.admitted.admission,
            origin: opts.admitted.origin.clone(),
            peer: opts.peer,
            relayed: false,
        },
        own_ids: RecentIds::new(REMEMBER_IDS_FOR, CONNECTION_IDS_BYTES),
    };

    // The reader is a task of its own: in one task with the writer, every state or message
    // sent would also poll the reader (and every frame read would poll the writer).
    let read = tokio::spawn({
        let end = end.clone();
        async move {
            let (reader, reason) = reader.run(stream, &end).await;
            end.cancel();
            // The client is gone: the writer's one signal to end (see `Kick`).
            reader.kick.end();
            (reader, reason)
        }
    });
    let write_end = writer.run(&kick, &end).await;
    end.cancel();
    let read_end = read.await;
    let read_reason = match &read_end {
        Ok((_, reason)) => reason,
        Err(e) => {
            tracing::error!(peer = %opts.peer, client = id, error = %e, "the connection's reader failed");
            "connection lost"
        }
    };
    let reason = kick.reason().or(write_end).unwrap_or(read_reason);
    let reason = if shutdown.is_cancelled() {
        "bridge shutting down"
    } else {
        reason
    };
    if let Ok((reader, _)) = read_end {
        reader.visitor_gone(reason).await;
    }
    let count = hub.leave(id, reason);
    tracing::info!(peer = %opts.peer, path = %opts.path, client = id, reason, clients = count, "client disconnected");
}

/// When the client was last heard from, in milliseconds since the connection began.
struct LastSeen {
    start: Instant,
    millis: AtomicU64,
}

impl LastSeen {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            millis: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(ms, Ordering::Relaxed);
    }
    fn silent_for(&self) -> Duration {
        let ms = self.millis.load(Ordering::Relaxed);
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(ms))
    }
}

struct Writer {
    sink: SplitSink<WebSocket, Message>,
    rx: mpsc::Receiver<Outbound>,
    /// The bytes queued for this client; given back once sent (or dropped).
    meter: Arc<Meter>,
    snapshots: SnapshotRx,
    diff: bool,
    last_seq: Option<u64>,
    heartbeat: Duration,
    last_seen: Arc<LastSeen>,
}

impl Writer {
    /// Sends until the connection should end; returns a reason if the writer decided it.
    async fn run(mut self, kick: &Kick, end: &CancellationToken) -> Option<&'static str> {
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + self.heartbeat, self.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The connection's one signal to end (see `Kick`), waited on for its whole life.
        let mut stop = pin!(kick.signal());
        // The client's first message is the current state, if there is one.
        self.snapshots.mark_changed();
        loop {
            let sent = tokio::select! {
                biased;
                () = &mut stop => return self.finish(kick, end).await,
                changed = self.snapshots.changed() => match changed {
                    Ok(()) => self.send_state(false, kick).await,
                    // The state watcher is gone: the bridge is stopping, and the hub's word
                    // of it may not have come yet.
                    Err(_) => return self.finish(kick, end).await,
                },
                out = self.rx.recv() => match out {
                    Some(first) => self.send_queued(first, kick).await,
                    None => return Some("removed from the hub"),
                },
                _ = heartbeat.tick() => {
                    if self.last_seen.silent_for() > self.heartbeat * 2 {
                        kick.kick(close::GOING_AWAY, "heartbeat timeout");
                        continue;
                    }
                    self.send(Message::Ping(Default::default()), kick).await
                }
            };
            if sent.is_err() {
                // Kicked while a send was stuck: say why, if the socket still takes it.
                // (A send is also given up when the client goes or the bridge stops.)
                if let Some(farewell) = kick.farewell() {
                    self.close(farewell.code, farewell.reason).await;
                    return Some(farewell.reason);
                }
                // The client's close frame may have arrived while this send was on its way
                // (the socket refuses data after it); the reader is then ending. Flush the
                // close reply the protocol owes the client.
                if tokio::time::timeout(FAREWELL_TIMEOUT, end.cancelled())
                    .await
                    .is_ok()
                {
                    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, self.sink.close()).await;
                    return None;
                }
                return Some("send failed");
            }
        }
    }

    /// Closes the connection as its end asks: told why if it was kicked, else with the
    /// close reply the client is owed if it closed, else with a goodbye as the bridge shuts
    /// down. A kick comes first: the reader kicks and then ends, and the client must still
    /// be told why (1008, 1009).
    async fn finish(&mut self, kick: &Kick, end: &CancellationToken) -> Option<&'static str> {
        if let Some(farewell) = kick.farewell() {
            if let Some(words) = farewell.last_words {
                self.send_farewell(Message::Text(words)).await;
            }
            self.close(farewell.code, farewell.reason).await;
            return Some(farewell.reason);
        }
        if end.is_cancelled() {
            // The client closed: flush the close reply the protocol owes it.
            let _ = tokio::time::timeout(FAREWELL_TIMEOUT, self.sink.close()).await;
            return None;
        }
        // Neither kicked nor gone: the bridge is shutting down.
        let bye = ServerMessage::SystemStatus {
            data: SystemStatus {
                status: "shutting_down",
            },
        }
        .to_text();
        self.send_farewell(Message::Text(bye)).await;
        self.close(close::GOING_AWAY, "bridge shutting down").await;
        Some("bridge shutting down")
    }

    /// Sends the newest state: a patch when the client has the one before, else in full.
    async fn send_state(&mut self, force_full: bool, kick: &Kick) -> Result<(), ()> {
        match self.state_message(force_full) {
            Some(message) => self.send(message, kick).await,
            None => Ok(()),
        }
    }

    /// The newest state as this client should get it, if there is one.
    fn state_message(&mut self, force_full: bool) -> Option<Message> {
        // Only the bytes are taken, under the borrow: cloning the snapshot's `Arc` would be
        // two more atomic operations, on a count every client shares, per delivery.
        let newest = self.snapshots.borrow_and_update();
        let snapshot = newest.as_deref()?;
        let text = match (&snapshot.patch, self.last_seq) {
            (Some(patch), Some(last)) if self.diff && !force_full && last + 1 == snapshot.seq => {
                patch.clone()
            }
            _ => snapshot.full.clone(),
        };
        self.last_seq = Some(snapshot.seq);
        Some(Message::Text(text))
    }

    /// Sends `first` and whatever else is already queued, up to a batch, with one flush: a
    /// busy hub then costs one write per batch instead of one per message. Gives up like
    /// [`Writer::send`].
    async fn send_queued(&mut self, first: Outbound, kick: &Kick) -> Result<(), ()> {
        let limit = self.heartbeat * 2;
        // Bytes taken off the queue: they count against the client until written out.
        let mut taken = 0;
        let batch = async {
            let mut next = Some(first);
            let mut sent = 0;
            while let Some(out) = next.take() {
                taken += out.bytes();
                let message = match out {
                    Outbound::Text(text) => Some(Message::Text(text)),
                    Outbound::FullState => self.state_message(true),
                };
                if let Some(message) = message {
                    self.sink.feed(message).await?;
                }
                sent += 1;
                if sent < MAX_BATCH && taken < MAX_BATCH_BYTES {
                    next = self.rx.try_recv().ok();
                }
            }
            self.sink.flush().await
        };
        let result = until_stalled_or_kicked(limit, kick, batch).await;
        self.meter.sub(taken);
        result
    }

    /// Sends one frame. Gives up when the client stops taking data for two heartbeats, or
    /// at once when the connection is told to close (a stalled send must not delay that).
    async fn send(&mut self, message: Message, kick: &Kick) -> Result<(), ()> {
        until_stalled_or_kicked(self.heartbeat * 2, kick, self.sink.send(message)).await
    }

    /// Sends a last frame, waiting only briefly: the connection is ending either way.
    async fn send_farewell(&mut self, message: Message) {
        let _ = tokio::time::timeout(FAREWELL_TIMEOUT, self.sink.send(message)).await;
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        self.send_farewell(Message::Close(Some(frame))).await;
    }
}

impl Drop for Writer {
    /// Gives back the bytes of whatever is still queued: the hub's total must only count
    /// what is really waiting.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(out) = self.rx.try_recv() {
            self.meter.sub(out.bytes());
        }
    }
}

/// Runs a send: `Err` if it fails, takes longer than `limit`, or the connection is to end
/// meanwhile (a stalled send must not delay that).
async fn until_stalled_or_kicked<E>(
    limit: Duration,
    kick: &Kick,
    send: impl Future<Output = Result<(), E>>,
) -> Result<(), ()> {
    // The send is polled first, and the timer is made when first polled: a send that
    // completes at once, as most do, reads no clock, arms no timer and never registers
    // with the kick.
    tokio::select! {
        biased;
        sent = send => sent.map_err(drop),
        () = async { tokio::time::sleep(limit).await } => Err(()),
        () = kick.signal() => Err(()),
    }
}

struct Reader {
    id: u64,
    hub: Hub,
    opts: Arc<ConnectionOptions>,
    replies: Replies,
    kick: Arc<Kick>,
    last_seen: Arc<LastSeen>,
    rate: RateWindow,
    /// The visitor this connection announced with `enter` and has not yet `leave`d.
    present: Option<String>,
    /// Who this connection is, written into every inbox file it causes.
    provenance: Provenance,
    /// Ids already written, for a client without a `?client=` identity.
    own_ids: RecentIds,
}

impl Reader {
    /// Reads until the client goes or the connection is ending; returns itself (it knows
    /// who is still present) and why it stopped.
    async fn run(
        mut self,
        mut stream: SplitStream<WebSocket>,
        end: &CancellationToken,
    ) -> (Self, &'static str) {
        let reason = loop {
            let frame = tokio::select! {
                biased;
                () = end.cancelled() => break "closed by the bridge",
                frame = stream.next() => frame,
            };
            let message = match frame {
                None => break "connection lost",
                Some(Err(e)) => break self.read_error(&e),
                Some(Ok(message)) => message,
            };
            self.last_seen.touch();
            // Everything below runs to completion even if the bridge starts shutting down,
            // so a message being written to the inbox is finished and acknowledged.
            let outcome = match message {
                Message::Text(text) => self.on_text(&text).await,
                Message::Binary(_) => {
                    let e = ClientError::new(
                        ErrorCode::BinaryNotSupported,
                        "binary frames are not supported; send JSON text",
                    );
                    self.reply_error(&e, None).await
                }
                Message::Close(_) => break "closed by the client",
                Message::Ping(_) | Message::Pong(_) => Ok(()),
            };
            if outcome.is_err() {
                break "closed by the bridge";
            }
        };
        (self, reason)
    }

    /// Classifies a read error and closes with the code that names it: 1009 when the client
    /// sent too much, 1007 for text that is not UTF-8, 1002 for a broken frame sequence.
    fn read_error(&self, e: &axum::Error) -> &'static str {
        let cause =
            std::error::Error::source(e).and_then(|s| s.downcast_ref::<tungstenite::Error>());
        let (code, reason) = match cause {
            Some(tungstenite::Error::Capacity(_)) => (close::TOO_BIG, "message too big"),
            Some(tungstenite::Error::Utf8(_)) => (close::INVALID_DATA, "text is not UTF-8"),
            Some(tungstenite::Error::Protocol(_)) => {
                (close::PROTOCOL_ERROR, "WebSocket protocol error")
            }
            _ => {
                tracing::debug!(peer = %self.opts.peer, error = %e, "read error");
                return "connection lost";
            }
        };
        tracing::debug!(peer = %self.opts.peer, error = %e, reason, "closing a client that sent a bad frame");
        self.kick.kick(code, reason);
        reason
    }

    /// Handles one text frame. `Err` only when the client's queue is gone.
    async fn on_text(&mut self, text: &Utf8Bytes) -> Result<(), ()> {
        match self.rate.hit() {
            Rate::Ok => {}
            Rate::Refuse => {
                let e = ClientError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "more than {} messages a second; slow down",
                        self.opts.max_messages_per_sec
                    ),
                );
                return self.reply_error(&e, None).await;
            }
            Rate::Close => {
                let message = format!(
                    "more than {} messages a second, twice over; closing",
                    2 * self.opts.max_messages_per_sec
                );
                self.kick.kick_with(Farewell {
                    code: close::POLICY,
                    reason: "too many messages",
                    last_words: Some(
                        ServerMessage::Error {
                            code: ErrorCode::RateLimited,
                            message: &message,
                            id: None,
                        }
                        .to_text(),
                    ),
                });
                return Err(());
            }
        }
        if nested_deeper_than(text, self.opts.max_json_depth) {
            let e = ClientError::new(
                ErrorCode::TooDeep,
                format!(
                    "messages may nest arrays and objects at most {} deep",
                    self.opts.max_json_depth
                ),
            );
            return self.reply_error(&e, None).await;
        }
        let head = match Head::parse(text, self.opts.max_id_bytes) {
            Ok(head) => head,
            Err(e) => {
                tracing::debug!(peer = %self.opts.peer, error = %e.message, "bad message");
                return self.reply_error(&e, None).await;
            }
        };
        match self.dispatch(&head, text).await {
            Ok(true) => match head.id {
                Some(id) => self.reply(ServerMessage::Ack { id }.to_text()).await,
                None => Ok(()),
            },
            Ok(false) => Ok(()),
            Err(e) => {
                tracing::debug!(peer = %self.opts.peer, code = ?e.code, error = %e.message, "message refused");
                self.reply_error(&e, head.id).await
            }
        }
    }

    /// Acts on a parsed message. `Ok(true)` means "acknowledge it if it has an id".
    async fn dispatch(&mut self, head: &Head<'_>, text: &Utf8Bytes) -> Result<bool, ClientError> {
        let kind = head.kind.as_ref();
        if RESERVED_TYPES.contains(&kind) {
            return Err(ClientError::new(
                ErrorCode::ReservedType,
                format!("`{kind}` is sent by the bridge only"),
            ));
        }
        if !self.opts.admitted.agent && !VISITOR_TYPES.contains(&kind) {
            let why = if self.opts.admitted.origin.is_some() {
                "a web page may send visitor messages only"
            } else {
                "this connection was not let in as an agent (that needs the agent token if one is set, else the token or a program on this machine)"
            };
            return Err(ClientError::new(
                ErrorCode::Forbidden,
                format!("`{kind}` is for agents: {why}"),
            ));
        }
        if kind != "agent_register"
            && let Some(claimed) = head.claimed_agent()?
            && self.hub.agent_of(self.id).as_deref() != Some(claimed)
        {
            return Err(ClientError::new(
                ErrorCode::Forbidden,
                format!(
                    "this connection is not registered as agent `{claimed}`: only that agent may send messages naming it in `agent_id`"
                ),
            ));
        }
        match kind {
            "ping" => {
                let pong = ServerMessage::Pong { id: head.id }.to_text();
                self.reply(pong).await.map_err(|()| gone())?;
                Ok(false)
            }
            "resync" => {
                self.replies
                    .send(Outbound::FullState)
                    .await
                    .map_err(|()| gone())?;
                Ok(false)
            }
            "message" | "enter" | "leave" | "visitor_message" | "chat_message" => {
                self.visitor_event(kind, head, text).await?;
                Ok(true)
            }
            "agent_register" => {
                let register: Register = serde_json::from_str(text).map_err(bad_fields)?;
                let (agent, role) = register.into_identity()?;
                self.hub.register(self.id, agent, role)?;
                Ok(true)
            }
            _ => {
                self.route(head, text)?;
                Ok(true)
            }
        }
    }

    /// Writes a visitor event to the inbox, then passes it on to the others.
    async fn visitor_event(
        &mut self,
        kind: &str,
        head: &Head<'_>,
        text: &Utf8Bytes,
    ) -> Result<(), ClientError> {
        let fields: VisitorFields = serde_json::from_str(text).map_err(bad_fields)?;
        let named = fields.visitor.as_deref().or(fields.agent_id.as_deref());
        // `enter` and `leave` speak only for the visitor this connection introduced: no one
        // can make another visitor leave, or be in two places at once.
        let present = self.present.clone();
        let visitor = match (kind, named, present.as_deref()) {
            ("leave", _, None) => {
                return Err(ClientError::new(
                    ErrorCode::Forbidden,
                    "this connection has not entered: `leave` speaks only for the visitor a connection entered as",
                ));
            }
            ("leave", Some(name), Some(entered)) if name != entered => {
                return Err(ClientError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "`leave` speaks only for `{entered}`, the visitor this connection entered as"
                    ),
                ));
            }
            ("leave", _, Some(entered)) => entered,
            ("enter", name, Some(entered)) if name.unwrap_or("visitor") != entered => {
                return Err(ClientError::new(
                    ErrorCode::BadMessage,
                    format!(
                        "this connection is already present as `{entered}`; send `leave` first"
                    ),
                ));
            }
            (_, name, _) => name.unwrap_or("visitor"),
        };
        if !valid_name(visitor, 64) {
            return Err(ClientError::new(
                ErrorCode::BadMessage,
                "`visitor` must be 1 to 64 printable characters",
            ));
        }
        let is_message = !matches!(kind, "enter" | "leave");
        let said = if is_message {
            let said = fields.text.as_deref().unwrap_or_default();
            if said.trim().is_empty() {
                return Err(ClientError::new(
                    ErrorCode::BadMessage,
                    "`text` must not be empty",
                ));
            }
            if said.chars().count() > self.opts.max_text_chars {
                return Err(ClientError::new(
                    ErrorCode::TextTooLong,
                    format!(
                        "`text` is longer than {} characters",
                        self.opts.max_text_chars
                    ),
                ));
            }
            Some(said)
        } else {
            None
        };
        let event = Event {
            kind: if is_message { "message" } else { kind },
            visitor,
            text: said,
            reason: None,
            via: (kind != "message" && is_message).then_some(kind),
            client_id: head.id,
            provenance: &self.provenance,
        };
        let written = match self.hub.cluster().filter(|link| link.is_relay()) {
            // A relay has no inbox: the origin writes it, and recognises repeats by the
            // client's identity, or else by this connection's name in the cluster.
            Some(link) => {
                let dedup = head.id.map(|id| {
                    let client = match &self.opts.client {
                        Some(client) => client.clone(),
                        None => format!("{}/{}", link.node(), self.id),
                    };
                    (client, id.get().to_owned())
                });
                crate::cluster::inbox::forward(link, &event, dedup).await?
            }
            None => {
                // Without an identity, repeats are recognised within this connection only,
                // and forgotten with it.
                let slot = head.id.map(|id| match &self.opts.client {
                    Some(client) => self.hub.inbox().slot(client, id.get()),
                    None => self.own_ids.slot("", id.get()),
                });
                self.hub.inbox().write_once(slot, &event).await?
            }
        };
        if !written {
            tracing::debug!(peer = %self.opts.peer, "repeated message acknowledged again, not written");
            return Ok(());
        }
        match kind {
            "enter" => {
                self.present = Some(visitor.to_owned());
                self.hub.set_visitor(self.id, self.present.clone());
            }
            "leave" => {
                self.present = None;
                self.hub.set_visitor(self.id, None);
            }
            _ => {}
        }
        self.route(head, text)
    }

    /// Passes a message on unchanged: to its `target_id`, or to everyone else.
    fn route(&self, head: &Head<'_>, text: &Utf8Bytes) -> Result<(), ClientError> {
        match head.target_id.as_deref() {
            Some(target) => self.hub.direct(target, text.clone()),
            None => {
                self.hub.broadcast(text.clone(), Some(self.id));
                Ok(())
            }
        }
    }

    /// Writes and relays the `leave` a visitor did not send before their connection ended.
    async fn visitor_gone(self, reason: &str) {
        let Some(visitor) = self.present.as_deref() else {
            return;
        };
        let event = Event {
            kind: "leave",
            visitor,
            text: None,
            reason: Some(reason),
            via: None,
            client_id: None,
            provenance: &self.provenance,
        };
        let written = match self.hub.cluster().filter(|link| link.is_relay()) {
            Some(link) => crate::cluster::inbox::forward(link, &event, None)
                .await
                .is_ok(),
            None => self.hub.inbox().write(&event).await.is_ok(),
        };
        if written {
            let text = ServerMessage::Leave { visitor, reason }.to_text();
            self.hub.broadcast(text, Some(self.id));
        }
    }

    async fn reply(&self, text: Utf8Bytes) -> Result<(), ()> {
        self.replies.send(Outbound::Text(text)).await
    }

    async fn reply_error(&self, e: &ClientError, id: Option<&RawValue>) -> Result<(), ()> {
        let text = ServerMessage::Error {
            code: e.code,
            message: &e.message,
            id,
        }
        .to_text();
        self.reply(text).await
    }
}

fn bad_fields(e: serde_json::Error) -> ClientError {
    ClientError::new(
        ErrorCode::BadMessage,
        format!("a field has the wrong type: {e}"),
    )
}

fn gone() -> ClientError {
    ClientError::new(ErrorCode::BadMessage, "connection closing")
}

/// A fixed one-second window: over the limit, messages are refused; over twice the limit,
/// the connection is closed.
struct RateWindow {
    limit: u32,
    window_start: Instant,
    count: u32,
}

enum Rate {
    Ok,
    Refuse,
    Close,
}

impl RateWindow {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            window_start: Instant::now(),
            count: 0,
        }
    }

    fn hit(&mut self) -> Rate {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > self.limit.saturating_mul(2) {
            Rate::Close
        } else if self.count > self.limit {
            Rate::Refuse
        } else {
            Rate::Ok
        }
    }
}
