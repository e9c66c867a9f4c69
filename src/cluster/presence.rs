//! Everything else that crosses nodes: broadcasts, directed messages, and who is registered
//! as which agent on which node.
//!
//! A message crosses once: the node its sender is on delivers it to its own clients and
//! publishes it once; every other node delivers it to its clients. NATS does not echo a
//! node's messages back to it (`no_echo`), so nothing arrives twice.
//!
//! A registration is announced on `workshop.presence`; a node that holds the same agent id
//! closes its holder (a takeover across nodes), and every node remembers where the agent is
//! so a directed message finds it. A node that (re)joins says hello, and the others announce
//! their agents again. Every node says it is alive every second; one not heard from for
//! [`GONE_AFTER`] while this node's own link was up is gone (killed, or cut off), and its
//! agents with it: this node's clients hear `agent_left` for each.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Link, Outgoing, subject};
use crate::hub::Hub;
use crate::protocol::{self, Head, nested_deeper_than};

/// What a message from another node is held to before this node's clients get it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest message, in bytes (a client's frame limit).
    pub(crate) max_bytes: usize,
    /// Deepest nesting.
    pub(crate) max_depth: usize,
    /// Longest `id`.
    pub(crate) max_id_bytes: usize,
}

/// Whether another node may pass on a message of this type: anything a client may send or a
/// bridge broadcasts, but never what only a bridge says to its own clients (the state, acks,
/// errors). Presence is the one reserved kind that crosses nodes: each node announces its own
/// agents' arrivals and departures to every client.
fn may_come_from_another_node(kind: &str) -> bool {
    !protocol::RESERVED_TYPES.contains(&kind) || matches!(kind, "agent_joined" | "agent_left")
}

/// How often a node says it is alive.
const ALIVE_EVERY: Duration = Duration::from_secs(1);

/// How long a node may be silent, while this one is linked, before it counts as gone.
pub(crate) const GONE_AFTER: Duration = Duration::from_secs(5);

/// How long a cluster-wide status waits for the other nodes' answers.
const STATUS_WAIT: Duration = Duration::from_millis(300);

#[derive(Debug, Serialize, Deserialize)]
struct Presence {
    node: String,
    agent: String,
    /// Absent when the agent left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// Publishes, in order, what the hub asked to cross.
pub(crate) async fn publish(
    link: Link,
    mut out: mpsc::Receiver<Outgoing>,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = out.recv() => next,
        };
        let Some(next) = next else { return };
        let sent = match next {
            Outgoing::Broadcast(text) => {
                link.client()
                    .publish(subject::BROADCAST, text.as_bytes().to_vec().into())
                    .await
            }
            Outgoing::Direct(target, text) => {
                let mut payload = Vec::with_capacity(target.len() + 1 + text.len());
                payload.extend_from_slice(target.as_bytes());
                payload.push(b'\n');
                payload.extend_from_slice(text.as_bytes());
                link.client().publish(subject::DIRECT, payload.into()).await
            }
            Outgoing::Presence(agent, role) => {
                let presence = Presence {
                    node: link.node().to_owned(),
                    agent,
                    role,
                };
                match serde_json::to_vec(&presence) {
                    Ok(json) => link.client().publish(subject::PRESENCE, json.into()).await,
                    Err(_) => Ok(()),
                }
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot publish to the cluster");
        }
    }
}

