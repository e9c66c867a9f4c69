//! The durable inbox: one JSON file per visitor event, for the agent loop to read.
//!
//! File names sort by arrival and never collide (`20261123T101502.123Z-000042-message.json`);
//! nothing a visitor typed goes into a name. Each file is written with [`crate::durable`], so
//! the agent never reads half a file and an acknowledged message survives a power cut.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::auth::Admission;
use crate::dedup::RecentIds;
use crate::durable;
use crate::protocol::{ClientError, ErrorCode};

/// Writes visitor events into the inbox directory.
#[derive(Debug)]
pub(crate) struct Inbox {
    dir: PathBuf,
    /// Makes names unique within one millisecond, and orders them.
    counter: AtomicU64,
    max_files: usize,
    /// Files we believe are waiting; recounted from disk only when it reaches the limit,
    /// since the agent deletes files without telling us.
    waiting: AtomicUsize,
    /// When the folder was last recounted while full, and its modification time then. A
    /// deletion changes the folder's modification time, so while that stays the same the
    /// count is still right: a flood of refused messages costs one `stat` each, not a scan.
    last_recount: Mutex<Option<(Instant, Option<SystemTime>)>>,
    /// Writes run on the blocking pool; shutdown waits for them here.
    writes: TaskTracker,
    /// Messages already written, by client identity and message id.
    recent: RecentIds,
}

/// One event as the agent reads it.
#[derive(Debug, Serialize)]
pub(crate) struct Event<'a> {
    /// `message`, `enter` or `leave`.
    #[serde(rename = "type")]
    pub(crate) kind: &'a str,
    /// Who.
    pub(crate) visitor: &'a str,
    /// What they said (messages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<&'a str>,
    /// Why the bridge wrote a `leave` on the visitor's behalf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<&'a str>,
    /// The Matrix message type this came in as (`chat_message`, `visitor_message`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) via: Option<&'a str>,
    /// The client's own id for the message, if it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_id: Option<&'a RawValue>,
    /// Who sent it, as far as the bridge can tell.
    pub(crate) provenance: &'a Provenance,
}

/// Who sent an event, so the agent can weigh what it reads: every inbox file becomes part
/// of the agent's prompt, and visitor text is untrusted data.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Provenance {
    /// How the sender's connection was let in: `token`, `loopback`, `agent_token` or
    /// `no_auth`.
    pub(crate) admitted: Admission,
    /// The web page it came from (its `Origin`), if it was a browser.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) origin: Option<String>,
    /// Its network address.
    pub(crate) peer: SocketAddr,
    /// It came through a relay of the cluster, which vouches for the fields above.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) relayed: bool,
}

/// The file as written: the event plus what the bridge adds.
#[derive(Serialize)]
struct Record<'a> {
    id: &'a str,
    #[serde(flatten)]
    event: &'a Event<'a>,
    received_at: &'a str,
}

/// How long a message id is remembered: longer than any client keeps retrying.
pub(crate) const REMEMBER_IDS_FOR: Duration = Duration::from_secs(5 * 60);
/// A full inbox is recounted at least this often even if its folder looks unchanged (file
/// systems whose times are coarse).
const RECOUNT_ANYWAY: Duration = Duration::from_secs(2);

impl Inbox {
    /// Prepares the inbox at `dir`, which must exist, removing the temporary files a crash
    /// of an earlier run left behind (never acknowledged, so nothing is lost).
    pub(crate) fn new(dir: PathBuf, max_files: usize, max_remembered_id_bytes: usize) -> Self {
        remove_leftovers(&dir);
        let waiting = count_waiting(&dir).unwrap_or(0);
        Self::at(dir, waiting, max_files, max_remembered_id_bytes)
    }

    /// The inbox of a relay of a cluster, whose visitors' events the origin writes: nothing
    /// is ever written here, and no folder is looked at (a relay on the origin's machine
    /// must not touch the origin's inbox).
    pub(crate) fn elsewhere() -> Self {
        Self::at(PathBuf::new(), 0, 0, 0)
    }

    fn at(dir: PathBuf, waiting: usize, max_files: usize, max_remembered_id_bytes: usize) -> Self {
        Self {
            dir,
            counter: AtomicU64::new(0),
            max_files,
            waiting: AtomicUsize::new(waiting),
            last_recount: Mutex::new(None),
            writes: TaskTracker::new(),
            recent: RecentIds::new(REMEMBER_IDS_FOR, max_remembered_id_bytes),
        }
    }

    /// The write slot of message `id` from the client that keeps the identity `client`
    /// across reconnects.
    pub(crate) fn slot(&self, client: &str, id: &str) -> Arc<OnceCell<()>> {
        self.recent.slot(client, id)
    }

