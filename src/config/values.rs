//! How each kind of setting is read: from text (a flag or an environment variable) and from
//! the config file, with the same words when it is wrong, wherever it came from.
//!
//! The flag parsers are what `clap` calls; the `de_*` functions are what the config file's
//! fields are read with. Both end in one of the `*_problem` sentences below, which name the
//! value and say what would be right; where the value was written (`--port`, a variable, a
//! line of the config file) is added by whoever reports it.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

use super::LogFormat;

/// What is wrong with a port number shown as `shown`.
fn port_problem(shown: &str) -> String {
    format!("{shown} is not a port number; use one from 0 to 65535 (0 picks a free port)")
}

/// What is wrong with a whole number shown as `shown`, at most `max`.
fn number_problem(shown: &str, max: u64) -> String {
    format!("{shown} is not a whole number from 0 to {max}")
}

fn address_problem(shown: &str) -> String {
    format!(
        "{shown} is not an IP address; use one like 0.0.0.0 (every address of this machine), 127.0.0.1 (this machine only) or 192.168.1.20"
    )
}

fn log_format_problem(shown: &str) -> String {
    format!("{shown} is not a log format; use text or json")
}

fn switch_problem(shown: &str) -> String {
    format!("{shown} is not true or false")
}

/// A port, from a flag or a variable.
pub fn parse_port(text: &str) -> Result<u16, String> {
    text.trim().parse().map_err(|_| port_problem(text))
}

/// A whole number that fits `T`, from a flag or a variable.
pub fn parse_number<T>(text: &str) -> Result<T, String>
where
    T: TryFrom<u64> + Bounded,
{
    text.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| number_problem(text, T::MAX_U64))
}

/// An IP address to listen on, from a flag or a variable.
pub fn parse_address(text: &str) -> Result<IpAddr, String> {
    text.trim().parse().map_err(|_| address_problem(text))
}

/// A log format, from a flag or a variable.
pub fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(log_format_problem(text)),
    }
}

/// An on/off switch from a variable (`WORKSHOP_BRIDGE_NO_AUTH=1`): true or false, and the
/// spellings people use for them in the environment.
pub fn parse_switch(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(switch_problem(text)),
    }
}

/// The largest value of an unsigned integer type, as a `u64`.
pub trait Bounded {
    /// `Self::MAX`.
    const MAX_U64: u64;
}

impl Bounded for u32 {
    const MAX_U64: u64 = u32::MAX as u64;
}

impl Bounded for u64 {
    const MAX_U64: u64 = u64::MAX;
}

impl Bounded for usize {
    const MAX_U64: u64 = usize::MAX as u64;
}

/// The value as the config file spells it (`70000`, `"abc"`, `[1, 2]`), for messages.
fn shown(value: &toml::Value) -> String {
    value.to_string()
}

pub(super) fn de_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let value = toml::Value::deserialize(d)?;
    match &value {
        toml::Value::Integer(n) => u16::try_from(*n).ok(),
        _ => None,
    }
    .ok_or_else(|| serde::de::Error::custom(port_problem(&shown(&value))))
}

pub(super) fn de_number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + Bounded,
{
    let value = toml::Value::deserialize(d)?;
    match &value {
        toml::Value::Integer(n) => u64::try_from(*n).ok().and_then(|n| T::try_from(n).ok()),
        _ => None,
    }
    .ok_or_else(|| serde::de::Error::custom(number_problem(&shown(&value), T::MAX_U64)))
}

pub(super) fn de_optional_number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + Bounded,
{
    de_number(d).map(Some)
}

pub(super) fn de_address<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let value = toml::Value::deserialize(d)?;
    match &value {
        toml::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| serde::de::Error::custom(address_problem(&shown(&value))))
}

pub(crate) fn de_optional_address<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<IpAddr>, D::Error> {
    de_address(d).map(Some)
}

pub(super) fn de_log_format<'de, D: Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
    let value = toml::Value::deserialize(d)?;
    match &value {
        toml::Value::String(s) => parse_log_format(s).ok(),
        _ => None,
    }
    .ok_or_else(|| serde::de::Error::custom(log_format_problem(&shown(&value))))
}

pub(super) fn de_switch<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let value = toml::Value::deserialize(d)?;
    match value {
        toml::Value::Boolean(b) => Ok(b),
        other => Err(serde::de::Error::custom(switch_problem(&shown(&other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_toml_values_get_the_same_words() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Doc {
            #[serde(default, deserialize_with = "de_port")]
            port: u16,
            #[serde(default, deserialize_with = "de_number")]
            count: usize,
            #[serde(default, deserialize_with = "de_optional_address")]
            bind: Option<IpAddr>,
        }
        let from_file = |text: &str| {
            toml::from_str::<Doc>(text)
                .unwrap_err()
                .message()
                .to_owned()
        };
        assert_eq!(
            parse_port("70000").unwrap_err(),
            "70000 is not a port number; use one from 0 to 65535 (0 picks a free port)"
        );
        assert_eq!(from_file("port = 70000"), parse_port("70000").unwrap_err());
        assert_eq!(from_file("port = -1"), parse_port("-1").unwrap_err());
        assert_eq!(
            from_file("count = -3"),
            parse_number::<usize>("-3").unwrap_err()
        );
        assert_eq!(
            parse_number::<u32>("4294967296").unwrap_err(),
            "4294967296 is not a whole number from 0 to 4294967295"
        );
        assert_eq!(parse_number::<u32>(" 7 "), Ok(7));
        assert_eq!(
            from_file("bind = \"nowhere\""),
            parse_address("\"nowhere\"").unwrap_err()
        );
        assert_eq!(parse_log_format("JSON"), Ok(LogFormat::Json));
        assert_eq!(
            parse_log_format("xml").unwrap_err(),
            "xml is not a log format; use text or json"
        );
        assert_eq!(parse_switch("1"), Ok(true));
        assert_eq!(parse_switch("off"), Ok(false));
        assert_eq!(
            parse_switch("maybe").unwrap_err(),
            "maybe is not true or false"
        );
    }
}
