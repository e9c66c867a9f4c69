//! The state file: watched, parsed from YAML once per change, serialized once per change.
//!
//! Each change becomes a [`Snapshot`] holding the finished `state` message (and the
//! `state_patch` from the previous one) as shared bytes, published on a `watch` channel. A
//! client's writer only ever looks at the newest snapshot, so a slow client skips states it
//! had no time for instead of queueing them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::fswatch::{DirWatch, Wake, watch_dir};
use crate::protocol::ServerMessage;
use crate::safe_open::{self, Links, Refusal};

/// One version of the state, ready to send.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// Grows by one per change of the parsed content.
    pub(crate) seq: u64,
    /// `{"type":"state","seq":…,"data":…}`.
    pub(crate) full: Utf8Bytes,
    /// `{"type":"state_patch",…}` from `seq - 1`, absent for the first state.
    pub(crate) patch: Option<Utf8Bytes>,
}

/// The newest snapshot; `None` until a state file has been read.
pub(crate) type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

/// How the state file is doing, for the status API and the app.
#[derive(Debug, Clone, Serialize)]
pub struct StateHealth {
    /// The file watched.
    pub path: PathBuf,
    /// The `seq` of the state clients have; 0 before the first load.
    pub seq: u64,
    /// When the file was last read successfully (changed or not).
    #[serde(with = "rfc3339_opt")]
    pub last_load: Option<SystemTime>,
    /// Why the latest read was refused, if it was; clients keep the last good state.
    pub last_error: Option<String>,
}

/// Reads the state file and publishes snapshots.
pub(crate) struct StateFile {
    path: PathBuf,
    max_bytes: u64,
    current: Option<Value>,
    seq: u64,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    health: Arc<Mutex<StateHealth>>,
    /// The file the state file's symlink leads to, if it is one, and a watch on it.
    link: Option<LinkTarget>,
}

/// Writes to a symlink's target make no event in the link's directory, which is all the
/// bridge watches otherwise; so the target's own directory is watched too.
struct LinkTarget {
    path: PathBuf,
    watch: DirWatch,
}

impl StateFile {
    pub(crate) fn new(path: PathBuf, max_bytes: u64) -> Self {
        let health = StateHealth {
            path: path.clone(),
            seq: 0,
            last_load: None,
            last_error: None,
        };
        Self {
            path,
            max_bytes,
            current: None,
            seq: 0,
            tx: watch::channel(None).0,
            health: Arc::new(Mutex::new(health)),
            link: None,
        }
    }

    /// A receiver of snapshots, for one client.
    pub(crate) fn subscribe(&self) -> SnapshotRx {
        self.tx.subscribe()
    }

    /// The shared health record.
    pub(crate) fn health(&self) -> Arc<Mutex<StateHealth>> {
        Arc::clone(&self.health)
    }

    /// Re-reads the file and publishes a snapshot if its content changed.
    pub(crate) async fn reload(&mut self) {
        // Before reading, so a change to the target made in between wakes us.
        self.follow_link();
        let path = self.path.clone();
        let max = self.max_bytes;
        let read = tokio::task::spawn_blocking(move || read_yaml(&path, max))
            .await
            .unwrap_or_else(|e| Err(format!("the reader failed: {e}")));
        match read {
            Ok(None) => {
                tracing::debug!(path = %self.path.display(), "state file is empty; waiting for content");
            }
            Ok(Some(value)) => {
                self.set_health(None);
                if self.current.as_ref() != Some(&value) {
                    self.publish(value);
                }
            }
            Err(message) => {
                tracing::warn!(path = %self.path.display(), error = %message, "keeping the last state");
                self.set_health(Some(message));
            }
        }
    }

    fn publish(&mut self, value: Value) {
        self.seq += 1;
        let seq = self.seq;
        let full = ServerMessage::State { seq, data: &value }.to_text();
        let patch = self.current.as_ref().map(|old| {
            let patch = json_patch::diff(old, &value);
            ServerMessage::StatePatch { seq, patch: &patch }.to_text()
        });
        tracing::info!(seq, bytes = full.len(), "state changed");
        self.current = Some(value);
        if let Ok(mut h) = self.health.lock() {
            h.seq = seq;
        }
        self.tx
            .send_replace(Some(Arc::new(Snapshot { seq, full, patch })));
    }

    fn set_health(&self, error: Option<String>) {
        if let Ok(mut h) = self.health.lock() {
            if error.is_none() {
                h.last_load = Some(SystemTime::now());
            }
            h.last_error = error;
        }
    }