/// Subscribes to what other nodes send, then returns the task that delivers it. Says hello
/// now and whenever the link comes back, so the others announce their agents.
pub(crate) async fn run(
    link: Link,
    hub: Hub,
    limits: Limits,
    reconnected: Arc<Notify>,
    shutdown: CancellationToken,
) -> Result<impl Future<Output = ()>, async_nats::SubscribeError> {
    let client = link.client().clone();
    let mut broadcasts = client.subscribe(subject::BROADCAST).await?;
    let mut directs = client.subscribe(subject::DIRECT).await?;
    let mut presences = client.subscribe(subject::PRESENCE).await?;
    let mut hellos = client.subscribe(subject::HELLO).await?;
    let mut alives = client.subscribe(subject::ALIVE).await?;
    // Ask the others who is where; they answer on the presence subject.
    link.client()
        .publish(subject::HELLO, link.node().to_owned().into())
        .await
        .ok();
    Ok(async move {
        let mut nodes = Liveness::default();
        let mut alive = tokio::time::interval(ALIVE_EVERY);
        alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A node's registration is announced before its `agent_joined` is broadcast, and
            // is read first here: whoever hears the one can reach the agent.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = reconnected.notified() => {
                    // Others may have counted this node gone meanwhile: it announces its
                    // agents, and asks for theirs.
                    for (agent, role) in hub.local_agents() {
                        link.send(Outgoing::Presence(agent, Some(role)));
                    }
                    link.client()
                        .publish(subject::HELLO, link.node().to_owned().into())
                        .await
                        .ok();
                }
                _ = alive.tick() => {
                    link.client()
                        .publish(subject::ALIVE, link.node().to_owned().into())
                        .await
                        .ok();
                    for agent in nodes.expire(&link, Instant::now()) {
                        tracing::info!(agent = %agent, "agent gone with its bridge");
                        hub.left_elsewhere(&agent, "its bridge left the cluster");
                    }
                }
                Some(m) = alives.next() => {
                    if let Ok(node) = std::str::from_utf8(&m.payload)
                        && nodes.heard(node, Instant::now())
                    {
                        // Counted gone, and alive after all (it was stopped, or cut off
                        // without noticing): everyone, it too, announces their agents.
                        tracing::info!(node = %node, "a bridge counted gone is back");
                        link.client()
                            .publish(subject::HELLO, link.node().to_owned().into())
                            .await
                            .ok();
                    }
                }
                Some(m) = presences.next() => {
                    let Ok(p) = serde_json::from_slice::<Presence>(&m.payload) else { continue };
                    if p.node == link.node() || !crate::protocol::valid_name(&p.agent, 128) {
                        continue;
                    }
                    nodes.heard(&p.node, Instant::now());
                    let mut agents = link.remote_agents();
                    if let Some(role) = &p.role {
                        agents.insert(p.agent.clone(), p.node.clone());
                        drop(agents);
                        hub.taken_over_elsewhere(&p.agent);
                        // Counted gone with its node, and back: this node's clients heard it
                        // leave, so they hear it join again.
                        if nodes.back(&p.agent) {
                            hub.joined_elsewhere(&p.agent, role);
                        }
                    } else if agents.get(&p.agent) == Some(&p.node) {
                        agents.remove(&p.agent);
                    }
                }
                Some(_) = hellos.next() => {
                    for (agent, role) in hub.local_agents() {
                        link.send(Outgoing::Presence(agent, Some(role)));
                    }
                }
                Some(m) = directs.next() => {
                    let Ok(text) = std::str::from_utf8(&m.payload) else { continue };
                    if let Some((target, message)) = text.split_once('\n')
                        && acceptable(message, limits)
                    {
                        hub.direct_local(target, Utf8Bytes::from(message.to_owned()));
                    }
                }
                Some(m) = broadcasts.next() => {
                    if let Ok(text) = std::str::from_utf8(&m.payload)
                        && acceptable(text, limits)
                    {
                        hub.broadcast_local(text);
                    }
                }
                else => return,
            }
        }
    })
}

/// When each other node was last heard from, and since when this node's link is up.
#[derive(Default)]
struct Liveness {
    heard: HashMap<String, Instant>,
    up_since: Option<Instant>,
    /// Agents counted gone with their node, until they are announced again.
    gone_agents: std::collections::HashSet<String>,
    /// Nodes counted gone, until they are heard again.
    gone_nodes: std::collections::HashSet<String>,
    /// When this node last judged: a long gap means it was the one stalled (stopped, or
    /// its runtime starved), and its own silence is not the others'.
    last_judged: Option<Instant>,
}

impl Liveness {
    /// Whether `agent` was counted gone with its node (and is no longer).
    fn back(&mut self, agent: &str) -> bool {
        self.gone_agents.remove(agent)
    }

    /// Notes that `node` was heard from; true if it had been counted gone.
    fn heard(&mut self, node: &str, now: Instant) -> bool {
        if node.len() > 64 {
            return false;
        }
        self.heard.insert(node.to_owned(), now);
        self.gone_nodes.remove(node)
    }

    /// Forgets the nodes silent for [`GONE_AFTER`] while this node was linked all along,
    /// and returns the agents that were on them. While the link is down, nobody is
    /// judged: the silence is this node's own.
    fn expire(&mut self, link: &Link, now: Instant) -> Vec<String> {
        if !link.connected() {
            self.up_since = None;
            return Vec::new();
        }
        let stalled = self
            .last_judged
            .replace(now)
            .is_some_and(|last| now.duration_since(last) > 2 * ALIVE_EVERY);
        if stalled {
            self.up_since = Some(now);
        }
        let up_since = *self.up_since.get_or_insert(now);
        let gone: Vec<String> = self
            .heard
            .iter()
            .filter(|(_, at)| now.duration_since((**at).max(up_since)) > GONE_AFTER)
            .map(|(node, _)| node.clone())
            .collect();
        let mut agents = Vec::new();
        if gone.is_empty() {
            return agents;
        }
        let mut remote = link.remote_agents();
        remote.retain(|agent, node| {
            let stays = !gone.contains(node);
            if !stays {
                agents.push(agent.clone());
            }
            stays
        });
        for node in gone {
            tracing::warn!(node = %node, "a bridge of the cluster went silent; counting it gone");
            self.heard.remove(&node);
            if self.gone_nodes.len() < 10_000 {
                self.gone_nodes.insert(node);
            }
        }
        // Bounded by the agent ids the cluster's nodes ever announced.
        if self.gone_agents.len() < 10_000 {
            self.gone_agents.extend(agents.iter().cloned());
        }
        agents
    }
}

