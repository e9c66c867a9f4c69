//! The `[pairing]` section of the config file: which Workshop page the iPad's QR code
//! opens, and how the URL names this machine. What the URL and the QR code are made of is
//! [`crate::pairing`]'s job; this module is only what the user chose, read and saved.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use super::{ConfigEditor, ConfigFile};
use crate::error::Error;
use crate::localname;

/// How a pairing URL names this machine: an address, or its `NAME.local` name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PairingHost {
    /// An IP address.
    Ip(IpAddr),
    /// The Bonjour name, lower case, without a trailing dot.
    Name(String),
}

impl PairingHost {
    /// `text` as an address or a `NAME.local` name (any case, a trailing dot allowed); an
    /// error sentence otherwise.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let name = localname::normalize(text);
        let label = name.strip_suffix(".local").unwrap_or_default();
        let valid = !label.is_empty()
            && label.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if valid {
            Ok(Self::Name(name))
        } else {
            Err(format!(
                "“{text}” is neither an IP address nor a NAME.local name; use one like 192.168.1.20 or mac.local"
            ))
        }
    }

    /// `HOST:PORT` for a URL: an IPv6 address in brackets.
    pub fn authority(&self, port: u16) -> String {
        match self {
            Self::Ip(ip) => SocketAddr::new(*ip, port).to_string(),
            Self::Name(name) => format!("{name}:{port}"),
        }
    }

    /// Whether other devices can reach it: every name and address but loopback.
    pub fn is_reachable(&self) -> bool {
        !matches!(self, Self::Ip(ip) if ip.is_loopback())
    }
}

impl fmt::Display for PairingHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Name(name) => f.write_str(name),
        }
    }
}

impl From<IpAddr> for PairingHost {
    fn from(ip: IpAddr) -> Self {
        Self::Ip(ip)
    }
}

impl Serialize for PairingHost {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PairingHost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `pairing.address` in the config file: an address, or a `NAME.local` name.
fn de_optional_host<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PairingHost>, D::Error> {
    let value = toml::Value::deserialize(d)?;
    if let toml::Value::String(text) = &value
        && let Ok(host @ PairingHost::Name(_)) = PairingHost::parse(text)
    {
        return Ok(Some(host));
    }
    // Anything else is read (and refused) as the address it should be.
    crate::config::values::de_optional_address(value)
        .map(|ip| ip.map(PairingHost::Ip))
        .map_err(|e| serde::de::Error::custom(e.message()))
}

/// The pairing choices the user made: the `[pairing]` section of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairingSettings {
    /// The Workshop page the iPad should open; `None` means the bridge's own page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workshop_url: Option<String>,
    /// How to name this machine in the URL (one of its addresses, or its `NAME.local`
    /// name); `None` picks the `.local` name when it answers, else the first LAN address.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_optional_host"
    )]
    pub address: Option<PairingHost>,
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

    /// Writes the `[pairing]` section into the config file, keeping everything else as it
    /// was written. A choice not made is removed, and the section with it when nothing is
    /// left in it (and it has no comment of its own).
    pub fn save(&self, config_path: &Path) -> Result<(), Error> {
        let mut file = ConfigEditor::open(config_path)?;
        match &self.workshop_url {
            Some(url) => file.set_in("pairing", "workshop_url", url.as_str()),
            None => file.remove_in("pairing", "workshop_url"),
        }
        match &self.address {
            Some(address) => file.set_in("pairing", "address", address.to_string()),
            None => file.remove_in("pairing", "address"),
        }
        file.save()
    }

    /// Checks the Workshop URL, naming `workshop_url` when it is not an http(s) URL.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(url) = &self.workshop_url {
            parse_workshop_url(url)?;
        }
        Ok(())
    }
}

pub(crate) fn parse_workshop_url(text: &str) -> Result<Url, Error> {
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
