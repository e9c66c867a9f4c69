//! YAML text to a state value, as the agent's writer (PyYAML's `safe_load`) reads it.
//!
//! The events come from libyaml (a safe Rust port of the C library PyYAML itself uses);
//! this module builds the document from them with PyYAML's rules for scalars (see
//! `scalar.rs`), merge keys and repeated keys, and with budgets, since the file is written
//! by a program that may be wrong or hostile: nesting depth, merge keys, and how much
//! aliases may copy.

use std::collections::HashMap;

use libyaml_safer::{EventData, Parser, ScalarStyle};

use super::scalar::{self, Schema};
use super::value::{Map, StateValue};

/// How deep lists and maps may nest.
pub(crate) const MAX_DEPTH: usize = 256;
/// Most merge keys (`<<`) a file may use. Agents' writers never write one, and maps
/// merging each other twice, fifteen deep, are a few hundred bytes of exponential work.
pub(crate) const MAX_MERGE_KEYS: usize = 256;
/// Most values aliases may copy, all aliases together.
pub(crate) const MAX_ALIAS_VALUES: usize = 1_000_000;
/// Most bytes of text aliases may copy, all aliases together.
pub(crate) const MAX_ALIAS_BYTES: usize = 16 * 1024 * 1024;

/// Why a file was not read. `Display` is one line, for logs and the status API.
#[derive(Debug, thiserror::Error)]
pub(crate) enum YamlError {
    /// Not YAML.
    #[error("invalid YAML: {0}")]
    Syntax(String),
    /// YAML, but it nests or expands beyond the budgets.
    #[error("the state file is beyond the bridge's limits: {0}")]
    Budget(String),
    /// More than one document.
    #[error(
        "invalid YAML: the file holds more than one document (a second `---`); the state is one document"
    )]
    SeveralDocuments,
}

/// Reads `text`; `Ok(None)` when it holds no document (blank, or only comments).
/// `schema` applies unless the document declares `%YAML 1.2`.
pub(crate) fn read(text: &str, schema: Schema) -> Result<Option<StateValue>, YamlError> {
    Ok(read_document(text, schema)?.map(|document| document.value))
}

/// A document, and where its top-level entries begin when each can be read on its own.
#[derive(Debug)]
pub(crate) struct Document {
    /// What the document holds.
    pub(crate) value: StateValue,
    /// The byte offset of each top-level key, one per member of `value`, when the document
    /// is a block map whose entries depend on nothing outside their own bytes: keys plain
    /// and unindented, starting with a letter, digit or `_`, and no `%YAML 1.2` or `%TAG`
    /// directive, anchor, alias or merge key anywhere, nor a repeated top-level key. `None`
    /// otherwise.
    pub(crate) entries: Option<Vec<usize>>,
    /// Whether the document ends with an explicit `...`.
    pub(crate) explicit_end: bool,
}

/// As [`read`], with the layout of the top-level entries.
pub(crate) fn read_document(text: &str, schema: Schema) -> Result<Option<Document>, YamlError> {
    // libyaml-safer 0.3 can panic at an end of input inside a block scalar with no line
    // break after it, so the parser is always given one (PyYAML ends every file with one);
    // `parse` takes it back out of a block scalar that ends the file.
    let owned;
    let (text, added_break) = if text.ends_with(['\n', '\r']) {
        (text, false)
    } else {
        owned = format!("{text}\n");
        (owned.as_str(), true)
    };
    // Any other panic in the parser refuses this file instead of ending the reader.
    std::panic::catch_unwind(|| parse(text, added_break, schema)).unwrap_or_else(|_| {
        Err(YamlError::Syntax(
            "the YAML parser failed on this file".to_owned(),
        ))
    })
}

