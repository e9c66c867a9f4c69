//! Bridges joined through NATS (`--cluster`): one origin, which has the agent's files, and
//! relays (`--relay`), which serve the origin's state and pass their visitors' messages to
//! the origin's inbox.
//!
//! The data path across nodes, module by module:
//! - the origin's state → [`state`] puts each snapshot once into a JetStream key-value
//!   bucket → every relay watches the key and serves it to its own clients;
//! - a visitor's message on a relay → [`inbox`] asks the origin (request-reply) → the origin
//!   checks it as if a client sent it, writes it durably, and only then answers;
//! - broadcasts, directed messages and who is registered where → [`presence`].
//!
//! The hub knows only [`Link`]: it hands it what must cross, and the link's tasks hand back
//! what came from the other nodes. Without `--cluster` there is no link, no connection and
//! no task.
//!
//! [`state`]: self::state
//! [`inbox`]: self::inbox
//! [`presence`]: self::presence

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::Error;
use crate::hub::Hub;
use crate::state::{Snapshot, SnapshotRx};

pub(crate) mod inbox;
pub(crate) mod presence;
pub(crate) mod state;

pub use presence::NodeStatus;

/// Subjects and the bucket every node of a cluster shares.
pub(crate) mod subject {
    /// Messages every client of every node gets.
    pub(crate) const BROADCAST: &str = "workshop.broadcast";
    /// Messages for one agent, wherever it is connected.
    pub(crate) const DIRECT: &str = "workshop.direct";
    /// Who registered or left as which agent, on which node.
    pub(crate) const PRESENCE: &str = "workshop.presence";
    /// A node that (re)joined asks the others to announce their agents.
    pub(crate) const HELLO: &str = "workshop.hello";
    /// Every node says it is alive, every second: one silent for long is gone.
    pub(crate) const ALIVE: &str = "workshop.alive";
    /// Visitor events for the origin's inbox (request-reply).
    pub(crate) const INBOX: &str = "workshop.inbox";
    /// Each node's status, for a cluster-wide view (request, many replies).
    pub(crate) const STATUS: &str = "workshop.status";
    /// The key-value bucket holding the last state.
    pub(crate) const STATE_BUCKET: &str = "workshop_state";
    /// The key of the state in it.
    pub(crate) const STATE_KEY: &str = "state";
}

/// Messages waiting to be published to the cluster; beyond this they are dropped (and
/// counted), as a client too slow to keep up would be.
const OUTGOING_QUEUE: usize = 4096;

/// How long a relay waits for the origin to write a visitor's message.
pub(crate) const INBOX_TIMEOUT: Duration = Duration::from_secs(5);

/// A bridge's link to the rest of its cluster. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Link {
    inner: Arc<Inner>,
}

struct Inner {
    /// This bridge's name in the cluster, new at every start.
    node: String,
    relay: bool,
    client: async_nats::Client,
    /// What the hub asked to cross, in order; published by one task.
    out: mpsc::Sender<Outgoing>,
    /// Agents registered on other nodes, and on which.
    remote_agents: Mutex<HashMap<String, String>>,
    /// Messages that did not fit in the outgoing queue.
    dropped: AtomicU64,
}

/// Something to publish.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// To every client of every other node.
    Broadcast(Utf8Bytes),
    /// To the agent `0`, connected to another node.
    Direct(String, Utf8Bytes),
    /// An agent registered here (`Some(role)`) or left (`None`).
    Presence(String, Option<String>),
}

impl Link {
    /// This bridge's name in the cluster.
    pub(crate) fn node(&self) -> &str {
        &self.inner.node
    }

    /// Whether this bridge is a relay (it has no files of its own).
    pub(crate) fn is_relay(&self) -> bool {
        self.inner.relay
    }

