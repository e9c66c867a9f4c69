//! The state file for the agent: read as clients see it, changed by a JSON merge patch
//! (RFC 7396), written atomically, never over a change made meanwhile.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::durable;
use crate::safe_open::{self, Links, Refusal};
use crate::state::value::{Map, StateValue};
use crate::state::{is_json, read_document, to_yaml};

/// The state file and its limit.
#[derive(Debug, Clone)]
pub(crate) struct StateAccess {
    path: PathBuf,
    max_bytes: u64,
}

/// The file as read: its bytes' version and its value (`None`: no file, or no document).
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) version: String,
    pub(crate) value: Option<StateValue>,
    text: Option<String>,
}

/// How an update ended.
#[derive(Debug)]
pub(crate) enum Updated {
    /// Written; the new version.
    Written(String),
    /// The patch changes nothing; nothing was written.
    Unchanged(String),
}

/// The version of a missing file.
pub(crate) const ABSENT: &str = "absent";

impl StateAccess {
    pub(crate) fn new(path: PathBuf, max_bytes: u64) -> Self {
        Self { path, max_bytes }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state as the bridge does.
    pub(crate) async fn read(&self) -> Result<Read, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_now())
            .await
            .map_err(|e| format!("the state file could not be read: {e}"))?
    }

    fn read_text(&self) -> Result<Option<String>, String> {
        match safe_open::read_to_string(&self.path, Links::Follow, self.max_bytes) {
            Ok(text) => Ok(Some(text)),
            Err(Refusal::NotFound) => Ok(None),
            Err(Refusal::TooLarge(len)) => Err(format!(
                "the state file {} is {len} bytes, over the {}-byte limit",
                self.path.display(),
                self.max_bytes
            )),
            Err(Refusal::Symlink | Refusal::NotRegular) => Err(format!(
                "the state file {} is not a regular file",
                self.path.display()
            )),
            Err(Refusal::Grew) => Err(format!(
                "the state file {} grew over the {}-byte limit while being read",
                self.path.display(),
                self.max_bytes
            )),
            Err(Refusal::Open(e) | Refusal::Read(e)) => Err(format!(
                "cannot read the state file {}: {e}",
                self.path.display()
            )),
        }
    }

    fn read_now(&self) -> Result<Read, String> {
        let text = self.read_text()?;
        let value = match &text {
            Some(text) => read_document(text).map_err(|e| {
                format!(
                    "the state file {} does not parse ({e}); fix it by hand, update_state will not write over it",
                    self.path.display()
                )
            })?,
            None => None,
        };
        Ok(Read {
            version: version(text.as_deref()),
            value,
            text,
        })
    }

    /// Applies `patch` (RFC 7396) to the state and writes it as YAML, if the file is still
    /// at `expected` (when given) and does not change between this read and the write.
    pub(crate) async fn update(
        &self,
        patch: serde_json::Value,
        expected: Option<String>,
    ) -> Result<Updated, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.update_now(patch, expected.as_deref()))
            .await
            .map_err(|e| format!("the state file could not be written: {e}"))?
    }

    fn update_now(
        &self,
        patch: serde_json::Value,
        expected: Option<&str>,
    ) -> Result<Updated, String> {
        let read = self.read_now()?;
        if let Some(expected) = expected
            && expected != read.version
        {
            return Err(format!(
                "the state file changed since version {expected} was read (it is now {}); read it again with get_state and make the patch against what is there now",
                read.version
            ));
        }
        let had_file = read.text.is_some();
        let mut value = read.value.unwrap_or(StateValue::Null);
        let before = value.clone();
        merge(&mut value, StateValue::from(patch));
        if had_file && value == before {
            return Ok(Updated::Unchanged(read.version));
        }
        // The agent's format is kept: a state written as JSON stays JSON.
        let yaml = match &read.text {
            Some(text) if is_json(text) => json_text(&value)?,
            _ => to_yaml(&value)?,
        };
        if yaml.len() as u64 > self.max_bytes {
            return Err(format!(
                "the new state would be {} bytes, over the bridge's {}-byte limit",
                yaml.len(),
                self.max_bytes
            ));
        }
        // Where the bytes go: through a symlink to the file it leads to, which stays a link.
        let dest = match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(&self.path)
                .map_err(|e| {
                    format!(
                        "the state file {} is a symlink that cannot be followed: {e}",
                        self.path.display()
                    )
                })?,
            _ => self.path.clone(),
        };
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        // The compare of compare-and-swap: the file must still hold what the patch was
        // applied to. (A write landing between this check and the rename, a few
        // microseconds, is the one it cannot see.)
        if self.read_text()? != read.text {
            return Err(
                "the state file changed while the update was being made; nothing was written: read it with get_state and try again"
                    .to_owned(),
            );
        }
        let written = if had_file {
            let permissions = std::fs::metadata(&dest).ok().map(|m| m.permissions());
            durable::replace_with_permissions(&dir, &dest, yaml.as_bytes(), permissions)
        } else {
            durable::write_new(&dir, &dest, yaml.as_bytes())
        };
        written.map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => "the state file appeared while the update was being made; nothing was written: read it with get_state and try again".to_owned(),
            io::ErrorKind::NotFound => format!("the folder of the state file, {}, does not exist", dir.display()),
            _ => format!("cannot write the state file {}: {e}", dest.display()),
        })?;
        Ok(Updated::Written(version(Some(&yaml))))
    }
}

