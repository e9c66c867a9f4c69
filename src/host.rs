//! Which names this bridge answers to: the `Host` check that defeats DNS rebinding.
//!
//! A web page on `http://evil.example:8765` can re-point its own name at this machine; the
//! browser then treats the bridge as that page's own site and sends `Host: evil.example`.
//! So every request must name the bridge by a name it knows is its own: `localhost`, an IP
//! address (rebinding needs a name, so a literal is safe, and a new DHCP address stays
//! harmless), this machine's host name and its `NAME.local` Bonjour name, or a name the
//! user added with `--allowed-host`. Jupyter, Vite, webpack-dev-server and CUPS do the same.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::uri::Authority;

use crate::localname::normalize;

/// How a `Host` header names the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostKind {
    /// `localhost` (or `*.localhost`) or a loopback address: the request can only have been
    /// meant for this machine, which is what trusting loopback clients relies on.
    Loopback,
    /// Another address of this machine, one of its names, or an allowed host.
    Known,
}

/// The names the bridge answers to, prepared once.
#[derive(Debug, Clone)]
pub(crate) struct HostAllowlist {
    /// Exact names, lower case, without a trailing dot.
    names: Vec<String>,
    /// Suffixes such as `.example.lan` that allow every name under them.
    suffixes: Vec<String>,
}

impl HostAllowlist {
    /// This machine's names plus `extra` (from `--allowed-host`).
    pub(crate) fn new(extra: &[String]) -> Self {
        let mut list = Self::with(extra);
        for name in machine_names() {
            list.add(&name);
        }
        list
    }

    /// Only `extra` (and what is always allowed): for tests that must not depend on the
    /// machine's own names.
    pub(crate) fn with(extra: &[String]) -> Self {
        let mut list = Self {
            names: Vec::new(),
            suffixes: Vec::new(),
        };
        for pattern in extra {
            list.add(pattern);
        }
        list
    }

    fn add(&mut self, pattern: &str) {
        let pattern = normalize(pattern);
        if pattern.is_empty() {
            return;
        }
        let target = if pattern.starts_with('.') {
            &mut self.suffixes
        } else {
            &mut self.names
        };
        if !target.contains(&pattern) {
            target.push(pattern);
        }
    }

    /// Whether `host` (the `Host` header's value, `name[:port]` or `[v6]:port`) names this
    /// bridge, and how; `None` if it does not, or is not a valid host.
    pub(crate) fn check(&self, host: &str) -> Option<HostKind> {
        self.kind_of(&host_of(host)?)
    }

    /// How the allowlist sees `name`, already normalised: normalising twice would take a
    /// second trailing dot away.
    fn kind_of(&self, name: &str) -> Option<HostKind> {
        if let Some(ip) = parse_ip(name) {
            return Some(if is_loopback(ip) {
                HostKind::Loopback
            } else {
                HostKind::Known
            });
        }
        if name == "localhost" || name.ends_with(".localhost") {
            return Some(HostKind::Loopback);
        }
        let known = self.names.iter().any(|n| n == name)
            || self
                .suffixes
                .iter()
                .any(|s| name.ends_with(s.as_str()) && name.len() > s.len());
        known.then_some(HostKind::Known)
    }
}

