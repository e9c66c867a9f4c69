//! Who may connect, and what they may do, decided before the WebSocket upgrade.
//!
//! In this order, so nothing is looked at for a request that is not even meant for us:
//! 1. Host: the request must name this bridge ([`crate::host`]); otherwise a web page could
//!    reach it by pointing its own name at this machine (DNS rebinding).
//! 2. Origin: a browser always says which page opened the socket. Only the bridge's own
//!    pages, `localhost` pages and configured origins may connect, so a web page in the
//!    Mac's own browser cannot drive the bridge (cross-site WebSocket hijacking).
//! 3. Token: from `?token=` or `Authorization: Bearer`, compared in constant time. Loopback
//!    clients are trusted without one (any local program can already write the inbox)
//!    unless `no_trust_loopback` is set, but only when the `Host` is a loopback name too.
//!    Wrong tokens cost time ([`crate::throttle`]).
//!
//! The verdict also says how the client was admitted, which the inbox records and which
//! decides whether it may speak as an agent.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::host::{HostAllowlist, HostKind, is_loopback};
use crate::throttle::Throttle;

/// How a client was let in, weakest first: the order is the privilege an agent id is held
/// with, so a weaker client cannot take an id from a stronger one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// Authentication is off (`--no-auth`): anyone who reached the port.
    NoAuth,
    /// It presented the token.
    Token,
    /// A client on this machine, trusted without a token.
    Loopback,
    /// It presented the agent token.
    AgentToken,
}

/// A client that may connect, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// How it was let in.
    pub(crate) admission: Admission,
    /// The web page it runs in (its `Origin`), if it is a browser.
    pub(crate) origin: Option<String>,
    /// May register an agent id and send agent messages. Never a browser page.
    pub(crate) agent: bool,
}

/// The outcome of checking a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Let it in.
    Allowed(Admitted),
    /// 421: the `Host` does not name this bridge.
    UnknownHost,
    /// 403: a web page from an origin that is not allowed.
    ForbiddenOrigin,
    /// 401: no token, or the wrong one.
    Unauthorized(&'static str),
    /// 429: too many wrong tokens from this address; try again after this long.
    TooManyFailures(Duration),
}

/// The access rules, prepared once from the config.
#[derive(Debug)]
pub(crate) struct Auth {
    /// SHA-256 of the token; `None` when authentication is off.
    token: Option<[u8; 32]>,
    /// SHA-256 of the agent token, if agents need one.
    agent_token: Option<[u8; 32]>,
    trust_loopback: bool,
    allowed_origins: Vec<String>,
    hosts: HostAllowlist,
    throttle: Throttle,
}

impl Auth {
    pub(crate) fn new(config: &Config) -> Self {
        Self::with_hosts(config, HostAllowlist::new(&config.allowed_hosts))
    }

    /// With an explicit host list (tests that must not depend on this machine's names).
    pub(crate) fn with_hosts(config: &Config, hosts: HostAllowlist) -> Self {
        Self {
            token: if config.no_auth {
                None
            } else {
                config.token.as_deref().map(digest)
            },
            agent_token: config.agent_token.as_deref().map(digest),
            trust_loopback: !config.no_trust_loopback,
            allowed_origins: config
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            hosts,
            throttle: Throttle::default(),
        }
    }

    /// The per-address refusal counts, for logging refusals.
    pub(crate) fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// How the request's `Host` names this bridge; `None` if it does not (or is missing).
    pub(crate) fn host_kind(&self, headers: &HeaderMap) -> Option<HostKind> {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        self.hosts.check(host)
    }

