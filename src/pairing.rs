//! Pairing an iPad: the URL it should open, and that URL as a QR code.
//!
//! The iPad cannot use `localhost`: the URL names this machine on the local network, by
//! its Bonjour name (`NAME.local`, which outlives a DHCP lease) when that name answers,
//! else by one of its addresses (the user may pick another), and carries the token as
//! `?token=`. By default it opens the page the bridge serves itself; a custom Workshop URL
//! gets the bridge's WebSocket address as `?bridge=` as well. The menu-bar app and
//! `workshop-bridge qr` both build the URL here, so they always agree; the app follows the
//! addresses as they change through [`crate::netwatch`].
//!
//! The Workshop URL and the chosen address live in the `[pairing]` section of the config
//! file, which the app and the CLI share.

use std::net::{IpAddr, Ipv4Addr};

use qrcode::QrCode;
use qrcode::render::{svg, unicode};
use serde::Serialize;
use url::Url;

use crate::config::Config;
use crate::config::pairing::parse_workshop_url;
pub use crate::config::pairing::{PairingHost, PairingSettings};
use crate::error::Error;
use crate::localname::{self, RESOLVE_BOUND, Resolve, SystemResolver};

/// One address of this machine that other devices on the network may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LanAddress {
    /// The interface's name (`en0`, `eth0`, …), so the user can tell Wi-Fi from VPN.
    pub interface: String,
    /// Its address.
    pub ip: IpAddr,
}

/// This machine's Bonjour name and where it leads now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalName {
    /// `NAME.local`, lower case.
    pub name: String,
    /// The addresses of this machine it resolves to; empty when it does not answer (no
    /// mDNS responder, or it leads elsewhere), and then it is offered but not used.
    pub addresses: Vec<IpAddr>,
}

impl LocalName {
    /// Whether the name leads to this machine, on an address a bridge bound to `bind`
    /// (`0.0.0.0` or `::`) listens on.
    pub fn resolves_for(&self, bind: IpAddr) -> bool {
        self.addresses
            .iter()
            .any(|ip| bind.is_ipv6() || ip.is_ipv4())
    }
}

/// Everything pairing can name this machine by, at one moment: what [`crate::netwatch`]
/// publishes as it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetworkAddresses {
    /// The LAN addresses, in the order [`lan_addresses`] gives.
    pub lan: Vec<LanAddress>,
    /// The Bonjour name, when the machine has a name.
    pub local_name: Option<LocalName>,
}

impl NetworkAddresses {
    /// The addresses as they are now, with the `.local` name resolved through the system's
    /// resolver (bounded by [`RESOLVE_BOUND`]).
    pub async fn current() -> Self {
        Self::resolve(lan_addresses(), &SystemResolver).await
    }

    /// `lan`, with the `.local` name resolved through `resolver`.
    pub async fn resolve<R: Resolve>(lan: Vec<LanAddress>, resolver: &R) -> Self {
        let local_name = match localname::local_name() {
            Some(name) => {
                let own: Vec<IpAddr> = lan.iter().map(|a| a.ip).collect();
                let addresses =
                    localname::resolve_to_own(resolver, &name, &own, RESOLVE_BOUND).await;
                Some(LocalName { name, addresses })
            }
            None => None,
        };
        Self { lan, local_name }
    }

    /// The LAN addresses now, without asking the resolver: the name is listed as not
    /// answering until a lookup says otherwise.
    pub fn unresolved() -> Self {
        Self {
            lan: lan_addresses(),
            local_name: localname::local_name().map(|name| LocalName {
                name,
                addresses: Vec::new(),
            }),
        }
    }

    fn has_ip(&self, ip: IpAddr) -> bool {
        self.lan.iter().any(|a| a.ip == ip)
    }

    /// The Bonjour name, when it answers for a bridge bound to `bind`.
    fn answering_name(&self, bind: IpAddr) -> Option<&str> {
        self.local_name
            .as_ref()
            .filter(|n| n.resolves_for(bind))
            .map(|n| n.name.as_str())
    }
}

