//! A mistake on the command line or in a variable, said in one line that names where it is.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::{Cli, subcommand, write_stdout};

/// A mistake on the command line or in a variable, in one sentence; help and version are
/// printed as they are.
pub(crate) fn usage_failure(e: &clap::Error, args: &[OsString]) -> ExitCode {
    let code = ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
    if !e.use_stderr() {
        // --help and --version; a closed pipe (`| head`) is not an error.
        let _ = write_stdout(&e.render().to_string());
        return code;
    }
    let text = usage_text(e, args);
    let _ = writeln!(std::io::stderr(), "workshop-bridge: {text}");
    code
}

/// What is wrong on the command line (or in a variable), as one line.
fn usage_text(e: &clap::Error, args: &[OsString]) -> String {
    let has_value = matches!(
        e.get(ContextKind::InvalidValue),
        Some(ContextValue::String(v)) if !v.is_empty()
    );
    match (e.kind(), e.get(ContextKind::InvalidArg)) {
        (ErrorKind::ValueValidation | ErrorKind::InvalidValue, Some(ContextValue::String(arg)))
            if has_value =>
        {
            value_sentence(e, arg, args)
        }
        _ => collapsed(e),
    }
}

/// "`--port`: 70000 is not a port number; …", or `WORKSHOP_BRIDGE_PORT` when the value came
/// from the environment, whichever clap says.
fn value_sentence(e: &clap::Error, arg: &str, args: &[OsString]) -> String {
    let long = arg
        .trim_start_matches('-')
        .split([' ', '='])
        .next()
        .unwrap_or_default();
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.clone(),
        _ => String::new(),
    };
    let problem = match std::error::Error::source(e) {
        Some(problem) => problem.to_string(),
        None => {
            let valid = match e.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(valid)) => valid.join(", "),
                _ => String::new(),
            };
            format!("{value} is not one of {valid}")
        }
    };
    let on_command_line = long_given(long, args);
    // The command run: its own arguments are the ones whose variables count.
    let command = args
        .get(1)
        .and_then(|a| a.to_str())
        .map_or_else(Cli::command, subcommand);
    let env = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()));
    match env {
        Some(env) if !on_command_line && std::env::var_os(&env).is_some() => {
            // Clap stops at the first variable it cannot read: each is read again on its
            // own, so that every one at fault is named at once.
            let all: Vec<String> = workshop_bridge::config::env_problems(&command)
                .iter()
                .filter(|p| !flag_given(&command, &p.variable, args))
                .map(ToString::to_string)
                .collect();
            if all.is_empty() {
                format!("`{env}` in the environment: {problem}")
            } else {
                all.join("; ")
            }
        }
        _ => format!("`--{long}`: {problem}"),
    }
}

/// Whether the flag whose variable is `variable` is on the command line (clap then leaves
/// the variable alone).
fn flag_given(command: &clap::Command, variable: &str, args: &[OsString]) -> bool {
    command
        .get_arguments()
        .find(|a| a.get_env().is_some_and(|e| e == variable))
        .and_then(|a| a.get_long())
        .is_some_and(|long| long_given(long, args))
}

/// Whether `--long` is on the command line.
fn long_given(long: &str, args: &[OsString]) -> bool {
    args.iter().any(|a| {
        a.to_str().is_some_and(|a| {
            a.strip_prefix("--")
                .and_then(|a| a.strip_prefix(long))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
        })
    })
}

/// Clap's message, its tips and where to look, on one line.
fn collapsed(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut parts: Vec<String> = Vec::new();
    let mut command = "workshop-bridge".to_owned();
    let mut in_usage = false;
    for raw in rendered.lines() {
        let line = raw.trim();
        // The usage's further lines are indented under its first.
        in_usage &= raw.starts_with(' ');
        if line.is_empty() || in_usage {
            continue;
        }
        if let Some(usage) = line.strip_prefix("Usage: ") {
            in_usage = true;
            command = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['-', '<', '[']))
                .collect::<Vec<_>>()
                .join(" ");
        } else if !line.starts_with("For more information") {
            let line = line
                .trim_start_matches("error: ")
                .trim_start_matches("tip: ");
            parts.push(line.to_owned());
        }
    }
    format!(
        "{}; `{command} --help` lists what it takes",
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `usage_failure` prints for `args`.
    fn usage_sentence(args: &[&str]) -> String {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let e = match Cli::command().try_get_matches_from(&args) {
            Err(e) => e,
            Ok(_) => panic!("{args:?} is accepted"),
        };
        usage_text(&e, &args)
    }

    #[test]
    fn command_line_mistakes_are_one_line_that_says_where_to_look() {
        assert_eq!(
            usage_sentence(&["workshop-bridge", "--port", "70000"]),
            "`--port`: 70000 is not a port number; use one from 0 to 65535 (0 picks a free port)"
        );
        assert_eq!(
            usage_sentence(&["workshop-bridge", "serve", "--prot", "1"]),
            "unexpected argument '--prot' found; a similar argument exists: '--port'; `workshop-bridge serve --help` lists what it takes"
        );
        assert_eq!(
            usage_sentence(&["workshop-bridge", "--port"]),
            "a value is required for '--port <PORT>' but none was supplied; `workshop-bridge --help` lists what it takes"
        );
        assert_eq!(
            usage_sentence(&["workshop-bridge", "frobnicate"]),
            "unrecognized subcommand 'frobnicate'; `workshop-bridge --help` lists what it takes"
        );
    }
}
