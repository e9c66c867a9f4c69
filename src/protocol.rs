//! Every message on the wire, as serde types. `docs/PROTOCOL.md` is the prose version.
//!
//! Client messages are parsed lazily: [`Head`] reads only what routing needs (`type`, `id`,
//! `target_id`) so that relayed messages go out as the exact text that came in. Messages the
//! hub acts on (visitor events, registration) are then parsed into their own types.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// WebSocket close codes the bridge uses (RFC 6455 §7.4.1).
pub mod close {
    /// The bridge is shutting down, or the client stopped answering heartbeats.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (e.g. a continuation frame with no start).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// The client broke a rule it was told about (rate limit, agent id taken over).
    pub const POLICY: u16 = 1008;
    /// The client sent a message larger than the limit.
    pub const TOO_BIG: u16 = 1009;
    /// The client reads too slowly to keep up; it should reconnect and resync.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// What the bridge reads from every client message before deciding what to do with it.
#[derive(Debug, Deserialize)]
pub(crate) struct Head<'a> {
    /// The message type; any string.
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Cow<'a, str>,
    /// An id the client wants acknowledged (a string or a number).
    #[serde(default, borrow)]
    pub(crate) id: Option<&'a RawValue>,
    /// The registered agent a directed message is for.
    #[serde(default, borrow)]
    pub(crate) target_id: Option<Cow<'a, str>>,
    /// The agent the message says it is from (the Matrix spelling).
    #[serde(default, borrow)]
    pub(crate) agent_id: Option<Cow<'a, str>>,
    /// The agent the message says it is from (the gateway's spelling).
    #[serde(default, borrow, rename = "agentId")]
    pub(crate) agent_id_camel: Option<Cow<'a, str>>,
}

impl<'a> Head<'a> {
    /// Parses just the routing fields; the error is a sentence for the client. An `id`
    /// longer than `max_id_bytes` is refused: it would be echoed, remembered and written.
    pub(crate) fn parse(text: &'a str, max_id_bytes: usize) -> Result<Self, ClientError> {
        // Serde reads a struct from an array too, field by field (`["message", "hi"]` would
        // be a message with the id "hi"): only an object is a message.
        if !text.trim_start().starts_with('{')
            && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
        {
            return Err(ClientError::new(
                ErrorCode::BadMessage,
                "a message must be a JSON object with a string `type`",
            ));
        }
        let head: Head<'a> = serde_json::from_str(text).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ClientError::new(ErrorCode::BadJson, format!("not valid JSON: {e}"))
            } else {
                ClientError::new(
                    ErrorCode::BadMessage,
                    format!("a message must be a JSON object with a string `type`: {e}"),
                )
            }
        })?;
        if let Some(id) = head.id {
            let first = id.get().as_bytes().first().copied();
            if !matches!(first, Some(b'"' | b'-' | b'0'..=b'9')) {
                return Err(ClientError::new(
                    ErrorCode::BadMessage,
                    "`id` must be a string or a number",
                ));
            }
            if id.get().len() > max_id_bytes {
                return Err(ClientError::new(
                    ErrorCode::BadId,
                    format!("`id` must be at most {max_id_bytes} bytes long"),
                ));
            }
        }
        Ok(head)
    }

    /// The agent the message claims to come from, in either spelling; an error if the two
    /// spellings disagree.
    pub(crate) fn claimed_agent(&self) -> Result<Option<&str>, ClientError> {
        match (self.agent_id.as_deref(), self.agent_id_camel.as_deref()) {
            (Some(a), Some(b)) if a != b => Err(ClientError::new(
                ErrorCode::BadMessage,
                "`agent_id` and `agentId` disagree",
            )),
            (Some(id), _) | (None, Some(id)) => Ok(Some(id)),
            (None, None) => Ok(None),
        }
    }
}