/// Whether `pattern` can be an `--allowed-host`: a host name (optionally starting with a
/// dot, for every name under it) or an IP address, without a port or a scheme.
pub(crate) fn valid_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix('.').unwrap_or(pattern);
    let name = name.strip_suffix('.').unwrap_or(name);
    if parse_ip(name).is_some() {
        return true;
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// The host part of a `Host` header or an origin's authority, lower case, brackets removed;
/// `None` if it is not a valid authority (or carries user info, which `Host` never does).
pub(crate) fn host_of(authority: &str) -> Option<String> {
    let parsed = Authority::from_str(authority).ok()?;
    if parsed.as_str().contains('@') {
        return None;
    }
    let host = parsed.host();
    // What follows the host is a port of digits, or nothing: `localhost:80@evil.example`,
    // `localhost:5173.evil.example` and `localhost:8(` name no port.
    match parsed.as_str().strip_prefix(host)? {
        "" => {}
        rest => {
            let port = rest.strip_prefix(':')?;
            if !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err() {
                return None;
            }
        }
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| normalize(host))
}

fn parse_ip(name: &str) -> Option<IpAddr> {
    IpAddr::from_str(name).ok()
}

/// Loopback, including IPv4 loopback written as an IPv4-mapped IPv6 address.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// This machine's names: its host name, that name without a domain, `SHORT.local`, and
/// the Bonjour name pairing offers ([`crate::localname::local_name`]; on macOS its own
/// setting, LocalHostName, which may differ from the host name).
fn machine_names() -> Vec<String> {
    let mut names = Vec::new();
    let host = normalize(&gethostname::gethostname().to_string_lossy());
    if !host.is_empty() {
        let short = host.split('.').next().unwrap_or(&host).to_owned();
        names.push(format!("{short}.local"));
        names.push(short);
        names.push(host);
    }
    names.extend(crate::localname::local_name());
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_localhost_are_always_allowed() {
        let list = HostAllowlist::with(&[]);
        for (host, kind) in [
            ("localhost:8765", HostKind::Loopback),
            ("LOCALHOST.", HostKind::Loopback),
            ("app.localhost:3000", HostKind::Loopback),
            ("127.0.0.1:8765", HostKind::Loopback),
            ("127.1.2.3", HostKind::Loopback),
            ("127.0.0.1.:8765", HostKind::Loopback),
            ("[::1]:8765", HostKind::Loopback),
            ("[::ffff:127.0.0.1]:80", HostKind::Loopback),
            ("192.168.1.20:8765", HostKind::Known),
            ("[fe80::1]:8765", HostKind::Known),
        ] {
            assert_eq!(list.check(host), Some(kind), "{host}");
        }
    }

    #[test]
    fn names_must_be_on_the_list() {
        let list = HostAllowlist::with(&["Workshop.Example.LAN".into(), ".home.arpa".into()]);
        assert_eq!(
            list.check("workshop.example.lan:8765"),
            Some(HostKind::Known)
        );
        assert_eq!(list.check("mac.home.arpa"), Some(HostKind::Known));
        for host in [
            "evil.example:8765",
            "home.arpa",
            "evilhome.arpa",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "user@localhost",
            "localhost:8(",
            "localhost:5173.evil.example",
            "127.0.0.1:x",
            "localhost:70000",
            "[::1]evil.example",
            "",
            "[::1",
            "a b",
            // Only one trailing dot ends a name.
            "127.0.0.10..:8765",
            "localhost..",
            "[::1].",
        ] {
            assert_eq!(list.check(host), None, "{host}");
        }
    }

    #[test]
    fn this_machines_names_are_known() {
        let list = HostAllowlist::new(&[]);
        let host = normalize(&gethostname::gethostname().to_string_lossy());
        let short = host.split('.').next().unwrap().to_owned();
        assert_eq!(list.check(&host), Some(HostKind::Known));
        assert_eq!(
            list.check(&format!("{short}.local:8765")),
            Some(HostKind::Known)
        );
        if let Some(local) = crate::localname::local_name() {
            let upper = local.to_ascii_uppercase();
            for host in [local.clone(), format!("{upper}.:8765"), format!("{local}.")] {
                assert_eq!(list.check(&host), Some(HostKind::Known), "{host}");
            }
        }
    }

    #[test]
    fn other_local_names_are_not_ours() {
        let list = HostAllowlist::new(&[]);
        let host = normalize(&gethostname::gethostname().to_string_lossy());
        let short = host.split('.').next().unwrap().to_owned();
        for other in [
            "evil.local:8765".to_owned(),
            format!("{short}-2.local"),
            format!("x{short}.local"),
            format!("{short}.local.evil.example"),
            format!("evil.{short}.local"),
            ".local".to_owned(),
        ] {
            assert_eq!(list.check(&other), None, "{other}");
        }
    }

    #[test]
    fn patterns() {
        for ok in ["mac.local", ".home.arpa", "192.168.1.2", "::1", "my_host"] {
            assert!(valid_pattern(ok), "{ok}");
        }
        for bad in ["", ".", "http://mac.local", "mac.local:8765", "a b", "a..b"] {
            assert!(!valid_pattern(bad), "{bad}");
        }
    }
}
