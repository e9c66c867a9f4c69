//! `workshop-bridge`: the headless bridge. Parses flags, sets up logging, runs the library.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, filter};
use workshop_bridge::config::values::{parse_address, parse_port, parse_switch};
use workshop_bridge::config::{ConfigEditor, ConfigFile, generate_token};
use workshop_bridge::{Bridge, Config, Error, LogFormat, Overrides, pairing};

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

#[derive(Args)]
struct ServeArgs {
    /// Config file [default: ~/.config/workshop-bridge/config.toml, or the platform's equivalent]
    #[arg(long, env = "WORKSHOP_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

#[derive(Args)]
struct TokenArgs {
    /// Config file [default: the platform's config directory]
    #[arg(long, env = "WORKSHOP_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Replace the token with a new random one (clients using the old one are refused)
    #[arg(long)]
    regenerate: bool,
}

/// Only what goes into the pairing URL: the bridge's other settings play no part in it.
#[derive(Args)]
struct QrArgs {
    /// Config file [default: the platform's config directory]
    #[arg(long, env = "WORKSHOP_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Address of this machine, or its NAME.local name, to put in the URL [default: the one chosen in the app, else NAME.local when it answers, else the first LAN address]
    #[arg(long, value_parser = pairing::PairingHost::parse)]
    address: Option<pairing::PairingHost>,
    /// Workshop page to open instead of the bridge's own [default: the one set in the app]
    #[arg(long)]
    url: Option<String>,
    /// The port the bridge listens on [default: 8765]
    #[arg(long, env = "WORKSHOP_BRIDGE_PORT", value_parser = parse_port)]
    port: Option<u16>,
    /// The address the bridge listens on [default: 0.0.0.0]
    #[arg(long, env = "WORKSHOP_BRIDGE_BIND", value_parser = parse_address)]
    bind: Option<IpAddr>,
    /// The token clients must present [default: the one in the config file]
    #[arg(long, env = "WORKSHOP_BRIDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The bridge accepts everyone: no token in the URL
    #[arg(long, env = "WORKSHOP_BRIDGE_NO_AUTH", value_parser = parse_switch)]
    no_auth: bool,
}

#[derive(Args)]
struct InitArgs {
    /// Config file, for the state file's path [default: the platform's config directory]
    #[arg(long, env = "WORKSHOP_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Where to write it [default: the bridge's state file, ~/.timmy/workshop-state.yaml]
    #[arg(long, env = "WORKSHOP_BRIDGE_STATE_FILE")]
    state_file: Option<PathBuf>,
}

/// How long the process waits, after the bridge has stopped, for blocking file work to end.
/// With the bridge's own shutdown (at most 1.8 s), a signal ends the process within 2 s.
const EXIT_GRACE: Duration = Duration::from_millis(150);

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
        Err(e) => return usage_failure(&e, &args),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage_failure(&e, &args),
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
        (Some(Command::Serve(args)), Some(early)) => serve(*args, &sources, early),
        (None, Some(early)) => serve(cli.serve, &sources, early),
        (Some(Command::Serve(_)) | None, None) => {
            Err(anyhow!("the bridge was not prepared to run"))
        }
        (Some(Command::Token(args)), _) => token(args),
        (Some(Command::Qr(args)), _) => qr(args, &sources),
        (Some(Command::Init(args)), _) => init(args),
        (Some(Command::Mcp(args)), _) => mcp(*args, &sources),
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

/// The command a subcommand's arguments are defined on (the bridge's own for `serve`).
fn subcommand(name: &str) -> clap::Command {
    let cli = Cli::command();
    cli.find_subcommand(name).cloned().unwrap_or(cli)
}

/// A mistake on the command line or in a variable, in one sentence; help and version are
/// printed as they are.
fn usage_failure(e: &clap::Error, args: &[OsString]) -> ExitCode {
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
        .and_then(|name| Cli::command().find_subcommand(name).cloned())
        .unwrap_or_else(Cli::command);
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

/// Where each setting came from (a flag, a variable, the config file), to name it when it
/// is refused.
struct Sources<'a> {
    matches: &'a ArgMatches,
    command: clap::Command,
}

impl Sources<'_> {
    /// "`--port`", "`WORKSHOP_BRIDGE_PORT` in the environment" or "`port` in the config file
    /// PATH (line 3, column 8)" for the setting `field`.
    fn name(&self, field: &str, file: &ConfigFile) -> String {
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
    fn explain(&self, error: Error, file: &ConfigFile) -> anyhow::Error {
        match error {
            Error::InvalidSetting { field, message } => {
                anyhow!("{}: {message}", self.name(field, file))
            }
            other => other.into(),
        }
    }
}

/// The config file's path, and whether it was given (rather than the platform's default).
fn config_path(explicit: Option<PathBuf>) -> anyhow::Result<(PathBuf, bool)> {
    match explicit {
        Some(p) => Ok((p, true)),
        None => Ok((Config::default_path()?, false)),
    }
}

/// Before a new config file is written: a path given with `--config` gets its own folder
/// made at most (the platform's config folder is made as needed).
fn check_config_folder(path: &Path, explicit: bool) -> anyhow::Result<()> {
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
fn token_saved_sentence(file: &ConfigFile, explicit: bool) -> String {
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

/// The runtime, and the signals it listens for, made first thing when the bridge runs.
struct Early {
    runtime: tokio::runtime::Runtime,
    signals: Signals,
}

impl Early {
    fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let signals = {
            let _entered = runtime.enter();
            Signals::listen()?
        };
        Ok(Self { runtime, signals })
    }
}

/// The settings `serve` and `mcp` run on: the config file, then the variables and flags;
/// logging set up on them. Also the file, its path and whether it was given.
fn load(
    args: ServeArgs,
    sources: &Sources<'_>,
) -> anyhow::Result<(Config, ConfigFile, PathBuf, bool)> {
    let (path, explicit) = config_path(args.config)?;
    let file = ConfigFile::read(&path)?;
    let mut config = Config::from_file(&file)?;
    args.overrides.apply_to(&mut config);
    init_logging(config.log_format);
    config.validate().map_err(|e| sources.explain(e, &file))?;
    Ok((config, file, path, explicit))
}

/// The MCP server on standard input and output, on the same settings as `serve`: it uses
/// the files, and asks the running bridge (with the token) who is present.
fn mcp(args: ServeArgs, sources: &Sources<'_>) -> anyhow::Result<()> {
    let (config, ..) = load(args, sources)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(workshop_bridge::mcp::serve_stdio(config));
    // A wait for a message ends with the client; nothing blocking is worth waiting for.
    runtime.shutdown_timeout(EXIT_GRACE);
    Ok(result?)
}

fn serve(args: ServeArgs, sources: &Sources<'_>, early: Early) -> anyhow::Result<()> {
    let Early {
        runtime,
        mut signals,
    } = early;
    let (config, file, path, explicit) = load(args, sources)?;
    let mut config = config;
    let new_token = if !config.no_auth && config.token.is_none() {
        check_config_folder(&path, explicit)?;
        let token = generate_token()?;
        config.token = Some(token.clone());
        Some(token)
    } else {
        if explicit && !file.existed() {
            tracing::warn!(
                "the config file {} does not exist: running on the defaults, variables and flags",
                path.display()
            );
        }
        None
    };

    let result = runtime.block_on(async {
        let starting = async {
            // The port and the folders first: the token is saved only once the bridge can
            // run, so a failed start leaves no config file behind.
            let prepared = Bridge::prepare(config)
                .await
                .map_err(|e| sources.explain(e, &file))?;
            if let Some(token) = &new_token {
                let mut editor = ConfigEditor::open(&path)?;
                editor.set("token", token.as_str());
                editor.save()?;
                let sentence = token_saved_sentence(&file, explicit);
                if explicit && !file.existed() {
                    tracing::warn!("{sentence}");
                } else {
                    tracing::info!("{sentence}");
                }
            }
            Ok::<_, anyhow::Error>(prepared.start().await?)
        };
        let bridge = tokio::select! {
            started = starting => started?,
            () = signals.recv() => {
                tracing::info!("stopped before it was listening");
                return Ok(());
            }
        };
        signals.recv().await;
        bridge.shutdown().await;
        Ok(())
    });
    // Dropping the runtime would wait for every blocking task, and a file read stuck in the
    // kernel (a hung network share) never ends: the process is left, not kept alive by it.
    // (A thread in a write to a frozen disk cannot be ended, not even by SIGKILL, until the
    // write returns: the system removes the process then, after its goodbye.)
    runtime.shutdown_timeout(EXIT_GRACE);
    result
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let (path, explicit) = config_path(args.config)?;
    let file = ConfigFile::read(&path)?;
    let mut config = Config::from_file(&file)?;
    if args.regenerate {
        config.token = None;
        config.no_auth = false;
    }
    if !config.no_auth && config.token.is_none() {
        check_config_folder(&path, explicit)?;
        config.ensure_token(&path)?;
        // The token itself is the output; that the file is new is worth a line.
        if !file.existed() {
            note(&token_saved_sentence(&file, explicit));
        }
    }
    write_stdout(&format!("{}\n", config.token.unwrap_or_default()))
}

fn qr(args: QrArgs, sources: &Sources<'_>) -> anyhow::Result<()> {
    let (path, explicit) = config_path(args.config)?;
    let file = ConfigFile::read(&path)?;
    let mut config = Config::from_file(&file)?;
    Overrides {
        port: args.port,
        bind: args.bind,
        token: args.token,
        no_auth: args.no_auth,
        ..Overrides::default()
    }
    .apply_to(&mut config);
    if config.port == 0 {
        return Err(anyhow!(
            "{}: 0 cannot go into a pairing URL, as the bridge picks a free port only when it starts; give the port it listens on",
            sources.name("port", &file)
        ));
    }
    let mut settings = config.pairing.clone();
    if let Some(url) = args.url {
        settings.workshop_url = Some(url);
    }
    settings.validate()?;
    // The `.local` name is looked up only where it may go into the URL.
    let network = if config.bind.is_unspecified()
        || matches!(args.address, Some(pairing::PairingHost::Name(_)))
    {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the runtime that looks up this machine's names")?
            .block_on(pairing::NetworkAddresses::current())
    } else {
        pairing::NetworkAddresses::unresolved()
    };
    if let Some(address) = &args.address {
        check_address(address, config.bind, &network)?;
        settings.address = Some(address.clone());
    }
    if !config.no_auth && config.token.is_none() {
        check_config_folder(&path, explicit)?;
        config.ensure_token(&path)?;
        note(&token_saved_sentence(&file, explicit));
    }
    let pairing = match args.address {
        // Asked for by name: the name, even when it does not answer here (a resolver
        // without mDNS may not know what the network's responder publishes).
        Some(host @ pairing::PairingHost::Name(_)) => {
            if network
                .local_name
                .as_ref()
                .is_none_or(|n| n.addresses.is_empty())
            {
                note(&format!(
                    "{host} does not answer on this machine now; the iPad reaches it only while an mDNS responder (Bonjour, avahi) publishes it"
                ));
            }
            pairing::Pairing {
                url: pairing::workshop_url(&config, &host, settings.workshop_url.as_deref())?,
                reachable: true,
                host,
                note: None,
            }
        }
        _ => pairing::pairing(&config, &settings, &network)?,
    };
    if let Some(why) = &pairing.note {
        note(why);
    }
    let code = pairing::qr_terminal(&pairing.url)?;
    let mut text = format!("{}\n\n{code}\n", pairing.url);
    if !pairing.reachable {
        text.push_str(&format!(
            "Note: {} is reachable from this machine only; bind to 0.0.0.0 or pass --address.\n",
            pairing.host
        ));
    }
    write_stdout(&text)
}

/// `--address` must be one of this machine's addresses or its `NAME.local` name, and the
/// address the bridge listens on when it listens on one address only.
fn check_address(
    address: &pairing::PairingHost,
    bind: IpAddr,
    network: &pairing::NetworkAddresses,
) -> anyhow::Result<()> {
    use pairing::PairingHost;

    if !bind.is_unspecified() {
        if *address != PairingHost::Ip(bind) {
            return Err(anyhow!(
                "`--address`: the bridge listens on {bind} only, so {address} would not reach it; leave --address out, or change --bind"
            ));
        }
        return Ok(());
    }
    let own = match address {
        PairingHost::Ip(ip) => ip.is_loopback() || network.lan.iter().any(|a| a.ip == *ip),
        PairingHost::Name(name) => network.local_name.as_ref().is_some_and(|n| n.name == *name),
    };
    if own {
        return Ok(());
    }
    let (what, list): (&str, Vec<String>) = match address {
        PairingHost::Ip(_) => (
            "an address",
            network
                .lan
                .iter()
                .map(|a| format!("{} ({})", a.ip, a.interface))
                .collect(),
        ),
        PairingHost::Name(_) => (
            "the name",
            network.local_name.iter().map(|n| n.name.clone()).collect(),
        ),
    };
    Err(match (address, list.is_empty()) {
        (PairingHost::Ip(_), true) => anyhow!(
            "`--address`: {address} is not an address of this machine, which has none on a network (only 127.0.0.1, for itself)"
        ),
        (PairingHost::Name(_), true) => anyhow!(
            "`--address`: {address} is not the name of this machine, which has no host name"
        ),
        (PairingHost::Ip(_), false) => anyhow!(
            "`--address`: {address} is not {what} of this machine; its addresses are {}",
            list.join(", ")
        ),
        (PairingHost::Name(_), false) => anyhow!(
            "`--address`: {address} is not {what} of this machine; its name on the network is {}",
            list.join(", ")
        ),
    })
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let (path, _) = config_path(args.config)?;
    let mut config = Config::load(&path)?;
    if let Some(state_file) = args.state_file {
        config.state_file = state_file;
    }
    let target = config.state_file;
    let folder = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(anyhow!(
            "the state file {} already exists, and init never replaces one; remove it first to start again from the example",
            target.display()
        ));
    }
    if workshop_bridge::check_folder("state file", &folder)? {
        std::fs::create_dir(&folder)
            .with_context(|| format!("cannot make the folder {}", folder.display()))?;
    }
    // Written aside and moved into place only if nothing is there: an agent never sees half
    // a file, and a file that appeared meanwhile is kept.
    let mut temp = tempfile::Builder::new()
        .prefix(".workshop-state-")
        .tempfile_in(&folder)
        .with_context(|| format!("cannot write into the folder {}", folder.display()))?;
    temp.write_all(workshop_bridge::EXAMPLE_STATE.as_bytes())
        .with_context(|| format!("cannot write into the folder {}", folder.display()))?;
    temp.persist_noclobber(&target).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!(
                "the state file {} already exists, and init never replaces one; remove it first to start again from the example",
                target.display()
            )
        } else {
            anyhow!("cannot write the state file {}: {}", target.display(), e.error)
        }
    })?;
    write_stdout(&format!(
        "wrote the example state to {}; the bridge serves it, and the agent replaces it with its own\n",
        target.display()
    ))
}

