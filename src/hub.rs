//! The hub: who is connected, who is registered as which agent, and delivery to them.
//!
//! Every client has a queue bounded in messages and in bytes, and all queues together are
//! bounded in bytes. Delivery never waits: a message that does not fit in a client's queue
//! marks that client too slow and closes it (it reconnects and resyncs), so one stalled
//! iPad cannot hold up the others; when all queues together hold too much, the largest are
//! closed first. The registry lock is a `std` mutex held only for map operations and
//! `try_send`, never across an `.await`.
//!
//! In a cluster (`--cluster`), the hub also hands the [`Link`] what must reach the other
//! nodes (broadcasts, messages for agents connected elsewhere, registrations), and the
//! link's tasks hand back what came from them (`*_local`, `taken_over_elsewhere`).
//!
//! [`Link`]: crate::cluster::Link

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;
use std::time::SystemTime;

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::auth::Admission;
use crate::cluster::{Link, Outgoing};
use crate::inbox::Inbox;
use crate::protocol::{ClientError, ErrorCode, ServerMessage, close};
use crate::state::{SnapshotRx, StateHealth};

/// A client as the status API and the app show it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    /// Unique for the life of the bridge.
    pub id: u64,
    /// The client's network address.
    pub peer: SocketAddr,
    /// The path it connected to (`/`, `/ws`, `/ws/matrix`).
    pub path: String,
    /// How it was let in: an agent id it holds can only be taken over by a client let in
    /// at least as strongly.
    pub admitted: Admission,
    /// When it connected.
    #[serde(serialize_with = "rfc3339")]
    pub connected_at: SystemTime,
    /// The agent id it registered under, if any.
    #[serde(rename = "agentId", skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The role it registered with, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The visitor this connection entered as (with `enter`) and who has not left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visitor: Option<String>,
    /// Why the bridge is closing this connection, once it has decided to (e.g. the client is
    /// too slow to keep up); the client stays listed until its socket is closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closing: Option<&'static str>,
    /// Bytes waiting to be sent to it.
    pub queued_bytes: usize,
}

/// How much may wait for clients.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    /// Messages per client.
    pub(crate) messages: usize,
    /// Bytes per client (a single message always fits in an empty queue).
    pub(crate) client_bytes: usize,
    /// Bytes for all clients together.
    pub(crate) total_bytes: usize,
}

/// The bytes one client has waiting (queued, or being written), counted in the hub's total
/// too. Whoever takes a message off the queue gives its bytes back.
#[derive(Debug)]
pub(crate) struct Meter {
    client: AtomicUsize,
    total: Arc<AtomicUsize>,
}

impl Meter {
    fn add(&self, bytes: usize) {
        self.client.fetch_add(bytes, Ordering::Relaxed);
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Gives back `bytes` that were counted with `add`.
    pub(crate) fn sub(&self, bytes: usize) {
        self.client.fetch_sub(bytes, Ordering::Relaxed);
        self.total.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn client(&self) -> usize {
        self.client.load(Ordering::Relaxed)
    }
}

/// A connection's own way into its queue, for its replies (acks, errors, pongs).
#[derive(Debug, Clone)]
pub(crate) struct Replies {
    tx: mpsc::Sender<Outbound>,
    meter: Arc<Meter>,
}

impl Replies {
    /// Queues `out`, waiting for room: a client that sends faster than it reads is slowed
    /// down. `Err` once the connection is gone.
    pub(crate) async fn send(&self, out: Outbound) -> Result<(), ()> {
        let bytes = out.bytes();
        self.meter.add(bytes);
        self.tx.send(out).await.map_err(|_| self.meter.sub(bytes))
    }
}

/// What a client's writer task is asked to send.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A finished message, shared with every other recipient.
    Text(Utf8Bytes),
    /// The whole current state (the client asked for a resync).
    FullState,
}

impl Outbound {
    /// The bytes it holds, as the queue bounds count them.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            // Refers to the shared snapshot; the queue holds nothing of its own.
            Self::FullState => 0,
        }
    }
}

