//! Where the settings come from: the config file's path, and the source (flag, variable or
//! file) to name when a setting is refused.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::ArgMatches;
use clap::parser::ValueSource;
use workshop_bridge::config::ConfigFile;
use workshop_bridge::{Config, Error};

/// Where each setting came from (a flag, a variable, the config file), to name it when it
/// is refused.
pub(crate) struct Sources<'a> {
    pub(crate) matches: &'a ArgMatches,
    pub(crate) command: clap::Command,
}

impl Sources<'_> {
    /// "`--port`", "`WORKSHOP_BRIDGE_PORT` in the environment" or "`port` in the config file
    /// PATH (line 3, column 8)" for the setting `field`.
    pub(crate) fn name(&self, field: &str, file: &ConfigFile) -> String {
        let arg = self
            .command
            .get_arguments()
            .find(|a| a.get_id().as_str() == field);
        let source = arg.and(self.matches.value_source(field));
        match (arg, source) {
            (Some(arg), Some(ValueSource::CommandLine)) => {
                format!("`--{}`", arg.get_long().unwrap_or(field))
            }
            (Some(arg), Some(ValueSource::EnvVariable)) => format!(
                "`{}` in the environment",
                arg.get_env().unwrap_or_default().to_string_lossy()
            ),
            _ => {
                let singular = field.strip_suffix('s').unwrap_or(field);
                file.describe(&[field, singular])
                    .unwrap_or_else(|| format!("`{field}`"))
            }
        }
    }

    /// `error`, with a refused setting named by where it came from.
    pub(crate) fn explain(&self, error: Error, file: &ConfigFile) -> anyhow::Error {
        match error {
            Error::InvalidSetting { field, message } => {
                anyhow!("{}: {message}", self.name(field, file))
            }
            other => other.into(),
        }
    }
}

/// The config file's path, and whether it was given (rather than the platform's default).
pub(crate) fn config_path(explicit: Option<PathBuf>) -> anyhow::Result<(PathBuf, bool)> {
    match explicit {
        Some(p) => Ok((p, true)),
        None => Ok((Config::default_path()?, false)),
    }
}

/// Before a new config file is written: a path given with `--config` gets its own folder
/// made at most (the platform's config folder is made as needed).
pub(crate) fn check_config_folder(path: &Path, explicit: bool) -> anyhow::Result<()> {
    if explicit {
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        workshop_bridge::check_folder("config file", folder)?;
    }
    Ok(())
}

/// Says that a token was generated and where it was saved; loudly when the file it went
/// into did not exist although its path was given, since a mistyped path would otherwise
/// change the token unnoticed.
pub(crate) fn token_saved_sentence(file: &ConfigFile, explicit: bool) -> String {
    let path = file.path().display();
    let show = if explicit {
        format!("`workshop-bridge token --config {path}` shows it")
    } else {
        "`workshop-bridge token` shows it".to_owned()
    };
    if file.existed() {
        format!("generated a token and saved it in the config file {path}; {show}")
    } else {
        format!(
            "the config file {path} did not exist: made it, with a newly generated token; {show}"
        )
    }
}
