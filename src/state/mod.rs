//! The state file: watched, read once per change, serialized once per change.
//!
//! `yaml.rs` and `scalar.rs` read it as the agent's writer (PyYAML) means it, `json.rs` reads
//! a file written as JSON, `value.rs` holds the result and the change between two versions.
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
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::fswatch::{DirWatch, Wake, watch_dir};
use crate::protocol::ServerMessage;
use crate::safe_open::{self, Links, Refusal};

mod incremental;
mod json;
mod scalar;
pub(crate) mod value;
mod write;
mod yaml;

pub(crate) use write::to_yaml;

use scalar::Schema;
use value::StateValue;
use yaml::Document;

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
    /// What was read last: a write of the same bytes is not read again, and the next state's
    /// patch is made from its value.
    current: Option<Arc<Current>>,
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

    /// Where snapshots are published: a relay of a cluster publishes the origin's here.
    pub(crate) fn publisher(&self) -> watch::Sender<Option<Arc<Snapshot>>> {
        self.tx.clone()
    }

    /// The shared health record.
    pub(crate) fn health(&self) -> Arc<Mutex<StateHealth>> {
        Arc::clone(&self.health)
    }

    /// Re-reads the file and publishes a snapshot if its content changed.
    ///
    /// Reading, comparing and serializing all happen on a blocking thread: for a large
    /// state they are milliseconds of work that would otherwise hold up the clients' tasks.
    pub(crate) async fn reload(&mut self) {
        // Before reading, so a change to the target made in between wakes us.
        self.follow_link();
        let path = self.path.clone();
        let max = self.max_bytes;
        let last = self.current.clone();
        let seq = self.seq + 1;
        let read =
            tokio::task::spawn_blocking(move || next_snapshot(&path, max, last.as_deref(), seq))
                .await
                .unwrap_or_else(|e| Err(format!("the reader failed: {e}")));
        match read {
            Ok(Read::Unchanged) => self.set_health(None),
            Ok(Read::Empty) => {
                tracing::debug!(path = %self.path.display(), "state file is empty; waiting for content");
            }
            Ok(Read::SameValue(current)) => {
                self.set_health(None);
                self.replace_current(current);
            }
            Ok(Read::Changed(current, snapshot)) => {
                self.set_health(None);
                self.replace_current(current);
                self.seq = seq;
                tracing::info!(seq, bytes = snapshot.full.len(), "state changed");
                if let Ok(mut h) = self.health.lock() {
                    h.seq = seq;
                }
                self.tx.send_replace(Some(Arc::new(snapshot)));
            }
            Err(message) => {
                tracing::warn!(path = %self.path.display(), error = %message, "keeping the last state");
                self.set_health(Some(message));
            }
        }
    }

    /// Keeps what was read; the previous value, a large tree, is freed off the runtime.
    fn replace_current(&mut self, current: Current) {
        if let Some(old) = self.current.replace(Arc::new(current)) {
            drop(tokio::task::spawn_blocking(move || drop(old)));
        }
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

/// A state file's text and the document read from it.
struct Current {
    text: String,
    document: Document,
}

/// What a read of the state file found.
enum Read {
    /// The same bytes as last time.
    Unchanged,
    /// No document (empty, most likely caught mid-write, or only comments).
    Empty,
    /// New text, but the same value (a comment or the layout changed).
    SameValue(Current),
    /// A new value, and the snapshot that sends it.
    Changed(Current, Snapshot),
}

/// Reads the file and, if its value is not `last`'s, makes snapshot `seq` of it: the
/// whole state, and the patch from `last`.
///
/// Opened once and checked on the open handle, so a named pipe renamed over the file cannot
/// stall the reader; a symlink at the path is followed (it may lead to the agent's project).
fn next_snapshot(
    path: &Path,
    max_bytes: u64,
    last: Option<&Current>,
    seq: u64,
) -> Result<Read, String> {
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
    snapshot_of(text, last, seq)
}

/// As [`next_snapshot`], for `text` read from the file.
fn snapshot_of(text: String, last: Option<&Current>, seq: u64) -> Result<Read, String> {
    if last.is_some_and(|last| last.text == text) {
        return Ok(Read::Unchanged);
    }
    let Some(document) = read_next(&text, last)? else {
        return Ok(Read::Empty);
    };
    if last.is_some_and(|last| last.document.value == document.value) {
        return Ok(Read::SameValue(Current { text, document }));
    }
    let full = ServerMessage::State {
        seq,
        data: &document.value,
    }
    .to_text();
    let patch = last.map(|last| {
        let patch = value::diff(&last.document.value, &document.value);
        ServerMessage::StatePatch { seq, patch: &patch }.to_text()
    });
    Ok(Read::Changed(
        Current { text, document },
        Snapshot { seq, full, patch },
    ))
}

/// The document `text` holds, as [`read_document`] reads it, re-reading only the entries
/// that changed since `last` where that gives the same result (`incremental.rs`).
fn read_next(text: &str, last: Option<&Current>) -> Result<Option<Document>, String> {
    if let Some(read) = json::read(text) {
        return read
            .map(|value| {
                Some(Document {
                    value,
                    entries: None,
                    explicit_end: false,
                })
            })
            .map_err(|e| e.to_string());
    }
    if let Some(document) =
        last.and_then(|last| incremental::reread(&last.text, &last.document, text))
    {
        return Ok(Some(document));
    }
    yaml::read_document(text, Schema::Yaml11)
        .map(|document| document.map(incremental::shareable))
        .map_err(|e| e.to_string())
}

/// State text to a value: a JSON document by JSON's rules, anything else as YAML by the
/// rules of PyYAML (or of YAML 1.2, if the document says `%YAML 1.2`). `Ok(None)` when it
/// holds no document yet. The error is one line, for logs and the status API.
pub(crate) fn read_document(text: &str) -> Result<Option<StateValue>, String> {
    if let Some(read) = json::read(text) {
        return read.map(Some).map_err(|e| e.to_string());
    }
    yaml::read(text, Schema::Yaml11).map_err(|e| e.to_string())
}

/// Whether state text is a JSON document (read by JSON's rules, and written back as JSON).
pub(crate) fn is_json(text: &str) -> bool {
    json::read(text).is_some()
}

/// A file that must be JSON (an outbox file named `*.json`), read by JSON's rules.
pub(crate) fn read_json(text: &str) -> Result<StateValue, String> {
    match json::read(text) {
        Some(read) => read.map_err(|e| e.to_string()),
        None => Err(serde_json::from_str::<serde::de::IgnoredAny>(text)
            .err()
            .map_or_else(
                || "invalid JSON".to_owned(),
                |e| format!("invalid JSON: {e}"),
            )),
    }
}

/// Reads successive versions of a state file's text as the bridge does: each new version
/// costs what reading its changed top-level entries costs, then comparing it with the last
/// and writing the `state` and `state_patch` messages. For tools and benchmarks; a bridge
/// reads the file it watches.
#[derive(Default)]
pub struct StateReader {
    last: Option<Current>,
    seq: u64,
}

impl StateReader {
    /// A reader that has read nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the next version: the `state` message clients would be sent, or `Ok(None)`
    /// when the text holds no document or the same value as the last version.
    pub fn read(&mut self, text: &str) -> Result<Option<String>, String> {
        match snapshot_of(text.to_owned(), self.last.as_ref(), self.seq + 1)? {
            Read::Unchanged | Read::Empty => Ok(None),
            Read::SameValue(current) => {
                self.last = Some(current);
                Ok(None)
            }
            Read::Changed(current, snapshot) => {
                self.last = Some(current);
                self.seq = snapshot.seq;
                Ok(Some(snapshot.full.as_str().to_owned()))
            }
        }
    }
}

/// `new` read after `old` as the state reader reads a change (only the changed entries
/// where it can), and read in full: each as its JSON and top-level layout, or its error.
/// `None` when `old` itself is not read.
#[cfg(feature = "fuzzing")]
pub(crate) fn change_readings(old: &str, new: &str) -> Option<(String, String)> {
    let last = Current {
        text: old.to_owned(),
        document: read_next(old, None).ok()??,
    };
    let show = |read: Result<Option<Document>, String>| match read {
        Ok(Some(document)) => format!("{} {:?}", document.value.to_json(), document.entries),
        Ok(None) => "no document".to_owned(),
        Err(e) => e,
    };
    Some((
        show(read_next(new, Some(&last))),
        show(read_next(new, None)),
    ))
}

/// State text to the JSON clients are sent; `Ok(None)` when it holds no document yet.
pub fn state_to_json(text: &str) -> Result<Option<String>, String> {
    read_document(text).map(|doc| doc.map(|value| value.to_json()))
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

    fn json(text: &str) -> String {
        state_to_json(text).unwrap().unwrap()
    }

    #[test]
    fn yaml_and_json_files_become_json_in_file_order() {
        assert_eq!(
            json("zeta: 1\nalpha: [a, 2, true, null]\nnested: {k: 1.5}\n"),
            r#"{"zeta":1,"alpha":["a",2,true,null],"nested":{"k":1.5}}"#
        );
        assert_eq!(json("just a string"), r#""just a string""#);
        assert_eq!(
            json("{\"b\": 1e3, \"a\": \"y\"}"),
            r#"{"b":1000.0,"a":"y"}"#
        );
        assert_eq!(json("{b: 1e3, a: y}"), r#"{"b":"1e3","a":"y"}"#);
    }

    #[test]
    fn empty_means_not_ready_and_errors_name_the_line() {
        assert_eq!(state_to_json("  \n").unwrap(), None);
        let e = state_to_json("a: 1\nb: [unclosed\nc: 3\n").unwrap_err();
        assert!(e.starts_with("invalid YAML"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(
            !e.contains('\n'),
            "one line for logs and the status API: {e}"
        );
    }

    #[test]
    fn values_json_cannot_carry_never_refuse_the_file() {
        assert_eq!(
            json(
                "commit: 4e12345\nbig: 18446744073709551616\nf: .inf\nnan: .nan\nday: 2021-02-30\n"
            ),
            r#"{"commit":"4e12345","big":18446744073709551616,"f":".inf","nan":".nan","day":"2021-02-30"}"#
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
        let e = state_to_json(&bomb).unwrap_err();
        assert!(
            e.starts_with("the state file is beyond the bridge's limits"),
            "{e}"
        );
        // Aliases as people write them still read, each copy in full.
        let fine = "pos: &p [1, 2]\nfamiliar: {at: *p}\nme: {at: *p}\n";
        assert_eq!(
            json(fine),
            r#"{"pos":[1,2],"familiar":{"at":[1,2]},"me":{"at":[1,2]}}"#
        );
    }

    /// A bomb of work rather than of size: fifteen maps, each merging the one before it
    /// twice (377 bytes).
    #[test]
    fn merge_key_bombs_are_refused_by_the_budget() {
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}: {i}")).collect();
        let mut bomb = format!("a: &a {{{}}}\n", keys.join(", "));
        let mut prev = 'a';
        for name in 'b'..='p' {
            bomb.push_str(&format!("{name}: &{name} {{<<: [*{prev},*{prev}]}}\n"));
            prev = name;
        }
        let e = state_to_json(&bomb).unwrap_err();
        assert!(
            e.starts_with("the state file is beyond the bridge's limits"),
            "{e}"
        );
        // The cap itself: one merge key more than the bridge allows is refused, however
        // plain the file.
        let mut many = String::from("base: &base {x: 1}\n");
        for i in 0..=yaml::MAX_MERGE_KEYS {
            many.push_str(&format!("m{i}: {{<<: *base}}\n"));
        }
        let e = state_to_json(&many).unwrap_err();
        assert!(e.contains("merge"), "{e}");
        // A file that merges a few times, as people write them, still reads.
        let fine = "base: &base {x: 1, y: 2}\none: {<<: *base, z: 3}\ntwo: {<<: [*base], x: 9}\n";
        assert_eq!(
            json(fine),
            r#"{"base":{"x":1,"y":2},"one":{"x":1,"y":2,"z":3},"two":{"x":9,"y":2}}"#
        );
    }

    /// Successive versions as an agent writes them, each read from the last: the full
    /// state is what a full read gives, and the patch turns the last state into it.
    #[test]
    fn changes_read_from_the_last_version_give_full_states_and_true_patches() {
        let example = include_str!("../../examples/workshop-state.yaml");
        let versions = [
            example.to_owned(),
            example.replacen("contemplative", "curious", 1),
            example.replacen("contemplative", "curious", 1) + "visitors: [ana, bo]\n",
            format!("added_first: 1\n{example}"),
            example.replacen("mood:", "mood_was:", 1),
            example.to_owned(),
        ];
        let mut last: Option<Current> = None;
        let mut state = serde_json::Value::Null;
        for (seq, text) in (1..).zip(&versions) {
            let Read::Changed(current, snapshot) =
                snapshot_of(text.clone(), last.as_ref(), seq).unwrap()
            else {
                panic!("version {seq} is a change");
            };
            let full: serde_json::Value = serde_json::from_str(snapshot.full.as_str()).unwrap();
            assert_eq!(full["data"].to_string(), json(text), "version {seq}");
            if let Some(patch) = &snapshot.patch {
                let patch: serde_json::Value = serde_json::from_str(patch.as_str()).unwrap();
                let patch: json_patch::Patch =
                    serde_json::from_value(patch["patch"].clone()).unwrap();
                json_patch::patch(&mut state, &patch).unwrap();
                assert_eq!(state, full["data"], "the patch to version {seq}");
            }
            assert!(
                current.document.entries.is_some(),
                "version {seq} can be reread"
            );
            state = full["data"].clone();
            last = Some(current);
        }
    }

    #[test]
    fn the_example_state_file_parses() {
        let example = include_str!("../../examples/workshop-state.yaml");
        let v = read_document(example).unwrap().unwrap();
        assert_eq!(
            v.get("mood")
                .and_then(|m| m.get("primary"))
                .and_then(StateValue::as_str),
            Some("contemplative")
        );
    }
}

/// Property tests of the reader and the patch differ.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    use crate::protocol::properties_support::json_value;

    proptest! {
        // Failures print their minimal input; no regression files at the repository root.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_text_is_read_or_refused_without_panicking(text in ".{0,512}") {
            let _ = read_document(&text);
        }

        #[test]
        fn json_documents_are_read_as_the_same_json(value in json_value()) {
            for text in [serde_json::to_string(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap()] {
                let read = state_to_json(&text).map_err(TestCaseError::fail)?;
                let back: serde_json::Value = serde_json::from_str(read.as_deref().unwrap_or("null")).unwrap();
                prop_assert_eq!(&back, &value, "{}", text);
            }
        }

        /// Checked by an independent implementation of RFC 6902 (the json-patch crate).
        #[test]
        fn a_patch_turns_the_old_state_into_the_new(old in json_value(), new in json_value()) {
            let (before, after) = (StateValue::from(old.clone()), StateValue::from(new.clone()));
            let ops = value::diff(&before, &after);
            let patch: json_patch::Patch = serde_json::from_str(&serde_json::to_string(&ops).unwrap()).unwrap();
            let mut doc = old;
            json_patch::patch(&mut doc, &patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(doc, new);
        }
    }
}
