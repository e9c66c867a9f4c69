//! Logs to standard error, as text or JSON, with the file watcher's own trace kept out.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, filter};
use workshop_bridge::LogFormat;

pub(crate) fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The file watcher logs every file event at trace. With the log written into a folder
    // the bridge watches (`2> ~/.timmy/bridge.log`), each line is such an event and is logged
    // in turn: megabytes a second with nothing happening. So its trace lines are kept out
    // unless asked for by name (`RUST_LOG=notify=trace`).
    let watcher_trace = names_target(
        &std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default(),
        WATCHER_TARGET,
    );
    let quiet_watcher = filter::filter_fn(move |meta| {
        watcher_trace || *meta.level() != Level::TRACE || !meta.target().starts_with(WATCHER_TARGET)
    });
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logging = tracing_subscriber::registry()
        .with(filter)
        .with(quiet_watcher);
    match format {
        LogFormat::Text => logging.with(output).init(),
        LogFormat::Json => logging.with(output.json()).init(),
    }
}

/// The file-watching crate's log target (and its modules': `notify::inotify`, …).
const WATCHER_TARGET: &str = "notify";

/// Whether a `RUST_LOG` value has a directive for `target` or one of its modules.
fn names_target(directives: &str, target: &str) -> bool {
    directives.split(',').any(|directive| {
        let name = directive
            .trim()
            .split(['=', '['])
            .next()
            .unwrap_or_default();
        name == target || name.starts_with(&format!("{target}::"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_is_named_only_by_a_directive_for_it() {
        assert!(names_target("notify=trace", "notify"));
        assert!(names_target("info, notify::inotify=trace", "notify"));
        assert!(names_target("notify[watch]=trace", "notify"));
        assert!(!names_target("trace", "notify"));
        assert!(!names_target("workshop_bridge=trace,hyper=debug", "notify"));
        assert!(!names_target("notifyish=trace", "notify"));
        assert!(!names_target("", "notify"));
    }
}
