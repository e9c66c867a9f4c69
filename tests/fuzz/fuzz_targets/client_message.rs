//! Client messages: any text frame is read or refused with a code, and what is read is what
//! the client wrote.
//!
//! The input is one WebSocket text frame. The reader parses the routing fields first; for an
//! `agent_register` or a visitor event it then parses that message's own fields. Each result
//! is checked against a second, independent reading of the same text as a JSON object.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use workshop_bridge::fuzzing;
use workshop_bridge::protocol::ErrorCode;

/// The object as a map of raw values: strict about the grammar, lenient about the content
/// (a lone surrogate escape in a string is grammatical JSON that a Rust `String` cannot
/// hold; the bridge relays such a message as written).
type Fields = BTreeMap<String, Box<RawValue>>;

fuzz_target!(|data: &[u8]| {
    // A text frame that is not UTF-8 closes the connection before any parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_depth(text);
    let head = match fuzzing::client_head(text, MAX_ID_BYTES) {
        Ok(head) => head,
        Err(refusal) => {
            assert!(!refusal.message.is_empty(), "a refusal says why");
            match refusal.code {
                // Strictly: a lone surrogate escape where a string is read is refused too.
                ErrorCode::BadJson => assert!(
                    serde_json::from_str::<serde_json::Value>(text).is_err(),
                    "refused as bad JSON, yet it is JSON: {text:?}"
                ),
                ErrorCode::BadMessage => {}
                ErrorCode::BadId => {
                    let fields: Fields = serde_json::from_str(text).expect("an object");
                    let id = fields.get("id").map(|raw| raw.get().len());
                    assert!(
                        id.is_some_and(|len| len > MAX_ID_BYTES),
                        "refused as a long id: {id:?}"
                    );
                }
                other => panic!("the parser refused with {other:?}"),
            }
            return;
        }
    };

    let fields: Fields = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("accepted, but not a JSON object ({e}): {text:?}"));
    assert_eq!(
        string(&fields, "type").as_deref(),
        Some(head.kind.as_str()),
        "the type read is not the type sent"
    );

    // The id is echoed back as written, so it must be exactly the client's value.
    let id = fields.get("id").map(|raw| raw.get());
    match &head.id {
        Some(read) => {
            assert_eq!(Some(read.as_str()), id, "the id read is not the id sent");
            assert!(read.len() <= MAX_ID_BYTES, "an id of {} bytes", read.len());
            // A JSON value (the map above holds it), and not an object, array, bool or null.
            // (A number may be out of `f64`'s range: it is echoed as written.)
            assert!(
                !read.starts_with(['{', '[', 't', 'f', 'n']),
                "an id that is neither a string nor a number: {read}"
            );
        }
        None => assert!(
            matches!(id, None | Some("null")),
            "an id was dropped: {id:?}"
        ),
    }
    match &head.target_id {
        Some(target) => assert_eq!(string(&fields, "target_id").as_ref(), Some(target)),
        None => assert!(matches!(
            fields.get("target_id").map(|r| r.get()),
            None | Some("null")
        )),
    }

    // The sender it claims: either spelling, and never two different ones.
    let snake = string(&fields, "agent_id");
    let camel = string(&fields, "agentId");
    match &head.claimed_agent {
        Ok(Some(claimed)) => assert!(
            snake.as_ref() == Some(claimed) || camel.as_ref() == Some(claimed),
            "claims {claimed:?}, which was not sent"
        ),
        Ok(None) => assert!(snake.is_none() && camel.is_none(), "a claim was dropped"),
        Err(code) => {
            assert_eq!(*code, ErrorCode::BadMessage);
            assert!(snake.is_some() && camel.is_some() && snake != camel);
        }
    }

    match head.kind.as_str() {
        "agent_register" => check_register(text, &fields),
        "message" | "enter" | "leave" | "visitor_message" | "chat_message" => {
            check_visitor(text, &fields)
        }
        _ => {}
    }
});

/// The longest id the bridge takes by default.
const MAX_ID_BYTES: usize = 128;
/// The deepest nesting it relays by default.
const MAX_DEPTH: usize = 64;

