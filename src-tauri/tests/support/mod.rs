//! Running the real app binary for the end-to-end tests: under Xvfb and a private D-Bus
//! session, with a temporary HOME, in its own process group so the whole tree goes away.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

/// Calls the command `cmd` with `args` as the settings window does, through Tauri's IPC on
/// the mock runtime; `Err` holds what the command returned as its error.
pub fn invoke(
    window: &tauri::WebviewWindow<tauri::test::MockRuntime>,
    cmd: &str,
    args: serde_json::Value,
) -> Result<serde_json::Value, serde_json::Value> {
    tauri::test::get_ipc_response(
        window,
        tauri::webview::InvokeRequest {
            cmd: cmd.into(),
            callback: tauri::ipc::CallbackFn(0),
            error: tauri::ipc::CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: tauri::ipc::InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: tauri::test::INVOKE_KEY.to_string(),
        },
    )
    .map(|body| body.deserialize().unwrap())
}

/// The app binary cargo built for these tests.
pub const APP: &str = env!("CARGO_BIN_EXE_workshop-bridge-app");

/// How long the first window and WebKit may take to come up on a busy 2-core machine.
pub const STARTUP: Duration = Duration::from_secs(120);

/// A free port no other test in this process was given. The kernel may hand the same port
/// to two quick `bind(0)` calls once the first listener is closed, and these tests run in
/// parallel: without the register, two of them could be given the same port.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A temporary home with the bridge's files in it, and the environment that points the
/// app there (bound to loopback: nothing in these tests is reachable from outside).
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("config").join("config.toml")
    }

    pub fn apply_env(&self, cmd: &mut Command) {
        let home = self.path();
        cmd.env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("WORKSHOP_BRIDGE_CONFIG", self.config())
            .env("WORKSHOP_BRIDGE_BIND", "127.0.0.1")
            .env("WORKSHOP_BRIDGE_STATE_FILE", home.join("state.yaml"))
            .env("WORKSHOP_BRIDGE_INBOX_DIR", home.join("inbox"))
            .env("WORKSHOP_BRIDGE_OUTBOX_DIR", home.join("outbox"))
            .env("RUST_LOG", "info")
            .env("NO_AT_BRIDGE", "1")
            .env_remove("WORKSHOP_BRIDGE_PORT")
            .env_remove("WORKSHOP_BRIDGE_TOKEN");
    }
}

/// The value of `name=value` in a log line.
pub fn field(line: &str, name: &str) -> String {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in “{line}”"))
        .to_owned()
}

/// Whether the tools these tests need are installed (scripts/test-app installs them).
pub fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A process tree started under `xvfb-run -a dbus-launch --exit-with-session`, killed
/// (the whole group) when dropped.
pub struct Desktop {
    pub child: Child,
    stderr: Option<Lines<BufReader<ChildStderr>>>,
}

impl Desktop {
    pub fn spawn(program: &str, args: &[&str], home: &Home, env: &[(&str, String)]) -> Self {
        for tool in ["xvfb-run", "dbus-launch"] {
            assert!(
                have(tool),
                "{tool} is missing: run scripts/test-app, which installs it"
            );
        }
        let mut cmd = Command::new("xvfb-run");
        // `-ac`: the test itself may talk to the display (to close a window as a window
        // manager would); the first line says which display xvfb-run picked.
        cmd.args([
            "-a",
            "-s",
            "-screen 0 1280x800x24 -ac",
            "sh",
            "-c",
            r#"echo "x display: $DISPLAY" >&2; exec "$@""#,
            "sh",
            "dbus-launch",
            "--exit-with-session",
        ])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
        home.apply_env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("cannot start xvfb-run");
        let stderr = Some(BufReader::new(child.stderr.take().unwrap()).lines());
        Self { child, stderr }
    }

