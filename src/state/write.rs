//! State to YAML text, written as the agent's PyYAML (`yaml.safe_dump`) writes it: block
//! style, keys in order, two-space indents, sequences in a map not indented.
//!
//! A string is written plain only when the bridge's own reader reads it back as the same
//! string, by PyYAML's rules and by YAML 1.2's; anything else is double-quoted. So a string that looks like a
//! number, a bool, a date or null (`"1e3"`, `"y"`, `"2026-01-01"`, `"~"`) stays a string, and
//! the written text is checked by reading it back before it is used.

use std::fmt::Write as _;

use super::scalar::{self, Schema};
use super::value::StateValue;

/// Longest key written as a simple key: libyaml reads a simple key of at most 1024
/// characters, the quotes included.
const MAX_KEY_CHARS: usize = 1000;

/// `value` as a YAML document that the bridge's reader reads back as exactly `value`.
pub(crate) fn to_yaml(value: &StateValue) -> Result<String, String> {
    let mut out = String::new();
    match value.resolved() {
        StateValue::Map(map) if map.iter().next().is_some() => block_map(&mut out, value, 0)?,
        StateValue::List(items) if !items.is_empty() => block_list(&mut out, items, 0)?,
        scalar => {
            out.push_str(&inline(scalar)?);
            out.push('\n');
        }
    }
    match super::read_document(&out) {
        Ok(Some(back)) if back == *value => Ok(out),
        Ok(_) => Err("the state cannot be written as YAML that reads back the same".to_owned()),
        Err(e) => Err(format!("the state cannot be written as YAML: {e}")),
    }
}

fn block_map(out: &mut String, value: &StateValue, indent: usize) -> Result<(), String> {
    let StateValue::Map(map) = value.resolved() else {
        return Ok(());
    };
    for (key, item) in map.iter() {
        if key.chars().count() > MAX_KEY_CHARS {
            return Err(format!(
                "a key of {} characters is longer than YAML allows ({MAX_KEY_CHARS})",
                key.chars().count()
            ));
        }
        pad(out, indent);
        out.push_str(&text(key));
        out.push(':');
        nested(out, item, indent, indent + 2)?;
    }
    Ok(())
}

fn block_list(out: &mut String, items: &[StateValue], indent: usize) -> Result<(), String> {
    for item in items {
        pad(out, indent);
        out.push('-');
        match item.resolved() {
            // `- key: value` with the rest of the map under the first key.
            StateValue::Map(map) if map.iter().next().is_some() => {
                out.push(' ');
                let mut inner = String::new();
                block_map(&mut inner, item, indent + 2)?;
                out.push_str(inner.get(indent + 2..).unwrap_or_default());
            }
            StateValue::List(inner) if !inner.is_empty() => {
                out.push(' ');
                let mut nested_list = String::new();
                block_list(&mut nested_list, inner, indent + 2)?;
                out.push_str(nested_list.get(indent + 2..).unwrap_or_default());
            }
            scalar => {
                out.push(' ');
                out.push_str(&inline(scalar)?);
                out.push('\n');
            }
        }
    }
    Ok(())
}

/// What follows `key:`: a scalar on the same line, or a block below it. A map's list is
/// not indented (`key:\n- a`), as PyYAML writes it.
fn nested(
    out: &mut String,
    item: &StateValue,
    indent: usize,
    map_indent: usize,
) -> Result<(), String> {
    match item.resolved() {
        StateValue::Map(map) if map.iter().next().is_some() => {
            out.push('\n');
            block_map(out, item, map_indent)
        }
        StateValue::List(items) if !items.is_empty() => {
            out.push('\n');
            block_list(out, items, indent)
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar)?);
            out.push('\n');
            Ok(())
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A scalar, or an empty map or list, on one line.
fn inline(value: &StateValue) -> Result<String, String> {
    Ok(match value.resolved() {
        StateValue::Null => "null".to_owned(),
        StateValue::Bool(b) => b.to_string(),
        StateValue::Int(n) => n.to_string(),
        StateValue::BigInt(digits) => digits.get().to_owned(),
        StateValue::Float(f) => float(*f)?,
        StateValue::Text(s) => text(s),
        StateValue::List(_) => "[]".to_owned(),
        // An empty map (a shared value is never left once resolved).
        StateValue::Map(_) | StateValue::Shared(_) => "{}".to_owned(),
    })
}

/// A float as YAML 1.1 reads one: a dot always, and a signed exponent (`1.0e+20`).
fn float(f: f64) -> Result<String, String> {
    let shortest = format!("{f:?}");
    let written = match shortest.split_once('e') {
        Some((mantissa, exponent)) => {
            let mantissa = if mantissa.contains('.') {
                mantissa.to_owned()
            } else {
                format!("{mantissa}.0")
            };
            let exponent = if exponent.starts_with('-') {
                exponent.to_owned()
            } else {
                format!("+{exponent}")
            };
            format!("{mantissa}e{exponent}")
        }
        None => shortest,
    };
    match scalar::plain(written.clone(), Schema::Yaml11) {
        StateValue::Float(back) if back.to_bits() == f.to_bits() => Ok(written),
        _ => Err(format!("the number {f} cannot be written as YAML")),
    }
}

/// A string: plain when PyYAML, and YAML 1.2 readers, read it back as this same string;
/// else double-quoted.
fn text(s: &str) -> String {
    if plain_is_safe(s) && scalar::is_plain_string(s) {
        s.to_owned()
    } else {
        quoted(s)
    }
}

/// Whether `s` can stand unquoted anywhere a block scalar goes: nothing a YAML reader takes
/// for structure, and only printable characters.
fn plain_is_safe(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    if first.is_whitespace() || last.is_whitespace() || last == ':' {
        return false;
    }
    // A first character encoded from 0xEF is taken for a broken byte order mark when it
    // opens the document.
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) || ('\u{f000}'..='\u{ffff}').contains(&first) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.contains('\t') {
        return false;
    }
    s.chars().all(|c| {
        c == ' ' || (printable(c) && !c.is_control() && !c.is_whitespace() && c != '\u{feff}')
    })
}