fn parse(text: &str, added_break: bool, schema: Schema) -> Result<Option<Document>, YamlError> {
    let mut input = text.as_bytes();
    let mut parser = Parser::new();
    parser.set_input_string(&mut input);
    let mut composer = Composer::new(schema);
    let mut document = None;
    loop {
        let mut event = parser
            .parse()
            .map_err(|e| YamlError::Syntax(one_line(&e)))?;
        composer
            .layout
            .note(&event, &composer.stack, text.as_bytes());
        match event.data {
            EventData::StreamEnd => return Ok(document),
            EventData::DocumentStart {
                version_directive,
                ref tag_directives,
                ..
            } => {
                if document.is_some() {
                    return Err(YamlError::SeveralDocuments);
                }
                // The schema of a `%YAML 1.2` document and the names `%TAG` gives apply to
                // all of it; an entry read on its own would not see them.
                let yaml12 = version_directive.is_some_and(|v| (v.major, v.minor) == (1, 2));
                if yaml12 || !tag_directives.is_empty() {
                    composer.layout.entries = None;
                }
                composer.schema = match version_directive {
                    Some(v) if (v.major, v.minor) == (1, 2) => Schema::Yaml12,
                    _ => schema,
                };
            }
            EventData::DocumentEnd { implicit } => {
                document = composer.finished.take().map(|value| {
                    let members = match &value {
                        StateValue::Map(map) => map.len(),
                        _ => 0,
                    };
                    let entries = composer
                        .layout
                        .entries
                        .take()
                        .filter(|starts| starts.len() == members);
                    Document {
                        value,
                        entries,
                        explicit_end: !implicit,
                    }
                });
            }
            EventData::Scalar {
                ref mut value,
                style: ScalarStyle::Literal | ScalarStyle::Folded,
                ..
            } if added_break && event.end_mark.index >= text.len() as u64 => {
                // A block scalar that ends the file keeps (`|`, `|+`) the line break only
                // because it was added: without it, as the file was written, it has none.
                if value.ends_with('\n') {
                    value.pop();
                }
                composer
                    .event(event.data)
                    .map_err(|e| YamlError::Budget(format!("{e} ({})", event.start_mark)))?;
            }
            data => composer
                .event(data)
                .map_err(|e| YamlError::Budget(format!("{e} ({})", event.start_mark)))?,
        }
    }
}

/// Whether the next node is a key of the top-level map.
fn at_top_key(stack: &[Frame]) -> bool {
    matches!(stack, [Frame::Map { key: None, .. }])
}

/// Where the top-level entries begin, while that alone is enough to re-read one of them
/// (see [`Document::entries`]).
struct Layout {
    entries: Option<Vec<usize>>,
}

impl Layout {
    /// Takes in `event`, seen with `stack` as it was before it.
    fn note(&mut self, event: &libyaml_safer::Event, stack: &[Frame], text: &[u8]) {
        let Some(entries) = &mut self.entries else {
            return;
        };
        let keep = match &event.data {
            EventData::Alias { .. } => false,
            EventData::MappingStart {
                anchor, tag, style, ..
            } => {
                anchor.is_none()
                    && !at_top_key(stack)
                    && (!stack.is_empty()
                        || (tag.is_none() && *style == libyaml_safer::MappingStyle::Block))
            }
            EventData::SequenceStart { anchor, .. } => {
                anchor.is_none() && !stack.is_empty() && !at_top_key(stack)
            }
            EventData::Scalar {
                anchor, tag, style, ..
            } => {
                if anchor.is_some() || stack.is_empty() {
                    false
                } else if at_top_key(stack) {
                    let at = usize::try_from(event.start_mark.index).unwrap_or(usize::MAX);
                    let plain_key = tag.is_none()
                        && *style == ScalarStyle::Plain
                        && event.start_mark.column == 0
                        && text
                            .get(at)
                            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
                    if plain_key {
                        entries.push(at);
                    }
                    plain_key
                } else {
                    true
                }
            }
            _ => true,
        };
        if !keep {
            self.entries = None;
        }
    }
}

