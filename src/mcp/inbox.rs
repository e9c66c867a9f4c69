//! Reading the inbox for the agent, and removing what it has confirmed.
//!
//! A message stays in the inbox (its file untouched) until the agent names its id in
//! `done`: an agent that crashes mid-turn reads it again; a confirmed one is removed
//! durably and never returned again.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::durable;
use crate::fswatch::watch_dir;
use crate::safe_open::{self, Links};

/// The most messages one read returns.
pub(crate) const MAX_LIMIT: usize = 50;
/// Messages returned when the agent does not say.
pub(crate) const DEFAULT_LIMIT: usize = 20;
/// Longest text returned, in characters; longer ones are cut and say so.
const MAX_TEXT_CHARS: usize = 4000;
/// Longest visitor name, origin or other field returned, in characters.
const MAX_FIELD_CHARS: usize = 200;
/// A file larger than this is not a visitor event.
const MAX_FILE_BYTES: u64 = 256 * 1024;
/// Roughly the most bytes of messages one result holds.
const MAX_RESULT_BYTES: usize = 64 * 1024;
/// Ids one `done` may name.
pub(crate) const MAX_DONE: usize = 200;

/// One visitor event, as a model reads it.
#[derive(Debug, Serialize)]
pub(crate) struct Message {
    /// Pass it in `done` once handled.
    pub(crate) id: String,
    /// `message`, `enter` or `leave`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The name the visitor gave (untrusted).
    pub(crate) visitor: String,
    /// What they said (untrusted), messages only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// The text was longer and was cut here.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) text_truncated: bool,
    /// Why the bridge wrote a `leave` for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// How the sender's connection was admitted: `token`, `loopback`, `agent_token`,
    /// `no_auth`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) admitted: Option<String>,
    /// The web page it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) origin: Option<String>,
    /// The sender's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) peer: Option<String>,
    /// When the bridge wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) received_at: Option<String>,
}

/// What a look at the inbox found.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Found {
    /// Oldest first.
    pub(crate) messages: Vec<Message>,
    /// Waiting in all, those returned included.
    pub(crate) waiting: usize,
    /// Files that are not visitor events (not JSON, too large): named, left in place.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) unreadable: Vec<String>,
}

/// The inbox folder, as the agent's side sees it.
#[derive(Debug, Clone)]
pub(crate) struct InboxReader {
    dir: PathBuf,
    poll: Option<Duration>,
}

impl InboxReader {
    pub(crate) fn new(dir: PathBuf, poll: Option<Duration>) -> Self {
        Self { dir, poll }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the confirmed messages; returns how many were still there. Every id is
    /// checked before any file is removed.
    pub(crate) async fn confirm(&self, ids: Vec<String>) -> Result<usize, String> {
        if ids.len() > MAX_DONE {
            return Err(format!(
                "`done` names {} ids; confirm at most {MAX_DONE} at once (nothing was confirmed)",
                ids.len()
            ));
        }
        if let Some(bad) = ids.iter().find(|id| !valid_id(id)) {
            return Err(format!(
                "`done`: {bad:?} is not a message id (ids are the `id` fields read_messages returns); nothing was confirmed"
            ));
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            for id in ids {
                let path = dir.join(format!("{id}.json"));
                match durable::remove(&dir, &path) {
                    Ok(true) => removed += 1,
                    Ok(false) => {}
                    Err(e) => {
                        return Err(format!(
                            "cannot remove {} from the inbox: {e}; the {removed} before it were confirmed",
                            path.display()
                        ));
                    }
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| format!("the inbox could not be changed: {e}"))?
    }

    /// The messages waiting, oldest first, at most `limit`.
    pub(crate) async fn look(&self, limit: usize) -> Result<Found, String> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || look(&dir, limit))
            .await
            .map_err(|e| format!("the inbox could not be read: {e}"))?
    }

    /// Like [`InboxReader::look`], but if nothing waits, waits up to `wait` for something
    /// to arrive (the folder is watched, not polled), or until `cancel`.
    pub(crate) async fn wait_and_look(
        &self,
        limit: usize,
        wait: Duration,
        cancel: impl Future<Output = ()>,
    ) -> Result<Found, String> {
        if wait.is_zero() || !self.dir.is_dir() {
            return self.look(limit).await;
        }
        // Watch before looking: a message written in between wakes the wait.
        let watch = watch_dir(&self.dir, self.poll, is_event_file).map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + wait;
        tokio::pin!(cancel);
        loop {
            let found = self.look(limit).await?;
            if !found.messages.is_empty() {
                return Ok(found);
            }
            tokio::select! {
                () = watch.wake.changed() => watch.wake.settled().await,
                () = tokio::time::sleep_until(deadline) => return Ok(found),
                () = &mut cancel => return Ok(found),
            }
        }
    }
}

/// A name the bridge gives inbox files (and nothing with a path in it).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// An event file: `*.json`, not a dot-file (ours in progress).
pub(crate) fn is_event_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.') && n.ends_with(".json"))
}

