//! The access check: no request head lets a stranger in.
//!
//! The input's first byte picks the peer (loopback or a LAN address) and one of two configs;
//! the rest is an HTTP/1.1 request head, parsed with httparse as hyper parses it. The
//! bridge's check then decides, and its verdict is held to what the README promises:
//! - nothing gets in unless its `Host` names the bridge (an IP address, a `localhost` name,
//!   or the one `--allowed-host` of the configs);
//! - a client gets in without a token only from loopback, with loopback trust on, and with
//!   a loopback `Host`;
//! - a web page is never an agent; when an agent token is set, no one is without it;
//! - a web page gets in only from an allowed origin, a loopback page, or the bridge's own
//!   host;
//! - and the other way round: a local program addressing `localhost`, and a client
//!   presenting only the right token from no web page, are never refused.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;

use http::header::{AUTHORIZATION, HOST, ORIGIN};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;
use workshop_bridge::Config;
use workshop_bridge::fuzzing::{Access, Gate};

const TOKEN: &str = "Tok3n-7f3a9c0e";
/// The one name the configs add with `--allowed-host`.
const ALLOWED_HOST: &str = "mac.local";
const AGENT_TOKEN: &str = "Ag3nt-1b2d4e6f";

/// Loopback first, then LAN: `peer < LOOPBACK_PEERS` is loopback.
const PEERS: [IpAddr; 8] = [
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
    IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped()),
    IpAddr::V4(Ipv4Addr::new(127, 3, 2, 1)),
    IpAddr::V4(Ipv4Addr::new(192, 168, 1, 30)),
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
    IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x30)),
    IpAddr::V6(Ipv4Addr::new(192, 168, 1, 30).to_ipv6_mapped()),
];
const LOOPBACK_PEERS: usize = 4;

/// Hosts written as clients write them.
const PLAIN_HOSTS: [&str; 6] = [
    "localhost",
    "localhost:8765",
    "127.0.0.1:8765",
    "[::1]:8765",
    "192.168.1.20:8765",
    "mac.local:8765",
];

/// The settings a check runs against, with what the invariants need to know of them.
struct Setup {
    gate: Gate,
    agent_token: Option<&'static str>,
    trust_loopback: bool,
    /// The allowed origins as a browser would send them.
    allowed_origins: &'static [&'static str],
}

static SETUPS: LazyLock<[Setup; 2]> = LazyLock::new(|| {
    let setup = |agent_token: Option<&'static str>,
                 trust_loopback: bool,
                 configured: &str,
                 allowed_origins: &'static [&'static str]| {
        let config = Config {
            token: Some(TOKEN.into()),
            agent_token: agent_token.map(Into::into),
            no_trust_loopback: !trust_loopback,
            allowed_origins: vec![configured.into()],
            allowed_hosts: vec![ALLOWED_HOST.into()],
            ..Config::default()
        };
        Setup {
            gate: Gate::new(&config),
            agent_token,
            trust_loopback,
            allowed_origins,
        }
    };
    [
        // The usual: one token, local programs trusted.
        setup(
            None,
            true,
            "https://workshop.example:8443",
            &["https://workshop.example:8443"],
        ),
        // Viewers and agents apart, nobody trusted; the origin written as a person might.
        setup(
            Some(AGENT_TOKEN),
            false,
            "HTTP://Studio.Local:5173/",
            &["http://studio.local:5173"],
        ),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, head)) = data.split_first() else {
        return;
    };
    let peer_index = usize::from(selector) % PEERS.len();
    let peer = SocketAddr::new(PEERS[peer_index], 50_000);
    let loopback = peer_index < LOOPBACK_PEERS;
    let setup = &SETUPS[usize::from(selector) / PEERS.len() % SETUPS.len()];
    let Some((uri, headers)) = request_head(head) else {
        return;
    };

    let access = setup.gate.check(peer, &uri, &headers);

    let presented = presented_tokens(&uri, &headers);
    let has = |token: &str| presented.iter().any(|p| p == token);
    let any_token = has(TOKEN) || setup.agent_token.is_some_and(has);
    let origin = headers.get(ORIGIN);

    let host = host_kind(headers.get(HOST));
    if let Access::Allowed { agent, .. } = &access {
        assert!(host.is_some(), "let in with Host {:?}", headers.get(HOST));
        if !loopback || !setup.trust_loopback || host != Some(Host::Loopback) {
            assert!(
                any_token,
                "let in without the token: peer {peer}, Host {:?}, tokens {presented:?}",
                headers.get(HOST)
            );
        }
        if *agent {
            assert!(origin.is_none(), "a web page may act as an agent");
            if let Some(agent_token) = setup.agent_token {
                assert!(
                    has(agent_token),
                    "an agent without the agent token: peer {peer}, tokens {presented:?}"
                );
            }
        }
        if let Some(origin) = origin {
            assert!(
                origin_is_allowed(origin, headers.get(HOST), setup.allowed_origins),
                "a page from {origin:?} was let in (Host {:?})",
                headers.get(HOST)
            );
        }
    }

    // Nobody who should get in is refused (asked of plainly written Hosts, where every
    // reading of the grammar agrees).
    let plain_host = headers.get_all(HOST).iter().count() == 1
        && headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| PLAIN_HOSTS.contains(&h));
    if origin.is_none() && plain_host {
        if loopback && setup.trust_loopback && host == Some(Host::Loopback) {
            assert!(
                matches!(access, Access::Allowed { agent: true, .. }),
                "a local program refused: {access:?}"
            );
        }
        // One token, said once, in a query the server reads (a repeated key fails it whole).
        let query: Vec<_> = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .map(|(key, _)| key)
            .collect();
        let unique_keys = query
            .iter()
            .enumerate()
            .all(|(i, k)| !query[..i].contains(k));
        let one_authorization = headers.get_all(AUTHORIZATION).iter().count() <= 1;
        if unique_keys && one_authorization && presented == [TOKEN] {
            assert!(
                matches!(access, Access::Allowed { .. }),
                "the right token refused: {access:?}"
            );
        }
    }
});

