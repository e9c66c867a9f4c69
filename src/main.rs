//! `workshop-bridge`: the headless bridge. Parses flags, sets up logging, runs the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, filter};
use workshop_bridge::{Bridge, Config, LogFormat, Overrides, pairing};

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
    Qr(Box<QrArgs>),
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

#[derive(Args)]
struct QrArgs {
    /// Config file [default: the platform's config directory]
    #[arg(long, env = "WORKSHOP_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Address of this machine to put in the URL [default: the one chosen in the app, else the first LAN address]
    #[arg(long)]
    address: Option<std::net::IpAddr>,
    /// Workshop page to open instead of the bridge's own [default: the one set in the app]
    #[arg(long)]
    url: Option<String>,
    #[command(flatten)]
    overrides: Overrides,
}

/// How long the process waits, after the bridge has stopped, for blocking file work to end.
/// With the bridge's own shutdown (at most 1.8 s), a signal ends the process within 2 s.
const EXIT_GRACE: Duration = Duration::from_millis(150);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(args)) => serve(*args),
        None => serve(cli.serve),
        Some(Command::Token(args)) => token(args),
        Some(Command::Qr(args)) => qr(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One sentence, no backtrace: every error a user can cause is phrased for them.
            let _ = writeln!(std::io::stderr(), "workshop-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_path(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(p) => Ok(p),
        None => Ok(Config::default_path()?),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let path = config_path(args.config)?;
    let mut config = Config::load(&path)?;
    args.overrides.apply_to(&mut config);
    init_logging(config.log_format);
    if config.ensure_token(&path)? {
        tracing::info!(config = %path.display(), "generated a token and saved it; show it with `workshop-bridge token`");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let bridge = Bridge::start(config).await?;
        wait_for_signal().await;
        bridge.shutdown().await;
        Ok(())
    });
    // Dropping the runtime would wait for every blocking task, and a file read stuck in the
    // kernel (a hung network share) never ends: the process is left, not kept alive by it.
    runtime.shutdown_timeout(EXIT_GRACE);
    result
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let path = config_path(args.config)?;
    let mut config = Config::load(&path)?;
    if args.regenerate {
        config.token = None;
        config.no_auth = false;
    }
    config.ensure_token(&path)?;
    let token = config.token.unwrap_or_default();
    writeln!(std::io::stdout(), "{token}").context("cannot write to standard output")?;
    Ok(())
}

fn qr(args: QrArgs) -> anyhow::Result<()> {
    let path = config_path(args.config)?;
    let mut config = Config::load(&path)?;
    args.overrides.apply_to(&mut config);
    config.ensure_token(&path)?;
    let mut settings = config.pairing.clone();
    if args.address.is_some() {
        settings.address = args.address;
    }
    if args.url.is_some() {
        settings.workshop_url = args.url;
    }
    let pairing = pairing::pairing(&config, &settings)?;
    let code = pairing::qr_terminal(&pairing.url)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}\n\n{code}", pairing.url).context("cannot write to standard output")?;
    if !pairing.reachable {
        writeln!(
            out,
            "Note: {} is reachable from this machine only; bind to 0.0.0.0 or pass --address.",
            pairing.host
        )
        .context("cannot write to standard output")?;
    }
    Ok(())
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

/// Ctrl-C, or SIGTERM from launchd, systemd or `kill`.
async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
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
}