    /// Reads stderr until a line contains `needle`; returns it. Every line read is echoed
    /// so a failure shows what the app said.
    pub async fn wait_for_line(&mut self, needle: &str, within: Duration) -> String {
        let stderr = self.stderr.as_mut().expect("stderr is being echoed");
        let found = tokio::time::timeout(within, async {
            while let Some(line) = stderr.next_line().await.unwrap() {
                eprintln!("  app| {line}");
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("the app exited before saying “{needle}”"),
            Err(_) => panic!("the app did not say “{needle}” within {within:?}"),
        }
    }

    /// Reads stderr until every needle has been seen on some line (in any order); returns
    /// the lines, in the needles' order.
    pub async fn wait_for_all(&mut self, needles: &[&str], within: Duration) -> Vec<String> {
        let stderr = self.stderr.as_mut().expect("stderr is being echoed");
        let mut found: Vec<Option<String>> = vec![None; needles.len()];
        let done = tokio::time::timeout(within, async {
            while let Some(line) = stderr.next_line().await.unwrap() {
                eprintln!("  app| {line}");
                for (needle, slot) in needles.iter().zip(found.iter_mut()) {
                    if slot.is_none() && line.contains(needle) {
                        *slot = Some(line.clone());
                    }
                }
                if found.iter().all(Option::is_some) {
                    return true;
                }
            }
            false
        })
        .await;
        let missing: Vec<&str> = needles
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(n, _)| *n)
            .collect();
        match done {
            Ok(true) => found.into_iter().flatten().collect(),
            Ok(false) => panic!("the app exited before saying {missing:?}"),
            Err(_) => panic!("the app did not say {missing:?} within {within:?}"),
        }
    }

    /// The X display the desktop runs on (the first thing it says).
    pub async fn display(&mut self) -> String {
        let line = self
            .wait_for_line("x display: ", Duration::from_secs(30))
            .await;
        line.rsplit(' ').next().unwrap().to_owned()
    }

    /// Echoes what the processes print from now on, in the background (so they never
    /// block on a full pipe while the test does something else).
    pub fn echo_in_background(&mut self) {
        if let Some(mut stderr) = self.stderr.take() {
            tokio::spawn(async move {
                while let Ok(Some(line)) = stderr.next_line().await {
                    eprintln!("  app| {line}");
                }
            });
        }
    }

    /// Sends SIGTERM to the whole group (the app quits gracefully on it) and waits.
    pub async fn terminate(mut self) {
        self.signal_group(Signal::SIGTERM);
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
    }

    /// Signals the group this tree runs in (and nothing else: a group id, never -1).
    fn signal_group(&self, signal: Signal) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1)
        {
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }
}

/// Sends `signal` to the one process `pid` (as printed in the app's log).
pub fn signal_process(pid: &str, signal: Signal) {
    let pid: i32 = pid.parse().expect("a process id");
    assert!(pid > 1, "refusing to signal {pid}");
    nix::sys::signal::kill(Pid::from_raw(pid), signal).expect("cannot signal the app");
}

impl Drop for Desktop {
    fn drop(&mut self) {
        self.signal_group(Signal::SIGKILL);
    }
}

/// Asks the top-level window titled `title` on `display` to close, as a window manager
/// does when the user clicks its close button (a `WM_DELETE_WINDOW` message). Returns how
/// many windows were asked.
pub fn close_window(display: &str, title: &str) -> usize {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{AtomEnum, ClientMessageEvent, ConnectionExt as _, EventMask};

    let (conn, screen) = x11rb::connect(Some(display)).expect("cannot reach the X display");
    let atom = |name: &str| {
        conn.intern_atom(false, name.as_bytes())
            .unwrap()
            .reply()
            .unwrap()
            .atom
    };
    let (protocols, delete, net_name, utf8) = (
        atom("WM_PROTOCOLS"),
        atom("WM_DELETE_WINDOW"),
        atom("_NET_WM_NAME"),
        atom("UTF8_STRING"),
    );
    let root = conn.setup().roots[screen].root;
    let tree = conn.query_tree(root).unwrap().reply().unwrap();
    let mut asked = 0;
    for window in tree.children {
        let named = |property, kind| {
            conn.get_property(false, window, property, kind, 0, 1024)
                .ok()
                .and_then(|c| c.reply().ok())
                .is_some_and(|r| r.value == title.as_bytes())
        };
        if named(net_name, utf8) || named(AtomEnum::WM_NAME.into(), AtomEnum::STRING.into()) {
            let event = ClientMessageEvent::new(32, window, protocols, [delete, 0, 0, 0, 0]);
            conn.send_event(false, window, EventMask::NO_EVENT, event)
                .unwrap();
            asked += 1;
        }
    }
    conn.flush().unwrap();
    asked
}

/// The processes whose parent is `pid`, with their names (`/proc/PID/comm`).
pub fn children(pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // after the name in parentheses: state, then the parent's id
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            let name = std::fs::read_to_string(format!("/proc/{child}/comm"))
                .unwrap_or_default()
                .trim()
                .to_owned();
            found.push((child, name));
        }
    }
    found
}

/// The app's WebKit web content processes (the ones that hold a page).
pub fn web_processes(pid: u32) -> Vec<u32> {
    children(pid)
        .into_iter()
        .filter(|(_, name)| name.starts_with("WebKitWebProces"))
        .map(|(p, _)| p)
        .collect()
}

/// Starts the app a second time, as the user would by opening it again, in the first copy's
/// environment (its display and D-Bus session, where the single-instance check happens), and
/// waits for it to exit.
pub async fn launch_again(pid: u32, args: &[&str]) -> std::process::ExitStatus {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mut cmd = Command::new(APP);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for pair in environ.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let pair = String::from_utf8_lossy(pair);
        if let Some((key, value)) = pair.split_once('=') {
            cmd.env(key, value);
        }
    }
    let mut child = cmd.spawn().expect("cannot start the app again");
    tokio::time::timeout(STARTUP, child.wait())
        .await
        .expect("the second copy did not exit")
        .unwrap()
}
