//! `serve` (the bridge, until a signal) and `mcp` (the agent's tools), on the same settings.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use workshop_bridge::config::{ConfigEditor, ConfigFile, generate_token};
use workshop_bridge::{Bridge, Config, Overrides};

use crate::logging::init_logging;
use crate::settings::{Sources, check_config_folder, config_path, token_saved_sentence};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Config file [default: ~/.config/workshop-bridge/config.toml, or the platform's equivalent]
    #[arg(long, env = "WORKSHOP_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

/// The bridge's own log target, which its lines keep whichever module of the command
/// writes them (`RUST_LOG=workshop_bridge=debug` and the lines people search for).
const LOG_TARGET: &str = "workshop_bridge";

/// How long the process waits, after the bridge has stopped, for blocking file work to end.
/// With the bridge's own shutdown (at most 1.8 s), a signal ends the process within 2 s.
const EXIT_GRACE: Duration = Duration::from_millis(150);

/// The runtime, and the signals it listens for, made first thing when the bridge runs.
pub(crate) struct Early {
    runtime: tokio::runtime::Runtime,
    signals: Signals,
}

impl Early {
    pub(crate) fn start() -> anyhow::Result<Self> {
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
pub(crate) fn mcp(args: ServeArgs, sources: &Sources<'_>) -> anyhow::Result<()> {
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

pub(crate) fn run(args: ServeArgs, sources: &Sources<'_>, early: Early) -> anyhow::Result<()> {
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
                target: LOG_TARGET,
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
                    tracing::warn!(target: LOG_TARGET, "{sentence}");
                } else {
                    tracing::info!(target: LOG_TARGET, "{sentence}");
                }
            }
            Ok::<_, anyhow::Error>(prepared.start().await?)
        };
        let bridge = tokio::select! {
            started = starting => started?,
            () = signals.recv() => {
                tracing::info!(target: LOG_TARGET, "stopped before it was listening");
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