/// Tells a connection to close, with the first reason given; and the connection's one
/// signal to end, which whatever else ends it (the client going, the bridge shutting down)
/// gives without a reason.
///
/// The writer waits on this one signal rather than on one per cause, and polls it every
/// time it wakes (for every state and message it sends): so it is a flag and a waker slot,
/// checked without a lock, rather than a cancellation token, whose every poll takes two
/// locks.
#[derive(Debug, Default)]
pub(crate) struct Kick {
    reason: OnceLock<Farewell>,
    ended: AtomicBool,
    /// The writer's, the only task that waits on the signal.
    writer: AtomicWaker,
}

/// How a connection is closed: code, reason, and optionally a last message before it.
#[derive(Debug, Clone)]
pub(crate) struct Farewell {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) last_words: Option<Utf8Bytes>,
}

impl Kick {
    /// Asks the connection to close; only the first reason counts. True if this was it.
    pub(crate) fn kick(&self, code: u16, reason: &'static str) -> bool {
        self.kick_with(Farewell {
            code,
            reason,
            last_words: None,
        })
    }

    /// Like [`Kick::kick`], sending `farewell.last_words` first, ahead of anything queued.
    pub(crate) fn kick_with(&self, farewell: Farewell) -> bool {
        let first = self.reason.set(farewell).is_ok();
        self.end();
        first
    }

    /// Closes the connection of an agent whose id a newer connection has taken, telling it
    /// why first.
    pub(crate) fn replaced(&self, agent: &str) {
        let message = format!("agent id `{agent}` was registered by a newer connection");
        self.kick_with(Farewell {
            code: close::POLICY,
            reason: "agent id taken over by a new connection",
            last_words: Some(
                ServerMessage::Error {
                    code: ErrorCode::Replaced,
                    message: &message,
                    id: None,
                }
                .to_text(),
            ),
        });
    }

    /// Ends the connection without a reason of its own: the client went, or the bridge is
    /// shutting down.
    pub(crate) fn end(&self) {
        // Release: whoever sees the flag also sees a reason set before it.
        self.ended.store(true, Ordering::Release);
        self.writer.wake();
    }

    /// Completes once the connection must end, kicked or not. Only the connection's writer
    /// may wait on it (there is one waker slot); it may be polled again after it completed,
    /// so the writer can keep one for its whole life.
    pub(crate) fn signal(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.ended.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.writer.register(cx.waker());
            // Ended between the check and the registration: that wake may have found the
            // slot empty.
            if self.ended.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// How the connection is to be closed, if it was kicked.
    pub(crate) fn farewell(&self) -> Option<Farewell> {
        self.reason.get().cloned()
    }

    /// Why the connection was told to close, if it was.
    pub(crate) fn reason(&self) -> Option<&'static str> {
        self.reason.get().map(|f| f.reason)
    }
}

/// A cheap-to-clone handle on the hub.
#[derive(Clone)]
pub(crate) struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    registry: Mutex<Registry>,
    snapshots: SnapshotRx,
    state_health: Arc<Mutex<StateHealth>>,
    inbox: Inbox,
    limits: QueueLimits,
    /// Bytes waiting for all clients together.
    queued_total: Arc<AtomicUsize>,
    next_id: AtomicU64,
    started_at: SystemTime,
    /// Bumped on every connect, disconnect and registration, for live views.
    changes: watch::Sender<u64>,
    /// The other bridges of the cluster, once joined.
    cluster: OnceLock<Link>,
}

#[derive(Default)]
struct Registry {
    clients: HashMap<u64, Entry>,
    agents: HashMap<String, u64>,
    /// The bridge is shutting down: every connection is ended, those that join too.
    ending: bool,
}

struct Entry {
    tx: mpsc::Sender<Outbound>,
    meter: Arc<Meter>,
    kick: Arc<Kick>,
    info: ClientInfo,
}

/// What a new connection gets from the hub.
pub(crate) struct Membership {
    pub(crate) id: u64,
    pub(crate) rx: mpsc::Receiver<Outbound>,
    /// The connection's own way into its queue, for replies.
    pub(crate) replies: Replies,
    /// The bytes waiting for it; the writer gives them back as it sends.
    pub(crate) meter: Arc<Meter>,
    pub(crate) kick: Arc<Kick>,
    pub(crate) snapshots: SnapshotRx,
}

