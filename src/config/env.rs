//! The `WORKSHOP_BRIDGE_*` environment variables, each read on its own: one that is wrong is
//! named, with the words its flag would get, and the others still apply.
//!
//! The variables are the flags' (`#[arg(env = …)]` on [`Overrides`]), so a variable is read
//! exactly as its flag would be, by its flag's own parser.

use std::ffi::{OsStr, OsString};
use std::fmt;

use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use serde::Serialize;

use super::{Config, Overrides};
use crate::error::Error;

/// A `WORKSHOP_BRIDGE_*` variable whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvProblem {
    /// The variable's name.
    pub variable: String,
    /// What is wrong with its value, in the words its flag and its config key get.
    pub message: String,
}

impl fmt::Display for EnvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` in the environment: {}",
            self.variable, self.message
        )
    }
}

/// One variable that was read.
#[derive(Debug, Clone)]
struct Read {
    /// The setting it sets, as the config file names it.
    setting: String,
    /// The variable's name.
    variable: String,
    /// The setting, alone.
    overrides: Overrides,
}

/// What the `WORKSHOP_BRIDGE_*` variables set, each read on its own, for programs without a
/// command line (the menu-bar app).
#[derive(Debug, Clone, Default)]
pub struct EnvOverrides {
    read: Vec<Read>,
    problems: Vec<EnvProblem>,
}

/// The settings' flags and variables alone, without the CLI's commands.
#[derive(clap::Parser)]
#[command(name = "workshop-bridge")]
struct EnvOnly {
    #[command(flatten)]
    overrides: Overrides,
}

impl EnvOverrides {
    /// Reads this process's environment.
    pub fn read() -> Self {
        Self::from_vars(std::env::vars_os())
    }

    /// Reads the variables given (an environment of its own, for tests).
    pub fn from_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let vars: Vec<(OsString, OsString)> = vars.into_iter().collect();
        let command = EnvOnly::command();
        let mut found = Self::default();
        for (arg, value) in variables_of(&command, &vars) {
            let variable = env_name(arg);
            let setting = arg.get_id().as_str().to_owned();
            match parse_alone(&command, arg, value)
                .and_then(|m| Overrides::from_arg_matches(&m).map_err(|e| problem(&e)))
            {
                Ok(overrides) => found.read.push(Read {
                    setting,
                    variable,
                    overrides,
                }),
                Err(message) => found.problems.push(EnvProblem { variable, message }),
            }
        }
        found
    }

    /// The variables that are in effect, in the order the settings are listed.
    pub fn variables(&self) -> Vec<String> {
        self.read.iter().map(|r| r.variable.clone()).collect()
    }

    /// The variables that could not be used, each with the reason.
    pub fn problems(&self) -> &[EnvProblem] {
        &self.problems
    }

    /// Writes the settings the variables give into `config`. A variable whose value the
    /// settings' check refuses (`WORKSHOP_BRIDGE_HEARTBEAT_SECS=0`) is left out and becomes
    /// a problem, named, like one that could not be read; the others still apply. A problem
    /// of the config file's own is left for [`Config::validate`] to report.
    pub fn apply_to(&mut self, config: &mut Config) {
        let base = config.clone();
        loop {
            *config = base.clone();
            for read in &self.read {
                read.overrides.clone().apply_to(config);
            }
            let Err(Error::InvalidSetting { field, message }) = config.validate() else {
                return;
            };
            let Some(i) = self.read.iter().position(|r| r.setting == field) else {
                return;
            };
            let read = self.read.remove(i);
            self.problems.push(EnvProblem {
                variable: read.variable,
                message,
            });
        }
    }
}

/// Every variable of `command`'s arguments that is set in the process's environment and
/// cannot be used, each read on its own with its flag's parser: what a CLI reports when
/// clap refused one (clap stops at the first).
pub fn env_problems(command: &clap::Command) -> Vec<EnvProblem> {
    let vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    variables_of(command, &vars)
        .filter_map(|(arg, value)| {
            parse_alone(command, arg, value)
                .err()
                .map(|message| EnvProblem {
                    variable: env_name(arg),
                    message,
                })
        })
        .collect()
}

/// The arguments of `command` whose variable is among `vars`, with its value.
fn variables_of<'a>(
    command: &'a clap::Command,
    vars: &'a [(OsString, OsString)],
) -> impl Iterator<Item = (&'a clap::Arg, &'a OsStr)> {
    command.get_arguments().filter_map(move |arg| {
        let name = arg.get_env()?;
        arg.get_long()?;
        vars.iter()
            .find(|(k, _)| k.as_os_str() == name)
            .map(|(_, v)| (arg, v.as_os_str()))
    })
}

fn env_name(arg: &clap::Arg) -> String {
    arg.get_env()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `value` read as `arg`'s flag, alone: `command` with no variables and that one flag.
///
/// A switch (`--no-auth`) takes no value on the command line, but its variable has one
/// (`1`, `off`, …): here it takes the variable's value, through its own parser.
fn parse_alone(
    command: &clap::Command,
    arg: &clap::Arg,
    value: &OsStr,
) -> Result<ArgMatches, String> {
    let id = arg.get_id().clone();
    let alone = command.clone().mut_args(|a| {
        let a = a.env(None::<&str>);
        if a.get_id() == &id && matches!(a.get_action(), ArgAction::SetTrue) {
            a.action(ArgAction::Set)
        } else {
            a
        }
    });
    let mut flag = OsString::from("--");
    flag.push(arg.get_long().unwrap_or_default());
    flag.push("=");
    flag.push(value);
    alone
        .try_get_matches_from([OsString::from("workshop-bridge"), flag])
        .map_err(|e| problem(&e))
}

/// What clap's error says about the value, as the CLI's own error for a flag says it.
fn problem(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if let Some(source) = std::error::Error::source(e) {
        return source.to_string();
    }
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.clone(),
        _ => String::new(),
    };
    match (e.kind(), e.get(ContextKind::ValidValue)) {
        (_, Some(ContextValue::Strings(valid))) => {
            format!("{value} is not one of {}", valid.join(", "))
        }
        (ErrorKind::InvalidUtf8, _) => "its value is not UTF-8 text".to_owned(),
        _ => e
            .kind()
            .as_str()
            .unwrap_or("its value cannot be read")
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn each_variable_is_read_on_its_own() {
        let mut env = EnvOverrides::from_vars(vars(&[
            ("WORKSHOP_BRIDGE_PORT", "abc"),
            ("WORKSHOP_BRIDGE_BIND", "127.0.0.1"),
            ("WORKSHOP_BRIDGE_NO_AUTH", "maybe"),
            ("WORKSHOP_BRIDGE_MAX_TEXT_CHARS", "-3"),
            ("WORKSHOP_BRIDGE_HEARTBEAT_SECS", "0"),
            (
                "WORKSHOP_BRIDGE_ALLOWED_ORIGINS",
                "http://a.example:1,http://b.example:2",
            ),
            ("WORKSHOP_BRIDGE_NO_TRUST_LOOPBACK", "yes"),
            ("WORKSHOP_BRIDGE_LOG_FORMAT", "JSON"),
            ("WORKSHOP_BRIDGE_CONFIG", "/not/a/setting.toml"),
            ("HOME", "/home/someone"),
        ]));
        let mut config = Config::default();
        env.apply_to(&mut config);
        assert_eq!(config.bind.to_string(), "127.0.0.1");
        assert_eq!(
            config.allowed_origins,
            ["http://a.example:1", "http://b.example:2"]
        );
        assert!(config.no_trust_loopback);
        assert_eq!(config.log_format, super::super::LogFormat::Json);
        // the bad ones changed nothing
        let defaults = Config::default();
        assert_eq!(config.port, defaults.port);
        assert_eq!(config.no_auth, defaults.no_auth);
        assert_eq!(config.max_text_chars, defaults.max_text_chars);
        assert_eq!(config.heartbeat_secs, defaults.heartbeat_secs);
        assert_eq!(
            env.variables(),
            [
                "WORKSHOP_BRIDGE_BIND",
                "WORKSHOP_BRIDGE_NO_TRUST_LOOPBACK",
                "WORKSHOP_BRIDGE_ALLOWED_ORIGINS",
                "WORKSHOP_BRIDGE_LOG_FORMAT",
            ]
        );
        let problems: Vec<String> = env.problems().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "`WORKSHOP_BRIDGE_PORT` in the environment: abc is not a port number; use one from 0 to 65535 (0 picks a free port)",
                "`WORKSHOP_BRIDGE_NO_AUTH` in the environment: maybe is not true or false",
                "`WORKSHOP_BRIDGE_MAX_TEXT_CHARS` in the environment: -3 is not a whole number from 0 to 18446744073709551615",
                "`WORKSHOP_BRIDGE_HEARTBEAT_SECS` in the environment: must be between 1 and 3600 seconds",
            ]
        );
    }

    #[test]
    fn variables_read_as_their_flags_do() {
        let mut env = EnvOverrides::from_vars(vars(&[
            ("WORKSHOP_BRIDGE_NO_AUTH", "off"),
            ("WORKSHOP_BRIDGE_ALLOW_WEAK_TOKEN", "1"),
            ("WORKSHOP_BRIDGE_PORT", " 9001 "),
            ("WORKSHOP_BRIDGE_STATE_FILE", "/agent/world.yaml"),
            ("WORKSHOP_BRIDGE_TOKEN", "-starts-with-a-dash"),
        ]));
        let mut config = Config {
            no_auth: true,
            ..Config::default()
        };
        env.apply_to(&mut config);
        assert!(env.problems().is_empty(), "{:?}", env.problems());
        assert!(
            config.no_auth,
            "off in the environment leaves the file's on"
        );
        assert!(config.allow_weak_token);
        assert_eq!(config.port, 9001);
        assert_eq!(config.state_file, std::path::Path::new("/agent/world.yaml"));
        assert_eq!(config.token.as_deref(), Some("-starts-with-a-dash"));
    }

    #[test]
    fn a_problem_of_the_files_own_is_not_put_on_a_variable() {
        let mut env = EnvOverrides::from_vars(vars(&[("WORKSHOP_BRIDGE_PORT", "9001")]));
        let mut config = Config {
            heartbeat_secs: 0,
            ..Config::default()
        };
        env.apply_to(&mut config);
        assert!(env.problems().is_empty());
        assert_eq!(config.port, 9001);
        assert_eq!(env.variables(), ["WORKSHOP_BRIDGE_PORT"]);
    }
}