/// Whether `text` nests arrays and objects deeper than `max`. A scan of the bytes, without
/// parsing: the bridge relays messages without parsing all of them, and a receiver's parser
/// (Python's `json.loads`, a browser's `JSON.parse`) may fail or recurse on a deep one.
pub(crate) fn nested_deeper_than(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The fields of `message`, `enter`, `leave`, `visitor_message` and `chat_message`.
#[derive(Debug, Deserialize)]
pub(crate) struct VisitorFields {
    /// Who is speaking; the Workshop page lets visitors type a name.
    #[serde(default)]
    pub(crate) visitor: Option<String>,
    /// What they said (messages only).
    #[serde(default)]
    pub(crate) text: Option<String>,
    /// The Matrix spelling of the speaker, for `chat_message` and `visitor_message`.
    #[serde(default)]
    pub(crate) agent_id: Option<String>,
}

/// An `agent_register` message. The gateway spells the id `agentId`, the rest of the Matrix
/// protocol `agent_id`; both are accepted.
#[derive(Debug, Deserialize)]
pub(crate) struct Register {
    #[serde(default, rename = "agentId")]
    agent_id_camel: Option<String>,
    #[serde(default)]
    agent_id: Option<String>,
    /// Free-form: agent, browser, bot, …
    #[serde(default)]
    role: Option<String>,
}

impl Register {
    /// The validated id and role.
    pub(crate) fn into_identity(self) -> Result<(String, String), ClientError> {
        let bad = |m: &str| ClientError::new(ErrorCode::BadRegister, m);
        let id = match (self.agent_id_camel, self.agent_id) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad("`agentId` and `agent_id` disagree"));
            }
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => return Err(bad("agent_register needs an `agentId`")),
        };
        if !valid_name(&id, 128) {
            return Err(bad("`agentId` must be 1 to 128 printable characters"));
        }
        let role = self.role.unwrap_or_else(|| "agent".to_owned());
        if !valid_name(&role, 64) {
            return Err(bad("`role` must be 1 to 64 printable characters"));
        }
        Ok((id, role))
    }
}

/// A non-empty name without control characters, at most `max` characters long.
pub(crate) fn valid_name(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// Every message the bridge itself sends. Relayed messages are not here: they go out as the
/// exact text their sender wrote.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerMessage<'a> {
    /// The whole state document.
    State {
        /// Grows by one per change of the file's content.
        seq: u64,
        /// The state file's document as JSON.
        data: &'a crate::state::value::StateValue,
    },
    /// The change from state `seq - 1` to `seq`, as RFC 6902 operations.
    StatePatch {
        /// The state this patch produces.
        seq: u64,
        /// The operations.
        patch: &'a [crate::state::value::Operation<'a>],
    },
    /// The client's message with this id was accepted (and for inbox messages, is on disk).
    Ack {
        /// The id the client sent, echoed as it was.
        id: &'a RawValue,
    },
    /// A client message was refused; the connection stays open.
    Error {
        /// A stable machine-readable code.
        code: ErrorCode,
        /// One sentence for a person.
        message: &'a str,
        /// The id of the refused message, when it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    /// The answer to an application-level `ping`.
    Pong {
        /// The ping's id, when it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    /// The bridge's own condition.
    SystemStatus {
        /// `{"status":"shutting_down"}` before a graceful shutdown.
        data: SystemStatus,
    },
    /// An agent registered.
    AgentJoined {
        /// The gateway's spelling.
        #[serde(rename = "agentId")]
        agent_id_camel: &'a str,
        /// The Matrix spelling.
        agent_id: &'a str,
        /// What kind of participant it is.
        role: &'a str,
    },
    /// A registered agent's connection ended.
    AgentLeft {
        /// The gateway's spelling.
        #[serde(rename = "agentId")]
        agent_id_camel: &'a str,
        /// The Matrix spelling.
        agent_id: &'a str,
        /// Why: closed, heartbeat timeout, replaced, too slow, shutting down.
        reason: &'a str,
    },
    /// A visitor's connection ended without a `leave`; the bridge says it for them.
    Leave {
        /// The visitor who left.
        visitor: &'a str,
        /// Why the bridge wrote it.
        reason: &'a str,
    },
}

/// The payload of `system_status`.
#[derive(Debug, Serialize)]
pub(crate) struct SystemStatus {
    /// What the bridge is doing.
    pub(crate) status: &'static str,
}

impl ServerMessage<'_> {
    /// Serializes once; the text is then shared by every recipient.
    pub(crate) fn to_text(&self) -> axum::extract::ws::Utf8Bytes {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default().into()
    }
}

