//! Reading again only what changed. An agent rewrites its whole state file to change a few
//! keys; reading 200 KB of YAML costs milliseconds, reading the changed entries microseconds.
//!
//! The last read recorded where each top-level entry begins (`yaml::Document::entries`).
//! The entries that lie wholly in the bytes the new text shares with the old at its start
//! (the head) or at its end (the tail) are taken from the last value; the bytes between are
//! read as a document of their own, and the three are joined as a full read joins them.
//! Top-level members are shared between versions (`StateValue::Shared`), so keeping an
//! unchanged one costs a reference count, and comparing it for the patch, a pointer.
//!
//! Why this reads exactly what a full read would: an entry begins with an unindented plain
//! key starting with a letter, digit or `_`. Such a line ends whatever came before it at the
//! top level of a block map (a plain or block scalar, a nested block collection), and cannot
//! occur inside a quoted scalar or a flow collection that the full read would still be in,
//! since the middle read on its own must end with all of those closed. So a head entry,
//! whose bytes and the first byte after it are unchanged, and a tail entry, whose bytes and
//! the line break before it are unchanged and which follows a middle that ends at the top
//! level, read as before. Anything else (the middle is not such a map, it ends the document
//! with `...`, it fails to read) falls back to the full read, which also gives the error
//! message its true line numbers. The differential and property tests compare both readings.

use super::scalar::Schema;
use super::value::{Map, StateValue};
use super::yaml::{self, Document};

/// The document `text` holds, read from `last` (the document of `last_text`) by reading
/// only the entries that changed; `None` where only a full read can tell.
pub(super) fn reread(last_text: &str, last: &Document, text: &str) -> Option<Document> {
    let (StateValue::Map(last_map), Some(starts)) = (&last.value, &last.entries) else {
        return None;
    };
    let (old, new) = (last_text.as_bytes(), text.as_bytes());
    let prefix = common_prefix(old, new);
    let suffix = common_suffix(&old[prefix..], &new[prefix..]);
    let first = *starts.first()?;
    if prefix <= first {
        return None;
    }
    let end_of = |i: usize| starts.get(i + 1).copied().unwrap_or(old.len());
    // Entries whose bytes, and the first byte after them, are unchanged.
    let head = (0..starts.len())
        .take_while(|&i| end_of(i) < prefix)
        .count();
    // Entries whose bytes, and the line break before them, are unchanged.
    let tail_from = (head + 1..starts.len())
        .find(|&i| starts[i] > old.len() - suffix)
        .unwrap_or(starts.len());
    let shift = |at: usize| at + new.len() - old.len();
    let middle_end = if tail_from < starts.len() {
        shift(starts[tail_from])
    } else {
        new.len()
    };
    let middle_start = starts[head];
    let middle =
        yaml::read_document(text.get(middle_start..middle_end)?, Schema::Yaml11).ok()??;
    let (StateValue::Map(middle_map), Some(middle_starts)) = (middle.value, middle.entries) else {
        return None;
    };
    let tail = tail_from < starts.len();
    if middle_starts.first() != Some(&0) || (tail && middle.explicit_end) {
        return None;
    }

    let pairs: Vec<(String, StateValue)> = last_map.pairs()[..head]
        .iter()
        .cloned()
        .chain(middle_map.shared().into_pairs())
        .chain(last_map.pairs()[tail_from..].iter().cloned())
        .collect();
    let count = pairs.len();
    let map = Map::from_pairs(pairs);
    // A key the middle repeats from the head or the tail: the value is right, but one entry
    // no longer makes one member, so the next read is a full one.
    let entries = (map.len() == count).then(|| {
        starts[..head]
            .iter()
            .copied()
            .chain(middle_starts.iter().map(|at| at + middle_start))
            .chain(starts[tail_from..].iter().map(|&at| shift(at)))
            .collect()
    });
    Some(Document {
        value: StateValue::Map(Box::new(map)),
        entries,
        explicit_end: if tail {
            last.explicit_end
        } else {
            middle.explicit_end
        },
    })
}