/// libyaml's error as one line: what, and where.
fn one_line(e: &libyaml_safer::Error) -> String {
    let text = e.to_string();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A collection being built.
enum Frame {
    List {
        items: Vec<StateValue>,
        anchor: Option<Anchored>,
    },
    Map {
        pairs: Vec<(String, StateValue)>,
        key: Option<Key>,
        /// What `<<` keys brought in, in PyYAML's order; own keys are laid over them.
        merged: Vec<(String, StateValue)>,
        anchor: Option<Anchored>,
    },
}

/// A key waiting for its value.
enum Key {
    Text(String),
    /// A plain `<<`.
    Merge,
}

/// An anchor on a collection, with what had been built when it opened, so its size is
/// known when it closes.
struct Anchored {
    name: String,
    start: Size,
}

/// How much has been built, to charge an alias the size of what it copies.
#[derive(Clone, Copy, Default)]
struct Size {
    values: usize,
    bytes: usize,
}

struct Composer {
    schema: Schema,
    stack: Vec<Frame>,
    anchors: HashMap<String, (StateValue, Size)>,
    built: Size,
    copied: Size,
    merges: usize,
    finished: Option<StateValue>,
    layout: Layout,
}

impl Composer {
    fn new(schema: Schema) -> Self {
        Self {
            schema,
            stack: Vec::new(),
            anchors: HashMap::new(),
            built: Size::default(),
            copied: Size::default(),
            merges: 0,
            finished: None,
            layout: Layout {
                entries: Some(Vec::new()),
            },
        }
    }

    fn event(&mut self, data: EventData) -> Result<(), String> {
        match data {
            EventData::Scalar {
                anchor,
                tag,
                value,
                style,
                ..
            } => {
                self.built.values += 1;
                self.built.bytes += value.len();
                let merge_key = style == ScalarStyle::Plain
                    && tag.is_none()
                    && value == "<<"
                    && matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                if merge_key {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(Key::Merge);
                    }
                    return Ok(());
                }
                // `!` makes a scalar a string; a tag of YAML's repository is constructed;
                // any other tag is ignored, the scalar read as if it had none.
                let node = match tag.as_deref() {
                    Some("!") => StateValue::Text(value),
                    Some(tag) => match scalar::tagged(tag, value) {
                        Ok(node) => node,
                        Err(value) => self.untagged(value, style),
                    },
                    None => self.untagged(value, style),
                };
                if let Some(name) = anchor {
                    let size = Size {
                        values: 1,
                        bytes: node_bytes(&node),
                    };
                    self.anchors.insert(name, (node.clone(), size));
                }
                self.add(node)
            }
            EventData::Alias { anchor } => {
                let Some((node, size)) = self.anchors.get(&anchor) else {
                    return Err(format!("the alias *{anchor} names no anchor before it"));
                };
                self.copied.values += size.values;
                self.copied.bytes += size.bytes;
                if self.copied.values > MAX_ALIAS_VALUES {
                    return Err(format!(
                        "its aliases copy more than {MAX_ALIAS_VALUES} values"
                    ));
                }
                if self.copied.bytes > MAX_ALIAS_BYTES {
                    return Err(format!(
                        "its aliases copy more than {} MiB of text",
                        MAX_ALIAS_BYTES >> 20
                    ));
                }
                let node = node.clone();
                self.built.values += size.values;
                self.built.bytes += size.bytes;
                self.add(node)
            }
            EventData::SequenceStart { anchor, .. } => {
                let anchor = self.anchored(anchor);
                self.open(Frame::List {
                    items: Vec::new(),
                    anchor,
                })
            }
            EventData::MappingStart { anchor, .. } => {
                let anchor = self.anchored(anchor);
                self.open(Frame::Map {
                    pairs: Vec::new(),
                    key: None,
                    merged: Vec::new(),
                    anchor,
                })
            }
            EventData::SequenceEnd | EventData::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::List { items, anchor }) => (StateValue::List(items), anchor),
                    Some(Frame::Map {
                        pairs,
                        mut merged,
                        anchor,
                        ..
                    }) => {
                        // PyYAML's order: merged keys first, own keys laid over them.
                        let pairs = if merged.is_empty() {
                            pairs
                        } else {
                            merged.extend(pairs);
                            merged
                        };
                        (StateValue::Map(Box::new(Map::from_pairs(pairs))), anchor)
                    }
                    None => return Err("a collection closes that never opened".to_owned()),
                };
                if let Some(Anchored { name, start }) = anchor {
                    let size = Size {
                        values: self.built.values - start.values + 1,
                        bytes: self.built.bytes - start.bytes,
                    };
                    self.anchors.insert(name, (node.clone(), size));
                }
                self.built.values += 1;
                self.add(node)
            }
            EventData::StreamStart { .. }
            | EventData::StreamEnd
            | EventData::DocumentStart { .. }
            | EventData::DocumentEnd { .. } => Ok(()),
        }
    }

    fn untagged(&self, value: String, style: ScalarStyle) -> StateValue {
        if style == ScalarStyle::Plain {
            scalar::plain(value, self.schema)
        } else {
            StateValue::Text(value)
        }
    }

    fn anchored(&self, anchor: Option<String>) -> Option<Anchored> {
        anchor.map(|name| Anchored {
            name,
            start: self.built,
        })
    }

    fn open(&mut self, frame: Frame) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("it nests deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(frame);
        Ok(())
    }

    /// Puts a finished node where it belongs: the document, a list, or a map as key or value.
    fn add(&mut self, node: StateValue) -> Result<(), String> {
        let Some(frame) = self.stack.last_mut() else {
            self.finished = Some(node);
            return Ok(());
        };
        match frame {
            Frame::List { items, .. } => items.push(node),
            Frame::Map {
                pairs, key, merged, ..
            } => match key.take() {
                None => *key = Some(Key::Text(scalar::key_text(node))),
                Some(Key::Text(k)) => pairs.push((k, node)),
                Some(Key::Merge) => {
                    self.layout.entries = None;
                    self.merges += 1;
                    if self.merges > MAX_MERGE_KEYS {
                        return Err(format!(
                            "it uses more than {MAX_MERGE_KEYS} merge keys (<<)"
                        ));
                    }
                    match mergeable(node) {
                        Ok(sources) => merged.extend(sources),
                        // Not maps: PyYAML refuses the file; here `<<` is an ordinary key.
                        Err(node) => pairs.push(("<<".into(), node)),
                    }
                }
            },
        }
        Ok(())
    }
}

