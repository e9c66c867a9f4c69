//! Logging: lines go to stderr as in the CLI, and the latest ones are kept for the
//! settings window's activity panel.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// How many lines the activity panel can scroll back through.
pub const KEPT_LINES: usize = 300;

/// One log line as the settings window shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch; the window shows it in local time.
    pub at_ms: u64,
    /// `INFO`, `WARN`, `ERROR`, …
    pub level: String,
    /// The message, then its fields as `key=value`.
    pub text: String,
}

/// The latest log lines, shared by the logging layer that fills it and the window that
/// reads it. Cheap to clone.
#[derive(Clone)]
pub struct LogBuffer {
    lines: Arc<Mutex<VecDeque<LogLine>>>,
    capacity: usize,
    changed: watch::Sender<u64>,
}

impl LogBuffer {
    /// An empty buffer keeping at most `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        Self {
            lines: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))),
            capacity,
            changed: watch::Sender::new(0),
        }
    }

    /// Adds a line, dropping the oldest when full.
    pub fn push(&self, line: LogLine) {
        {
            let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
            if lines.len() == self.capacity {
                lines.pop_front();
            }
            lines.push_back(line);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The kept lines, oldest first.
    pub fn snapshot(&self) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().cloned().collect()
    }

    /// Changes whenever a line is added.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Sends log lines to stderr (filtered by `RUST_LOG`, default `info`) and keeps the
/// bridge's and the app's own lines in `buffer`. Does nothing if logging is already set
/// up (as in tests that build several apps).
pub fn init(buffer: LogBuffer) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(BufferLayer { buffer })
        .try_init();
}

/// A `tracing` layer that copies events of this project into a [`LogBuffer`].
pub struct BufferLayer {
    /// Where the lines go.
    pub buffer: LogBuffer,
}

impl<S: Subscriber> Layer<S> for BufferLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // The webview's and the toolkit's chatter is not what the user wants to see.
        if !meta.target().starts_with("workshop_bridge") {
            return;
        }
        let mut visitor = LineVisitor::default();
        event.record(&mut visitor);
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.buffer.push(LogLine {
            at_ms,
            level: meta.level().to_string(),
            text: visitor.finish(),
        });
    }
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl LineVisitor {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else if self.message.is_empty() {
            self.fields.trim_start().to_owned()
        } else {
            format!("{}{}", self.message, self.fields)
        }
    }
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            at_ms: 0,
            level: "INFO".into(),
            text: text.into(),
        }
    }

    #[test]
    fn the_buffer_keeps_the_newest_lines() {
        let buffer = LogBuffer::new(2);
        let changes = buffer.subscribe();
        buffer.push(line("a"));
        buffer.push(line("b"));
        buffer.push(line("c"));
        assert!(changes.has_changed().unwrap());
        let kept: Vec<_> = buffer.snapshot().into_iter().map(|l| l.text).collect();
        assert_eq!(kept, ["b", "c"]);
    }

    #[test]
    fn events_become_lines_with_their_fields() {
        let buffer = LogBuffer::new(10);
        let subscriber = tracing_subscriber::registry().with(BufferLayer {
            buffer: buffer.clone(),
        });
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(peer = %"10.0.0.2:5000", clients = 2, "client connected");
            tracing::info!(target: "tao", "not ours");
        });
        let lines = buffer.snapshot();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0].text,
            "client connected peer=10.0.0.2:5000 clients=2"
        );
        assert_eq!(lines[0].level, "INFO");
    }
}