/// `document`, its top-level members made shared if it can be reread, so the next version
/// keeps the unchanged ones without copying them.
pub(super) fn shareable(document: Document) -> Document {
    match document {
        Document {
            value: StateValue::Map(map),
            entries: entries @ Some(_),
            explicit_end,
        } => Document {
            value: StateValue::Map(Box::new(map.shared())),
            entries,
            explicit_end,
        },
        other => other,
    }
}

/// How many bytes `a` and `b` share at their start.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    // Compared a block at a time: the agent's files are mostly unchanged.
    const BLOCK: usize = 64;
    let blocks = a
        .chunks_exact(BLOCK)
        .zip(b.chunks_exact(BLOCK))
        .take_while(|(x, y)| x == y)
        .count();
    let from = blocks * BLOCK;
    from + a[from..]
        .iter()
        .zip(&b[from..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// How many bytes `a` and `b` share at their end.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 64;
    let blocks = a
        .rchunks_exact(BLOCK)
        .zip(b.rchunks_exact(BLOCK))
        .take_while(|(x, y)| x == y)
        .count();
    let from = blocks * BLOCK;
    from + a[..a.len() - from]
        .iter()
        .rev()
        .zip(b[..b.len() - from].iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> Option<Document> {
        yaml::read_document(text, Schema::Yaml11).ok().flatten()
    }

    /// `new` read from `old`: `Some` when only what changed was read, and then the same as
    /// a full read in value and layout.
    fn changed(old: &str, new: &str) -> Option<String> {
        let last = full(old).expect("the old text reads");
        let document = reread(old, &last, new)?;
        let whole = full(new).expect("a reread text reads in full too");
        assert_eq!(document.value, whole.value, "{old:?} -> {new:?}");
        assert_eq!(document.entries, whole.entries, "{old:?} -> {new:?}");
        assert_eq!(document.explicit_end, whole.explicit_end);
        Some(document.value.to_json())
    }

    #[test]
    fn only_the_changed_entry_is_read_and_the_rest_kept() {
        let old = "meta:\n  tick: 1\nobjects:\n  - id: a\n    at: [1, 2]\n";
        assert_eq!(
            changed(old, &old.replace("tick: 1", "tick: 2")).as_deref(),
            Some(r#"{"meta":{"tick":2},"objects":[{"id":"a","at":[1,2]}]}"#)
        );
        // Entries added, removed and moved between unchanged ones.
        let old = "a: 1\nb: 2\nc: 3\nd: 4\n";
        assert!(changed(old, "a: 1\nb: 2\nx: 9\nc: 3\nd: 4\n").is_some());
        assert!(changed(old, "a: 1\nc: 3\nd: 4\n").is_some());
        assert!(changed(old, "a: 1\nc: 3\nb: 2\nd: 4\n").is_some());
        assert!(changed(old, "a: 1\nb: 2\nc: 3\nd: 5").is_some());
    }

    #[test]
    fn a_change_at_an_entry_s_edge_reads_the_entry_again() {
        // The new line continues the plain scalar before it.
        assert_eq!(
            changed("a: foo\nb: 1\n", "a: foo\n  bar\nb: 1\n").as_deref(),
            Some(r#"{"a":"foo bar","b":1}"#)
        );
        // An unindented list becomes the value of the key before it.
        assert_eq!(
            changed("a:\nb: 1\nc: 2\n", "a:\n- y\nb: 1\nc: 2\n").as_deref(),
            Some(r#"{"a":["y"],"b":1,"c":2}"#)
        );
        // A block scalar grows a line.
        assert_eq!(
            changed("t: |\n  x\nb: 1\n", "t: |\n  x\n  y\nb: 1\n").as_deref(),
            Some(r#"{"t":"x\ny\n","b":1}"#)
        );
    }

    #[test]
    fn what_only_a_full_read_can_tell_is_left_to_it() {
        let old = "a: 1\nb: 2\nc: 3\n";
        // A quote left open would swallow the unchanged lines after it.
        assert_eq!(
            changed("a: 1\nb: 2\nc: 3\nd: 4\n", "a: 1\nb: \"2\nc: 3\nd: 4\n"),
            None
        );
        assert_eq!(changed(old, "a: 1\nb: [2,\nc: 3\n"), None);
        // The document ends in the middle: what follows is a second document.
        assert_eq!(changed(old, "a: 1\nb: 2\n...\nc: 3\n"), None);
        assert_eq!(changed(old, "a: 1\nb: 2\n---\nc: 3\n"), None);
        // Anchors, aliases and merge keys reach across entries.
        assert_eq!(changed(old, "a: 1\nb: &x 2\nc: 3\n"), None);
        assert_eq!(
            changed("a: &x 1\nb: 2\nc: 3\n", "a: &x 1\nb: *x\nc: 3\n"),
            None
        );
        // A file the last read could not take apart is read in full.
        let aliased = "a: &x 1\nb: *x\nc: 3\n";
        assert_eq!(changed(aliased, "a: &x 1\nb: *x\nc: 4\n"), None);
        assert_eq!(
            changed(
                "%YAML 1.2\n---\na: 1\nb: 2\n",
                "%YAML 1.2\n---\na: 1\nb: 3\n"
            ),
            None
        );
        assert_eq!(
            changed(
                "%TAG !e! tag:e,2000:\n---\na: 1\nb: 2\n",
                "%TAG !e! tag:e,2000:\n---\na: 1\nb: 3\n"
            ),
            None
        );
        // PyYAML's `version=(1, 1)` changes nothing.
        assert!(
            changed(
                "%YAML 1.1\n---\na: 1\nb: 2\n",
                "%YAML 1.1\n---\na: 1\nb: 3\n"
            )
            .is_some()
        );
        assert_eq!(changed("'q': 1\nb: 2\n", "'q': 1\nb: 3\n"), None);
        assert_eq!(
            changed("a: 1\n  # x\nb: 2\n", "a: 1\n  # x\nb: 3\n").as_deref(),
            Some(r#"{"a":1,"b":3}"#)
        );
    }

    #[test]
    fn a_repeated_key_reads_right_and_the_next_read_is_full() {
        let old = "a: 1\nb: 2\nc: 3\n";
        let last = full(old).unwrap();
        let new = "a: 1\nb: 2\nc: 3\na: 9\n";
        let document = reread(old, &last, new).unwrap();
        assert_eq!(document.value.to_json(), r#"{"a":9,"b":2,"c":3}"#);
        assert_eq!(document.entries, None);
        assert_eq!(full(new).unwrap().entries, None);
    }

    #[test]
    fn common_ends_are_found_across_blocks() {
        let a: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
        for at in [0, 1, 63, 64, 65, 200, 299] {
            let mut b = a.clone();
            b[at] ^= 1;
            assert_eq!(common_prefix(&a, &b), at);
            assert_eq!(common_suffix(&a, &b), a.len() - at - 1);
        }
        assert_eq!(common_prefix(&a, &a[..100]), 100);
        assert_eq!(common_suffix(&a, &a[200..]), 100);
    }
}

/// Random files and random edits: reading only what changed gives what a full read gives.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Lines that make a well-formed entry.
    fn entry_line() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => "[a-e]{1,2}: [a-z0-9 ]{0,4}",
            4 => Just("  nested: 1".to_owned()),
            2 => Just("  n: y".to_owned()),
            2 => Just("k: |".to_owned()),
            2 => Just("  x: 1".to_owned()),
            2 => Just("  - item".to_owned()),
            1 => Just("    deeper".to_owned()),
            1 => Just("  block text".to_owned()),
            1 => Just("a:".to_owned()),
            1 => Just("# note".to_owned()),
            1 => Just(String::new()),
        ]
    }

    /// Lines that make entries' edges interesting, and some that break a file.
    fn any_line() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => entry_line(),
            1 => Just("- top".to_owned()),
            1 => Just("k: >-".to_owned()),
            1 => Just("q: \"open".to_owned()),
            1 => Just("close\"".to_owned()),
            1 => Just("f: [1,".to_owned()),
            1 => Just("  2]".to_owned()),
            1 => Just("...".to_owned()),
            1 => Just("---".to_owned()),
            1 => Just("%YAML 1.2".to_owned()),
            1 => Just("%YAML 1.1".to_owned()),
            1 => Just("a: &n 1".to_owned()),
            1 => Just("b: *n".to_owned()),
            1 => Just("'s': 1".to_owned()),
            1 => Just("<<: {m: 1}".to_owned()),
            1 => Just("_u: y".to_owned()),
            1 => Just("e: \u{e9}t\u{e9}".to_owned()),
            1 => Just("c: 1 # end".to_owned()),
            1 => Just("  ".to_owned()),
            1 => Just("-x: 1".to_owned()),
        ]
    }

    /// Entries with keys of their own, each a key line and what follows it.
    fn file() -> impl Strategy<Value = Vec<String>> {
        let entry = (
            prop_oneof![
                Just(" v"),
                Just(""),
                Just(" |"),
                Just(" [1, 2]"),
                Just(" y"),
                Just(" 1e3"),
                Just(" !e!x 1")
            ],
            proptest::collection::vec(prop_oneof![4 => entry_line(), 1 => any_line()], 0..3),
        );
        let head = prop_oneof![
            4 => Just(""),
            1 => Just("---"),
            1 => Just("# head"),
            1 => Just("%YAML 1.1\n---"),
            1 => Just("%YAML 1.2\n---"),
            1 => Just("%TAG !e! tag:e,2000:\n---"),
        ];
        (head, proptest::collection::vec(entry, 1..8)).prop_map(|(head, entries)| {
            head.lines()
                .map(str::to_owned)
                .chain(
                    entries
                        .into_iter()
                        .enumerate()
                        .flat_map(|(i, (value, lines))| {
                            std::iter::once(format!("k{i}:{value}")).chain(lines)
                        }),
                )
                .collect()
        })
    }

    /// Up to three lines replaced, inserted, removed or joined to the next.
    fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, String)>> {
        proptest::collection::vec((any::<prop::sample::Index>(), 0..4u8, any_line()), 1..4)
    }

    fn text(lines: &[String], final_break: bool) -> String {
        let mut text = lines.join("\n");
        if final_break {
            text.push('\n');
        }
        text
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn reading_only_what_changed_reads_what_a_full_read_reads(
            old in file(),
            edits in edits(),
            breaks in any::<(bool, bool)>(),
        ) {
            let old_text = text(&old, breaks.0);
            let Some(last) = yaml::read_document(&old_text, Schema::Yaml11).ok().flatten().map(shareable) else {
                return Ok(());
            };
            let mut new = old.clone();
            for (at, edit, line) in edits {
                let i = at.index(new.len() + 1);
                match edit {
                    0 if i < new.len() => new[i] = line,
                    2 if i < new.len() && new.len() > 1 => { new.remove(i); }
                    3 if i + 1 < new.len() => {
                        let next = new.remove(i + 1);
                        new[i].push_str(&line);
                        new[i].push_str(&next);
                    }
                    _ => new.insert(i, line),
                }
            }
            let new_text = text(&new, breaks.1);
            if let Some(document) = reread(&old_text, &last, &new_text) {
                let whole = yaml::read_document(&new_text, Schema::Yaml11);
                prop_assert!(whole.is_ok(), "{:?} -> {:?}: {:?}", old_text, new_text, whole);
                let whole = whole.unwrap();
                prop_assert!(whole.is_some());
                let whole = whole.unwrap();
                prop_assert_eq!(&document.value, &whole.value, "{:?} -> {:?}", old_text, new_text);
                prop_assert_eq!(&document.entries, &whole.entries, "{:?} -> {:?}", old_text, new_text);
                prop_assert_eq!(document.explicit_end, whole.explicit_end);
            }
        }
    }
}