/// What an iPad needs to pair: the URL, and how it names this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pairing {
    /// The URL to open, token included.
    pub url: String,
    /// The name or address of this machine the URL names.
    pub host: PairingHost,
    /// Whether other devices can reach it (false for loopback).
    pub reachable: bool,
    /// Why the user's choice is not the one used, when it is not.
    pub note: Option<String>,
}

/// Every non-loopback address of this machine, IPv4 first (what people recognise and
/// what every iPad network has), link-local IPv6 left out (it needs a zone the URL cannot
/// carry). Empty when the interfaces cannot be listed.
pub fn lan_addresses() -> Vec<LanAddress> {
    match netwatcher::list_interfaces() {
        Ok(interfaces) => lan_of(interfaces.values()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the network interfaces");
            Vec::new()
        }
    }
}

/// The LAN addresses among `interfaces`, as [`lan_addresses`] orders them.
pub(crate) fn lan_of<'a>(
    interfaces: impl IntoIterator<Item = &'a netwatcher::Interface>,
) -> Vec<LanAddress> {
    let mut found: Vec<(u32, LanAddress)> = interfaces
        .into_iter()
        .flat_map(|i| {
            i.ips.iter().map(|r| {
                let address = LanAddress {
                    interface: i.name.clone(),
                    ip: r.ip,
                };
                (i.index, address)
            })
        })
        .filter(|(_, a)| !(a.ip.is_loopback() || is_link_local_v6(a.ip)))
        .collect();
    // In the system's order of interfaces, IPv4 first, link-local IPv4 last of those.
    found.sort_by_key(|(index, a)| (a.ip.is_ipv6(), is_link_local_v4(a.ip), *index, a.ip));
    let mut addresses: Vec<LanAddress> = found.into_iter().map(|(_, a)| a).collect();
    addresses.dedup_by(|a, b| a.ip == b.ip);
    addresses
}

fn is_link_local_v4(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_link_local())
}

fn is_link_local_v6(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
}

/// The name or address to put in the URL, and why it is not the user's choice when not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChoice {
    /// What the URL names.
    pub host: PairingHost,
    /// Set when the user chose something that cannot be used now: says what and what
    /// stands in for it.
    pub note: Option<String>,
}

/// What to name in the URL for a bridge bound to `bind`.
///
/// A bridge bound to one address is reachable there only. A bridge bound to all addresses
/// (`0.0.0.0`, `::`) is reachable on any LAN address: the user's choice while it is still
/// this machine's (an address it has, or its `.local` name while that answers), else the
/// `.local` name when it answers, else the first address. Without any, loopback (good for
/// this machine only).
pub fn choose_host(
    bind: IpAddr,
    preferred: Option<&PairingHost>,
    network: &NetworkAddresses,
) -> HostChoice {
    if !bind.is_unspecified() {
        return HostChoice {
            host: PairingHost::Ip(bind),
            note: None,
        };
    }
    let usable = |host: &PairingHost| match host {
        PairingHost::Ip(ip) => network.has_ip(*ip) && (bind.is_ipv6() || ip.is_ipv4()),
        PairingHost::Name(name) => network.answering_name(bind) == Some(name.as_str()),
    };
    if let Some(p) = preferred.filter(|p| usable(p)) {
        return HostChoice {
            host: p.clone(),
            note: None,
        };
    }
    let host = match network.answering_name(bind) {
        Some(name) => PairingHost::Name(name.to_owned()),
        None => PairingHost::Ip(
            network
                .lan
                .iter()
                .map(|c| c.ip)
                .find(|ip| bind.is_ipv6() || ip.is_ipv4())
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ),
    };
    let note = preferred.map(|p| match p {
        PairingHost::Ip(ip) => {
            format!("{ip} is not an address of this machine now, so the pairing URL names {host}")
        }
        PairingHost::Name(name) => {
            format!("{name} does not answer on this network now, so the pairing URL names {host}")
        }
    });
    HostChoice { host, note }
}

