//! `workshop-bridge`: the headless bridge. Parses flags, sets up logging, runs the library.
//!
//! One module per command (`serve` and `mcp` share theirs); `usage` phrases a mistake on the
//! command line, `settings` finds the config and names a refused setting by its source.

mod init;
mod logging;
mod qr;
mod serve;
mod settings;
mod token;
mod usage;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use workshop_bridge::Error;

use crate::init::InitArgs;
use crate::qr::QrArgs;
use crate::serve::{Early, ServeArgs};
use crate::settings::Sources;
use crate::token::TokenArgs;

/// Links an AI agent's state file and inbox to the Workshop and to other agents,
/// over one WebSocket hub.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge (the default)
    Serve(Box<ServeArgs>),
    /// Print the token clients need, generating one if there is none
    Token(TokenArgs),
    /// Print the URL an iPad should open, and a QR code of it to scan
    Qr(QrArgs),
    /// Write the example state file where the bridge reads the state, if there is none yet
    Init(InitArgs),
    /// Give an AI agent the Workshop as MCP tools, over standard input and output
    Mcp(Box<ServeArgs>),
}

/// The command a subcommand's arguments are defined on: the bridge's own for `serve`, and
/// for a name that is no subcommand.
fn subcommand(name: &str) -> clap::Command {
    let cli = Cli::command();
    cli.find_subcommand(name).cloned().unwrap_or(cli)
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // The bridge listens for signals before anything else, even reading its flags, so that
    // a signal at any moment from its very start ends it with its goodbye. The other
    // commands are quick and keep the usual Ctrl-C.
    let serving = !matches!(
        args.get(1).and_then(|a| a.to_str()),
        Some("token" | "qr" | "init" | "mcp")
    );
    let early = if serving {
        match Early::start() {
            Ok(early) => Some(early),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "workshop-bridge: {}", sentence(&e));
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let matches = match Cli::command().try_get_matches_from(&args) {
        Ok(matches) => matches,
        Err(e) => return usage::usage_failure(&e, &args),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage::usage_failure(&e, &args),
    };
    let (name, sub) = match matches.subcommand() {
        Some((name, sub)) => (name, sub),
        None => ("serve", &matches),
    };
    let sources = Sources {
        matches: sub,
        command: subcommand(name),
    };
    let result = match (cli.command, early) {
        (Some(Command::Serve(args)), Some(early)) => serve::run(*args, &sources, early),
        (None, Some(early)) => serve::run(cli.serve, &sources, early),
        (Some(Command::Serve(_)) | None, None) => {
            Err(anyhow!("the bridge was not prepared to run"))
        }
        (Some(Command::Token(args)), _) => token::run(args),
        (Some(Command::Qr(args)), _) => qr::run(args, &sources),
        (Some(Command::Init(args)), _) => init::run(args),
        (Some(Command::Mcp(args)), _) => serve::mcp(*args, &sources),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One sentence, no backtrace: every error a user can cause is phrased for them.
            let _ = writeln!(std::io::stderr(), "workshop-bridge: {}", sentence(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes as one line. The bridge's own errors are whole sentences that
/// already say what the system said, so the causes after one are left out.
fn sentence(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        if cause.downcast_ref::<Error>().is_some() {
            break;
        }
    }
    text
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// A line for the person at the terminal, beside the command's output.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "workshop-bridge: {text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
