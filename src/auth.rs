//! Who may connect, decided before the WebSocket upgrade.
//!
//! Two checks, in this order:
//! 1. Origin: a browser always says which page opened the socket. Only the bridge's own
//!    pages, `localhost` pages and configured origins may connect, so a web page in the
//!    Mac's own browser cannot drive the bridge (cross-site WebSocket hijacking).
//! 2. Token: from `?token=` or `Authorization: Bearer`, compared in constant time. Loopback
//!    clients are trusted without one (any local process can already write the inbox)
//!    unless `no_trust_loopback` is set.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;

/// The outcome of checking a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Let it in; `agent` says whether it may speak as an agent.
    Allowed {
        /// May register and send any message type.
        agent: bool,
    },
    /// 401: no token, or the wrong one.
    Unauthorized(&'static str),
    /// 403: a web page from an origin that is not allowed.
    ForbiddenOrigin,
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
}

impl Auth {
    pub(crate) fn new(config: &Config) -> Self {
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
        }
    }

    /// Decides about a request from `peer` with these headers and `?token=` value.
    pub(crate) fn check(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Verdict {
        let origin = headers
            .get(header::ORIGIN)
            .map(|o| o.to_str().unwrap_or(""));
        if let Some(origin) = origin
            && !self.origin_allowed(origin, headers)
        {
            return Verdict::ForbiddenOrigin;
        }
        let presented = query_token.or_else(|| bearer(headers)).map(digest);
        let is = |secret: Option<[u8; 32]>| match (secret, presented) {
            (Some(s), Some(p)) => bool::from(s.ct_eq(&p)),
            _ => false,
        };
        let agent_token_ok = is(self.agent_token);
        let token_ok = self.token.is_none() || is(self.token) || agent_token_ok;
        let trusted_local = self.trust_loopback && is_loopback(peer.ip());
        if !token_ok && !trusted_local {
            return Verdict::Unauthorized(if presented.is_none() {
                "a token is required: add ?token=… to the URL or send Authorization: Bearer …"
            } else {
                "the token is wrong"
            });
        }
        // A local program (no Origin: not a web page) is as trusted as the agent itself.
        let agent =
            self.agent_token.is_none() || agent_token_ok || (trusted_local && origin.is_none());
        Verdict::Allowed { agent }
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
        // The bridge's own pages: the Origin's host:port is the Host the request was sent to.
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
            return true;
        }
        matches!(hostname(authority), "localhost" | "127.0.0.1" | "[::1]")
    }
}

/// The host of `host[:port]`, keeping IPv6 brackets.
fn hostname(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.split(':').next().unwrap_or(authority)
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

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth(token: Option<&str>, trust_loopback: bool) -> Auth {
        let config = Config {
            token: token.map(str::to_owned),
            no_auth: token.is_none(),
            no_trust_loopback: !trust_loopback,
            allowed_origins: vec!["https://workshop.example:8443".into()],
            ..Config::default()
        };
        Auth::new(&config)
    }

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k, HeaderValue::from_static(v));
        }
        h
    }

    const LAN: &str = "192.168.1.30:50000";
    const LOCAL: &str = "127.0.0.1:50000";

    #[test]
    fn token_from_query_or_bearer() {
        let a = auth(Some("s3cret"), false);
        let peer = LAN.parse().unwrap();
        let none = HeaderMap::new();
        assert_eq!(
            a.check(peer, &none, Some("s3cret")),
            Verdict::Allowed { agent: true }
        );
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer s3cret")]);
        assert_eq!(
            a.check(peer, &bearer, None),
            Verdict::Allowed { agent: true }
        );
        assert!(matches!(
            a.check(peer, &none, Some("nope")),
            Verdict::Unauthorized(_)
        ));
        assert!(matches!(
            a.check(peer, &none, None),
            Verdict::Unauthorized(_)
        ));
    }

    #[test]
    fn loopback_is_trusted_only_when_allowed() {
        let peer = LOCAL.parse().unwrap();
        let none = HeaderMap::new();
        assert!(matches!(
            auth(Some("t"), true).check(peer, &none, None),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            auth(Some("t"), false).check(peer, &none, None),
            Verdict::Unauthorized(_)
        ));
        let mapped = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert!(matches!(
            auth(Some("t"), true).check(mapped, &none, None),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn origins() {
        let a = auth(Some("t"), true);
        let peer = LOCAL.parse().unwrap();
        let evil = headers(&[(header::ORIGIN, "https://evil.example")]);
        assert_eq!(a.check(peer, &evil, Some("t")), Verdict::ForbiddenOrigin);
        for ok in [
            "http://localhost:5173",
            "https://127.0.0.1",
            "http://[::1]:80",
            "https://workshop.example:8443/",
        ] {
            let h = headers(&[(header::ORIGIN, ok)]);
            assert!(
                matches!(a.check(peer, &h, None), Verdict::Allowed { .. }),
                "{ok}"
            );
        }
        let own = headers(&[
            (header::ORIGIN, "http://192.168.1.20:8765"),
            (header::HOST, "192.168.1.20:8765"),
        ]);
        assert!(matches!(a.check(peer, &own, None), Verdict::Allowed { .. }));
        let lookalike = headers(&[(header::ORIGIN, "http://localhost.evil.example")]);
        assert_eq!(a.check(peer, &lookalike, None), Verdict::ForbiddenOrigin);
        let null = headers(&[(header::ORIGIN, "null")]);
        assert_eq!(a.check(peer, &null, None), Verdict::ForbiddenOrigin);
    }

    #[test]
    fn agent_token_separates_viewers_from_agents() {
        let config = Config {
            token: Some("viewer".into()),
            agent_token: Some("agent".into()),
            ..Config::default()
        };
        let a = Auth::new(&config);
        let lan = LAN.parse().unwrap();
        let none = HeaderMap::new();
        assert_eq!(
            a.check(lan, &none, Some("viewer")),
            Verdict::Allowed { agent: false }
        );
        assert_eq!(
            a.check(lan, &none, Some("agent")),
            Verdict::Allowed { agent: true }
        );
        let local = LOCAL.parse().unwrap();
        assert_eq!(
            a.check(local, &none, None),
            Verdict::Allowed { agent: true }
        );
        let page = headers(&[(header::ORIGIN, "http://localhost:3000")]);
        assert_eq!(
            a.check(local, &page, None),
            Verdict::Allowed { agent: false }
        );
    }
}