impl Hub {
    pub(crate) fn new(
        snapshots: SnapshotRx,
        state_health: Arc<Mutex<StateHealth>>,
        inbox: Inbox,
        limits: QueueLimits,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                registry: Mutex::new(Registry::default()),
                snapshots,
                state_health,
                inbox,
                limits,
                queued_total: Arc::new(AtomicUsize::new(0)),
                next_id: AtomicU64::new(1),
                started_at: SystemTime::now(),
                changes: watch::channel(0).0,
                cluster: OnceLock::new(),
            }),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping the whole bridge would, so recover the guard.
        self.shared
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn changed(&self) {
        self.shared.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Joins the hub to a cluster: from now on what must cross nodes is handed to `link`.
    pub(crate) fn set_cluster(&self, link: Link) {
        let _ = self.shared.cluster.set(link);
    }

    /// The hub's link to its cluster, if it is in one.
    pub(crate) fn cluster(&self) -> Option<&Link> {
        self.shared.cluster.get()
    }

    /// The inbox visitor events are written to.
    pub(crate) fn inbox(&self) -> &Inbox {
        &self.shared.inbox
    }

    /// Adds a client; returns its id, queue and kick switch. Also the number now connected.
    pub(crate) fn join(
        &self,
        peer: SocketAddr,
        path: String,
        admitted: Admission,
    ) -> (Membership, usize) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.shared.limits.messages);
        let meter = Arc::new(Meter {
            client: AtomicUsize::new(0),
            total: Arc::clone(&self.shared.queued_total),
        });
        let kick = Arc::new(Kick::default());
        let info = ClientInfo {
            id,
            peer,
            path,
            admitted,
            connected_at: SystemTime::now(),
            agent_id: None,
            role: None,
            visitor: None,
            closing: None,
            queued_bytes: 0,
        };
        let count = {
            let mut reg = self.registry();
            if reg.ending {
                kick.end();
            }
            reg.clients.insert(
                id,
                Entry {
                    tx: tx.clone(),
                    meter: Arc::clone(&meter),
                    kick: Arc::clone(&kick),
                    info,
                },
            );
            reg.clients.len()
        };
        self.changed();
        let membership = Membership {
            id,
            rx,
            replies: Replies {
                tx,
                meter: Arc::clone(&meter),
            },
            meter,
            kick,
            snapshots: self.shared.snapshots.clone(),
        };
        (membership, count)
    }

    /// Removes a client; if it held an agent id, everyone hears `agent_left`. Returns the
    /// number still connected.
    pub(crate) fn leave(&self, id: u64, reason: &str) -> usize {
        let (count, left) = {
            let mut reg = self.registry();
            let entry = reg.clients.remove(&id);
            let agent = entry.and_then(|e| e.info.agent_id);
            let left = match agent {
                // Only if it still holds the id: after a takeover, the id lives on.
                Some(agent) if reg.agents.get(&agent) == Some(&id) => {
                    reg.agents.remove(&agent);
                    Some(agent)
                }
                _ => None,
            };
            (reg.clients.len(), left)
        };
        if let Some(agent) = left {
            tracing::info!(agent = %agent, reason, "agent left");
            if let Some(link) = self.cluster() {
                link.send(Outgoing::Presence(agent.clone(), None));
            }
            let text = ServerMessage::AgentLeft {
                agent_id_camel: &agent,
                agent_id: &agent,
                reason,
            }
            .to_text();
            self.broadcast(text, None);
        }
        self.changed();
        count
    }

    /// Records the visitor connection `id` is present as (`None` once they left), for the
    /// status API.
    pub(crate) fn set_visitor(&self, id: u64, visitor: Option<String>) {
        if let Some(entry) = self.registry().clients.get_mut(&id) {
            entry.info.visitor = visitor;
        }
        self.changed();
    }

    /// Registers connection `id` as `agent` with `role`. A live connection holding the same
    /// id is told why and closed: an agent reconnecting after a half-dead socket must not be
    /// locked out by its own ghost. But only by a connection let in at least as strongly:
    /// a LAN client with the token cannot take the id of the agent on this machine.
    pub(crate) fn register(&self, id: u64, agent: String, role: String) -> Result<(), ClientError> {
        let (previous_own, replaced) = {
            let mut reg = self.registry();
            let Some(admitted) = reg.clients.get(&id).map(|e| e.info.admitted) else {
                return Ok(());
            };
            let holder = reg
                .agents
                .get(&agent)
                .filter(|other| **other != id)
                .and_then(|other| reg.clients.get(other));
            if let Some(holder) = holder
                && holder.info.admitted > admitted
            {
                return Err(ClientError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "agent id `{agent}` is held by a connection with more privilege; it cannot be taken over from here"
                    ),
                ));
            }
            let replaced = match reg.agents.insert(agent.clone(), id) {
                Some(other) if other != id => reg.clients.get_mut(&other).map(|e| {
                    e.info.agent_id = None;
                    e.info.role = None;
                    Arc::clone(&e.kick)
                }),
                _ => None,
            };
            let Some(entry) = reg.clients.get_mut(&id) else {
                return Ok(());
            };
            let previous_own = entry.info.agent_id.replace(agent.clone());
            entry.info.role = Some(role.clone());
            let previous_own = previous_own.filter(|p| *p != agent);
            if let Some(p) = &previous_own {
                reg.agents.remove(p);
            }
            (previous_own, replaced)
        };
        if let Some(kick) = replaced {
            tracing::info!(agent = %agent, "agent id taken over by a new connection");
            kick.replaced(&agent);
        }
        if let Some(link) = self.cluster() {
            if let Some(old) = &previous_own {
                link.send(Outgoing::Presence(old.clone(), None));
            }
            // Announced before `agent_joined` goes out: a node holding the same id closes
            // its holder, and forgets it without an `agent_left`.
            link.send(Outgoing::Presence(agent.clone(), Some(role.clone())));
        }
        if let Some(old) = previous_own {
            let text = ServerMessage::AgentLeft {
                agent_id_camel: &old,
                agent_id: &old,
                reason: "re-registered",
            }
            .to_text();
            self.broadcast(text, None);
        }
        tracing::info!(agent = %agent, role = %role, "agent registered");
        let text = ServerMessage::AgentJoined {
            agent_id_camel: &agent,
            agent_id: &agent,
            role: &role,
        }
        .to_text();
        self.broadcast(text, None);
        self.changed();
        Ok(())
    }

    /// The agent id connection `id` is registered as, if any.
    pub(crate) fn agent_of(&self, id: u64) -> Option<String> {
        self.registry()
            .clients
            .get(&id)
            .and_then(|e| e.info.agent_id.clone())
    }

    /// Sends `text` to every client but `except`, on every node of the cluster.
    pub(crate) fn broadcast(&self, text: Utf8Bytes, except: Option<u64>) {
        if let Some(link) = self.cluster() {
            link.send(Outgoing::Broadcast(text.clone()));
        }
        self.broadcast_here(text, except);
    }

    /// Sends a message another node broadcast to every client of this one.
    pub(crate) fn broadcast_local(&self, text: &str) {
        self.broadcast_here(Utf8Bytes::from(text.to_owned()), None);
    }

    fn broadcast_here(&self, text: Utf8Bytes, except: Option<u64>) {
        let reg = self.registry();
        for (id, entry) in &reg.clients {
            if Some(*id) != except {
                self.deliver(entry, text.clone());
            }
        }
        self.shed_if_over(&reg);
    }

    /// Sends a message that came from the bridge itself (the outbox) to everyone.
    pub(crate) fn broadcast_from_bridge(&self, text: Utf8Bytes) {
        self.broadcast(text, None);
    }

    /// Sends `text` only to the connection registered as `target`, on whichever node of
    /// the cluster it is.
    pub(crate) fn direct(&self, target: &str, text: Utf8Bytes) -> Result<(), ClientError> {
        if self.direct_local(target, text.clone()) {
            return Ok(());
        }
        match self.cluster() {
            Some(link) if link.remote_agent(target).is_some() => {
                link.send(Outgoing::Direct(target.to_owned(), text));
                Ok(())
            }
            _ => Err(ClientError::new(
                ErrorCode::UnknownTarget,
                format!("no agent `{target}` is connected"),
            )),
        }
    }

    /// Sends `text` to the connection registered here as `target`; false if there is none.
    pub(crate) fn direct_local(&self, target: &str, text: Utf8Bytes) -> bool {
        let reg = self.registry();
        let Some(entry) = reg.agents.get(target).and_then(|id| reg.clients.get(id)) else {
            return false;
        };
        self.deliver(entry, text);
        self.shed_if_over(&reg);
        true
    }

    /// Another node of the cluster registered `agent`: the connection holding it here, if
    /// any, is told why and closed. The id lives on there, so no `agent_left` goes out.
    pub(crate) fn taken_over_elsewhere(&self, agent: &str) {
        let kick = {
            let mut reg = self.registry();
            let Some(id) = reg.agents.remove(agent) else {
                return;
            };
            reg.clients.get_mut(&id).map(|e| {
                e.info.agent_id = None;
                e.info.role = None;
                Arc::clone(&e.kick)
            })
        };
        if let Some(kick) = kick {
            tracing::info!(agent = %agent, "agent id taken over on another node");
            kick.replaced(agent);
        }
        self.changed();
    }

    /// An agent registered on another node is gone with its node: this node's clients hear
    /// `agent_left` (every node tells its own, so each client hears it once).
    pub(crate) fn left_elsewhere(&self, agent: &str, reason: &str) {
        let text = ServerMessage::AgentLeft {
            agent_id_camel: agent,
            agent_id: agent,
            reason,
        }
        .to_text();
        self.broadcast_here(text, None);
    }

    /// An agent counted gone with its node is back: this node's clients hear `agent_joined`.
    pub(crate) fn joined_elsewhere(&self, agent: &str, role: &str) {
        let text = ServerMessage::AgentJoined {
            agent_id_camel: agent,
            agent_id: agent,
            role,
        }
        .to_text();
        self.broadcast_here(text, None);
    }

    /// The agents registered on this node, with their roles.
    pub(crate) fn local_agents(&self) -> Vec<(String, String)> {
        self.registry()
            .clients
            .values()
            .filter_map(|e| Some((e.info.agent_id.clone()?, e.info.role.clone()?)))
            .collect()
    }

    /// A copy of every connected client's details.
    pub(crate) fn clients(&self) -> Vec<ClientInfo> {
        let mut list: Vec<ClientInfo> = self
            .registry()
            .clients
            .values()
            .map(|e| ClientInfo {
                closing: e.kick.reason(),
                queued_bytes: e.meter.client(),
                ..e.info.clone()
            })
            .collect();
        list.sort_by_key(|c| c.id);
        list
    }

    /// How many clients are connected.
    pub(crate) fn client_count(&self) -> usize {
        self.registry().clients.len()
    }

    /// Notified on every connect, disconnect and registration.
    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// The state file's health.
    pub(crate) fn state_health(&self) -> StateHealth {
        self.shared
            .state_health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// When the hub started.
    pub(crate) fn started_at(&self) -> SystemTime {
        self.shared.started_at
    }

    /// Ends every connection, and any that joins from now on, without a reason of its own:
    /// the bridge is shutting down, and each says goodbye as it ends.
    pub(crate) fn end_all(&self) {
        let mut reg = self.registry();
        reg.ending = true;
        for entry in reg.clients.values() {
            entry.kick.end();
        }
    }

    /// Asks every connection to close with `code` (used when the token changes).
    pub(crate) fn disconnect_all(&self, code: u16, reason: &'static str) {
        for entry in self.registry().clients.values() {
            entry.kick.kick(code, reason);
        }
    }

    /// Queues `text` for one client, or closes the client if its queue is full in messages
    /// or in bytes.
    fn deliver(&self, entry: &Entry, text: Utf8Bytes) {
        let bytes = text.len();
        let queued = entry.meter.client();
        if queued > 0 && queued.saturating_add(bytes) > self.shared.limits.client_bytes {
            too_slow(entry, "more bytes queued than a client may have");
            return;
        }
        entry.meter.add(bytes);
        match entry.tx.try_send(Outbound::Text(text)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => entry.meter.sub(bytes),
            Err(mpsc::error::TrySendError::Full(_)) => {
                entry.meter.sub(bytes);
                too_slow(entry, "more messages queued than a client may have");
            }
        }
    }

    /// When all queues together hold more than allowed, closes the largest first until what
    /// remains fits: the clients that fell furthest behind make room for everyone else.
    fn shed_if_over(&self, reg: &Registry) {
        let limit = self.shared.limits.total_bytes;
        let mut total = self.shared.queued_total.load(Ordering::Relaxed);
        if total <= limit {
            return;
        }
        let mut queues: Vec<(usize, &Entry)> = reg
            .clients
            .values()
            .filter(|e| e.kick.reason().is_none())
            .map(|e| (e.meter.client(), e))
            .collect();
        queues.sort_unstable_by_key(|q| std::cmp::Reverse(q.0));
        for (bytes, entry) in queues {
            if total <= limit || bytes == 0 {
                break;
            }
            too_slow(
                entry,
                "one of the largest queues while all queues were full",
            );
            total = total.saturating_sub(bytes);
        }
    }
}