    /// Writes `event` once per write slot (see [`Inbox::slot`]): a repeat waits for the
    /// first write and returns `Ok(false)` without writing again. `Ok(true)` when this call
    /// wrote it.
    pub(crate) async fn write_once(
        &self,
        slot: Option<Arc<OnceCell<()>>>,
        event: &Event<'_>,
    ) -> Result<bool, ClientError> {
        let Some(slot) = slot else {
            self.write(event).await?;
            return Ok(true);
        };
        let mut wrote = false;
        slot.get_or_try_init(|| async {
            self.write(event).await?;
            wrote = true;
            Ok::<(), ClientError>(())
        })
        .await?;
        Ok(wrote)
    }

    /// Writes `event` durably and returns the file's id once it is on disk.
    pub(crate) async fn write(&self, event: &Event<'_>) -> Result<String, ClientError> {
        if self.waiting.load(Ordering::Relaxed) >= self.max_files && !self.recount_has_room() {
            return Err(ClientError::new(
                ErrorCode::InboxFull,
                "the agent has too many unread messages; try again later",
            ));
        }
        let received_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        // 2026-11-23T10:15:02.123Z -> 20261123T101502.123Z: sortable and safe in any file system.
        let stamp: String = received_at
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let dir = self.dir.clone();
        let mut attempts = 0;
        loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let id = format!("{stamp}-{n:06}-{}", event.kind);
            let record = Record {
                id: &id,
                event,
                received_at: &received_at,
            };
            let bytes = serde_json::to_vec_pretty(&record).map_err(|e| {
                ClientError::new(ErrorCode::InboxUnavailable, format!("cannot encode: {e}"))
            })?;
            let path = dir.join(format!("{id}.json"));
            let dir = dir.clone();
            let result = self
                .writes
                .spawn_blocking(move || write_recreating_dir(&dir, &path, &bytes))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
            match result {
                Ok(()) => {
                    self.waiting.fetch_add(1, Ordering::Relaxed);
                    return Ok(id);
                }
                // Another bridge writing the same inbox in the same millisecond: next number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                    attempts += 1;
                }
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot write to the inbox");
                    return Err(ClientError::new(
                        ErrorCode::InboxUnavailable,
                        format!("the message could not be saved: {}", plain_io_error(&e)),
                    ));
                }
            }
        }
    }

    /// Whether the full inbox has room again (the agent deletes files without telling us):
    /// recounted only when the folder changed, and said in the log once per recount.
    fn recount_has_room(&self) -> bool {
        let modified = std::fs::metadata(&self.dir).and_then(|m| m.modified()).ok();
        {
            let mut last = self
                .last_recount
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if let Some((at, seen)) = *last
                && seen == modified
                && modified.is_some()
                && now.duration_since(at) < RECOUNT_ANYWAY
            {
                return false;
            }
            *last = Some((now, modified));
        }
        let actual = count_waiting(&self.dir).unwrap_or(usize::MAX);
        self.waiting.store(actual, Ordering::Relaxed);
        if actual >= self.max_files {
            tracing::warn!(dir = %self.dir.display(), waiting = actual, "inbox full; refusing messages");
            return false;
        }
        true
    }

    /// Waits for writes in progress to reach the disk.
    pub(crate) async fn flush(&self) {
        self.writes.close();
        self.writes.wait().await;
    }

    /// How many writes have not reached the disk yet.
    pub(crate) fn writes_in_progress(&self) -> usize {
        self.writes.len()
    }
}

/// Writes the file; if the inbox directory was removed while the bridge runs (someone
/// "emptying" it), makes it again, as at start, and retries once. Only the directory
/// itself: if its parent is gone too (an unmounted volume), the message is refused rather
/// than saved where the agent may never look.
fn write_recreating_dir(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    match durable::write_new(dir, path, bytes) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            durable::create_dir(dir)?;
            tracing::warn!(dir = %dir.display(), "the inbox directory was missing; made it again");
            durable::write_new(dir, path, bytes)
        }
        other => other,
    }
}

/// Deletes our own half-written temporary files (`.tmp-*.partial`).
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if durable::is_temp_name(&name) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %name, "removed a partial file left by a crash"),
                Err(e) => tracing::warn!(file = %name, error = %e, "cannot remove a partial file"),
            }
        }
    }
}

/// Counts the event files waiting for the agent (dot-files are ours, in progress).
fn count_waiting(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') && name.ends_with(".json") {
            n += 1;
        }
    }
    Ok(n)
}

/// The operating system's error in words a visitor's screen can show.
fn plain_io_error(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => "the inbox directory is missing",
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            "the inbox directory is not writable"
        }
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => "the disk is full",
        _ => "the inbox could not be written",
    }
}