/// The URL an iPad should open to reach the bridge configured by `config` at `host`.
///
/// Default: `http://HOST:PORT/?token=TOKEN`, the bridge's own page. With a Workshop URL:
/// that URL plus `bridge=ws://HOST:PORT/ws` and `token=TOKEN`. No token when
/// authentication is off.
pub fn workshop_url(
    config: &Config,
    host: &PairingHost,
    custom: Option<&str>,
) -> Result<String, Error> {
    let bridge = host.authority(config.port);
    let mut url = match custom.map(str::trim).filter(|u| !u.is_empty()) {
        Some(custom) => {
            let mut url = parse_workshop_url(custom)?;
            url.query_pairs_mut()
                .append_pair("bridge", &format!("ws://{bridge}/ws"));
            url
        }
        None => Url::parse(&format!("http://{bridge}/")).map_err(|e| Error::InvalidSetting {
            field: "bind",
            message: format!("cannot make a URL of {bridge}: {e}"),
        })?,
    };
    if let (false, Some(token)) = (config.no_auth, &config.token) {
        url.query_pairs_mut().append_pair("token", token);
    }
    Ok(url.into())
}

/// Everything pairing needs, from the config, the user's pairing choices and the
/// machine's addresses (see [`NetworkAddresses::current`]).
pub fn pairing(
    config: &Config,
    settings: &PairingSettings,
    network: &NetworkAddresses,
) -> Result<Pairing, Error> {
    let choice = choose_host(config.bind, settings.address.as_ref(), network);
    let url = workshop_url(config, &choice.host, settings.workshop_url.as_deref())?;
    Ok(Pairing {
        url,
        reachable: choice.host.is_reachable(),
        host: choice.host,
        note: choice.note,
    })
}

fn qr(text: &str) -> Result<QrCode, Error> {
    QrCode::new(text.as_bytes()).map_err(|e| Error::InvalidSetting {
        field: "workshop_url",
        message: format!("the pairing URL does not fit in a QR code: {e}"),
    })
}

/// `text` as a QR code in SVG: black on white with its quiet zone, scalable (`viewBox`),
/// ready to put into a page.
pub fn qr_svg(text: &str) -> Result<String, Error> {
    let svg = qr(text)?
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    // The XML declaration is for files; inside a page it is noise.
    Ok(
        match svg.strip_prefix(r#"<?xml version="1.0" standalone="yes"?>"#) {
            Some(rest) => rest.to_owned(),
            None => svg,
        },
    )
}

