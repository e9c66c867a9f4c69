//! The crate-private parsers and checks, opened to the fuzz targets in `tests/fuzz/`.
//!
//! Each wrapper is one call into the code the bridge runs, with owned results, so a target
//! tests the real thing and a change of signature is adapted here, in one place. Only built
//! with the `fuzzing` feature; not an API.

use std::net::SocketAddr;

use axum::http::{HeaderMap, Uri};

pub use crate::auth::Admission;
use crate::auth::{Auth, Verdict};
use crate::config::Config;
use crate::host::HostAllowlist;
use crate::protocol::{self, ClientError, ErrorCode, Head, Register, VisitorFields};

/// What the bridge reads first from a client message: the fields routing needs.
#[derive(Debug)]
pub struct ClientHead {
    /// The `type`.
    pub kind: String,
    /// The `id` exactly as the client wrote it (raw JSON), echoed back in the ack.
    pub id: Option<String>,
    /// The agent a directed message is for.
    pub target_id: Option<String>,
    /// The agent the message claims to come from (`agent_id` or `agentId`), if they agree.
    pub claimed_agent: Result<Option<String>, ErrorCode>,
}

/// A refused client message, as the client is told.
#[derive(Debug)]
pub struct Refusal {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// The sentence for a person.
    pub message: String,
}

impl From<ClientError> for Refusal {
    fn from(e: ClientError) -> Self {
        Self {
            code: e.code,
            message: e.message,
        }
    }
}

/// Reads a client message's routing fields, as the connection reader does with every frame
/// (with an `id` of at most `max_id_bytes`).
pub fn client_head(text: &str, max_id_bytes: usize) -> Result<ClientHead, Refusal> {
    let head = Head::parse(text, max_id_bytes)?;
    Ok(ClientHead {
        kind: head.kind.to_string(),
        id: head.id.map(|id| id.get().to_owned()),
        target_id: head.target_id.as_deref().map(str::to_owned),
        claimed_agent: head
            .claimed_agent()
            .map(|a| a.map(str::to_owned))
            .map_err(|e| e.code),
    })
}

/// Whether `text` nests arrays and objects deeper than `max`, as the reader checks first.
pub fn nested_deeper_than(text: &str, max: usize) -> bool {
    protocol::nested_deeper_than(text, max)
}

/// Reads an `agent_register` message: `None` when its fields have the wrong types (the
/// reader refuses those before validating), else the validated `(id, role)` or the refusal.
pub fn register(text: &str) -> Option<Result<(String, String), Refusal>> {
    let register: Register = serde_json::from_str(text).ok()?;
    Some(register.into_identity().map_err(Refusal::from))
}

/// The fields of a visitor event (`message`, `enter`, …), or `None` when they have the
/// wrong types.
#[derive(Debug)]
pub struct Visitor {
    /// Who is speaking.
    pub visitor: Option<String>,
    /// What they said.
    pub text: Option<String>,
    /// The Matrix spelling of the speaker.
    pub agent_id: Option<String>,
}

/// Reads a visitor event's fields, as the connection reader does.
pub fn visitor(text: &str) -> Option<Visitor> {
    let fields: VisitorFields = serde_json::from_str(text).ok()?;
    Some(Visitor {
        visitor: fields.visitor,
        text: fields.text,
        agent_id: fields.agent_id,
    })
}

/// Whether `name` is acceptable as a visitor name, agent id or role of at most `max` chars.
pub fn valid_name(name: &str, max: usize) -> bool {
    protocol::valid_name(name, max)
}

/// Whether a request may connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Let in.
    Allowed {
        /// How.
        admission: Admission,
        /// Its web page, if it is a browser.
        origin: Option<String>,
        /// May register and send any message type.
        agent: bool,
    },
    /// Refused with 421: the `Host` does not name the bridge.
    UnknownHost,
    /// Refused with 401: no token, or the wrong one.
    Unauthorized,
    /// Refused with 403: a web page from an origin that is not allowed.
    ForbiddenOrigin,
    /// Refused with 429: too many wrong tokens from this address.
    TooManyFailures,
}

/// The bridge's access check for one config.
#[derive(Debug)]
pub struct Gate(Config);

impl Gate {
    /// Prepares the check as the bridge does at start, answering to `localhost`, IP
    /// addresses and the `allowed_hosts` of `config` (not this machine's own names, so that
    /// a run does not depend on the machine).
    pub fn new(config: &Config) -> Self {
        Self(config.clone())
    }

    /// Decides about a request from `peer`, reading the token from the URI's query the way
    /// the hub endpoint and the status API do. Each check starts afresh: wrong tokens of
    /// earlier inputs would otherwise make later ones wait (that back-off has its own tests).
    pub fn check(&self, peer: SocketAddr, uri: &Uri, headers: &HeaderMap) -> Access {
        let auth = Auth::with_hosts(&self.0, HostAllowlist::with(&self.0.allowed_hosts));
        let token = crate::server::query_token(uri);
        match auth.check(peer, headers, token.as_deref()) {
            Verdict::Allowed(admitted) => Access::Allowed {
                admission: admitted.admission,
                origin: admitted.origin,
                agent: admitted.agent,
            },
            Verdict::UnknownHost => Access::UnknownHost,
            Verdict::Unauthorized(_) => Access::Unauthorized,
            Verdict::ForbiddenOrigin => Access::ForbiddenOrigin,
            Verdict::TooManyFailures(_) => Access::TooManyFailures,
        }
    }
}

/// Reads state file text as the state reader does, to the JSON clients are sent: `Ok(None)`
/// for text that holds no document.
pub fn state_to_json(text: &str) -> Result<Option<String>, String> {
    crate::state::state_to_json(text)
}

/// `new` read after `old` as the state reader reads a change, and read in full; the two
/// must be the same. `None` when `old` itself is not read.
pub fn state_change_readings(old: &str, new: &str) -> Option<(String, String)> {
    crate::state::change_readings(old, new)
}

/// Lets the panics libyaml-safer reaches on a few inputs (`[!tag, x]` reaches a
/// `panic!("TODO")` in its tag scanner) through to the state reader, which catches them and
/// refuses the file; any other panic still ends the run as a crash. For a target's `init`:
/// libfuzzer-sys aborts on every panic, before the reader could catch it.
pub fn crash_on_panics_outside_the_yaml_parser() {
    let crash = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_parser = info
            .location()
            .is_some_and(|at| at.file().contains("libyaml-safer"));
        if !in_parser {
            crash(info);
        }
    }));
}
