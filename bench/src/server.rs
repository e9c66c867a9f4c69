//! The servers under test: started on port 0 in a temporary directory, found by the
//! `listening on ws://HOST:PORT` line each prints on stderr, sampled through `/proc`.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::procfs;

/// Which implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    /// `workshop-bridge`, the Rust bridge.
    Bridge,
    /// The Python peer with watchdog (event-driven).
    Python,
    /// The Python peer polling every 2 s, as the original design did.
    PythonPoll,
    /// The Node `ws` peer.
    Node,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Bridge => "bridge",
            Kind::Python => "python",
            Kind::PythonPoll => "python-poll",
            Kind::Node => "node",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the programs are.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    pub(crate) bridge: PathBuf,
    pub(crate) python: PathBuf,
    pub(crate) node: PathBuf,
    pub(crate) peers: PathBuf,
    /// Parent of the servers' temporary directories (inbox files are fsynced there).
    pub(crate) tmp: PathBuf,
}

impl Tools {
    /// Fails early, with a sentence, if a program or script is missing.
    pub(crate) fn check(&self, kinds: &[Kind]) -> Result<()> {
        for kind in kinds {
            match kind {
                Kind::Bridge => exists(&self.bridge, "build it with `cargo build --release`")?,
                Kind::Python | Kind::PythonPoll => {
                    exists(&self.python, "run scripts/bench, which creates the venv")?;
                    exists(&self.peers.join("python/server.py"), "")?;
                }
                Kind::Node => exists(
                    &self.peers.join("node/node_modules/ws"),
                    "run scripts/bench, which runs `npm ci`",
                )?,
            }
        }
        Ok(())
    }
}

fn exists(path: &Path, hint: &str) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        bail!("{} is missing; {hint}", path.display())
    }
}

/// Limits raised for scenarios that send many messages from one connection. The bridge
/// allows 100 messages a second per connection and 10,000 unread inbox files by default.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Launch {
    pub(crate) raise_message_rate: bool,
    pub(crate) raise_inbox_files: bool,
}

impl Launch {
    pub(crate) const MESSAGE_RATE: &'static str = "1000000000";
    pub(crate) const INBOX_FILES: &'static str = "100000000";
    /// Every client of the load generator comes from 127.0.0.1, so the per-address limit
    /// that protects a home network would cap every scenario at its default.
    pub(crate) const PER_ADDRESS: &'static str = "1000000";
}

/// A running server.
pub(crate) struct Server {
    pub(crate) kind: Kind,
    child: Child,
    pub(crate) pid: u32,
    pub(crate) port: u16,
    /// From spawn to the `listening on` line.
    pub(crate) listening_after: Duration,
    pub(crate) spawned_at: Instant,
    state_file: PathBuf,
    pub(crate) inbox_dir: PathBuf,
    log: Arc<Mutex<VecDeque<String>>>,
    // Removed (with the inbox) when the server is dropped.
    _dir: tempfile::TempDir,
}