/// The byte scan that refuses deep messages before anything is parsed agrees with the
/// nesting of the text as written, wherever the text is JSON. As written: a key given twice
/// keeps only its last value in a parsed map, but a receiver's parser still descends into
/// both, so the first one's nesting counts too.
fn check_depth(text: &str) {
    // serde_json's own limit (128 levels) is well above the ones checked.
    let mut reader = serde_json::Deserializer::from_str(text);
    let Ok(Nesting(actual)) = serde::Deserialize::deserialize(&mut reader) else {
        return;
    };
    if reader.end().is_err() {
        return;
    }
    for max in [0, 1, 2, MAX_DEPTH] {
        assert_eq!(
            fuzzing::nested_deeper_than(text, max),
            actual > max,
            "nesting {actual} against a limit of {max}"
        );
    }
}

/// How deep a JSON value nests arrays and objects, every member counted, repeated keys too.
struct Nesting(usize);

impl<'de> serde::Deserialize<'de> for Nesting {
    fn deserialize<D: serde::Deserializer<'de>>(reader: D) -> Result<Self, D::Error> {
        reader.deserialize_any(NestingVisitor).map(Nesting)
    }
}

struct NestingVisitor;

impl<'de> serde::de::Visitor<'de> for NestingVisitor {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_str<E>(self, _: &str) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_unit<E>(self) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<usize, A::Error> {
        let mut deepest = 0;
        while let Some(Nesting(depth)) = items.next_element()? {
            deepest = deepest.max(depth);
        }
        Ok(1 + deepest)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut deepest = 0;
        while let Some((serde::de::IgnoredAny, Nesting(depth))) = map.next_entry()? {
            deepest = deepest.max(depth);
        }
        Ok(1 + deepest)
    }
}

/// A registration's id is the one sent under either spelling, and both it and the role are
/// acceptable names.
fn check_register(text: &str, fields: &Fields) {
    let Some(identity) = fuzzing::register(text) else {
        return;
    };
    let (id, role) = match identity {
        Ok(identity) => identity,
        Err(refusal) => {
            assert_eq!(refusal.code, ErrorCode::BadRegister);
            assert!(!refusal.message.is_empty());
            return;
        }
    };
    let camel = string(fields, "agentId");
    let snake = string(fields, "agent_id");
    assert!(
        camel.as_ref() == Some(&id) || snake.as_ref() == Some(&id),
        "registered as {id:?}, which was not sent"
    );
    if let (Some(camel), Some(snake)) = (&camel, &snake) {
        assert_eq!(camel, snake, "two different ids were accepted");
    }
    assert_eq!(
        role,
        string(fields, "role").unwrap_or_else(|| "agent".into())
    );
    check_name(&id, 128);
    check_name(&role, 64);
}

/// A visitor event's fields are the ones sent; the name checks hold for every field.
fn check_visitor(text: &str, fields: &Fields) {
    let Some(visitor) = fuzzing::visitor(text) else {
        return;
    };
    assert_eq!(visitor.visitor, string(fields, "visitor"));
    assert_eq!(visitor.text, string(fields, "text"));
    assert_eq!(visitor.agent_id, string(fields, "agent_id"));
    for name in [&visitor.visitor, &visitor.agent_id].into_iter().flatten() {
        if fuzzing::valid_name(name, 64) {
            check_name(name, 64);
        }
    }
}

/// What every accepted name promises the logs, the inbox files and the Workshop page.
fn check_name(name: &str, max: usize) {
    assert!(
        fuzzing::valid_name(name, max),
        "{name:?} was accepted but is not valid"
    );
    assert!(
        fuzzing::valid_name(name, max + 1),
        "a longer limit refused {name:?}"
    );
    assert!(!name.trim().is_empty(), "a blank name: {name:?}");
    assert!(
        name.chars().count() <= max,
        "{name:?} is over {max} characters"
    );
    assert!(
        !name
            .chars()
            .any(|c| matches!(c, '\0' | '\n' | '\r' | '\u{1b}' | '\u{7f}')),
        "{name:?} holds a control character"
    );
}

/// The string under `key`, when there is one that a Rust `String` can hold.
fn string(fields: &Fields, key: &str) -> Option<String> {
    let raw = fields.get(key)?;
    serde_json::from_str::<Option<String>>(raw.get())
        .ok()
        .flatten()
}
