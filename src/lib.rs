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
mod cluster;
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
pub mod localname;
pub mod mcp;
pub mod netwatch;
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
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

pub use crate::auth::Admission;
pub use crate::cluster::NodeStatus;
pub use crate::config::{Config, LogFormat, Overrides};
pub use crate::error::Error;
pub use crate::hub::ClientInfo;
pub use crate::server::{AgentStatus, ConnectionCounts, Status};
pub use crate::state::{StateHealth, StateReader, state_to_json};

use crate::auth::Auth;
use crate::fswatch::{DirWatch, watch_dir};
use crate::hub::Hub;
use crate::inbox::Inbox;
use crate::server::AppState;
use crate::state::StateFile;

/// The longest [`BridgeHandle::shutdown`] takes, whatever the clients and the disk do. With
/// the CLI's last wait for blocking work (150 ms), a signal ends the process within two
/// seconds.
const SHUTDOWN_BOUND: Duration = Duration::from_millis(1800);

/// Of that bound, the part kept for inbox writes still in progress once the connections
/// have had theirs: a disk that stops answering costs shutdown this much, no more.
const FLUSH_GRACE: Duration = Duration::from_millis(300);

/// Starts bridges.
pub struct Bridge;

impl Bridge {
    /// Checks `config`, prepares the directories, reads the state file, binds the port and
    /// starts serving. Returns once the bridge accepts connections.
    pub async fn start(config: Config) -> Result<BridgeHandle, Error> {
        Self::prepare(config).await?.start().await
    }

    /// Everything that can stop the bridge from starting, done before it serves: checks
    /// `config`, binds the port and makes the missing folders. Each check comes before
    /// anything is made, so a bridge that cannot start leaves nothing behind.
    pub async fn prepare(config: Config) -> Result<PreparedBridge, Error> {
        config.validate()?;
        if !config.no_auth && config.token.is_none() {
            return Err(Error::MissingToken);
        }
        let state_dir = parent_dir(&config.state_file);
        // A relay has no files of its own: the cluster's origin has them.
        let folders: &[(&'static str, &Path)] = if config.relay {
            &[]
        } else {
            &[
                ("state file", &state_dir),
                ("inbox", &config.inbox_dir),
                ("outbox", &config.outbox_dir),
            ]
        };
        let missing = missing_folders(folders)?;
        let inbox_missing = missing.iter().any(|(_, p)| *p == config.inbox_dir);
        if !inbox_missing && !config.relay {
            check_writable(&config.inbox_dir)?;
        }
        raise_open_files_limit();
        let addr = SocketAddr::new(config.bind, config.port);
        let listener = bind(addr)?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        for (what, path) in &missing {
            std::fs::create_dir(path).map_err(|source| Error::CreateDir {
                what,
                path: path.clone(),
                source,
            })?;
        }
        if inbox_missing {
            check_writable(&config.inbox_dir)?;
        }
        Ok(PreparedBridge {
            config,
            listener,
            local_addr,
        })
    }
}

/// A bridge that has bound its port and has its folders, but does not serve yet.
#[derive(Debug)]
pub struct PreparedBridge {
    config: Config,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
}

impl PreparedBridge {
    /// The address the bridge will listen on, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Watches the files, reads the state and starts serving. Returns once the bridge
    /// accepts connections.
    pub async fn start(self) -> Result<BridgeHandle, Error> {
        let Self {
            config,
            listener,
            local_addr,
        } = self;
        let state_dir = parent_dir(&config.state_file);

        // Watch before the first read: a change in between is then seen, not lost.
        let poll = config.poll_ms.map(Duration::from_millis);
        let state_name = config.state_file.file_name().map(ToOwned::to_owned);
        let watches = if config.relay {
            None
        } else {
            let state_watch = watch_dir(&state_dir, poll, move |path| {
                path.file_name() == state_name.as_deref()
            })?;
            let outbox_watch = watch_dir(&config.outbox_dir, poll, |_| true)?;
            Some([state_watch, outbox_watch])
        };
        let state_path = if config.relay {
            "(the cluster's origin)".into()
        } else {
            config.state_file.clone()
        };
        let mut state = StateFile::new(state_path, config.max_state_bytes);
        if !config.relay {
            match first_look(&config.state_file) {
                None => state.reload().await,
                Some(absent) => {
                    if let Ok(mut health) = state.health().lock() {
                        health.last_error = Some(absent.to_owned());
                    }
                }
            }
        }
        let inbox = if config.relay {
            Inbox::elsewhere()
        } else {
            Inbox::new(
                config.inbox_dir.clone(),
                config.max_inbox_files,
                config.max_remembered_id_bytes,
            )
        };
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

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let connections = TaskTracker::new();
        if !config.cluster.is_empty() {
            let link = cluster::start(cluster::Start {
                config: &config,
                hub: hub.clone(),
                snapshots: state.subscribe(),
                publish: state.publisher(),
                health: state.health(),
                shutdown: shutdown.clone(),
                tasks: tasks.clone(),
            })
            .await?;
            hub.set_cluster(link);
        }
        if let Some([state_watch, outbox_watch]) = &watches {
            tasks.spawn(state.run(Arc::clone(&state_watch.wake), shutdown.clone()));
            tasks.spawn(outbox::run(
                config.outbox_dir.clone(),
                hub.clone(),
                Arc::clone(&outbox_watch.wake),
                shutdown.clone(),
            ));
        }
        // Connections hear of the shutdown from the hub: each writer then waits on a flag of
        // its own rather than on the token every connection shares (see `hub::Kick`).
        tasks.spawn({
            let (hub, shutdown) = (hub.clone(), shutdown.clone());
            async move {
                shutdown.cancelled().await;
                hub.end_all();
            }
        });

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
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            tasks,
            connections,
            _watches: watches,
        })
    }
}

