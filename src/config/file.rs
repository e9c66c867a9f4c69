//! The config file as text: reading it, and saying where in it something is wrong, by line
//! and column, in one sentence.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

use crate::error::Error;

/// What was read from a config file, kept to say where a setting came from.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    /// `None` when there was no file.
    text: Option<String>,
}

impl ConfigFile {
    /// Reads the file at `path`; a missing file is not an error (it has no settings).
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(Error::ReadConfig {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Ok(Self {
            path: path.to_owned(),
            text,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether there was a file.
    pub fn existed(&self) -> bool {
        self.text.is_some()
    }

    /// The file's text; empty when there was none.
    pub fn text(&self) -> &str {
        self.text.as_deref().unwrap_or_default()
    }

    /// The file read as `T`, or a sentence that says where it is wrong and why.
    pub(crate) fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        parse(&self.path, self.text())
    }

    /// The line and column (from 1) where the top-level `key` is written, trying each
    /// spelling in `spellings` (a key and the names it is also accepted under).
    pub fn position_of(&self, spellings: &[&str]) -> Option<(String, usize, usize)> {
        let text = self.text.as_deref()?;
        let table = DeTable::parse(text).ok()?;
        table.get_ref().iter().find_map(|(key, _)| {
            let name = key.get_ref().as_ref();
            spellings.contains(&name).then(|| {
                let (line, column) = line_and_column(text, key.span().start);
                (name.to_owned(), line, column)
            })
        })
    }

    /// "`key` in the config file PATH (line L, column C)", for messages about a setting
    /// this file holds; `key` is its field name, `spellings` every name it is accepted under.
    pub fn describe(&self, spellings: &[&str]) -> Option<String> {
        let (key, line, column) = self.position_of(spellings)?;
        Some(format!(
            "`{key}` in the config file {} (line {line}, column {column})",
            self.path.display()
        ))
    }
}

/// Reads `text`, the config file at `path`, as `T`.
pub(crate) fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, Error> {
    // Checked as TOML first: a syntax error gets the parser's words; anything after it is
    // about one key, which is then named.
    let table = DeTable::parse(text).map_err(|e| Error::ParseConfig {
        path: path.to_owned(),
        position: e.span().map(|s| line_and_column(text, s.start)),
        message: one_line(e.message()),
    })?;
    toml::from_str::<T>(text).map_err(|e| value_error(path, text, table.get_ref(), &e))
}

/// A `(line, column)` pair, both from 1, of byte `offset` in `text`.
pub(crate) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut i = offset.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The parser's message on one line.
pub(super) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A problem with one key's value (or with a key that is not a setting).
fn value_error(path: &Path, text: &str, table: &DeTable<'_>, e: &toml::de::Error) -> Error {
    let message = one_line(e.message());
    // "duplicate field `allowed_origins`": one setting written under two of its names.
    if let Some(field) = between(&message, "duplicate field `", "`") {
        let spellings = [field, field.trim_end_matches('s')];
        let file = ConfigFile {
            path: path.to_owned(),
            text: Some(text.to_owned()),
        };
        return match file.position_of(&spellings) {
            Some((key, line, column)) => Error::ConfigValue {
                path: path.to_owned(),
                key,
                position: Some((line, column)),
                message: format!(
                    "is set twice, as `{}` and `{}`; keep one of them",
                    spellings[1], spellings[0]
                ),
            },
            None => Error::ParseConfig {
                path: path.to_owned(),
                position: None,
                message,
            },
        };
    }
    let Some(span) = e.span() else {
        return Error::ParseConfig {
            path: path.to_owned(),
            position: None,
            message,
        };
    };
    let position = Some(line_and_column(text, span.start));
    let Some(key) = key_at(table, &span, "") else {
        return Error::ParseConfig {
            path: path.to_owned(),
            position,
            message,
        };
    };
    let shown = text.get(span.clone()).unwrap_or_default().trim();
    let message = if let Some(expected) = message.strip_prefix("unknown field `") {
        let (_, expected) = expected.split_once("`, expected ").unwrap_or_default();
        match key.rsplit_once('.') {
            Some((section, _)) => format!(
                "there is no such setting; the settings of [{section}] are {}",
                expected.replace("one of ", "").replace(" or ", " and ")
            ),
            None => "there is no such setting; the settings are the flags' names with underscores, as `workshop-bridge serve --help` lists them".to_owned(),
        }
    } else if let Some(rest) = message.strip_prefix("invalid type: ") {
        let expected = rest.split_once(", expected ").map_or(rest, |(_, e)| e);
        let expected = match expected {
            "a string" | "path string" => "text in quotes",
            "a boolean" => "true or false",
            "a sequence" => "a list like [\"…\"]",
            "a map" | "struct PairingSettings" => "a section",
            other => other,
        };
        format!("{shown} is not {expected}")
    } else {
        message
    };
    Error::ConfigValue {
        path: path.to_owned(),
        key,
        position,
        message,
    }
}

/// The dotted name of the key whose name or value holds `span`.
fn key_at(table: &DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<String> {
    let inside = |s: Range<usize>| s.start <= span.start && span.start <= s.end;
    table.iter().find_map(|(key, value)| {
        let name = format!("{prefix}{}", key.get_ref());
        match value.get_ref() {
            DeValue::Table(inner) => key_at(inner, span, &format!("{name}."))
                .or_else(|| inside(key.span()).then_some(name.clone())),
            _ => (inside(key.span()) || inside(value.span())).then_some(name),
        }
    })
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(start)?;
    rest.split_once(end).map(|(inside, _)| inside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn error(text: &str) -> String {
        parse::<Config>(Path::new("/c.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_say_where_and_what() {
        assert_eq!(
            error("# mine\nport = 70000\n"),
            "`port` in the config file /c.toml (line 2, column 8): 70000 is not a port number; use one from 0 to 65535 (0 picks a free port)"
        );
        assert_eq!(
            error("prot = 1\n"),
            "`prot` in the config file /c.toml (line 1, column 1): there is no such setting; the settings are the flags' names with underscores, as `workshop-bridge serve --help` lists them"
        );
        assert_eq!(
            error("state_file = 5\n"),
            "`state_file` in the config file /c.toml (line 1, column 14): 5 is not text in quotes"
        );
        assert_eq!(
            error("port = \n"),
            "the config file /c.toml is not valid TOML at line 1, column 8: string values must be quoted, expected literal string"
        );
        assert_eq!(
            error("[pairing]\nadress = \"x\"\n"),
            "`pairing.adress` in the config file /c.toml (line 2, column 1): there is no such setting; the settings of [pairing] are `workshop_url` and `address`"
        );
        assert_eq!(
            error("[pairing]\naddress = \"nowhere\"\n"),
            "`pairing.address` in the config file /c.toml (line 2, column 11): \"nowhere\" is not an IP address; use one like 0.0.0.0 (every address of this machine), 127.0.0.1 (this machine only) or 192.168.1.20"
        );
        assert_eq!(
            error("allowed_origin = [\"http://a\"]\nallowed_origins = [\"http://b\"]\n"),
            "`allowed_origin` in the config file /c.toml (line 1, column 1): is set twice, as `allowed_origin` and `allowed_origins`; keep one of them"
        );
    }

    #[test]
    fn positions_count_characters_from_one() {
        assert_eq!(line_and_column("a\nbé = 1", 6), (2, 4));
        assert_eq!(line_and_column("", 0), (1, 1));
    }
}
