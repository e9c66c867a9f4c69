//! The outbox: how the agent barks without speaking WebSocket.
//!
//! Any `*.json` (one message object or an array of them) or `*.yaml`/`*.yml` file that
//! appears in the outbox directory is broadcast to every client and then removed. A file
//! that does not parse is moved to `rejected/` with a log line saying why, so the agent's
//! author can see what went wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::fswatch::Wake;
use crate::hub::Hub;
use crate::protocol::RESERVED_TYPES;
use crate::safe_open::{self, Links, Refusal};
use crate::state::value::StateValue;

/// Name of the directory, inside the outbox, that unreadable files are moved to.
const REJECTED_DIR: &str = "rejected";

/// Files larger than this are not messages; they are rejected unread.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Delivers outbox files until `cancel`.
pub(crate) async fn run(dir: PathBuf, hub: Hub, wake: Arc<Wake>, cancel: CancellationToken) {
    loop {
        let d = dir.clone();
        let files = tokio::task::spawn_blocking(move || process_dir(&d))
            .await
            .unwrap_or_default();
        for messages in files {
            for text in messages {
                hub.broadcast_from_bridge(text.into());
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = wake.changed() => wake.settled().await,
        }
    }
}

/// Reads, removes or rejects every waiting file, oldest name first; returns the messages of
/// each accepted file, serialized.
fn process_dir(dir: &Path) -> Vec<Vec<String>> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            // Not only regular files: a symlink, pipe or socket with a message's name is
            // rejected below like a file that does not parse, not left to linger.
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
            .map(|e| e.path())
            .filter(|p| is_message_file(p))
            .collect(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the outbox");
            return Vec::new();
        }
    };
    names.sort();
    let mut accepted = Vec::new();
    for path in names {
        match read_messages(&path) {
            Ok(messages) => {
                if let Err(e) = std::fs::remove_file(&path) {
                    // Not removed means it would be sent again on the next scan: skip it now.
                    tracing::error!(file = %path.display(), error = %e, "cannot remove outbox file; not sending it");
                    continue;
                }
                tracing::debug!(file = %path.display(), messages = messages.len(), "outbox file sent");
                accepted.push(messages);
            }
            Err(Unsent::Gone) => {
                tracing::debug!(file = %path.display(), "outbox file gone before it was read");
            }
            Err(Unsent::Rejected(reason)) => reject(dir, &path, &reason),
        }
    }
    accepted
}

fn is_message_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str());
    !hidden && matches!(ext, Some("json" | "yaml" | "yml"))
}

/// Why a file was not sent.
enum Unsent {
    /// Removed between the listing and the read: nothing to do.
    Gone,
    /// Moved to `rejected/`, for this reason.
    Rejected(String),
}

impl From<String> for Unsent {
    fn from(reason: String) -> Self {
        Self::Rejected(reason)
    }
}

impl From<&str> for Unsent {
    fn from(reason: &str) -> Self {
        Self::Rejected(reason.to_owned())
    }
}

/// Parses one file into serialized messages, or says why it cannot be sent.
///
/// Opened once, refusing a symlink, and checked on the open handle: whatever is renamed over
/// the file after the listing, only a regular file in the outbox itself is ever read, and a
/// named pipe cannot stall the outbox.
fn read_messages(path: &Path) -> Result<Vec<String>, Unsent> {
    let text =
        safe_open::read_to_string(path, Links::Refuse, MAX_FILE_BYTES).map_err(|refusal| {
            match refusal {
                Refusal::NotFound => Unsent::Gone,
                Refusal::Symlink => "a symbolic link, not a file of its own".into(),
                Refusal::NotRegular => "not a regular file".into(),
                Refusal::TooLarge(len) => {
                    format!("{len} bytes is over the {MAX_FILE_BYTES}-byte limit").into()
                }
                Refusal::Grew => {
                    format!("it grew over the {MAX_FILE_BYTES}-byte limit while being read").into()
                }
                Refusal::Open(e) | Refusal::Read(e) => e.to_string().into(),
            }
        })?;
    // Read as the state file is, so a bark says what the agent's writer meant.
    let value = if path.extension().is_some_and(|e| e == "json") {
        crate::state::read_json(&text)?
    } else {
        crate::state::read_document(&text)?.ok_or("the file is empty")?
    };
    let messages = match value {
        StateValue::List(items) => items,
        single @ StateValue::Map(_) => vec![single],
        _ => return Err("expected a message object or an array of them".into()),
    };
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let kind = m.get("type").and_then(StateValue::as_str);
            match kind {
                None => Err(format!("message {i} has no string `type`")),
                Some(k) if RESERVED_TYPES.contains(&k) => {
                    Err(format!("message {i}: `{k}` is sent by the bridge only"))
                }
                Some(_) => Ok(m.to_json()),
            }
        })
        .collect::<Result<_, String>>()
        .map_err(Unsent::from)
}

fn reject(dir: &Path, path: &Path, reason: &str) {
    let rejected = dir.join(REJECTED_DIR);
    let Some(name) = path.file_name() else { return };
    let mut target = rejected.join(name);
    let mut n = 1;
    // Not `exists()`: it follows links, and a dangling link already rejected is there too.
    while target.symlink_metadata().is_ok() {
        target = rejected.join(format!("{}.{n}", name.to_string_lossy()));
        n += 1;
    }
    let moved = std::fs::create_dir_all(&rejected).and_then(|()| std::fs::rename(path, &target));
    match moved {
        Ok(()) => {
            tracing::warn!(file = %path.display(), moved_to = %target.display(), %reason, "outbox file rejected")
        }
        Err(e) => {
            tracing::error!(file = %path.display(), %reason, error = %e, "outbox file rejected but cannot be moved")
        }
    }
}