/// Writes to standard output; a reader that has gone (`| head`) ends the command quietly.
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

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The file watcher logs every file event at trace. With the log written into a folder
    // the bridge watches (`2> ~/.timmy/bridge.log`), each line is such an event and is logged
    // in turn: megabytes a second with nothing happening. So its trace lines are kept out
    // unless asked for by name (`RUST_LOG=notify=trace`).
    let watcher_trace = names_target(
        &std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default(),
        WATCHER_TARGET,
    );
    let quiet_watcher = filter::filter_fn(move |meta| {
        watcher_trace || *meta.level() != Level::TRACE || !meta.target().starts_with(WATCHER_TARGET)
    });
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logging = tracing_subscriber::registry()
        .with(filter)
        .with(quiet_watcher);
    match format {
        LogFormat::Text => logging.with(output).init(),
        LogFormat::Json => logging.with(output.json()).init(),
    }
}

/// The file-watching crate's log target (and its modules': `notify::inotify`, …).
const WATCHER_TARGET: &str = "notify";

/// Whether a `RUST_LOG` value has a directive for `target` or one of its modules.
fn names_target(directives: &str, target: &str) -> bool {
    directives.split(',').any(|directive| {
        let name = directive
            .trim()
            .split(['=', '['])
            .next()
            .unwrap_or_default();
        name == target || name.starts_with(&format!("{target}::"))
    })
}

/// Ctrl-C, or SIGTERM from launchd, systemd or `kill`: listened for from the moment this is
/// made, so a signal that comes while the bridge is still starting is not lost.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must be called inside the runtime.
    fn listen() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_is_named_only_by_a_directive_for_it() {
        assert!(names_target("notify=trace", "notify"));
        assert!(names_target("info, notify::inotify=trace", "notify"));
        assert!(names_target("notify[watch]=trace", "notify"));
        assert!(!names_target("trace", "notify"));
        assert!(!names_target("workshop_bridge=trace,hyper=debug", "notify"));
        assert!(!names_target("notifyish=trace", "notify"));
        assert!(!names_target("", "notify"));
    }

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

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