/// Whether a message from another node may go to this node's clients: checked as a client's
/// message is (size, depth, shape), and never one of the types only this node sends.
fn acceptable(text: &str, limits: Limits) -> bool {
    let ok = text.len() <= limits.max_bytes
        && !nested_deeper_than(text, limits.max_depth)
        && Head::parse(text, limits.max_id_bytes)
            .is_ok_and(|head| may_come_from_another_node(&head.kind));
    if !ok {
        tracing::warn!(
            bytes = text.len(),
            "dropped a message from another node that no client could have sent"
        );
    }
    ok
}

/// Answers other nodes' status requests with this node's status.
pub(crate) async fn status(
    link: Link,
    hub: Hub,
    shutdown: CancellationToken,
) -> Result<impl Future<Output = ()>, async_nats::SubscribeError> {
    let mut requests = link.client().subscribe(subject::STATUS).await?;
    Ok(async move {
        loop {
            let request = tokio::select! {
                () = shutdown.cancelled() => return,
                request = requests.next() => request,
            };
            let Some(request) = request else { return };
            let Some(reply) = request.reply else { continue };
            let status = node_status(&link, &hub);
            if let Ok(json) = serde_json::to_vec(&status) {
                link.client().publish(reply, json.into()).await.ok();
            }
        }
    })
}

/// One node's part of the cluster-wide status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name in the cluster (new at every start).
    pub node: String,
    /// `origin` or `relay`.
    pub role: String,
    /// Connected clients.
    pub clients: usize,
    /// Agents registered on the node.
    pub agents: Vec<String>,
    /// The `seq` of the state its clients have.
    pub seq: u64,
}

pub(crate) fn node_status(link: &Link, hub: &Hub) -> NodeStatus {
    NodeStatus {
        node: link.node().to_owned(),
        role: if link.is_relay() { "relay" } else { "origin" }.to_owned(),
        clients: hub.client_count(),
        agents: hub.local_agents().into_iter().map(|(a, _)| a).collect(),
        seq: hub.state_health().seq,
    }
}

/// Every node's status: this one's, and those the others answer within a moment.
pub(crate) async fn cluster_status(link: &Link, hub: &Hub) -> Vec<NodeStatus> {
    let mut nodes = vec![node_status(link, hub)];
    let client = link.client();
    let inbox = client.new_inbox();
    let Ok(mut replies) = client.subscribe(inbox.clone()).await else {
        return nodes;
    };
    if client
        .publish_with_reply(subject::STATUS, inbox, Vec::new().into())
        .await
        .is_err()
    {
        return nodes;
    }
    let deadline = tokio::time::Instant::now() + STATUS_WAIT;
    while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await {
        if let Ok(status) = serde_json::from_slice::<NodeStatus>(&reply.payload) {
            nodes.push(status);
        }
    }
    nodes.sort_by(|a, b| (a.role.as_str(), &a.node).cmp(&(b.role.as_str(), &b.node)));
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_other_nodes_are_held_to_a_clients_rules() {
        let limits = Limits {
            max_bytes: 64,
            max_depth: 3,
            max_id_bytes: 8,
        };
        assert!(acceptable(r#"{"type":"bark","text":"hi"}"#, limits));
        assert!(acceptable(
            r#"{"type":"agent_joined","agent_id":"pip"}"#,
            limits
        ));
        for bad in [
            r#"{"type":"state","seq":9,"data":{}}"#,
            r#"{"type":"ack","id":"m1"}"#,
            r#"{"type":"error","code":"replaced"}"#,
            r#"{"type":"bark","a":[[[[1]]]]}"#,
            r#"{"type":"bark","id":"123456789"}"#,
            r#"["bark"]"#,
            "not json",
        ] {
            assert!(!acceptable(bad, limits), "{bad}");
        }
        assert!(!acceptable(
            &format!(r#"{{"type":"bark","text":"{}"}}"#, "x".repeat(64)),
            limits
        ));
    }
}