/// `text` as a QR code drawn with half-block characters, two modules per line, light on
/// dark so it scans from a terminal with a dark background (and, with its quiet zone,
/// from a light one).
pub fn qr_terminal(text: &str) -> Result<String, Error> {
    Ok(qr(text)?
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(token: Option<&str>) -> Config {
        Config {
            port: 8765,
            token: token.map(str::to_owned),
            ..Config::default()
        }
    }

    fn lan(ip: &str) -> LanAddress {
        LanAddress {
            interface: "en0".into(),
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn default_url_is_the_bridge_page_with_the_token() {
        let url = workshop_url(&config(Some("abc")), &ip("192.168.1.20"), None);
        assert_eq!(url.unwrap(), "http://192.168.1.20:8765/?token=abc");
        let url = workshop_url(&config(Some("abc")), &name("mac.local"), None);
        assert_eq!(url.unwrap(), "http://mac.local:8765/?token=abc");
    }

    #[test]
    fn custom_url_gets_the_bridge_address_and_keeps_its_query() {
        let url = workshop_url(
            &config(Some("a b")),
            &ip("192.168.1.20"),
            Some("https://workshop.example/scene?x=1"),
        );
        assert_eq!(
            url.unwrap(),
            "https://workshop.example/scene?x=1&bridge=ws%3A%2F%2F192.168.1.20%3A8765%2Fws&token=a+b"
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed_and_no_auth_has_no_token() {
        let mut c = config(Some("abc"));
        c.no_auth = true;
        let url = workshop_url(&c, &ip("fd00::5"), None).unwrap();
        assert_eq!(url, "http://[fd00::5]:8765/");
    }

    #[test]
    fn a_custom_url_that_is_not_a_web_address_names_the_setting() {
        let err = workshop_url(&config(None), &ip("127.0.0.1"), Some("ftp://x")).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidSetting {
                    field: "workshop_url",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            PairingSettings {
                workshop_url: Some("not a url".into()),
                address: None
            }
            .validate()
            .is_err()
        );
    }

    fn ip(text: &str) -> PairingHost {
        PairingHost::Ip(text.parse().unwrap())
    }

    fn name(text: &str) -> PairingHost {
        PairingHost::Name(text.into())
    }

    fn network(lan_ips: &[&str], local: Option<(&str, &[&str])>) -> NetworkAddresses {
        NetworkAddresses {
            lan: lan_ips.iter().map(|a| lan(a)).collect(),
            local_name: local.map(|(n, to)| LocalName {
                name: n.into(),
                addresses: to.iter().map(|a| a.parse().unwrap()).collect(),
            }),
        }
    }

    fn chosen(bind: &str, preferred: Option<PairingHost>, net: &NetworkAddresses) -> HostChoice {
        choose_host(bind.parse().unwrap(), preferred.as_ref(), net)
    }

    #[test]
    fn host_follows_the_bind_address_and_the_users_choice() {
        let all = "0.0.0.0";
        let net = network(&["fd00::5", "192.168.1.20", "10.0.0.7"], None);
        assert_eq!(chosen("10.0.0.7", None, &net).host, ip("10.0.0.7"));
        assert_eq!(chosen(all, None, &net).host, ip("192.168.1.20"));
        let picked = chosen(all, Some(ip("10.0.0.7")), &net);
        assert_eq!((picked.host, picked.note), (ip("10.0.0.7"), None));
        // a choice that is no longer an address of this machine is set aside, and said so
        let gone = chosen(all, Some(ip("172.16.0.9")), &net);
        assert_eq!(gone.host, ip("192.168.1.20"));
        assert_eq!(
            gone.note.as_deref(),
            Some(
                "172.16.0.9 is not an address of this machine now, so the pairing URL names 192.168.1.20"
            )
        );
        assert_eq!(chosen(all, None, &network(&[], None)).host, ip("127.0.0.1"));
    }

    #[test]
    fn the_local_name_is_the_default_while_it_answers() {
        let all = "0.0.0.0";
        let answering = network(
            &["192.168.1.20", "10.0.0.7"],
            Some(("mac.local", &["192.168.1.20"])),
        );
        assert_eq!(chosen(all, None, &answering).host, name("mac.local"));
        assert_eq!(chosen("::", None, &answering).host, name("mac.local"));
        // an address the user picked still wins; a bridge on one address names that one
        assert_eq!(
            chosen(all, Some(ip("10.0.0.7")), &answering).host,
            ip("10.0.0.7")
        );
        assert_eq!(chosen("10.0.0.7", None, &answering).host, ip("10.0.0.7"));
        // the address the user picked is gone: the name stands in
        let gone = chosen(all, Some(ip("172.16.0.9")), &answering);
        assert_eq!(gone.host, name("mac.local"));
        assert!(gone.note.unwrap().ends_with("names mac.local"));

        // Not answering (no mDNS responder): offered, but the first address is used.
        let silent = network(&["192.168.1.20"], Some(("mac.local", &[])));
        assert_eq!(chosen(all, None, &silent).host, ip("192.168.1.20"));
        let picked = chosen(all, Some(name("mac.local")), &silent);
        assert_eq!(picked.host, ip("192.168.1.20"));
        assert_eq!(
            picked.note.as_deref(),
            Some(
                "mac.local does not answer on this network now, so the pairing URL names 192.168.1.20"
            )
        );
        // Answering with IPv6 only: no good for a bridge on 0.0.0.0, fine on ::.
        let v6 = network(
            &["192.168.1.20", "fd00::5"],
            Some(("mac.local", &["fd00::5"])),
        );
        assert_eq!(chosen(all, None, &v6).host, ip("192.168.1.20"));
        assert_eq!(chosen("::", None, &v6).host, name("mac.local"));
        // Another machine's name is never ours.
        assert_eq!(
            chosen(all, Some(name("other.local")), &answering).host,
            name("mac.local")
        );
    }

    #[test]
    fn hosts_parse_from_what_people_type() {
        assert_eq!(
            PairingHost::parse(" 192.168.1.20 ").unwrap(),
            ip("192.168.1.20")
        );
        assert_eq!(PairingHost::parse("fd00::5").unwrap(), ip("fd00::5"));
        assert_eq!(
            PairingHost::parse("Mac-Mini.local.").unwrap(),
            name("mac-mini.local")
        );
        for bad in [
            "",
            "mac",
            ".local",
            "evil.example",
            "a b.local",
            "http://mac.local",
        ] {
            assert!(PairingHost::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(name("mac.local").authority(8765), "mac.local:8765");
        assert_eq!(ip("fd00::5").authority(8765), "[fd00::5]:8765");
        assert!(!ip("127.0.0.1").is_reachable() && name("mac.local").is_reachable());
    }

    #[test]
    fn the_config_file_may_name_the_local_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[pairing]\naddress = \"Mac.Local.\"\n").unwrap();
        assert_eq!(
            PairingSettings::load(&path).unwrap().address,
            Some(name("mac.local"))
        );
        std::fs::write(&path, "[pairing]\naddress = \"evil.example\"\n").unwrap();
        let err = PairingSettings::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not an IP address"), "{err}");
    }

    #[test]
    fn lan_addresses_never_include_loopback() {
        assert!(lan_addresses().iter().all(|a| !a.ip.is_loopback()));
    }

    #[test]
    fn qr_codes_render_as_svg_and_text() {
        let url = "http://192.168.1.20:8765/?token=abc";
        let svg = qr_svg(url).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("viewBox"), "{svg}");
        let text = qr_terminal(url).unwrap();
        assert!(text.lines().count() > 10);
        assert!(text.contains('▀') || text.contains('▄') || text.contains('█'));
        assert!(qr(&"x".repeat(5000)).is_err());
    }

    #[test]
    fn pairing_settings_live_in_the_one_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "# my bridge\nport = 9000\ntoken = \"t0ken\"\n[app]\nstart_bridge_on_launch = false\n",
        )
        .unwrap();
        assert_eq!(
            PairingSettings::load(&path).unwrap(),
            PairingSettings::default()
        );
        let settings = PairingSettings {
            workshop_url: Some("https://workshop.example/".into()),
            address: Some(ip("192.168.1.20")),
        };
        settings.save(&path).unwrap();
        assert_eq!(PairingSettings::load(&path).unwrap(), settings);
        // The CLI reads the same file, sections and all, and the other keys are untouched.
        let config = Config::load(&path).unwrap();
        assert_eq!(config.port, 9000);
        assert_eq!(config.token.as_deref(), Some("t0ken"));
        assert_eq!(config.pairing, settings);
        assert_eq!(
            config.app.get("start_bridge_on_launch"),
            Some(&toml::Value::Boolean(false))
        );
        // Back to the defaults: the section goes away.
        PairingSettings::default().save(&path).unwrap();
        assert!(
            !std::fs::read_to_string(&path)
                .unwrap()
                .contains("[pairing]")
        );
    }
}