/// The members a `<<` value brings in, in PyYAML's order: a map's own, or for a list of
/// maps, the last map's members first and each earlier map's after them (so, laid over
/// them, the first map wins); or the value itself back if it cannot be merged.
fn mergeable(node: StateValue) -> Result<Vec<(String, StateValue)>, StateValue> {
    match node {
        StateValue::Map(map) => Ok(map.into_pairs()),
        StateValue::List(items) if items.iter().all(|i| matches!(i, StateValue::Map(_))) => {
            Ok(items
                .into_iter()
                .rev()
                .flat_map(|item| match item {
                    StateValue::Map(map) => map.into_pairs(),
                    _ => Vec::new(),
                })
                .collect())
        }
        other => Err(other),
    }
}

fn node_bytes(node: &StateValue) -> usize {
    match node {
        StateValue::Text(t) => t.len(),
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read11(text: &str) -> String {
        read(text, Schema::Yaml11).unwrap().unwrap().to_json()
    }

    #[test]
    fn documents_are_read_in_file_order_with_pyyaml_scalars() {
        assert_eq!(
            read11("zeta: 1\nalpha: [a, y, 1e3, 0o17, 017, ~]\n'q': \"2\"\n"),
            r#"{"zeta":1,"alpha":["a","y","1e3","0o17",15,null],"q":"2"}"#
        );
        assert_eq!(read11("just a string"), r#""just a string""#);
        assert_eq!(
            read11("? [a, b]\n: c\n1: x\n1.5: y\nnull: z\n"),
            r#"{"[\"a\",\"b\"]":"c","1":"x","1.5":"y","null":"z"}"#
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_place_and_takes_the_last_value() {
        assert_eq!(read11("a: 1\nb: 2\na: 3\n"), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn merge_keys_follow_pyyaml() {
        let text = "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc: {w: 0, <<: [*a, *b], x: 9}\n";
        // Later maps first, earlier ones over them, own keys over all.
        assert_eq!(
            read(text, Schema::Yaml11)
                .unwrap()
                .unwrap()
                .get("c")
                .unwrap()
                .to_json(),
            r#"{"y":1,"z":2,"x":9,"w":0}"#
        );
        assert_eq!(read11("m: {<<: 3}\n"), r#"{"m":{"<<":3}}"#);
        assert_eq!(read11("m: {'<<': {x: 1}}\n"), r#"{"m":{"<<":{"x":1}}}"#);
    }

    #[test]
    fn a_yaml_12_document_is_read_by_the_core_schema() {
        assert_eq!(
            read11("%YAML 1.2\n---\na: 1e3\nb: yes\nc: 0o17\n"),
            r#"{"a":1000.0,"b":"yes","c":15}"#
        );
    }

    #[test]
    fn blank_and_comment_only_text_holds_no_document() {
        assert!(read("", Schema::Yaml11).unwrap().is_none());
        assert!(read("# nothing yet\n", Schema::Yaml11).unwrap().is_none());
        assert_eq!(read11("---\n"), "null");
        let e = read("a: 1\n---\nb: 2\n", Schema::Yaml11).unwrap_err();
        assert!(e.to_string().contains("more than one document"), "{e}");
    }

    #[test]
    fn errors_are_one_line_and_say_where() {
        let e = read("a: 1\nb: [unclosed\nc: 3\n", Schema::Yaml11)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid YAML: "), "{e}");
        assert!(e.contains("line "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn a_block_scalar_at_the_end_without_a_line_break_is_read() {
        // Found by fuzzing: the parser panicked here.
        let text = "lit: |\n  linet: |\n  line - deep\n  - {x: [1, {y: 2}]!!binary }e";
        assert_eq!(
            read11(text),
            r#"{"lit":"linet: |\nline - deep\n- {x: [1, {y: 2}]!!binary }e"}"#
        );
        // As PyYAML reads them: no final line break in the file, none in the value.
        assert_eq!(read11("a: |\n  x"), r#"{"a":"x"}"#);
        assert_eq!(read11("a: |+\n  x"), r#"{"a":"x"}"#);
        assert_eq!(read11("a: >\n  x\n  y"), r#"{"a":"x y"}"#);
        assert_eq!(read11("a: |\n  x\n"), r#"{"a":"x\n"}"#);
        assert_eq!(read11("a: |\n  x\nb: 1"), r#"{"a":"x\n","b":1}"#);
    }

    #[test]
    fn a_panic_in_the_parser_refuses_the_file() {
        // libyaml-safer 0.3 reaches `panic!("TODO")` for a tag followed by a comma.
        let e = read("a: [!x, 1]\n", Schema::Yaml11)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "invalid YAML: the YAML parser failed on this file");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        let e = read(&deep, Schema::Yaml11).unwrap_err().to_string();
        assert!(e.contains("nests deeper"), "{e}");
        let fine = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(read(&fine, Schema::Yaml11).is_ok());
    }
}