/// The URI and headers of a complete HTTP/1.1 request head, or `None` where hyper would
/// answer 400 (or keep waiting) instead of calling the bridge.
fn request_head(bytes: &[u8]) -> Option<(Uri, HeaderMap)> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut slots);
    let httparse::Status::Complete(_) = request.parse(bytes).ok()? else {
        return None;
    };
    let uri: Uri = request.path?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        headers.append(name, value);
    }
    Some((uri, headers))
}

/// Every `?token=` value of the URI, decoded.
fn query_tokens(uri: &Uri) -> Vec<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
        .collect()
}

/// Every token the request presents anywhere: query values and bearer credentials.
fn presented_tokens(uri: &Uri, headers: &HeaderMap) -> Vec<String> {
    let mut tokens = query_tokens(uri);
    for value in headers.get_all(AUTHORIZATION) {
        let Ok(value) = value.to_str() else { continue };
        if let Some((scheme, token)) = value.split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
        {
            tokens.push(token.trim().to_owned());
        }
    }
    tokens
}

/// How a `Host` names the bridge, as far as these configs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    /// `localhost`, a name under `.localhost`, or a loopback address.
    Loopback,
    /// Another IP address, or the one name the configs allow.
    Known,
}

/// Reads a `Host` value (`name[:port]`, `[v6][:port]`) from the HTTP and URL grammars, not
/// from the bridge's code; `None` for anything that names no one the configs allow.
fn host_kind(value: Option<&HeaderValue>) -> Option<Host> {
    let value = value?.to_str().ok()?.to_ascii_lowercase();
    let (name, port) = match value.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            (v6.to_owned(), after)
        }
        None => match value.split_once(':') {
            Some((name, port)) => (name.to_owned(), port),
            None => (value.clone(), ""),
        },
    };
    let port = port.strip_prefix(':').unwrap_or(port);
    if !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
        return None;
    }
    // A trailing dot ends a fully qualified name; URL parsers drop it before reading an
    // IPv4 address too (`192.168.1.2.` is that address).
    let name = name.strip_suffix('.').unwrap_or(&name).to_owned();
    if let Ok(ip) = name.parse::<IpAddr>() {
        let loopback = match ip {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        };
        return Some(if loopback {
            Host::Loopback
        } else {
            Host::Known
        });
    }
    if name == ALLOWED_HOST {
        return Some(Host::Known);
    }
    (name == "localhost" || name.ends_with(".localhost")).then_some(Host::Loopback)
}

/// What a browser's `Origin` may be for the bridge to accept the page: an allowed origin, a
/// page served by the bridge itself (same host and port as the request's `Host`), or a page
/// on this machine's `localhost`. Written from the web's definition of an origin
/// (`scheme://host[:port]`), not from the bridge's code.
fn origin_is_allowed(origin: &HeaderValue, host: Option<&HeaderValue>, allowed: &[&str]) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    if allowed.contains(&origin.as_str()) {
        return true;
    }
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    if host
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.eq_ignore_ascii_case(authority))
    {
        return true;
    }
    // A page on a loopback name, any port.
    let Ok(value) = HeaderValue::from_str(authority) else {
        return false;
    };
    host_kind(Some(&value)) == Some(Host::Loopback)
}
