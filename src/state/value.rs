//! A state document as its clients receive it, and the change between two of them.
//!
//! JSON values, with two things `serde_json::Value` cannot hold: integers of any size (the
//! agent's Python writes them) and an equality that sees key order and the sign of zero, so
//! a file that changes only in those is still sent again.

use std::collections::HashMap;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::value::RawValue;

/// One value of the state document.
#[derive(Debug, Clone)]
pub(crate) enum StateValue {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// An integer beyond 64 bits, as its exact decimal digits (a JSON number).
    BigInt(Box<RawValue>),
    /// A finite float; what JSON cannot carry (infinities, NaN) is read as text instead.
    Float(f64),
    /// A string.
    Text(String),
    /// An array.
    List(Vec<StateValue>),
    /// An object, keys in the file's order. Boxed: maps are rarer than scalars, and the
    /// enum stays the size of a `Vec`.
    Map(Box<Map>),
    /// A value shared with the previous version of the state: a top-level member that did
    /// not change is kept at the cost of a reference count, and compared by its address.
    Shared(Arc<StateValue>),
}

/// An object's members in the file's order, each key once.
///
/// A list, not a hash map: most of a state's objects have a handful of keys, for which a
/// scan beats hashing, and the few large ones are indexed only where a lookup needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Map(Vec<(String, StateValue)>);

/// Above this many members, lookups build an index instead of scanning.
const SCAN_LIMIT: usize = 16;

impl Map {
    /// Members in order; a repeated key keeps its first place and takes its last value, as
    /// assigning them one by one to a Python dict does.
    pub(crate) fn from_pairs(mut pairs: Vec<(String, StateValue)>) -> Self {
        // The common case, a small map whose keys are all different, without allocating.
        let small = pairs.len() <= SCAN_LIMIT;
        if small && (1..pairs.len()).all(|i| pairs[..i].iter().all(|(k, _)| *k != pairs[i].0)) {
            return Map(pairs);
        }
        // Where each member's key first appears.
        let first: Vec<usize> = if small {
            (0..pairs.len())
                .map(|i| (0..=i).find(|&j| pairs[j].0 == pairs[i].0).unwrap_or(i))
                .collect()
        } else {
            let mut seen = HashMap::with_capacity(pairs.len());
            (0..pairs.len())
                .map(|i| *seen.entry(pairs[i].0.as_str()).or_insert(i))
                .collect()
        };
        if first.iter().enumerate().all(|(i, &f)| i == f) {
            return Map(pairs);
        }
        let mut slots: Vec<Option<(String, StateValue)>> = Vec::with_capacity(pairs.len());
        slots.resize_with(pairs.len(), || None);
        for (pair, at) in pairs.drain(..).zip(first) {
            slots[at] = Some(pair);
        }
        Map(slots.into_iter().flatten().collect())
    }

    /// How many members it has.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&StateValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The members, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &StateValue)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The members, in order, as a slice.
    pub(crate) fn pairs(&self) -> &[(String, StateValue)] {
        &self.0
    }

    /// The members, taken out in order.
    pub(crate) fn into_pairs(self) -> Vec<(String, StateValue)> {
        self.0
    }

    /// The same members, each value made [`StateValue::Shared`].
    pub(crate) fn shared(mut self) -> Self {
        for (_, value) in &mut self.0 {
            if !matches!(value, StateValue::Shared(_)) {
                let owned = std::mem::replace(value, StateValue::Null);
                *value = StateValue::Shared(Arc::new(owned));
            }
        }
        self
    }

    /// A lookup by key: a scan for a small map, an index for a large one.
    fn lookup(&self) -> Lookup<'_> {
        if self.0.len() <= SCAN_LIMIT {
            Lookup::Scan(self)
        } else {
            Lookup::Index(self.0.iter().map(|(k, v)| (k.as_str(), v)).collect())
        }
    }
}

enum Lookup<'a> {
    Scan(&'a Map),
    Index(HashMap<&'a str, &'a StateValue>),
}

impl<'a> Lookup<'a> {
    fn get(&self, key: &str) -> Option<&'a StateValue> {
        match self {
            Lookup::Scan(map) => map.0.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Lookup::Index(index) => index.get(key).copied(),
        }
    }
}