/// A running bridge, for as long as it is held.
///
/// [`BridgeHandle::shutdown`] stops it gracefully and returns once it has stopped. Dropping
/// the handle stops it too, without waiting: every task is told to end at once, clients are
/// told the bridge is going away and closed, and the port is released as soon as the accept
/// loop sees it. Inbox writes in progress go on to their end in the background; as ever, a
/// message is acknowledged only once it is written.
///
/// `Send` and `Sync`: an app can keep it in shared state and read it from any thread.
pub struct BridgeHandle {
    local_addr: SocketAddr,
    hub: Hub,
    shutdown: CancellationToken,
    /// Cancels `shutdown` when the handle goes, however it goes: a bridge nobody holds does
    /// not keep running (mini-redis's `DbDropGuard` does the same for its database).
    _stop_on_drop: DropGuard,
    tasks: TaskTracker,
    connections: TaskTracker,
    _watches: Option<[DirWatch; 2]>,
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
    /// pending inbox writes and stops. Returns within 1.8 seconds even if the inbox's disk
    /// stops answering: the writes that did not finish by then are counted in the log.
    pub async fn shutdown(self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_BOUND;
        tracing::info!(clients = self.hub.client_count(), "shutting down");
        self.shutdown.cancel();
        self.connections.close();
        self.tasks.close();
        let drained = tokio::time::timeout_at(deadline - FLUSH_GRACE, async {
            self.connections.wait().await;
            self.tasks.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = self.connections.len(),
                "some connections did not close in time"
            );
        }
        // Bounded, and nothing promised is lost: a message is acknowledged only once its file
        // and directory are fsynced, so every acknowledged message is already on disk. A
        // write cut short here was never acknowledged, nor can it be later: each connection's
        // writer stopped taking replies when the shutdown began, to say its goodbye. Its
        // sender still holds the message to send again.
        let inbox = self.hub.inbox();
        if tokio::time::timeout_at(deadline, inbox.flush())
            .await
            .is_err()
        {
            let unconfirmed = inbox.writes_in_progress();
            tracing::warn!(
                unconfirmed,
                "{unconfirmed} of the inbox's writes did not finish in time: their messages are not confirmed written and were not acknowledged"
            );
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

/// The folders of `folders` that do not exist yet, in order, once each is known to be one
/// the bridge may make: only the folder itself is made, in a folder that exists (or is made
/// before it), so a mistyped path or an unmounted disk is refused rather than papered over
/// with new folders.
fn missing_folders(
    folders: &[(&'static str, &Path)],
) -> Result<Vec<(&'static str, std::path::PathBuf)>, Error> {
    let mut missing: Vec<(&'static str, std::path::PathBuf)> = Vec::new();
    for &(what, path) in folders {
        let refuse = |source| Error::CreateDir {
            what,
            path: path.to_owned(),
            source,
        };
        let in_the_way =
            |kind, at: std::path::PathBuf| refuse(std::io::Error::new(kind, error::InTheWay(at)));
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => return Err(refuse(std::io::ErrorKind::AlreadyExists.into())),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => return Err(refuse(e)),
        }
        if missing.iter().any(|(_, p)| p == path) {
            continue;
        }
        let parent = parent_dir(path);
        if !missing.iter().any(|(_, p)| *p == parent) {
            match std::fs::metadata(&parent) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(in_the_way(std::io::ErrorKind::NotADirectory, parent)),
                Err(_) => {
                    // A file further up is what is wrong, if there is one; else the folder
                    // the path goes in is missing.
                    let file = parent
                        .ancestors()
                        .find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()));
                    return Err(match file {
                        Some(file) => {
                            in_the_way(std::io::ErrorKind::NotADirectory, file.to_owned())
                        }
                        None => in_the_way(std::io::ErrorKind::NotFound, parent),
                    });
                }
            }
        }
        missing.push((what, path.to_owned()));
    }
    Ok(missing)
}

/// Checks that the folder `path` exists, or that the bridge may make it: only the folder
/// itself is ever made, in a folder that exists. Returns whether it has to be made. `what`
/// names it in the error: "inbox", "outbox", "state file" (its folder) or "config file".
pub fn check_folder(what: &'static str, path: &Path) -> Result<bool, Error> {
    Ok(!missing_folders(&[(what, path)])?.is_empty())
}

/// The example state file (schema v1) that `workshop-bridge init` writes: what the
/// Workshop scene knows how to show.
pub const EXAMPLE_STATE: &str = include_str!("../examples/workshop-state.yaml");

/// Binds the listening socket as `tokio::net::TcpListener::bind` does (the address may be
/// reused at once after a restart), in the runtime.
fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    let err = |source| Error::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    #[cfg(unix)]
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

/// What to say, once at start, when there is no state to read yet: `None` when there is a
/// file (or anything else) to read at the state path.
fn first_look(state_file: &Path) -> Option<&'static str> {
    match std::fs::symlink_metadata(state_file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(
                path = %state_file.display(),
                "there is no state file yet: clients get the state as soon as the agent writes it (`workshop-bridge init` writes an example there to start from)"
            );
            Some("there is no state file yet; clients get the state as soon as the agent writes it")
        }
        Ok(meta) if meta.is_dir() => {
            tracing::warn!(
                path = %state_file.display(),
                "the state file is a folder, not a file: clients get no state until a file replaces it"
            );
            Some(
                "the state file is a folder, not a file; clients get no state until a file replaces it",
            )
        }
        _ => None,
    }
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