/// `value` as pretty JSON (every digit of a big integer kept), checked by reading it back.
fn json_text(value: &StateValue) -> Result<String, String> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| format!("the state cannot be written as JSON: {e}"))?;
    text.push('\n');
    match read_document(&text) {
        Ok(Some(back)) if back == *value => Ok(text),
        _ => Err("the state cannot be written as JSON that reads back the same".to_owned()),
    }
}

/// A short fingerprint of the file's bytes (`absent` for no file).
pub(crate) fn version(text: Option<&str>) -> String {
    match text {
        None => ABSENT.to_owned(),
        Some(text) => {
            let digest = Sha256::digest(text.as_bytes());
            digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
        }
    }
}

/// RFC 7396: a patch object sets its members (`null` removes one), recursively; anything
/// else replaces the target. Members keep their place; new ones go last.
pub(crate) fn merge(target: &mut StateValue, patch: StateValue) {
    let StateValue::Map(patch) = patch else {
        *target = patch;
        return;
    };
    if !matches!(target, StateValue::Map(_)) {
        *target = StateValue::Map(Box::default());
    }
    let StateValue::Map(map) = target else {
        return;
    };
    let mut pairs = std::mem::take(map.as_mut()).into_pairs();
    for (key, value) in patch.into_pairs() {
        let at = pairs.iter().position(|(k, _)| *k == key);
        match (at, value) {
            (Some(at), StateValue::Null) => {
                pairs.remove(at);
            }
            (None, StateValue::Null) => {}
            (Some(at), value) => merge(&mut pairs[at].1, value),
            (None, value) => {
                let mut fresh = StateValue::Null;
                merge(&mut fresh, value);
                pairs.push((key, fresh));
            }
        }
    }
    **map = Map::from_pairs(pairs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Checked against an independent implementation of RFC 7396 (the json-patch crate).
    #[test]
    fn merge_is_rfc_7396() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"})),
            (json!({"a": "b"}), json!({"a": null})),
            (json!({"a": "b", "b": "c"}), json!({"a": null})),
            (json!({"a": ["b"]}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
            ),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"])),
            (json!({"a": "foo"}), json!(null)),
            (json!({"a": "foo"}), json!("bar")),
            (json!({"e": null}), json!({"a": 1})),
            (json!([1, 2]), json!({"a": "b", "c": null})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}})),
        ];
        for (doc, patch) in cases {
            let mut expected = doc.clone();
            json_patch::merge(&mut expected, &patch);
            let mut ours = StateValue::from(doc.clone());
            merge(&mut ours, StateValue::from(patch.clone()));
            let ours: serde_json::Value = serde_json::from_str(&ours.to_json()).unwrap();
            assert_eq!(ours, expected, "{doc} patched with {patch}");
        }
    }

    #[tokio::test]
    async fn a_json_state_stays_json_a_yaml_one_yaml_and_a_missing_one_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let json_file = dir.path().join("state.json");
        std::fs::write(&json_file, "{\"a\": 1, \"y\": \"y\"}").unwrap();
        let access = StateAccess::new(json_file.clone(), 1 << 20);
        access.update(json!({"b": [true]}), None).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&json_file).unwrap(),
            "{\n  \"a\": 1,\n  \"y\": \"y\",\n  \"b\": [\n    true\n  ]\n}\n"
        );

        let yaml_file = dir.path().join("state.yaml");
        std::fs::write(&yaml_file, "a: 1 # one\n").unwrap();
        let access = StateAccess::new(yaml_file.clone(), 1 << 20);
        let before = access.read().await.unwrap().version;
        assert!(matches!(
            access.update(json!({"a": 1}), Some(before.clone())).await,
            Ok(Updated::Unchanged(_))
        ));
        access
            .update(json!({"b": "on"}), Some(before.clone()))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&yaml_file).unwrap(),
            "a: 1\nb: \"on\"\n"
        );
        // The old version is refused now, and the file left as it is.
        let refused = access
            .update(json!({"c": 3}), Some(before))
            .await
            .unwrap_err();
        assert!(refused.contains("changed since"), "{refused}");
        assert_eq!(
            std::fs::read_to_string(&yaml_file).unwrap(),
            "a: 1\nb: \"on\"\n"
        );

        let missing = StateAccess::new(dir.path().join("new.yaml"), 1 << 20);
        assert_eq!(missing.read().await.unwrap().version, ABSENT);
        missing
            .update(json!({"mood": "calm"}), Some(ABSENT.to_owned()))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("new.yaml")).unwrap(),
            "mood: calm\n"
        );
    }

    #[test]
    fn members_keep_their_place_and_new_ones_go_last() {
        let mut v = StateValue::from(json!({"z": 1, "a": 2, "m": 3}));
        merge(&mut v, StateValue::from(json!({"a": 9, "b": 4, "z": null})));
        assert_eq!(v.to_json(), r#"{"a":9,"m":3,"b":4}"#);
    }
}