    /// Whether the link to NATS is up now.
    pub(crate) fn connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// Queues `out` for the other nodes. Never waits: when NATS cannot keep up, the
    /// message is dropped and counted.
    pub(crate) fn send(&self, out: Outgoing) {
        if self.inner.out.try_send(out).is_err() {
            let n = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "the cluster link cannot keep up; messages for other nodes were dropped"
                );
            }
        }
    }

    /// The node agent `agent` is registered on, if another node has it.
    pub(crate) fn remote_agent(&self, agent: &str) -> Option<String> {
        self.remote_agents().get(agent).cloned()
    }

    fn remote_agents(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.inner
            .remote_agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What `start` needs of the bridge.
pub(crate) struct Start<'a> {
    pub(crate) config: &'a Config,
    pub(crate) hub: Hub,
    /// The origin's snapshots, to publish.
    pub(crate) snapshots: SnapshotRx,
    /// Where a relay publishes what it receives, for its clients.
    pub(crate) publish: tokio::sync::watch::Sender<Option<Arc<Snapshot>>>,
    pub(crate) health: Arc<Mutex<crate::state::StateHealth>>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// Connects to the cluster and starts the link's tasks. Returns once the link is set up;
/// if no NATS server answers yet, the link keeps trying in the background (relays serve no
/// state, and answer messages with `inbox_unavailable`, until it does).
pub(crate) async fn start(start: Start<'_>) -> Result<Link, Error> {
    let Start {
        config,
        hub,
        snapshots,
        publish,
        health,
        shutdown,
        tasks,
    } = start;
    let servers = config.cluster.join(", ");
    let node = node_name()?;
    // Tells the tasks that hold subscriptions of their own (the state's watch) that the
    // link came back: what they missed is fetched again.
    let reconnected = Arc::new(Notify::new());
    let mut options = async_nats::ConnectOptions::new()
        .name(format!(
            "workshop-bridge {} {node}",
            if config.relay { "relay" } else { "origin" }
        ))
        // A node does not hear its own messages back: its clients already had them.
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(3))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(100 * 2u64.saturating_pow(attempts.min(5) as u32))
                .min(Duration::from_secs(2))
        })
        .event_callback({
            let reconnected = Arc::clone(&reconnected);
            move |event| {
                let reconnected = Arc::clone(&reconnected);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("cluster link up");
                            reconnected.notify_waiters();
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("cluster link down; retrying");
                        }
                        other => tracing::debug!(event = %other, "cluster link"),
                    }
                }
            }
        });
    if let Some(token) = &config.cluster_token {
        options = options.token(token.clone());
    }
    if let Some(path) = &config.cluster_creds {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|source| Error::ClusterCredentials {
                    path: path.clone(),
                    source,
                })?;
    }
    let client = options
        .connect(config.cluster.as_slice())
        .await
        .map_err(|e| Error::Cluster {
            servers: servers.clone(),
            message: e.to_string(),
        })?;
    let (out_tx, out_rx) = mpsc::channel(OUTGOING_QUEUE);
    let link = Link {
        inner: Arc::new(Inner {
            node,
            relay: config.relay,
            client,
            out: out_tx,
            remote_agents: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
        }),
    };
    let subscribed = |e: async_nats::SubscribeError| Error::Cluster {
        servers: servers.clone(),
        message: e.to_string(),
    };
    tasks.spawn(presence::publish(link.clone(), out_rx, shutdown.clone()));
    let crossing = presence::Limits {
        // A client's frame, or an outbox file (up to 4 MiB) broadcast from the origin.
        max_bytes: config.max_frame_bytes.max(4 * 1024 * 1024),
        max_depth: config.max_json_depth,
        max_id_bytes: config.max_id_bytes,
    };
    tasks.spawn(
        presence::run(
            link.clone(),
            hub.clone(),
            crossing,
            Arc::clone(&reconnected),
            shutdown.clone(),
        )
        .await
        .map_err(subscribed)?,
    );
    tasks.spawn(
        presence::status(link.clone(), hub.clone(), shutdown.clone())
            .await
            .map_err(subscribed)?,
    );
    if config.relay {
        tasks.spawn(state::follow(
            link.clone(),
            publish,
            health,
            Arc::clone(&reconnected),
            shutdown.clone(),
        ));
    } else {
        tasks.spawn(state::publish(
            link.clone(),
            snapshots,
            Arc::clone(&reconnected),
            shutdown.clone(),
        ));
        let limits = inbox::Limits {
            max_text_chars: config.max_text_chars,
            max_id_bytes: config.max_id_bytes,
            max_frame_bytes: config.max_frame_bytes,
        };
        tasks.spawn(
            inbox::serve(link.clone(), hub, limits, shutdown.clone(), tasks.clone())
                .await
                .map_err(subscribed)?,
        );
    }
    tracing::info!(
        node = link.node(),
        relay = config.relay,
        servers = %servers,
        "joining the cluster"
    );
    Ok(link)
}

/// A new random name for this run of the bridge.
fn node_name() -> Result<String, Error> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
