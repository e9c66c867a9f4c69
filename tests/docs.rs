//! The documents give tests by name as the proof of what they say, and settings, message
//! types and PyYAML's arguments by the names the code uses: every name they cite must be in the code, and every
//! test they cite must exist (in the file they say, when they say one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The documents that cite tests and names from the code.
const DOCUMENTS: &[&str] = &[
    "README.md",
    "docs/PROTOCOL.md",
    "docs/RELIABILITY.md",
    "docs/CLUSTER.md",
    "bench/BENCHMARKS.md",
    "examples/README.md",
];

/// Where the code is: Rust, JavaScript and Python, the fuzz targets and the app included.
const CODE: &[&str] = &[
    "src",
    "tests",
    "bench/src",
    "src-tauri/src",
    "src-tauri/tests",
    "ui",
];

/// A name with this many underscores or more is a test's (settings and message types have
/// at most three): it must be a function, not only a word somewhere.
const TEST_NAME_UNDERSCORES: usize = 4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs`, `.js` and `.py` file under `dir`, by path, with its text.
fn code_files(dir: &Path, files: &mut BTreeMap<PathBuf, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "node_modules" | "target") && !name.starts_with('.') {
                code_files(&path, files);
            }
        } else if [".rs", ".js", ".py"].iter().any(|e| name.ends_with(e)) {
            files.insert(path.clone(), std::fs::read_to_string(&path).unwrap());
        }
    }
}

fn is_identifier(word: &str) -> bool {
    word.contains('_')
        && word.starts_with(|c: char| c.is_ascii_lowercase())
        && word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The `code` spans of a Markdown line, each with the span before it (to see a file named
/// just before a test: "`hostile_files.rs`: `a_test`").
fn code_spans(line: &str) -> Vec<(String, Option<String>)> {
    let mut spans = Vec::new();
    let mut previous: Option<String> = None;
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('`') else { break };
        let span = after[..end].to_owned();
        let between_previous = &rest[..start];
        let file = previous
            .filter(|p| p.ends_with(".rs") && between_previous.trim() == ":")
            .or(None);
        spans.push((span.clone(), file));
        previous = Some(span);
        rest = &after[end + 1..];
    }
    spans
}

#[test]
fn every_test_and_name_the_documents_cite_is_in_the_code() {
    let root = root();
    let mut files = BTreeMap::new();
    for dir in CODE {
        code_files(&root.join(dir), &mut files);
    }
    let mut words = BTreeSet::new();
    let mut functions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, text) in &files {
        // From the root, to compare with `state/mod.rs` as well as with `cli.rs`.
        let file = format!("/{}", path.strip_prefix(&root).unwrap().display());
        // A fuzz target is named by its file.
        words.insert(path.file_stem().unwrap().to_string_lossy().into_owned());
        let mut previous = "";
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.is_empty() {
                continue;
            }
            if previous == "fn" {
                functions
                    .entry(word.to_owned())
                    .or_default()
                    .push(file.clone());
            }
            words.insert(word.to_owned());
            previous = word;
        }
    }
    assert!(functions.len() > 500, "the code was found: {}", files.len());

    let mut wrong = Vec::new();
    let mut cited = 0;
    for document in DOCUMENTS {
        let text = std::fs::read_to_string(root.join(document)).unwrap();
        for (number, line) in text.lines().enumerate() {
            for (name, file) in code_spans(line) {
                if !is_identifier(&name) {
                    continue;
                }
                let place = format!("{document}:{}", number + 1);
                let is_test = name.matches('_').count() >= TEST_NAME_UNDERSCORES || file.is_some();
                if is_test {
                    cited += 1;
                    match (functions.get(&name), &file) {
                        (None, _) => wrong.push(format!("{place}: no test `{name}`")),
                        (Some(found), Some(file))
                            if !found.iter().any(|f| f.ends_with(&format!("/{file}"))) =>
                        {
                            wrong.push(format!(
                                "{place}: `{name}` is in {}, not {file}",
                                found.join(", ")
                            ));
                        }
                        _ => {}
                    }
                } else if !words.contains(&name) {
                    wrong.push(format!("{place}: `{name}` is nowhere in the code"));
                }
            }
        }
    }
    assert!(cited > 50, "the documents' tests were found: {cited}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_file_named_before_a_test_is_where_it_must_be() {
    let spans = code_spans("| a | b | `soak.rs`: `the_test`, `other_test`; `x.rs` `y_z` |");
    assert_eq!(
        spans,
        [
            ("soak.rs".to_owned(), None),
            ("the_test".to_owned(), Some("soak.rs".to_owned())),
            ("other_test".to_owned(), None),
            ("x.rs".to_owned(), None),
            ("y_z".to_owned(), None),
        ]
    );
}
