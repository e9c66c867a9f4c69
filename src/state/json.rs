//! A state file written as JSON, read by JSON's rules (`1e3` is a number here, where PyYAML
//! would read a string) and at JSON's speed.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::scalar::Schema;
use super::value::{Map, StateValue};
use super::yaml::{self, MAX_DEPTH, YamlError};

/// Reads a JSON document; `None` if `text` is not JSON, so the caller reads it as YAML.
///
/// Tried first on every file: it gives up at the first byte that is not JSON (the first
/// key of a YAML map), and what PyYAML writes is never JSON (even a lone scalar gets a `...`
/// line), so only a file meant as JSON is read here.
pub(crate) fn read(text: &str) -> Option<Result<StateValue, YamlError>> {
    let text = text.trim_start_matches('\u{feff}');
    match parse(text, true) {
        Ok(value) => Some(Ok(value)),
        // serde_json reads an integer beyond 64 bits as a float, nests at most 128 deep,
        // and refuses a number beyond a float's range: such a document is JSON still, so it
        // is read by JSON's rules through the YAML reader, which keeps every digit. A few
        // JSON texts are not YAML (raw control characters in a string); those are read
        // here after all, wide numbers as floats.
        Err(e)
            if EXACT_READER_CASES
                .iter()
                .any(|c| e.to_string().starts_with(c)) =>
        {
            match yaml::read(text, Schema::Json) {
                Ok(Some(value)) => Some(Ok(value)),
                exact => Some(parse(text, false).or_else(|_| {
                    exact.and_then(|v| v.ok_or_else(|| YamlError::Syntax("no document".into())))
                })),
            }
        }
        Err(_) => None,
    }
}

fn parse(text: &str, exact: bool) -> Result<StateValue, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = (Node { depth: 0, exact }).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

const WIDE_INTEGER: &str = "an integer beyond 64 bits";
/// serde_json's errors (and ours) for JSON that the exact reader reads.
const EXACT_READER_CASES: [&str; 3] = [WIDE_INTEGER, "recursion limit", "number out of range"];

/// Builds a [`StateValue`] at a depth, to refuse nesting beyond the YAML reader's limit.
struct Node {
    depth: usize,
    /// Whether a whole number too large for 64 bits is an error rather than a float.
    exact: bool,
}

impl<'de> DeserializeSeed<'de> for Node {
    type Value = StateValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<StateValue, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node {
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
        Ok(StateValue::Int(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<StateValue, E> {
        match i64::try_from(n) {
            Ok(n) => Ok(StateValue::Int(n)),
            Err(_) => StateValue::integer(&n.to_string()).ok_or_else(|| E::custom(WIDE_INTEGER)),
        }
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<StateValue, E> {
        // A whole number this large may have been an integer's digits, which are lost here.
        if self.exact && f.fract() == 0.0 && f.abs() >= 9.2e18 {
            return Err(E::custom(WIDE_INTEGER));
        }
        Ok(StateValue::Float(f))
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
            exact: self.exact,
        })? {
            items.push(item);
        }
        Ok(StateValue::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StateValue, A::Error> {
        let inner = self.deeper::<A::Error>()?;
        let mut map = Map::default();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(Node {
                depth: inner,
                exact: self.exact,
            })?;
            map.insert(key, value);
        }
        Ok(StateValue::Map(Box::new(map)))
    }
}

impl Node {
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