/// What YAML 1.1 (and so PyYAML) accepts in a document, as it is.
fn printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
        || c >= '\u{10000}'
}

/// A double-quoted scalar; everything but printable characters is escaped.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' ' => out.push(' '),
            c if !printable(c) || c.is_control() || c.is_whitespace() || c == '\u{feff}' => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(value: serde_json::Value) -> String {
        to_yaml(&StateValue::from(value)).unwrap()
    }

    #[test]
    fn written_as_pyyaml_writes_block_style() {
        assert_eq!(
            yaml(json!({
                "mood": {"primary": "contemplative", "energy": 0.5},
                "tasks": ["stones", {"name": "tower", "done": false}, [1, 2]],
                "empty": {}, "none": [], "nothing": null
            })),
            "mood:\n  primary: contemplative\n  energy: 0.5\ntasks:\n- stones\n- name: tower\n  done: false\n- - 1\n  - 2\nempty: {}\nnone: []\nnothing: null\n"
        );
    }

    #[test]
    fn strings_that_pyyaml_would_read_as_something_else_are_quoted() {
        for s in [
            "yes",
            "no",
            "on",
            "True",
            "~",
            "null",
            "1e3",
            "1_000",
            "012",
            "0x1f",
            "1:20",
            "2026-01-01",
            ".inf",
            "",
            " lead",
            "trail ",
            "a: b",
            "a #b",
            "- x",
            "#x",
            "line\nbreak",
            "tab\t",
            "\u{2028}",
            "@home",
            "key:",
            "\u{f000}",
            "\u{fffe}",
        ] {
            let written = yaml(json!({ "k": s }));
            assert!(
                written.starts_with("k: \""),
                "{s:?} was written as {written:?}"
            );
        }
        for s in [
            "y",
            "n",
            "plain words",
            "Hey Timmy!",
            "a:b",
            "e-mail",
            "ü ∑ 😀",
        ] {
            assert_eq!(yaml(json!({ "k": s })), format!("k: {s}\n"));
        }
    }

    #[test]
    fn numbers_keep_their_type_and_value() {
        assert_eq!(
            yaml(json!([1, -2, 1.5, 1e20, 1e-7, -0.0])),
            "- 1\n- -2\n- 1.5\n- 1.0e+20\n- 1.0e-7\n- -0.0\n"
        );
        let big = StateValue::integer("18446744073709551616").unwrap();
        assert_eq!(to_yaml(&big).unwrap(), "18446744073709551616\n");
    }

    #[test]
    fn keys_are_quoted_like_values() {
        assert_eq!(
            yaml(json!({"yes": 1, "1": 2, "a b": 3})),
            "\"yes\": 1\n\"1\": 2\na b: 3\n"
        );
        assert_eq!(yaml(json!({"\u{f000}": null})), "\"\u{f000}\": null\n");
    }
}

/// Property tests: any state can be written, and reads back the same (checked inside).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    use crate::protocol::properties_support::json_value;

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_state_is_written_as_yaml_that_reads_back_the_same(value in json_value()) {
            let value = StateValue::from(value);
            let written = to_yaml(&value).map_err(TestCaseError::fail)?;
            prop_assert_eq!(crate::state::read_document(&written).ok().flatten(), Some(value));
        }
    }
}
