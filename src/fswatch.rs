//! Directory watching shared by the state file and the outbox.
//!
//! We watch directories, not files: editors and agents replace files by writing a temporary
//! file and renaming it over the old one, which a watch on the old file would miss. Events
//! only wake the consumer; it then re-reads what it cares about, so lost, merged or
//! reordered events cannot make it wrong.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::error::Error;

/// Keeps the operating system's watch alive; dropping it stops the events.
pub(crate) struct DirWatch {
    _watcher: Box<dyn Watcher + Send>,
    /// Woken after relevant events. A `Notify` holds at most one permit, so a burst of
    /// events costs one wake-up.
    pub(crate) wake: Arc<Notify>,
}

/// Watches `dir` (not recursively), waking on events that `relevant` accepts.
///
/// With `poll`, the directory is scanned at that interval instead, for file systems that do
/// not deliver events (network shares, some containers).
pub(crate) fn watch_dir(
    dir: &Path,
    poll: Option<Duration>,
    relevant: impl Fn(&Event) -> bool + Send + 'static,
) -> Result<DirWatch, Error> {
    let wake = Arc::new(Notify::new());
    let waker = Arc::clone(&wake);
    let handler = move |event: notify::Result<Event>| match event {
        Ok(event) if event.need_rescan() || relevant(&event) => waker.notify_one(),
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
    let mut watcher: Box<dyn Watcher + Send> = match poll {
        Some(interval) => {
            let config = notify::Config::default()
                .with_poll_interval(interval)
                .with_compare_contents(false);
            Box::new(notify::PollWatcher::new(handler, config).map_err(err)?)
        }
        None => Box::new(RecommendedWatcher::new(handler, notify::Config::default()).map_err(err)?),
    };
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(err)?;
    Ok(DirWatch {
        _watcher: watcher,
        wake,
    })
}