impl StateValue {
    /// The value itself, wherever it is shared from.
    pub(crate) fn resolved(&self) -> &StateValue {
        let mut value = self;
        while let StateValue::Shared(shared) = value {
            value = shared;
        }
        value
    }

    /// The member `key` of an object.
    pub(crate) fn get(&self, key: &str) -> Option<&StateValue> {
        match self.resolved() {
            StateValue::Map(map) => map.get(key),
            _ => None,
        }
    }

    /// The text of a string value.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self.resolved() {
            StateValue::Text(text) => Some(text),
            _ => None,
        }
    }

    /// Compact JSON text.
    pub(crate) fn to_json(&self) -> String {
        // Writing to a String cannot fail, and every key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An integer from its decimal digits (an optional `-`, no leading zeros): a 64-bit
    /// integer when it fits, else a big one.
    pub(crate) fn integer(digits: &str) -> Option<StateValue> {
        if let Ok(n) = digits.parse::<i64>() {
            return Some(StateValue::Int(n));
        }
        RawValue::from_string(digits.to_owned())
            .ok()
            .map(StateValue::BigInt)
    }
}

impl PartialEq for StateValue {
    /// Equal as JSON text would be: key order counts, and so does the sign of zero.
    fn eq(&self, other: &Self) -> bool {
        use StateValue::*;
        if let (Shared(a), Shared(b)) = (self, other)
            && Arc::ptr_eq(a, b)
        {
            return true;
        }
        match (self.resolved(), other.resolved()) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (BigInt(a), BigInt(b)) => a.get() == b.get(),
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Text(a), Text(b)) => a == b,
            (List(a), List(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Serialize for StateValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StateValue::Null => serializer.serialize_unit(),
            StateValue::Bool(b) => serializer.serialize_bool(*b),
            StateValue::Int(n) => serializer.serialize_i64(*n),
            // Written as its digits by serde_json, which is the only serializer used.
            StateValue::BigInt(digits) => digits.serialize(serializer),
            StateValue::Float(f) => serializer.serialize_f64(*f),
            StateValue::Text(text) => serializer.serialize_str(text),
            StateValue::List(items) => serializer.collect_seq(items),
            StateValue::Map(map) => serializer.collect_map(map.iter()),
            StateValue::Shared(value) => value.serialize(serializer),
        }
    }
}

/// One RFC 6902 operation.
#[derive(Debug)]
pub(crate) struct Operation<'a> {
    op: &'static str,
    path: String,
    value: Option<&'a StateValue>,
}

impl Serialize for Operation<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut op = serializer.serialize_struct("Operation", 3)?;
        op.serialize_field("op", self.op)?;
        op.serialize_field("path", &self.path)?;
        if let Some(value) = self.value {
            op.serialize_field("value", value)?;
        }
        op.end()
    }
}

/// The RFC 6902 operations that turn `old` into `new`: members and items that differ are
/// replaced, missing ones removed, new ones added (objects' key order is not part of a
/// patch). Applied in order, they give a document equal to `new` as JSON.
pub(crate) fn diff<'a>(old: &StateValue, new: &'a StateValue) -> Vec<Operation<'a>> {
    let mut ops = Vec::new();
    let mut path = String::new();
    diff_into(old, new, &mut path, &mut ops);
    ops
}

fn diff_into<'a>(
    old: &StateValue,
    new: &'a StateValue,
    path: &mut String,
    ops: &mut Vec<Operation<'a>>,
) {
    if old == new {
        return;
    }
    let depth = path.len();
    match (old.resolved(), new.resolved()) {
        (StateValue::Map(old), StateValue::Map(new)) => {
            let kept = new.lookup();
            for (key, _) in old.iter().filter(|(key, _)| kept.get(key).is_none()) {
                push_key(path, key);
                ops.push(operation("remove", path, None));
                path.truncate(depth);
            }
            let old = old.lookup();
            for (key, value) in new.iter() {
                push_key(path, key);
                match old.get(key) {
                    Some(before) => diff_into(before, value, path, ops),
                    None => ops.push(operation("add", path, Some(value))),
                }
                path.truncate(depth);
            }
        }
        (StateValue::List(old), StateValue::List(new)) => {
            for (i, (before, after)) in old.iter().zip(new).enumerate() {
                push_index(path, i);
                diff_into(before, after, path, ops);
                path.truncate(depth);
            }
            for (i, added) in new.iter().enumerate().skip(old.len()) {
                push_index(path, i);
                ops.push(operation("add", path, Some(added)));
                path.truncate(depth);
            }
            // From the end, so each index is still the item's own when it is removed.
            for i in (new.len()..old.len()).rev() {
                push_index(path, i);
                ops.push(operation("remove", path, None));
                path.truncate(depth);
            }
        }
        _ => ops.push(operation("replace", path, Some(new))),
    }
}

