//! Workshop Bridge: one WebSocket hub between an AI agent's files and everyone watching it.
//!
//! The data path, module by module:
//! - the agent writes its state file → [`state`] parses it once per change → the hub's
//!   clients each get the newest version ([`connection`]'s writer);
//! - a visitor's message → [`connection`]'s reader → [`inbox`], durably, then relayed;
//! - the agent drops a file in the outbox → [`outbox`] → broadcast;
//! - other agents register and route messages through the [`hub`].
//!
//! [`Bridge::start`] runs all of it; the CLI, the menu-bar app and the tests use the same call.
//!
//! [`state`]: crate::state
//! [`connection`]: crate::connection
//! [`inbox`]: crate::inbox
//! [`outbox`]: crate::outbox
//! [`hub`]: crate::hub

mod accept;
mod assets;
mod auth;
pub mod config;
mod connection;
mod dedup;
mod durable;
mod error;
mod fswatch;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod hub;
mod inbox;
mod outbox;
pub mod pairing;
pub mod protocol;
mod safe_open;
mod server;
mod site;
mod state;
mod throttle;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::auth::Admission;
pub use crate::config::{Config, LogFormat, Overrides};
pub use crate::error::Error;
pub use crate::hub::ClientInfo;
pub use crate::server::{AgentStatus, ConnectionCounts, Status};
pub use crate::state::{StateHealth, state_to_json};

use crate::auth::Auth;
use crate::fswatch::{DirWatch, watch_dir};
use crate::hub::Hub;
use crate::inbox::Inbox;
use crate::server::AppState;
use crate::state::StateFile;

/// How long shutdown waits for clients to be told and the bridge's tasks to end.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// How long shutdown then waits for inbox writes still in progress: with the grace above,
/// shutdown stays within its two seconds even if a disk stops answering.
const FLUSH_GRACE: Duration = Duration::from_millis(300);

/// Starts bridges.
pub struct Bridge;

impl Bridge {
    /// Checks `config`, prepares the directories, reads the state file, binds the port and
    /// starts serving. Returns once the bridge accepts connections.
    pub async fn start(config: Config) -> Result<BridgeHandle, Error> {
        config.validate()?;
        if !config.no_auth && config.token.is_none() {
            return Err(Error::MissingToken);
        }
        raise_open_files_limit();

        let state_dir = parent_dir(&config.state_file);
        create_dir("state file", &state_dir)?;
        create_dir("inbox", &config.inbox_dir)?;
        create_dir("outbox", &config.outbox_dir)?;
        check_writable(&config.inbox_dir)?;

        // Watch before the first read: a change in between is then seen, not lost.
        let poll = config.poll_ms.map(Duration::from_millis);
        let state_name = config.state_file.file_name().map(ToOwned::to_owned);
        let state_watch = watch_dir(&state_dir, poll, move |path| {
            path.file_name() == state_name.as_deref()
        })?;
        let outbox_watch = watch_dir(&config.outbox_dir, poll, |_| true)?;
        let mut state = StateFile::new(config.state_file.clone(), config.max_state_bytes);
        state.reload().await;
        let inbox = Inbox::new(
            config.inbox_dir.clone(),
            config.max_inbox_files,
            config.max_remembered_id_bytes,
        );
        let hub = Hub::new(
            state.subscribe(),
            state.health(),
            inbox,
            hub::QueueLimits {
                messages: config.client_queue,
                client_bytes: config.max_client_queue_bytes,
                total_bytes: config.max_queued_bytes,
            },
        );

        let addr = SocketAddr::new(config.bind, config.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let connections = TaskTracker::new();
        tasks.spawn(state.run(Arc::clone(&state_watch.wake), shutdown.clone()));
        tasks.spawn(outbox::run(
            config.outbox_dir.clone(),
            hub.clone(),
            Arc::clone(&outbox_watch.wake),
            shutdown.clone(),
        ));

        let app = server::router(AppState {
            hub: hub.clone(),
            auth: Arc::new(Auth::new(&config)),
            slots: Arc::new(Semaphore::new(config.max_connections)),
            shutdown: shutdown.clone(),
            connections: connections.clone(),
            heartbeat: config.heartbeat(),
            max_frame_bytes: config.max_frame_bytes,
            max_messages_per_sec: config.max_messages_per_sec,
            max_text_chars: config.max_text_chars,
            max_id_bytes: config.max_id_bytes,
            max_json_depth: config.max_json_depth,
            assets: assets::Assets::new(config.workshop_dir.clone()),
        });
        tasks.spawn(accept::serve(
            listener,
            app,
            accept::AcceptLimits {
                per_address: config.max_connections_per_address,
                header_timeout: config.handshake_timeout(),
            },
            shutdown.clone(),
            tasks.clone(),
        ));

        if config.no_auth {
            tracing::warn!(
                "AUTHENTICATION IS OFF (--no-auth): anyone who can reach this port can read the state and write to the inbox"
            );
        }
        tracing::info!(
            state_file = %config.state_file.display(),
            inbox = %config.inbox_dir.display(),
            outbox = %config.outbox_dir.display(),
            "listening on ws://{local_addr}"
        );
        Ok(BridgeHandle {
            local_addr,
            hub,
            shutdown,
            tasks,
            connections,
            _watches: [state_watch, outbox_watch],
        })
    }
}

/// A running bridge. Dropping it without [`BridgeHandle::shutdown`] stops it abruptly.
///
/// `Send` and `Sync`: an app can keep it in shared state and read it from any thread.
pub struct BridgeHandle {
    local_addr: SocketAddr,
    hub: Hub,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    connections: TaskTracker,
    _watches: [DirWatch; 2],
}

impl BridgeHandle {
    /// The address the bridge listens on, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many clients are connected now.
    pub fn client_count(&self) -> usize {
        self.hub.client_count()
    }

