//! A real NATS server for the cluster tests: Debian's `nats-server`, JetStream on, its store
//! in a temporary folder, a free port, and a token. Stopped (SIGKILL) and started again on
//! the same port and store when a test asks.

use std::path::PathBuf;
use std::process::Stdio;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::DEADLINE;

/// The token the cluster's bridges present to the server.
pub const CLUSTER_TOKEN: &str = "c1u57e2-70ken-for-the-tests";

pub struct NatsServer {
    program: PathBuf,
    store: TempDir,
    pub port: u16,
    child: Option<Child>,
}

/// The `nats-server` program, if it is installed.
fn program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

impl NatsServer {
    /// Starts a server, or says why it cannot: `None` (and a line in the test report) when
    /// `nats-server` is not installed, but a failure under `CI=true`, where the test
    /// command installs it.
    pub async fn start_or_skip(test: &str) -> Option<Self> {
        let Some(program) = program() else {
            let why = "nats-server is not installed (apt-get install nats-server)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: {why}; the test command installs it");
            }
            super::report::skipped(test, why);
            return None;
        };
        let mut server = Self {
            program,
            store: tempfile::tempdir().unwrap(),
            port: 0,
            child: None,
        };
        server.run().await;
        Some(server)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process: on a free port the first time, on the same port after.
    async fn run(&mut self) {
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let mut child = Command::new(&self.program)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port,
                "--auth",
                CLUSTER_TOKEN,
            ])
            .arg("-sd")
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let found = tokio::time::timeout(DEADLINE, async {
            let mut port = None;
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some((_, at)) = line.split_once("Listening for client connections on ") {
                    port = at.trim().rsplit(':').next().and_then(|p| p.parse().ok());
                }
                let ready = line.contains("Server is ready");
                seen.push(line);
                if ready {
                    return port;
                }
            }
            None
        })
        .await;
        let Ok(Some(port)) = found else {
            panic!("nats-server did not start: {seen:?}");
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.port = port;
        self.child = Some(child);
    }

    /// Kills the server at once (SIGKILL): its clients see the link drop.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts it again on the same port, with the same store.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.run().await;
    }
}