/// Machine-readable error codes sent in `error` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not JSON.
    BadJson,
    /// JSON, but not an object with a string `type`, or a field has the wrong type.
    BadMessage,
    /// A binary frame; the protocol is JSON text.
    BinaryNotSupported,
    /// The visitor's text is longer than the limit.
    TextTooLong,
    /// Too many messages per second.
    RateLimited,
    /// The inbox could not take the message (disk full, directory missing, not writable), or,
    /// on a relay of a cluster, the origin that writes it cannot be reached.
    InboxUnavailable,
    /// Too many messages wait in the inbox unread.
    InboxFull,
    /// A directed message names an agent that is not connected.
    UnknownTarget,
    /// The connection may not send this (agent token required).
    Forbidden,
    /// A type only the bridge sends (`state`, `ack`, …).
    ReservedType,
    /// A malformed `agent_register`.
    BadRegister,
    /// The agent id was taken over by a newer connection.
    Replaced,
    /// The message's `id` is longer than the limit.
    BadId,
    /// The message nests arrays and objects deeper than the limit.
    TooDeep,
}

/// A refused client message: a code and a sentence.
#[derive(Debug)]
pub(crate) struct ClientError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl ClientError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Types only the bridge sends; a client sending one would be impersonating it.
pub(crate) const RESERVED_TYPES: &[&str] = &[
    "state",
    "state_patch",
    "ack",
    "error",
    "pong",
    "system_status",
    "agent_joined",
    "agent_left",
];

