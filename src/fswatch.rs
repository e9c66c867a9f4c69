//! Directory watching shared by the state file and the outbox.
//!
//! We watch directories, not files: editors and agents replace files by writing a temporary
//! file and renaming it over the old one, which a watch on the old file would miss. Events
//! only wake the consumer; it then re-reads what it cares about, so lost, merged or
//! reordered events cannot make it wrong.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
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
    /// Woken after relevant changes.
    pub(crate) wake: Arc<Wake>,
}

/// How a watch wakes its consumer, and tells it when a writer is done.
#[derive(Default)]
pub(crate) struct Wake {
    /// Holds at most one permit, so a burst of events costs one wake-up.
    notify: Notify,
    /// A writer finished: it closed the file it wrote, or renamed a whole file into place.
    finished: AtomicBool,
}

impl Wake {
    /// How long the events must stop before a file whose writer is not known to be done is
    /// read.
    const QUIET: Duration = Duration::from_millis(10);
    /// The longest wait for quiet, so a file rewritten without pause is still read.
    const MAX_WAIT: Duration = Duration::from_millis(200);

    fn signal(&self, finished: bool) {
        if finished {
            self.finished.store(true, Ordering::Release);
        }
        self.notify.notify_one();
    }

    /// Waits for the next change.
    pub(crate) async fn changed(&self) {
        self.notify.notified().await;
    }

    /// After a change, waits until it is safe to read: at once when the writer is known to
    /// be done, else until the events stop for a moment, so a file written in several pieces
    /// is read once, whole.
    pub(crate) async fn settled(&self) {
        let deadline = tokio::time::Instant::now() + Self::MAX_WAIT;
        loop {
            if self.finished.swap(false, Ordering::AcqRel) {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(Self::QUIET) => return,
                () = self.notify.notified() => {
                    if tokio::time::Instant::now() >= deadline {
                        return;
                    }
                }
            }
        }
    }
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
    let wake = Arc::new(Wake::default());
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
        Ok(event) if event.need_rescan() => waker.signal(false),
        Ok(event) if changes_content(&event.kind) && event.paths.iter().any(|p| relevant(p)) => {
            waker.signal(writer_done(&event.kind));
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "file watcher error; re-reading");
            waker.signal(false);
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

/// Whether an event can mean that a file's content or presence changed.
///
/// Opening or reading a file is an event too (inotify reports `IN_OPEN`), and our own re-read
/// after a wake-up opens the file: counting those would wake us again, forever.
///
/// On Linux a rename is reported three times: from, to, and both paths together; the last
/// repeats the first two, and counting it would read a renamed file twice.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => false,
        _ => true,
    }
}

/// Whether an event says the file is whole: its writer closed it, or a rename put a whole
/// file in its place. (macOS does not report closes; there the quiet period decides.)
fn writer_done(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
    )
}

/// Wakes `wake` whenever the fingerprint of the relevant entries changes.
async fn poll_dir(
    dir: PathBuf,
    interval: Duration,
    baseline: u64,
    relevant: impl Fn(&Path) -> bool + Send + Sync + 'static,
    wake: Arc<Wake>,
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
            wake.signal(false);
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

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind};

    #[test]
    fn opening_or_reading_a_file_is_not_a_change() {
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Read)));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Any)));
        assert!(changes_content(&EventKind::Any));
        assert!(!changes_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::Both
        ))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
    }

    #[test]
    fn a_close_after_writing_or_a_rename_means_the_writer_is_done() {
        assert!(writer_done(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(writer_done(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        // Mid-write: wait for quiet.
        assert!(!writer_done(&EventKind::Modify(ModifyKind::Any)));
        assert!(!writer_done(&EventKind::Create(CreateKind::File)));
    }

    /// Reading the watched file must not wake the watcher: the consumer re-reads after every
    /// wake-up, so a read that woke it would make it spin.
    #[tokio::test]
    async fn reading_the_watched_file_does_not_wake_the_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.yaml");
        std::fs::write(&file, "a: 1\n").unwrap();
        let target = file.clone();
        let watch = watch_dir(dir.path(), None, move |p| p == target).unwrap();
        for _ in 0..20 {
            std::fs::read(&file).unwrap();
        }
        let woken = tokio::time::timeout(Duration::from_millis(300), watch.wake.changed()).await;
        assert!(woken.is_err(), "reading the file woke the watcher");

        // The control: a write does wake it.
        std::fs::write(&file, "a: 2\n").unwrap();
        tokio::time::timeout(Duration::from_secs(10), watch.wake.changed())
            .await
            .expect("a write wakes the watcher");
    }
}