fn operation<'a>(op: &'static str, path: &str, value: Option<&'a StateValue>) -> Operation<'a> {
    Operation {
        op,
        path: path.to_owned(),
        value,
    }
}

/// Appends `/key` as a JSON pointer token (RFC 6901: `~` is `~0`, `/` is `~1`).
fn push_key(path: &mut String, key: &str) {
    path.push('/');
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

fn push_index(path: &mut String, index: usize) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(path, "/{index}");
}

/// `serde_json::Value` to a state value: a patch an agent sends, and tests written with
/// `json!`.
impl From<serde_json::Value> for StateValue {
    fn from(value: serde_json::Value) -> Self {
        use serde_json::Value;
        match value {
            Value::Null => StateValue::Null,
            Value::Bool(b) => StateValue::Bool(b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => StateValue::Int(i),
                None if n.is_u64() => {
                    StateValue::integer(&n.to_string()).unwrap_or(StateValue::Null)
                }
                None => StateValue::Float(n.as_f64().unwrap_or_default()),
            },
            Value::String(s) => StateValue::Text(s),
            Value::Array(items) => StateValue::List(items.into_iter().map(Self::from).collect()),
            Value::Object(map) => StateValue::Map(Box::new(Map::from_pairs(
                map.into_iter().map(|(k, v)| (k, Self::from(v))).collect(),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn big_integers_are_written_as_their_digits() {
        let v = StateValue::List(vec![
            StateValue::integer("18446744073709551616").unwrap(),
            StateValue::integer("-9223372036854775808").unwrap(),
            StateValue::Float(-0.0),
        ]);
        assert_eq!(
            v.to_json(),
            "[18446744073709551616,-9223372036854775808,-0.0]"
        );
        assert!(matches!(
            StateValue::integer("-9223372036854775808"),
            Some(StateValue::Int(i64::MIN))
        ));
    }

    #[test]
    fn equality_sees_key_order_and_the_sign_of_zero() {
        let ab = StateValue::from(json!({"a": 1, "b": 2}));
        let ba = StateValue::from(json!({"b": 2, "a": 1}));
        assert_ne!(ab, ba);
        assert_ne!(StateValue::Float(0.0), StateValue::Float(-0.0));
        assert_ne!(StateValue::Int(1), StateValue::Float(1.0));
    }

    #[test]
    fn repeated_keys_keep_the_first_place_and_the_last_value() {
        for n in [3, 40] {
            let mut pairs: Vec<(String, StateValue)> = (0..n)
                .map(|i| (format!("k{i}"), StateValue::Int(i)))
                .collect();
            pairs.push(("k1".into(), StateValue::Int(-1)));
            pairs.push(("k0".into(), StateValue::Int(-2)));
            let map = Map::from_pairs(pairs);
            let keys: Vec<&String> = map.iter().map(|(k, _)| k).collect();
            assert_eq!(keys.len(), n as usize);
            assert_eq!((keys[0].as_str(), keys[1].as_str()), ("k0", "k1"));
            assert_eq!(map.get("k0"), Some(&StateValue::Int(-2)));
            assert_eq!(map.get("k1"), Some(&StateValue::Int(-1)));
        }
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        let old = StateValue::from(json!({"a/b": 1, "m~n": [1, 2, 3]}));
        let new = StateValue::from(json!({"a/b": 2, "m~n": [1]}));
        let ops = serde_json::to_string(&diff(&old, &new)).unwrap();
        assert_eq!(
            ops,
            r#"[{"op":"replace","path":"/a~1b","value":2},{"op":"remove","path":"/m~0n/2"},{"op":"remove","path":"/m~0n/1"}]"#
        );
    }
}