fn look(dir: &Path, limit: usize) -> Result<Found, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::default()),
        Err(e) => return Err(format!("cannot read the inbox {}: {e}", dir.display())),
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_event_file(p))
        .collect();
    names.sort();
    let mut found = Found {
        waiting: names.len(),
        ..Found::default()
    };
    let mut bytes = 0;
    for path in names {
        if found.messages.len() >= limit || bytes >= MAX_RESULT_BYTES {
            break;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match read_event(&path) {
            Ok(Some(message)) => {
                bytes += serde_json::to_string(&message).map_or(0, |s| s.len());
                found.messages.push(message);
            }
            // Confirmed or removed meanwhile.
            Ok(None) => found.waiting = found.waiting.saturating_sub(1),
            Err(()) => found.unreadable.push(name),
        }
    }
    Ok(found)
}

fn read_event(path: &Path) -> Result<Option<Message>, ()> {
    let text = match safe_open::read_to_string(path, Links::Refuse, MAX_FILE_BYTES) {
        Ok(text) => text,
        Err(safe_open::Refusal::NotFound) => return Ok(None),
        Err(_) => return Err(()),
    };
    let value: Value = serde_json::from_str(&text).map_err(drop)?;
    let field = |v: Option<&Value>| v.and_then(Value::as_str).map(|s| cut(s, MAX_FIELD_CHARS).0);
    let id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = field(value.get("type")).ok_or(())?;
    let (text, text_truncated) = match value.get("text").and_then(Value::as_str) {
        Some(text) => {
            let (text, cut) = cut(text, MAX_TEXT_CHARS);
            (Some(text), cut)
        }
        None => (None, false),
    };
    let provenance = value.get("provenance");
    Ok(Some(Message {
        id,
        kind,
        visitor: field(value.get("visitor")).unwrap_or_else(|| "visitor".to_owned()),
        text,
        text_truncated,
        reason: field(value.get("reason")),
        admitted: field(provenance.and_then(|p| p.get("admitted"))),
        origin: field(provenance.and_then(|p| p.get("origin"))),
        peer: field(provenance.and_then(|p| p.get("peer"))),
        received_at: field(value.get("received_at")),
    }))
}

/// `s` up to `max` characters, and whether it was longer.
fn cut(s: &str, max: usize) -> (String, bool) {
    match s.char_indices().nth(max) {
        Some((at, _)) => (s[..at].to_owned(), true),
        None => (s.to_owned(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_file_names_the_bridge_makes_and_never_paths() {
        assert!(valid_id("20261123T101502.123Z-000042-message"));
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "a\\b",
            "x y",
            &"a".repeat(129),
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_message_stays_until_confirmed_and_never_comes_back_after() {
        let dir = tempfile::tempdir().unwrap();
        let write = |id: &str, text: &str| {
            let body = serde_json::json!({
                "id": id, "type": "message", "visitor": "Ada", "text": text,
                "provenance": {"admitted": "token", "peer": "127.0.0.1:1"},
                "received_at": "2026-11-23T10:15:02.123Z"
            });
            std::fs::write(dir.path().join(format!("{id}.json")), body.to_string()).unwrap();
        };
        write("20261123T101502.123Z-000001-message", "first");
        write("20261123T101502.123Z-000002-message", &"x".repeat(5000));
        std::fs::write(dir.path().join(".tmp-1.partial"), "{").unwrap();
        let inbox = InboxReader::new(dir.path().to_owned(), None);

        let found = inbox.look(10).await.unwrap();
        assert_eq!(found.waiting, 2);
        assert_eq!(found.messages[0].text.as_deref(), Some("first"));
        assert_eq!(found.messages[0].admitted.as_deref(), Some("token"));
        assert!(found.messages[1].text_truncated);
        assert_eq!(
            found.messages[1].text.as_ref().unwrap().len(),
            MAX_TEXT_CHARS
        );
        // Read again without confirming: still there.
        assert_eq!(inbox.look(10).await.unwrap().waiting, 2);

        let first = found.messages[0].id.clone();
        assert_eq!(inbox.confirm(vec![first.clone()]).await.unwrap(), 1);
        let after = inbox.look(10).await.unwrap();
        assert_eq!(after.waiting, 1);
        assert!(after.messages.iter().all(|m| m.id != first));
        // Confirming again is harmless, and a path is refused before anything is removed.
        assert_eq!(inbox.confirm(vec![first]).await.unwrap(), 0);
        let second = after.messages[0].id.clone();
        assert!(inbox.confirm(vec![second, "../x".into()]).await.is_err());
        assert_eq!(inbox.look(10).await.unwrap().waiting, 1);
    }
}
