//! Pairing an iPad: the URL it should open, and that URL as a QR code.
//!
//! The iPad cannot use `localhost`: the URL names the Mac's address on the local network
//! (the user picks one when there are several) and carries the token as `?token=`. By
//! default it opens the page the bridge serves itself; a custom Workshop URL gets the
//! bridge's WebSocket address as `?bridge=` as well. The menu-bar app and
//! `workshop-bridge qr` both build the URL here, so they always agree.
//!
//! The Workshop URL and the chosen address live in the `[pairing]` section of the config
//! file, which the app and the CLI share.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use qrcode::QrCode;
use qrcode::render::{svg, unicode};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::{Config, ConfigFile, read_config_table, write_config_text};
use crate::error::Error;

/// One address of this machine that other devices on the network may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LanAddress {
    /// The interface's name (`en0`, `eth0`, …), so the user can tell Wi-Fi from VPN.
    pub interface: String,
    /// Its address.
    pub ip: IpAddr,
}

/// The pairing choices the user made: the `[pairing]` section of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairingSettings {
    /// The Workshop page the iPad should open; `None` means the bridge's own page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workshop_url: Option<String>,
    /// Which of the machine's addresses to put in the URL; `None` picks the first LAN one.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::values::de_optional_address"
    )]
    pub address: Option<IpAddr>,
}

impl PairingSettings {
    /// No choice made: the file needs no `[pairing]` section.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Reads the `[pairing]` section of the config file at `config_path`.
    pub fn load(config_path: &Path) -> Result<Self, Error> {
        /// The file's other keys are the bridge's: only `[pairing]` is read here.
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Section {
            pairing: PairingSettings,
        }
        Ok(ConfigFile::read(config_path)?.parse::<Section>()?.pairing)
    }

    /// Writes the `[pairing]` section into the config file, keeping everything else.
    pub fn save(&self, config_path: &Path) -> Result<(), Error> {
        let mut table = read_config_table(config_path)?;
        if self.is_default() {
            table.remove("pairing");
        } else {
            let section = toml::Table::try_from(self).map_err(|e| Error::WriteConfig {
                path: config_path.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })?;
            table.insert("pairing".into(), toml::Value::Table(section));
        }
        let text = toml::to_string_pretty(&table).map_err(|e| Error::WriteConfig {
            path: config_path.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
        write_config_text(config_path, &text)
    }

    /// Checks the Workshop URL, naming `workshop_url` when it is not an http(s) URL.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(url) = &self.workshop_url {
            parse_workshop_url(url)?;
        }
        Ok(())
    }
}

/// What an iPad needs to pair: the URL, and the address it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pairing {
    /// The URL to open, token included.
    pub url: String,
    /// The address of this machine the URL names.
    pub host: IpAddr,
    /// Whether other devices can reach that address (false for loopback).
    pub reachable: bool,
}

/// Every non-loopback address of this machine, IPv4 first (what people recognise and
/// what every iPad network has), link-local IPv6 left out (it needs a zone the URL cannot
/// carry). Empty when the interfaces cannot be listed.
pub fn lan_addresses() -> Vec<LanAddress> {
    let interfaces = match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the network interfaces");
            return Vec::new();
        }
    };
    let mut addresses: Vec<LanAddress> = interfaces
        .into_iter()
        .filter(|i| !(i.is_loopback() || (i.ip().is_ipv6() && i.is_link_local())))
        .map(|i| LanAddress {
            ip: i.ip(),
            interface: i.name,
        })
        .collect();
    addresses.sort_by_key(|a| (a.ip.is_ipv6(), is_link_local_v4(a.ip)));
    addresses.dedup_by(|a, b| a.ip == b.ip);
    addresses
}

fn is_link_local_v4(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_link_local())
}

/// The address to put in the URL for a bridge bound to `bind`.
///
/// A bridge bound to one address is reachable there only. A bridge bound to all addresses
/// (`0.0.0.0`, `::`) is reachable on any LAN address: the user's choice when it is still
/// one of them, else the first. Without any, loopback (good for this machine only).
pub fn choose_host(bind: IpAddr, preferred: Option<IpAddr>, candidates: &[LanAddress]) -> IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    if let Some(p) = preferred.filter(|p| candidates.iter().any(|c| c.ip == *p)) {
        return p;
    }
    candidates
        .iter()
        .map(|c| c.ip)
        .find(|ip| bind.is_ipv6() || ip.is_ipv4())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The URL an iPad should open to reach the bridge configured by `config` at `host`.
///
/// Default: `http://HOST:PORT/?token=TOKEN`, the bridge's own page. With a Workshop URL:
/// that URL plus `bridge=ws://HOST:PORT/ws` and `token=TOKEN`. No token when
/// authentication is off.
pub fn workshop_url(config: &Config, host: IpAddr, custom: Option<&str>) -> Result<String, Error> {
    let bridge = SocketAddr::new(host, config.port);
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

/// Everything pairing needs, from the config and the user's pairing choices.
pub fn pairing(config: &Config, settings: &PairingSettings) -> Result<Pairing, Error> {
    let host = choose_host(config.bind, settings.address, &lan_addresses());
    let url = workshop_url(config, host, settings.workshop_url.as_deref())?;
    Ok(Pairing {
        url,
        host,
        reachable: !host.is_loopback(),
    })
}

fn parse_workshop_url(text: &str) -> Result<Url, Error> {
    let invalid = |message: String| Error::InvalidSetting {
        field: "workshop_url",
        message,
    };
    let url = Url::parse(text.trim()).map_err(|e| {
        invalid(format!(
            "`{text}` is not a URL ({e}); use one like https://host/path"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(format!(
            "`{text}` is not a web address; use one like https://host/path"
        )));
    }
    Ok(url)
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
        let url = workshop_url(&config(Some("abc")), "192.168.1.20".parse().unwrap(), None);
        assert_eq!(url.unwrap(), "http://192.168.1.20:8765/?token=abc");
    }

    #[test]
    fn custom_url_gets_the_bridge_address_and_keeps_its_query() {
        let url = workshop_url(
            &config(Some("a b")),
            "192.168.1.20".parse().unwrap(),
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
        let url = workshop_url(&c, "fd00::5".parse().unwrap(), None).unwrap();
        assert_eq!(url, "http://[fd00::5]:8765/");
    }

    #[test]
    fn a_custom_url_that_is_not_a_web_address_names_the_setting() {
        let err = workshop_url(
            &config(None),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some("ftp://x"),
        )
        .unwrap_err();
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

    #[test]
    fn host_follows_the_bind_address_and_the_users_choice() {
        let all: IpAddr = "0.0.0.0".parse().unwrap();
        let candidates = [lan("fd00::5"), lan("192.168.1.20"), lan("10.0.0.7")];
        assert_eq!(
            choose_host("10.0.0.7".parse().unwrap(), None, &candidates),
            "10.0.0.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            choose_host(all, None, &candidates),
            "192.168.1.20".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            choose_host(all, Some("10.0.0.7".parse().unwrap()), &candidates),
            "10.0.0.7".parse::<IpAddr>().unwrap()
        );
        // a choice that is no longer an address of this machine is ignored
        assert_eq!(
            choose_host(all, Some("172.16.0.9".parse().unwrap()), &candidates),
            "192.168.1.20".parse::<IpAddr>().unwrap()
        );
        assert_eq!(choose_host(all, None, &[]), IpAddr::V4(Ipv4Addr::LOCALHOST));
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
            address: Some("192.168.1.20".parse().unwrap()),
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
