//! Barking for the agent: a message file dropped into the outbox the way the bridge wants
//! it (written under a dot-name, fsynced, renamed into place), then watched until the
//! bridge picks it up.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::durable;
use crate::fswatch::watch_dir;

/// How long `say` waits for the running bridge to pick the file up.
const PICKUP_WITHIN: Duration = Duration::from_secs(5);

/// What became of a file dropped into the outbox.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pickup {
    /// The bridge read and removed it: it was broadcast.
    Sent,
    /// The bridge moved it to `rejected/`.
    Rejected,
    /// Still there after the wait.
    Waiting,
}

/// The outbox folder.
#[derive(Debug)]
pub(crate) struct OutboxWriter {
    dir: PathBuf,
    poll: Option<Duration>,
    counter: AtomicU64,
}

impl OutboxWriter {
    pub(crate) fn new(dir: PathBuf, poll: Option<Duration>) -> Self {
        Self {
            dir,
            poll,
            counter: AtomicU64::new(0),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Drops `message` (one JSON object) into the outbox; returns the file's path once it
    /// is on disk, and a way to wait for the bridge to pick it up.
    pub(crate) async fn drop_message(&self, message: &[u8]) -> Result<Dropped, String> {
        if !self.dir.is_dir() {
            return Err(format!(
                "the outbox folder {} does not exist; the bridge makes it when it starts (or check `--outbox-dir`)",
                self.dir.display()
            ));
        }
        let stamp = humantime::format_rfc3339_millis(SystemTime::now())
            .to_string()
            .replace(['-', ':'], "");
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("{stamp}-mcp{}-{n:04}-bark.json", std::process::id());
        let path = self.dir.join(&name);
        // Watched before it is written: the bridge may pick it up at once.
        let target = path.clone();
        let watch = watch_dir(&self.dir, self.poll, move |p| p == target).ok();
        let (dir, dest, bytes) = (self.dir.clone(), path.clone(), message.to_vec());
        tokio::task::spawn_blocking(move || durable::write_new(&dir, &dest, &bytes))
            .await
            .map_err(io::Error::other)
            .and_then(|written| written)
            .map_err(|e| format!("cannot write into the outbox {}: {e}", self.dir.display()))?;
        Ok(Dropped {
            rejected: self.dir.join("rejected").join(&name),
            path,
            watch,
        })
    }
}

/// A message file in the outbox.
pub(crate) struct Dropped {
    path: PathBuf,
    rejected: PathBuf,
    watch: Option<crate::fswatch::DirWatch>,
}

impl Dropped {
    /// Waits for the bridge to take the file (at most a few seconds).
    pub(crate) async fn picked_up(self) -> Pickup {
        let deadline = tokio::time::Instant::now() + PICKUP_WITHIN;
        loop {
            if std::fs::symlink_metadata(&self.path).is_err() {
                return if self.rejected.exists() {
                    Pickup::Rejected
                } else {
                    Pickup::Sent
                };
            }
            let Some(watch) = &self.watch else {
                return Pickup::Waiting;
            };
            tokio::select! {
                () = watch.wake.changed() => {}
                () = tokio::time::sleep_until(deadline) => return Pickup::Waiting,
            }
        }
    }
}