    /// Watches where the state file leads if it is a symlink (it is followed when read), and
    /// follows the link when it is aimed elsewhere. A target that does not exist yet is
    /// watched for; one whose directory does not exist is retried at the next reload.
    fn follow_link(&mut self) {
        let target = link_target(&self.path);
        if self.link.as_ref().map(|l| &l.path) == target.as_ref() {
            return;
        }
        self.link = target.and_then(|path| {
            let name = path.file_name()?.to_owned();
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            match watch_dir(dir, None, move |p| p.file_name() == Some(name.as_os_str())) {
                Ok(watch) => {
                    tracing::debug!(target = %path.display(), "the state file is a symlink; watching its target");
                    Some(LinkTarget { path, watch })
                }
                Err(e) => {
                    tracing::warn!(target = %path.display(), error = %e, "cannot watch the state file's symlink target; its changes are seen when the link changes");
                    None
                }
            }
        });
    }

    /// Re-reads after every burst of file events until `cancel`.
    pub(crate) async fn run(mut self, wake: Arc<Wake>, cancel: CancellationToken) {
        loop {
            let link = self.link.as_ref().map(|l| Arc::clone(&l.watch.wake));
            let link_changed = async {
                match &link {
                    Some(link) => link.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = wake.changed() => wake.settled().await,
                () = link_changed => {
                    if let Some(link) = &link {
                        link.settled().await;
                    }
                }
            }
            // A read that never returns (a hung network share) must not hold up shutdown:
            // the blocking read is then left behind, and nothing is published from it.
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.reload() => {}
            }
        }
    }
}

/// Where `path` leads if it is a symlink (through a chain of them), whether or not that
/// exists; `None` if it is not a link, or for a loop.
fn link_target(path: &Path) -> Option<PathBuf> {
    let mut current = path.to_owned();
    for _ in 0..40 {
        match std::fs::read_link(&current) {
            // Relative to the link's directory; `join` keeps an absolute target as it is.
            Ok(next) => {
                current = match current.parent() {
                    Some(dir) => dir.join(next),
                    None => next,
                }
            }
            Err(_) => return (current != path).then_some(current),
        }
    }
    None
}

/// Reads and parses the file. `Ok(None)` for an empty file (most likely caught mid-write).
///
/// Opened once and checked on the open handle, so a named pipe renamed over the file cannot
/// stall the reader; a symlink at the path is followed (it may lead to the agent's project).
fn read_yaml(path: &Path, max_bytes: u64) -> Result<Option<Value>, String> {
    let text =
        safe_open::read_to_string(path, Links::Follow, max_bytes).map_err(
            |refusal| match refusal {
                Refusal::NotFound => "the state file does not exist (yet)".to_owned(),
                Refusal::Symlink | Refusal::NotRegular => {
                    "the state file path is not a regular file".to_owned()
                }
                Refusal::TooLarge(len) => {
                    format!("the state file is {len} bytes, over the {max_bytes}-byte limit")
                }
                Refusal::Grew => format!("the state file grew over the {max_bytes}-byte limit"),
                Refusal::Open(e) => format!("cannot open the state file: {e}"),
                Refusal::Read(e) => format!("cannot read the state file: {e}"),
            },
        )?;
    parse_yaml(&text)
}

/// The parser's defaults, but for merge keys (`<<`): agents' writers (PyYAML's `safe_dump`
/// among them) never write one, and a few hundred bytes of maps merging each other twice,
/// fifteen deep, cost seconds of work before the default cap of 10,000 is reached. A few
/// hundred are more than any hand-written file uses.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_merge_keys = MAX_MERGE_KEYS;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Most merge keys (`<<`) a YAML file may use, counted as they are expanded.
const MAX_MERGE_KEYS: usize = 256;

/// YAML text to JSON. Any document is accepted; budgets refuse alias and merge-key bombs.
pub(crate) fn parse_yaml(text: &str) -> Result<Option<Value>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_saphyr::from_str_with_options::<Value>(text, yaml_options())
        .map(Some)
        .map_err(|e| {
            // The first line says where and what; the rest is a source snippet for terminals.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.trim_start_matches("error: ");
            if first.contains("budget breached") {
                // Valid YAML, but it expands too far (aliases of aliases, deep nesting).
                format!("the state file expands beyond what the bridge will read: {first}")
            } else {
                format!("invalid YAML: {first}")
            }
        })
}

mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_yaml_becomes_json_in_file_order() {
        let v = parse_yaml("zeta: 1\nalpha: [a, 2, true, null]\nnested: {k: 1.5}\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"zeta":1,"alpha":["a",2,true,null],"nested":{"k":1.5}}"#
        );
        assert_eq!(
            parse_yaml("just a string").unwrap().unwrap(),
            Value::from("just a string")
        );
    }

    #[test]
    fn empty_means_not_ready_and_errors_name_the_line() {
        assert_eq!(parse_yaml("  \n").unwrap(), None);
        let e = parse_yaml("a: 1\nb: [unclosed\nc: 3\n").unwrap_err();
        assert!(e.starts_with("invalid YAML"), "{e}");
        assert!(e.contains("line 3 column 2"), "{e}");
        assert!(
            !e.contains('\n'),
            "one line for logs and the status API: {e}"
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for name in 'b'..='j' {
            let refs = vec![format!("*{prev}"); 9].join(",");
            bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
            prev = name;
        }
        assert!(parse_yaml(&bomb).is_err());
    }

    /// A bomb of work rather than of size: fifteen maps, each merging the one before it
    /// twice (377 bytes). Under the parser's default cap of 10,000 merge keys it took 1.7 s
    /// of CPU in a release build (14 s in a debug one) at every write before it was refused.
    #[test]
    fn merge_key_bombs_are_refused_by_the_budget() {
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}: {i}")).collect();
        let mut bomb = format!("a: &a {{{}}}\n", keys.join(", "));
        let mut prev = 'a';
        for name in 'b'..='p' {
            bomb.push_str(&format!("{name}: &{name} {{<<: [*{prev},*{prev}]}}\n"));
            prev = name;
        }
        let e = parse_yaml(&bomb).unwrap_err();
        assert!(e.starts_with("the state file expands beyond"), "{e}");
        // The cap itself: one merge key more than the bridge allows (the parser alone would
        // take forty times as many) is refused, however plain the file.
        let mut many = String::from("base: &base {x: 1}\n");
        for i in 0..=MAX_MERGE_KEYS {
            many.push_str(&format!("m{i}: {{<<: *base}}\n"));
        }
        let e = parse_yaml(&many).unwrap_err();
        assert!(e.contains("merge"), "{e}");
        // A file that merges a few times, as people write them, still reads.
        let fine = "base: &base {x: 1, y: 2}\none: {<<: *base, z: 3}\ntwo: {<<: [*base], x: 9}\n";
        let v = parse_yaml(fine).unwrap().unwrap();
        assert_eq!(v["one"], serde_json::json!({"x": 1, "y": 2, "z": 3}));
        assert_eq!(v["two"]["x"], 9);
    }

    #[test]
    fn the_example_state_file_parses() {
        let example = include_str!("../tests/fixtures/workshop-state.yaml");
        let v = parse_yaml(example).unwrap().unwrap();
        assert_eq!(v["mood"]["primary"], "contemplative");
        assert_eq!(v["familiar"]["position"][0], 2.1);
    }
}

/// Property tests of the YAML reader and the patch differ.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    use crate::protocol::properties_support::json_value;

    /// Equal, but for floats within 4 ulps: the YAML reader's float parsing is not always
    /// correctly rounded at extreme exponents (seen at 1e-288), which no state relies on.
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
                match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => {
                        x == y || (x.to_bits() as i64 - y.to_bits() as i64).unsigned_abs() <= 4
                    }
                    _ => false,
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }

    proptest! {
        // Failures print their minimal input; no regression files at the repository root.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_text_is_read_or_refused_without_panicking(text in ".{0,512}") {
            let _ = parse_yaml(&text);
        }

        #[test]
        fn json_documents_read_as_yaml_are_the_same_value(
            // JSON is YAML, but YAML 1.2 forbids the raw DEL and C1 control characters that
            // JSON allows unescaped: a YAML file cannot contain them.
            text in json_value()
                .prop_map(|v| serde_json::to_string_pretty(&v).unwrap())
                .prop_filter("YAML-printable", |t| !t.chars().any(|c| ('\u{7f}'..='\u{9f}').contains(&c) && c != '\u{85}'))
        ) {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            if let Some(parsed) = parse_yaml(&text).map_err(TestCaseError::fail)? {
                prop_assert!(same(&parsed, &value), "{parsed} != {value}");
            }
        }

        #[test]
        fn a_patch_turns_the_old_state_into_the_new(old in json_value(), new in json_value()) {
            let patch = json_patch::diff(&old, &new);
            let mut doc = old.clone();
            json_patch::patch(&mut doc, &patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(doc, new);
        }
    }
}