    /// Decides about a request from `peer` with these headers and `?token=` value.
    pub(crate) fn check(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Verdict {
        let Some(host_kind) = self.host_kind(headers) else {
            return Verdict::UnknownHost;
        };
        let origin = match headers.get(header::ORIGIN) {
            None => None,
            Some(origin) => match origin.to_str() {
                Ok(origin) if self.origin_allowed(origin, headers) => Some(origin.to_owned()),
                _ => return Verdict::ForbiddenOrigin,
            },
        };
        let browser = origin.is_some();
        let trusted_local =
            self.trust_loopback && is_loopback(peer.ip()) && host_kind == HostKind::Loopback;
        let presented = query_token.or_else(|| bearer(headers));
        if !trusted_local
            && presented.is_some()
            && let Some(wait) = self.throttle.wait_for(peer.ip())
        {
            return Verdict::TooManyFailures(wait);
        }
        let presented = presented.map(digest);
        let is = |secret: Option<[u8; 32]>| match (secret, presented) {
            (Some(s), Some(p)) => bool::from(s.ct_eq(&p)),
            _ => false,
        };
        let agent_token_ok = is(self.agent_token);
        let token_ok = is(self.token) || agent_token_ok;
        let no_auth = self.token.is_none();
        if !token_ok && !no_auth && !trusted_local {
            if presented.is_none() {
                return Verdict::Unauthorized(
                    "a token is required: add ?token=… to the URL or send Authorization: Bearer …",
                );
            }
            self.throttle.wrong_token(peer.ip());
            return Verdict::Unauthorized("the token is wrong");
        }
        if token_ok {
            self.throttle.succeeded(peer.ip());
        }
        let admission = if agent_token_ok {
            Admission::AgentToken
        } else if trusted_local {
            Admission::Loopback
        } else if token_ok {
            Admission::Token
        } else {
            Admission::NoAuth
        };
        // Speaking as an agent is a privilege a web page never has. With an agent token,
        // only its holders have it; without one, programs on this machine and token holders.
        let agent = !browser
            && match self.agent_token {
                Some(_) => agent_token_ok,
                None => trusted_local || token_ok || no_auth,
            };
        Verdict::Allowed(Admitted {
            admission,
            origin,
            agent,
        })
    }

    fn origin_allowed(&self, origin: &str, headers: &HeaderMap) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.allowed_origins.contains(&origin) {
            return true;
        }
        let Some(authority) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            return false;
        };
        // A page on this machine's loopback names, any port.
        if self.hosts.check(authority) == Some(HostKind::Loopback) {
            return true;
        }
        // The bridge's own pages: the Origin is the very Host the request was sent to, and
        // that Host is one of the bridge's names (checked above, and again here).
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        host.is_some_and(|h| h.eq_ignore_ascii_case(authority))
            && self.hosts.check(authority).is_some()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Hashing both sides makes the comparison independent of the tokens' lengths too.
fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth_with(config: Config) -> Auth {
        Auth::with_hosts(&config, HostAllowlist::with(&["mac.local".into()]))
    }

    fn auth(token: Option<&str>, trust_loopback: bool) -> Auth {
        auth_with(Config {
            token: token.map(str::to_owned),
            no_auth: token.is_none(),
            no_trust_loopback: !trust_loopback,
            allowed_origins: vec!["https://workshop.example:8443".into()],
            ..Config::default()
        })
    }