/// How many stderr lines are kept for error messages.
const LOG_LINES: usize = 12;
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Server {
    /// Starts `kind` with `state` (YAML) as its state file and waits for its port.
    pub(crate) async fn start(
        kind: Kind,
        tools: &Tools,
        state: &str,
        launch: Launch,
    ) -> Result<Server> {
        Self::start_with(kind, tools, state, launch, &[]).await
    }

    /// Like [`Server::start`], with `extra` arguments for the bridge (a cluster's flags).
    pub(crate) async fn start_with(
        kind: Kind,
        tools: &Tools,
        state: &str,
        launch: Launch,
        extra: &[String],
    ) -> Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("bridge-bench-{kind}-"))
            .tempdir_in(&tools.tmp)
            .with_context(|| {
                format!(
                    "cannot create a temporary directory in {}",
                    tools.tmp.display()
                )
            })?;
        let state_dir = dir.path().join("state");
        let inbox_dir = dir.path().join("inbox");
        let outbox_dir = dir.path().join("outbox");
        for d in [&state_dir, &inbox_dir, &outbox_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let state_file = state_dir.join("workshop-state.yaml");
        std::fs::write(&state_file, state).context("cannot write the state file")?;

        let mut cmd = match kind {
            Kind::Bridge => {
                let mut c = Command::new(&tools.bridge);
                c.arg("--port").arg("0").arg("--bind").arg("127.0.0.1");
                c.arg("--state-file").arg(&state_file);
                c.arg("--inbox-dir").arg(&inbox_dir);
                c.arg("--outbox-dir").arg(&outbox_dir);
                c.arg("--config").arg(dir.path().join("c.toml"));
                c.arg("--no-auth");
                c.arg("--max-connections-per-address")
                    .arg(Launch::PER_ADDRESS);
                if launch.raise_message_rate {
                    c.arg("--max-messages-per-sec").arg(Launch::MESSAGE_RATE);
                }
                if launch.raise_inbox_files {
                    c.arg("--max-inbox-files").arg(Launch::INBOX_FILES);
                }
                c.args(extra);
                // Whatever the caller's environment says, run on the defaults.
                for (key, _) in std::env::vars_os() {
                    if key.to_string_lossy().starts_with("WORKSHOP_BRIDGE_") || key == "RUST_LOG" {
                        c.env_remove(key);
                    }
                }
                c
            }
            Kind::Python | Kind::PythonPoll => {
                let mut c = Command::new(&tools.python);
                c.arg(tools.peers.join("python/server.py"));
                c.arg("--port").arg("0").arg("--bind").arg("127.0.0.1");
                c.arg("--state-file").arg(&state_file);
                c.arg("--inbox-dir").arg(&inbox_dir);
                if kind == Kind::PythonPoll {
                    c.arg("--poll").arg("2");
                }
                c.env("PYTHONUNBUFFERED", "1");
                c
            }
            Kind::Node => {
                let mut c = Command::new(&tools.node);
                c.arg(tools.peers.join("node/server.js"));
                c.arg("--port").arg("0").arg("--bind").arg("127.0.0.1");
                c.arg("--state-file").arg(&state_file);
                c.arg("--inbox-dir").arg(&inbox_dir);
                c.current_dir(tools.peers.join("node"));
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);

        let spawned_at = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {kind} ({:?})", cmd.as_std().get_program()))?;
        let pid = child.id().context("the server exited at once")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;

        // Read stderr for as long as the server lives: a full pipe would stall it.
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES)));
        let (port_tx, port_rx) = oneshot::channel::<(u16, Instant)>();
        let log_writer = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut port_tx = Some(port_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = listening_port(&line)
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send((port, Instant::now()));
                }
                if let Ok(mut log) = log_writer.lock() {
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            }
        });

        let mut server = Server {
            kind,
            child,
            pid,
            port: 0,
            listening_after: Duration::ZERO,
            spawned_at,
            state_file,
            inbox_dir,
            log,
            _dir: dir,
        };
        match tokio::time::timeout(START_TIMEOUT, port_rx).await {
            Ok(Ok((port, at))) => {
                server.port = port;
                server.listening_after = at - spawned_at;
                Ok(server)
            }
            Ok(Err(_)) => {
                // stderr closed without the line: it exited. Give the reader a moment.
                let status = server.child.wait().await.ok();
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(anyhow!(
                    "{kind} exited before listening ({}){}",
                    status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string()),
                    server.recent_log()
                ))
            }
            Err(_) => Err(anyhow!(
                "{kind} did not print `listening on` within {}s{}",
                START_TIMEOUT.as_secs(),
                server.recent_log()
            )),
        }
    }

    /// Replaces the state file the way agents do (a dot-file in the same directory, then a
    /// rename) and returns the moment of the rename.
    pub(crate) fn write_state(&self, yaml: &str) -> Result<Instant> {
        let dir = self
            .state_file
            .parent()
            .context("state file without a directory")?;
        let tmp = dir.join(".workshop-state.yaml.tmp");
        std::fs::write(&tmp, yaml).context("cannot write the new state")?;
        let at = Instant::now();
        std::fs::rename(&tmp, &self.state_file)
            .context("cannot rename the new state into place")?;
        Ok(at)
    }

    /// Fails if the server has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("{} exited ({status}){}", self.kind, self.recent_log()),
            Err(e) => bail!("cannot check on {}: {e}", self.kind),
        }
    }

    pub(crate) fn sample(&mut self) -> Result<procfs::Sample> {
        self.check_alive()?;
        procfs::sample(self.pid).with_context(|| format!("cannot sample {}", self.kind))
    }

    /// The last lines the server wrote on stderr, for an error message.
    pub(crate) fn recent_log(&self) -> String {
        let lines: Vec<String> = self
            .log
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        if lines.is_empty() {
            String::new()
        } else {
            format!("; its last words on stderr:\n    {}", lines.join("\n    "))
        }
    }

    /// Kills the server and waits for it.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// The port from `… listening on ws://127.0.0.1:PORT …`.
fn listening_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on ws://")? + "listening on ws://".len()..];
    let addr = rest.split_whitespace().next()?;
    let port = addr.rsplit(':').next()?;
    port.trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_port_in_every_servers_line() {
        assert_eq!(
            listening_port("listening on ws://127.0.0.1:41234"),
            Some(41234)
        );
        assert_eq!(
            listening_port(
                "2026-11-25T01:00:00Z  INFO workshop_bridge: listening on ws://127.0.0.1:8765 state_file=/tmp/s.yaml"
            ),
            Some(8765)
        );
        assert_eq!(listening_port("listening on ws://[::1]:9000"), Some(9000));
        assert_eq!(listening_port("starting"), None);
    }
}
