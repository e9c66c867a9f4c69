//! Directory watching shared by the state file and the outbox.
//!
//! We watch directories, not files: editors and agents replace files by writing a temporary
//! file and renaming it over the old one, which a watch on the old file would miss. Events
//! only wake the consumer; it then re-reads what it cares about, so lost, merged or
//! reordered events cannot make it wrong.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::error::Error;

/// Keeps the watch alive; dropping it stops the wake-ups.
pub(crate) struct DirWatch {
    /// The operating system's watch (event mode). Never touched after setup; the mutex only
    /// makes the handle `Sync` (not every platform's watcher is), so a `BridgeHandle` can be
    /// shared between threads.
    _watcher: Option<Mutex<Box<dyn Watcher + Send>>>,
    /// The polling task (poll mode), stopped on drop.
    poller: Option<AbortHandle>,
    /// Woken after relevant changes. A `Notify` holds at most one permit, so a burst of
    /// events costs one wake-up.
    pub(crate) wake: Arc<Notify>,
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        if let Some(poller) = &self.poller {
            poller.abort();
        }
    }
}

/// Watches `dir` (not recursively), waking on changes to entries that `relevant` accepts.
///
/// With `poll`, the directory is checked at that interval instead, for file systems that do
/// not deliver events (network shares, some containers). Must be called within a Tokio
/// runtime.
pub(crate) fn watch_dir(
    dir: &Path,
    poll: Option<Duration>,
    relevant: impl Fn(&Path) -> bool + Send + Sync + 'static,
) -> Result<DirWatch, Error> {
    let wake = Arc::new(Notify::new());
    if let Some(interval) = poll {
        // The baseline is taken now, so a change made right after this returns is seen.
        let baseline = fingerprint(dir, &relevant);
        let poller = tokio::spawn(poll_dir(
            dir.to_owned(),
            interval,
            baseline,
            relevant,
            Arc::clone(&wake),
        ));
        return Ok(DirWatch {
            _watcher: None,
            poller: Some(poller.abort_handle()),
            wake,
        });
    }
    let waker = Arc::clone(&wake);
    let handler = move |event: notify::Result<Event>| match event {
        Ok(event) if event.need_rescan() || event.paths.iter().any(|p| relevant(p)) => {
            waker.notify_one();
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "file watcher error; re-reading");
            waker.notify_one();
        }
    };
    let err = |source| Error::Watch {
        path: dir.to_owned(),
        source,
    };
    let mut watcher = RecommendedWatcher::new(handler, notify::Config::default()).map_err(err)?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(err)?;
    Ok(DirWatch {
        _watcher: Some(Mutex::new(Box::new(watcher))),
        poller: None,
        wake,
    })
}

/// Wakes `wake` whenever the fingerprint of the relevant entries changes.
async fn poll_dir(
    dir: PathBuf,
    interval: Duration,
    baseline: u64,
    relevant: impl Fn(&Path) -> bool + Send + Sync + 'static,
    wake: Arc<Notify>,
) {
    let relevant = Arc::new(relevant);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = baseline;
    ticker.tick().await; // the first tick is immediate; the baseline stands for it
    loop {
        ticker.tick().await;
        let (d, r) = (dir.clone(), Arc::clone(&relevant));
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&d, &*r)).await else {
            continue;
        };
        if now != last {
            wake.notify_one();
        }
        last = now;
    }
}

/// A hash of the name, size, modification time (to the nanosecond) and inode of every
/// relevant entry: it changes when a file is written, replaced, created or removed.
fn fingerprint(dir: &Path, relevant: &dyn Fn(&Path) -> bool) -> u64 {
    let mut entries: Vec<(PathBuf, u64, Option<std::time::SystemTime>, u64)> = Vec::new();
    if let Ok(read) = std::fs::read_dir(dir) {
        for entry in read.flatten() {
            let path = entry.path();
            if !relevant(&path) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            entries.push((path, meta.len(), meta.modified().ok(), inode(&meta)));
        }
    }
    entries.sort();
    let mut hasher = DefaultHasher::new();
    entries.hash(&mut hasher);
    hasher.finish()
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}