    /// Headers of a request sent to `host`, plus `pairs`.
    fn to(host: &'static str, pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        for (k, v) in pairs {
            h.insert(k, HeaderValue::from_static(v));
        }
        h
    }

    fn allowed(verdict: Verdict) -> Admitted {
        match verdict {
            Verdict::Allowed(a) => a,
            other => panic!("refused: {other:?}"),
        }
    }

    const LAN: &str = "192.168.1.30:50000";
    const LOCAL: &str = "127.0.0.1:50000";
    const MAC: &str = "192.168.1.20:8765";

    #[test]
    fn token_from_query_or_bearer() {
        let a = auth(Some("s3cret"), false);
        let peer = LAN.parse().unwrap();
        let none = to(MAC, &[]);
        assert_eq!(
            allowed(a.check(peer, &none, Some("s3cret"))).admission,
            Admission::Token
        );
        let bearer = to(MAC, &[(header::AUTHORIZATION, "Bearer s3cret")]);
        assert!(allowed(a.check(peer, &bearer, None)).agent);
        assert_eq!(
            a.check(peer, &none, Some("nope")),
            Verdict::Unauthorized("the token is wrong")
        );
        assert!(matches!(
            a.check(peer, &none, None),
            Verdict::Unauthorized(_)
        ));
    }

    #[test]
    fn the_host_must_name_this_bridge() {
        let a = auth(Some("t"), true);
        let local = LOCAL.parse().unwrap();
        for host in ["evil.example:8765", "localhost.evil.example", ""] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            assert_eq!(
                a.check(local, &h, Some("t")),
                Verdict::UnknownHost,
                "{host}"
            );
        }
        assert_eq!(
            a.check(local, &HeaderMap::new(), Some("t")),
            Verdict::UnknownHost,
            "no Host at all"
        );
        for host in [
            "localhost:8765",
            "127.0.0.1:8765",
            "[::1]:8765",
            MAC,
            "mac.local:8765",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            allowed(a.check(local, &h, Some("t")));
        }
    }

    #[test]
    fn loopback_is_trusted_only_when_allowed_and_asked_for_by_a_loopback_name() {
        let peer = LOCAL.parse().unwrap();
        let local = to("localhost:8765", &[]);
        assert_eq!(
            allowed(auth(Some("t"), true).check(peer, &local, None)).admission,
            Admission::Loopback
        );
        assert!(matches!(
            auth(Some("t"), false).check(peer, &local, None),
            Verdict::Unauthorized(_)
        ));
        let mapped = "[::ffff:127.0.0.1]:5".parse().unwrap();
        allowed(auth(Some("t"), true).check(mapped, &local, None));
        // Sent to this machine's LAN name or address: not a loopback request, token needed.
        for host in ["mac.local:8765", MAC] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            assert!(
                matches!(
                    auth(Some("t"), true).check(peer, &h, None),
                    Verdict::Unauthorized(_)
                ),
                "{host}"
            );
        }
    }

    #[test]
    fn origins() {
        let a = auth(Some("t"), true);
        let peer = LOCAL.parse().unwrap();
        let evil = to(
            "localhost:8765",
            &[(header::ORIGIN, "https://evil.example")],
        );
        assert_eq!(a.check(peer, &evil, Some("t")), Verdict::ForbiddenOrigin);
        for ok in [
            "http://localhost:5173",
            "https://127.0.0.1",
            "http://[::1]:80",
            "https://workshop.example:8443/",
        ] {
            let h = to("localhost:8765", &[(header::ORIGIN, ok)]);
            let admitted = allowed(a.check(peer, &h, None));
            assert_eq!(admitted.origin.as_deref(), Some(ok));
            assert!(!admitted.agent, "a web page is never an agent: {ok}");
        }
        let own = to(MAC, &[(header::ORIGIN, "http://192.168.1.20:8765")]);
        allowed(a.check(peer, &own, Some("t")));
        let own_name = to(
            "mac.local:8765",
            &[(header::ORIGIN, "http://mac.local:8765")],
        );
        allowed(a.check(peer, &own_name, Some("t")));
        let lookalike = to(
            "localhost:8765",
            &[(header::ORIGIN, "http://localhost.evil.example")],
        );
        assert_eq!(a.check(peer, &lookalike, None), Verdict::ForbiddenOrigin);
        let null = to("localhost:8765", &[(header::ORIGIN, "null")]);
        assert_eq!(a.check(peer, &null, None), Verdict::ForbiddenOrigin);
    }

    #[test]
    fn without_an_agent_token_local_programs_and_token_holders_are_agents() {
        let a = auth(Some("t"), true);
        let local = LOCAL.parse().unwrap();
        let lan = LAN.parse().unwrap();
        assert!(allowed(a.check(local, &to("localhost:8765", &[]), None)).agent);
        assert!(allowed(a.check(lan, &to(MAC, &[]), Some("t"))).agent);
        let page = to(
            "localhost:8765",
            &[(header::ORIGIN, "http://localhost:3000")],
        );
        assert!(!allowed(a.check(local, &page, None)).agent);
        let own_page = to(MAC, &[(header::ORIGIN, "http://192.168.1.20:8765")]);
        assert!(!allowed(a.check(lan, &own_page, Some("t"))).agent);
    }

    #[test]
    fn agent_token_separates_viewers_from_agents() {
        let a = auth_with(Config {
            token: Some("viewer".into()),
            agent_token: Some("agent".into()),
            ..Config::default()
        });
        let lan = LAN.parse().unwrap();
        let h = to(MAC, &[]);
        let viewer = allowed(a.check(lan, &h, Some("viewer")));
        assert_eq!((viewer.admission, viewer.agent), (Admission::Token, false));
        let agent = allowed(a.check(lan, &h, Some("agent")));
        assert_eq!(
            (agent.admission, agent.agent),
            (Admission::AgentToken, true)
        );
        let local = LOCAL.parse().unwrap();
        let program = allowed(a.check(local, &to("localhost:8765", &[]), None));
        assert_eq!(
            (program.admission, program.agent),
            (Admission::Loopback, false),
            "with an agent token set, even local programs need it"
        );
        let page = to(
            "localhost:8765",
            &[(header::ORIGIN, "http://localhost:3000")],
        );
        assert!(!allowed(a.check(local, &page, Some("agent"))).agent);
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_tokens_make_the_address_wait_even_for_the_right_one() {
        let a = auth(Some("right"), true);
        let lan = LAN.parse().unwrap();
        let h = to(MAC, &[]);
        for _ in 0..5 {
            assert_eq!(
                a.check(lan, &h, Some("wrong")),
                Verdict::Unauthorized("the token is wrong")
            );
        }
        a.check(lan, &h, Some("wrong"));
        assert!(matches!(
            a.check(lan, &h, Some("right")),
            Verdict::TooManyFailures(_)
        ));
        let other = "192.168.1.31:1".parse().unwrap();
        allowed(a.check(other, &h, Some("right")));
        tokio::time::advance(Duration::from_secs(1)).await;
        allowed(a.check(lan, &h, Some("right")));
    }
}