/// Closes a client that cannot keep up (1013: it reconnects and resyncs).
fn too_slow(entry: &Entry, why: &'static str) {
    if entry.kick.kick(
        close::TRY_AGAIN_LATER,
        "too slow to keep up; reconnect to resync",
    ) {
        tracing::warn!(peer = %entry.info.peer, client = entry.info.id, why, "client too slow; closing it");
    }
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateHealth;

    /// A hub whose clients' writers never run: whatever is delivered stays queued.
    fn hub(dir: &std::path::Path, limits: QueueLimits) -> Hub {
        let health = StateHealth {
            path: dir.join("state.yaml"),
            seq: 0,
            last_load: None,
            last_error: None,
        };
        Hub::new(
            watch::channel(None).1,
            Arc::new(Mutex::new(health)),
            Inbox::new(dir.to_owned(), 10, 1 << 20),
            limits,
        )
    }

    fn agent(hub: &Hub, name: &str) -> Membership {
        let (m, _) = hub.join(
            "127.0.0.1:1".parse().unwrap(),
            "/ws".into(),
            Admission::Loopback,
        );
        hub.register(m.id, name.into(), "agent".into()).unwrap();
        m
    }

    fn text(kib: usize) -> Utf8Bytes {
        "x".repeat(kib * 1024).into()
    }

    #[test]
    fn a_client_over_its_byte_bound_is_closed_but_one_message_always_fits() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(
            dir.path(),
            QueueLimits {
                messages: 1000,
                client_bytes: 256 * 1024,
                total_bytes: usize::MAX,
            },
        );
        let (viewer, _) = hub.join("127.0.0.1:1".parse().unwrap(), "/".into(), Admission::Token);
        // One message larger than the bound still goes into an empty queue…
        hub.broadcast(text(300), None);
        assert_eq!(viewer.kick.reason(), None);
        // …but nothing more while it waits there.
        hub.broadcast(text(1), None);
        assert!(viewer.kick.reason().unwrap().contains("too slow"));
        assert_eq!(viewer.meter.client(), 300 * 1024);
    }

    #[test]
    fn when_all_queues_are_full_the_largest_are_closed_first() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(
            dir.path(),
            QueueLimits {
                messages: 1000,
                client_bytes: 1024 * 1024,
                total_bytes: 550 * 1024,
            },
        );
        let (a, b, c) = (agent(&hub, "a"), agent(&hub, "b"), agent(&hub, "c"));
        for (name, n) in [("a", 3), ("b", 2)] {
            for _ in 0..n {
                hub.direct(name, text(100)).unwrap();
            }
        }
        assert!([&a, &b, &c].iter().all(|m| m.kick.reason().is_none()));
        hub.direct("c", text(100)).unwrap();
        assert!(a.kick.reason().is_some(), "the largest queue is closed");
        assert_eq!((b.kick.reason(), c.kick.reason()), (None, None));
    }
}