    /// Every connected client.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.hub.clients()
    }

    /// The state file's health.
    pub fn state_health(&self) -> StateHealth {
        self.hub.state_health()
    }

    /// Everything `GET /api/gateway/status` reports.
    pub fn status(&self) -> Status {
        server::status_of(&self.hub)
    }

    /// Changes whenever a client connects, disconnects or registers: for live views.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.hub.subscribe_changes()
    }

    /// Closes every client connection (they reconnect), e.g. after the token changed.
    pub fn disconnect_all(&self) {
        self.hub
            .disconnect_all(protocol::close::GOING_AWAY, "bridge settings changed");
    }

    /// A token that is cancelled when the bridge begins shutting down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Tells every client the bridge is going away, closes their connections, finishes
    /// pending inbox writes and stops. Takes at most 1.8 seconds.
    pub async fn shutdown(self) {
        tracing::info!(clients = self.hub.client_count(), "shutting down");
        self.shutdown.cancel();
        self.connections.close();
        self.tasks.close();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            self.connections.wait().await;
            self.tasks.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some connections did not close in time");
        }
        // Bounded, and nothing promised is lost: a message is acknowledged only once its file
        // and directory are fsynced, so every acknowledged message is already on disk. What
        // is cut short here was never acknowledged, and its sender still holds it to send again.
        if tokio::time::timeout(FLUSH_GRACE, self.hub.inbox().flush())
            .await
            .is_err()
        {
            tracing::warn!("some inbox writes did not finish in time; none had been acknowledged");
        }
        tracing::info!("stopped");
    }
}

/// Compile-time proof of the promise above.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<BridgeHandle>();
};

fn parent_dir(path: &Path) -> std::path::PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => ".".into(),
    }
}

fn create_dir(what: &'static str, path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|source| Error::CreateDir {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Fails early, with a clear sentence, rather than on the first visitor's message.
fn check_writable(dir: &Path) -> Result<(), Error> {
    tempfile::Builder::new()
        .prefix(".write-check-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|source| Error::InboxNotWritable {
            path: dir.to_owned(),
            source,
        })
}

/// Each client is a socket; macOS gives apps 256 descriptors unless asked for more.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
}