/// Types a viewer (without the agent token) may send: the visitor's side of the Workshop.
pub(crate) const VISITOR_TYPES: &[&str] = &[
    "message",
    "enter",
    "leave",
    "visitor_message",
    "chat_message",
    "ping",
    "resync",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_reads_only_routing_fields() {
        let h = Head::parse(
            r#"{"zz":[1,{"deep":true}],"type":"bark","target_id":"pip","id":"m1"}"#,
            128,
        )
        .unwrap();
        assert_eq!(h.kind, "bark");
        assert_eq!(h.target_id.as_deref(), Some("pip"));
        assert_eq!(h.id.unwrap().get(), r#""m1""#);
        assert_eq!(
            Head::parse(r#"{"type":"x","id":42}"#, 128)
                .unwrap()
                .id
                .unwrap()
                .get(),
            "42"
        );
    }

    #[test]
    fn bad_messages_get_the_right_code() {
        for (text, code) in [
            ("not json", ErrorCode::BadJson),
            ("{\"type\":", ErrorCode::BadJson),
            ("[1,2]", ErrorCode::BadMessage),
            (r#"["ping"]"#, ErrorCode::BadMessage),
            (r#"  ["message","hi"]"#, ErrorCode::BadMessage),
            ("\"message\"", ErrorCode::BadMessage),
            ("{\"text\":\"no type\"}", ErrorCode::BadMessage),
            ("{\"type\":7}", ErrorCode::BadMessage),
            ("{\"type\":\"x\",\"id\":{\"a\":1}}", ErrorCode::BadMessage),
            ("{\"type\":\"x\",\"target_id\":5}", ErrorCode::BadMessage),
        ] {
            let e = Head::parse(text, 128).unwrap_err();
            assert_eq!(e.code, code, "{text}: {}", e.message);
        }
    }

    #[test]
    fn ids_are_bounded_in_bytes() {
        let ok = format!(r#"{{"type":"x","id":"{}"}}"#, "a".repeat(126));
        assert!(Head::parse(&ok, 128).is_ok());
        let long = format!(r#"{{"type":"x","id":"{}"}}"#, "a".repeat(127));
        assert_eq!(Head::parse(&long, 128).unwrap_err().code, ErrorCode::BadId);
        let number = format!(r#"{{"type":"x","id":1{}}}"#, "0".repeat(200));
        assert_eq!(
            Head::parse(&number, 128).unwrap_err().code,
            ErrorCode::BadId
        );
    }

    #[test]
    fn claimed_agents() {
        let h = Head::parse(r#"{"type":"bark","agent_id":"timmy"}"#, 128).unwrap();
        assert_eq!(h.claimed_agent().unwrap(), Some("timmy"));
        let h = Head::parse(r#"{"type":"bark","agentId":"timmy"}"#, 128).unwrap();
        assert_eq!(h.claimed_agent().unwrap(), Some("timmy"));
        let h = Head::parse(r#"{"type":"bark","agentId":"a","agent_id":"b"}"#, 128).unwrap();
        assert!(h.claimed_agent().is_err());
        let h = Head::parse(r#"{"type":"bark"}"#, 128).unwrap();
        assert_eq!(h.claimed_agent().unwrap(), None);
    }

    #[test]
    fn nesting_depth() {
        assert!(!nested_deeper_than(r#"{"a":[1,{"b":[]}]}"#, 4));
        assert!(nested_deeper_than(r#"{"a":[1,{"b":[]}]}"#, 3));
        // Brackets inside strings, escaped quotes included, do not count.
        assert!(!nested_deeper_than(r#"{"a":"[[[[\"[[[[","b":1}"#, 1));
        // A key given twice: a parser keeps the last value but descends into both.
        assert!(nested_deeper_than(r#"{"a":[1],"a":2}"#, 1));
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(nested_deeper_than(&deep, 64));
        let sixty_four = "[".repeat(64) + &"]".repeat(64);
        assert!(!nested_deeper_than(&sixty_four, 64));
    }

    #[test]
    fn register_accepts_both_spellings() {
        let r: Register = serde_json::from_str(r#"{"agentId":"timmy","role":"agent"}"#).unwrap();
        assert_eq!(r.into_identity().unwrap(), ("timmy".into(), "agent".into()));
        let r: Register = serde_json::from_str(r#"{"agent_id":"pip"}"#).unwrap();
        assert_eq!(r.into_identity().unwrap(), ("pip".into(), "agent".into()));
        for bad in [
            r#"{}"#,
            r#"{"agentId":""}"#,
            r#"{"agentId":"a","agent_id":"b"}"#,
            r#"{"agentId":"a\u0000"}"#,
        ] {
            let r: Register = serde_json::from_str(bad).unwrap();
            assert_eq!(
                r.into_identity().unwrap_err().code,
                ErrorCode::BadRegister,
                "{bad}"
            );
        }
    }

    #[test]
    fn server_messages_have_their_wire_shape() {
        let data = crate::state::value::StateValue::from(serde_json::json!({"a": 1}));
        assert_eq!(
            ServerMessage::State {
                seq: 3,
                data: &data
            }
            .to_text()
            .as_str(),
            r#"{"type":"state","seq":3,"data":{"a":1}}"#
        );
        assert_eq!(
            ServerMessage::AgentJoined {
                agent_id_camel: "t",
                agent_id: "t",
                role: "bot"
            }
            .to_text()
            .as_str(),
            r#"{"type":"agent_joined","agentId":"t","agent_id":"t","role":"bot"}"#
        );
    }
}

/// Strategies shared by the property tests of several modules.
#[cfg(test)]
pub(crate) mod properties_support {
    use proptest::prelude::*;

    /// Arbitrary JSON values, a few levels deep.
    pub(crate) fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".*".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".{0,8}", inner, 0..8)
                    .prop_map(|m| { serde_json::Value::Object(m.into_iter().collect()) }),
            ]
        })
    }
}

/// Property tests: the parser never panics, and what it accepts it reads right.
#[cfg(test)]
mod properties {
    use super::properties_support::json_value;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Failures print their minimal input; no regression files at the repository root.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_text_parses_or_is_refused_with_a_code(text in ".{0,256}") {
            if let Err(e) = Head::parse(&text, 128) {
                prop_assert!(!e.message.is_empty());
            }
        }

        #[test]
        fn any_bytes_as_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = Head::parse(&text, 128);
            let _ = serde_json::from_str::<VisitorFields>(&text);
            let _ = serde_json::from_str::<Register>(&text);
        }

        #[test]
        fn an_object_with_a_string_type_is_always_routable(
            kind in ".{0,32}",
            target in proptest::option::of(".{1,16}"),
            extra in prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..6),
        ) {
            let mut object = serde_json::Map::new();
            for (k, v) in extra {
                if !matches!(k.as_str(), "type" | "id" | "target_id" | "agent_id") {
                    object.insert(k, v);
                }
            }
            object.insert("type".into(), kind.clone().into());
            if let Some(t) = &target {
                object.insert("target_id".into(), t.clone().into());
            }
            let text = serde_json::Value::Object(object).to_string();
            let head = Head::parse(&text, 1 << 20).map_err(|e| TestCaseError::fail(e.message))?;
            prop_assert_eq!(head.kind.as_ref(), kind.as_str());
            prop_assert_eq!(head.target_id.as_deref(), target.as_deref());
        }
    }
}
