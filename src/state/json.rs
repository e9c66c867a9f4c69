//! A state file written as JSON, read by JSON's rules (`1e3` is a number here, where PyYAML
//! would read a string) and at JSON's speed.

use std::cell::Cell;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::scalar::{MAX_INT_DIGITS, Schema};
use super::value::{Map, StateValue};
use super::yaml::{self, MAX_DEPTH, YamlError};

/// Reads a JSON document; `None` if `text` is not JSON, so the caller reads it as YAML.
///
/// Tried first on every file: it gives up at the first byte that is not JSON (the first
/// key of a YAML map), and what PyYAML writes is never JSON (even a lone scalar gets a `...`
/// line), so only a file meant as JSON is read here.
pub(crate) fn read(text: &str) -> Option<Result<StateValue, YamlError>> {
    let text = text.trim_start_matches('\u{feff}');
    match parse(text, None) {
        Ok(value) => Some(Ok(value)),
        // serde_json reads an integer beyond 64 bits as a float: read again, with each
        // number's own text at hand to keep every digit.
        // (A YAML file may start with such a number too: then this reading fails as well.)
        Err(e) if e.to_string().starts_with(WIDE_INTEGER) => {
            let numbers = Numbers::of(text);
            parse(text, Some(&numbers)).ok().map(Ok)
        }
        // A number beyond a float's range, in a document that is JSON otherwise: carried
        // as its text, by the same rules, through the YAML reader.
        Err(e) if e.to_string().starts_with("number out of range") && is_json(text) => Some(
            yaml::read(text, Schema::Json)
                .and_then(|v| v.ok_or_else(|| YamlError::Syntax(e.to_string()))),
        ),
        Err(_) => None,
    }
}

fn parse(text: &str, numbers: Option<&Numbers<'_>>) -> Result<StateValue, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    // `Node` stops at `MAX_DEPTH`, below what the stack allows.
    de.disable_recursion_limit();
    let value = (Node { depth: 0, numbers }).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Whether `text` is JSON, numbers' ranges aside.
fn is_json(text: &str) -> bool {
    serde_json::from_str::<de::IgnoredAny>(text).is_ok()
}

const WIDE_INTEGER: &str = "an integer beyond 64 bits";

/// The text of every number of a JSON document, in order: serde_json visits numbers in the
/// same order, and this gives the digits it does not keep.
struct Numbers<'a> {
    texts: Vec<&'a str>,
    next: Cell<usize>,
}

impl<'a> Numbers<'a> {
    /// Scans valid JSON (serde_json has read it once): numbers are the runs of number
    /// characters outside strings.
    fn of(text: &'a str) -> Self {
        let bytes = text.as_bytes();
        let mut texts = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'-' | b'0'..=b'9' => {
                    let start = i;
                    while i < bytes.len()
                        && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                    {
                        i += 1;
                    }
                    texts.push(&text[start..i]);
                }
                _ => i += 1,
            }
        }
        Self {
            texts,
            next: Cell::new(0),
        }
    }

    fn next(&self) -> &'a str {
        let i = self.next.get();
        self.next.set(i + 1);
        self.texts.get(i).copied().unwrap_or_default()
    }
}

/// Builds a [`StateValue`] at a depth, to refuse nesting beyond the YAML reader's limit.
#[derive(Clone, Copy)]
struct Node<'n> {
    depth: usize,
    /// The numbers' texts, on the second reading of a document with a wide integer.
    numbers: Option<&'n Numbers<'n>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = StateValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<StateValue, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = StateValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<StateValue, E> {
        Ok(StateValue::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<StateValue, E> {
        Ok(StateValue::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<StateValue, E> {
        self.numbers.map(Numbers::next);
        Ok(StateValue::Int(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<StateValue, E> {
        self.numbers.map(Numbers::next);
        match i64::try_from(n) {
            Ok(n) => Ok(StateValue::Int(n)),
            Err(_) => StateValue::integer(&n.to_string()).ok_or_else(|| E::custom(WIDE_INTEGER)),
        }
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<StateValue, E> {
        // A whole number this large may have been an integer's digits, lost here.
        if f.fract() != 0.0 || f.abs() < 9.2e18 {
            self.numbers.map(Numbers::next);
            return Ok(StateValue::Float(f));
        }
        let Some(numbers) = self.numbers else {
            return Err(E::custom(WIDE_INTEGER));
        };
        let text = numbers.next();
        if text.contains(['.', 'e', 'E']) {
            return Ok(StateValue::Float(f));
        }
        // Python's limit on an integer's digits, as for YAML files.
        if text.trim_start_matches('-').len() > MAX_INT_DIGITS {
            return Ok(StateValue::Text(text.to_owned()));
        }
        StateValue::integer(text).ok_or_else(|| E::custom(format!("bad number {text}")))
    }

    fn visit_str<E>(self, s: &str) -> Result<StateValue, E> {
        Ok(StateValue::Text(s.into()))
    }

    fn visit_string<E>(self, s: String) -> Result<StateValue, E> {
        Ok(StateValue::Text(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StateValue, A::Error> {
        let inner = self.deeper::<A::Error>()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(Node {
            depth: inner,
            ..self
        })? {
            items.push(item);
        }
        Ok(StateValue::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StateValue, A::Error> {
        let inner = self.deeper::<A::Error>()?;
        let mut pairs = Vec::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(Node {
                depth: inner,
                ..self
            })?;
            pairs.push((key, value));
        }
        Ok(StateValue::Map(Box::new(Map::from_pairs(pairs))))
    }
}

impl Node<'_> {
    fn deeper<E: de::Error>(&self) -> Result<usize, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!(
                "it nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(self.depth + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> String {
        read(text).unwrap().unwrap().to_json()
    }

    #[test]
    fn json_documents_keep_json_meanings() {
        assert_eq!(
            json(r#"{"a": 1e3, "b": [1, 2.5, "x", null, true]}"#),
            r#"{"a":1000.0,"b":[1,2.5,"x",null,true]}"#
        );
        assert_eq!(
            json("[18446744073709551615, -9223372036854775808]"),
            "[18446744073709551615,-9223372036854775808]"
        );
        // Beyond 64 bits, through the exact reader.
        assert_eq!(
            json("[18446744073709551616, 1e300]"),
            "[18446744073709551616,1e+300]"
        );
        assert!(read("{a: 1}").is_none(), "YAML flow style is not JSON");
        assert!(
            read("1e3\n...\n").is_none(),
            "PyYAML's lone scalar is not JSON"
        );
        assert_eq!(json(" 1e3 "), "1000.0");
    }
}
