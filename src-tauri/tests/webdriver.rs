//! The settings window driven like a person would, through WebDriver: tauri-driver in
//! front of WebKitWebDriver (Debian's webkit2gtk-driver), the real app behind it.
//!
//! `scripts/test-app` installs both and runs this with `--include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{APP, Desktop, Home, free_port, have};

const NATIVE_DRIVER: &str = "/usr/bin/WebKitWebDriver";

/// A minimal W3C WebDriver client: just what this test needs.
struct WebDriver {
    agent: ureq::Agent,
    base: String,
    session: String,
}

impl WebDriver {
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into()
    }

    /// Waits for the driver to listen (nothing to await but its port), then opens the app
    /// with its settings window.
    fn start(port: u16) -> Self {
        let agent = Self::agent();
        let base = format!("http://127.0.0.1:{port}");
        poll("tauri-driver to listen", Duration::from_secs(60), || {
            agent.get(&format!("{base}/status")).call().ok().map(|_| ())
        });
        let mut response = agent
            .post(&format!("{base}/session"))
            .send_json(json!({
                "capabilities": { "alwaysMatch": {
                    "tauri:options": { "application": APP, "args": ["--settings"] }
                }}
            }))
            .unwrap();
        let body: Value = response.body_mut().read_json().unwrap();
        let session = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {body}"))
            .to_owned();
        Self {
            agent,
            base,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).send_json(body),
        }
        .unwrap();
        let value: Value = response.body_mut().read_json().unwrap();
        assert!(
            value["value"].get("error").is_none(),
            "{method} {path}: {value}"
        );
        value["value"].clone()
    }

    fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": css }),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/clear"), json!({}));
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Polls the page until `script` returns a non-empty string (the page changes on its
    /// own time; WebDriver has no event to await).
    fn wait_for_text(&self, script: &str) -> String {
        poll(script, Duration::from_secs(60), || {
            self.script(script)
                .as_str()
                .filter(|s| !s.is_empty())
                .map(ToOwned::to_owned)
        })
    }

    fn quit(self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.agent.delete(&url).call();
    }
}

/// Bounded polling, for the few things that cannot be awaited.
fn poll<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn answers_health(port: u16) -> bool {
    let agent = WebDriver::agent();
    agent
        .get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .is_ok_and(|r| r.status() == 200)
}

fn listens(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// Starts tauri-driver (and through it the app, with its settings window) in `home`, with
/// `env` added to the environment.
fn start_driver(home: &Home, env: &[(&str, String)]) -> (Desktop, u16) {
    assert!(
        have("tauri-driver"),
        "tauri-driver is missing: run scripts/test-app"
    );
    assert!(
        std::path::Path::new(NATIVE_DRIVER).exists(),
        "{NATIVE_DRIVER} is missing: apt-get install webkit2gtk-driver"
    );
    let driver_port = free_port();
    let native_port = free_port();
    let mut desktop = Desktop::spawn(
        "tauri-driver",
        &[
            "--port",
            &driver_port.to_string(),
            "--native-port",
            &native_port.to_string(),
            "--native-driver",
            NATIVE_DRIVER,
        ],
        home,
        env,
    );
    desktop.echo_in_background();
    (desktop, driver_port)
}

/// Writes a config file with `port` and a token.
fn write_config(home: &Home, port: u16) {
    std::fs::create_dir_all(home.config().parent().unwrap()).unwrap();
    std::fs::write(
        home.config(),
        format!("port = {port}\ntoken = \"webdriver-test-token-0123456789ab\"\n"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Xvfb, tauri-driver and WebKitWebDriver; run scripts/test-app"]
async fn changing_the_port_in_the_settings_window_moves_the_bridge() {
    let home = Home::new();
    let old_port = free_port();
    let new_port = free_port();
    write_config(&home, old_port);
    // One wrong variable among the good ones the test home sets.
    let (desktop, driver_port) = start_driver(
        &home,
        &[("WORKSHOP_BRIDGE_MAX_CONNECTIONS", "lots".to_owned())],
    );

    tokio::task::block_in_place(|| {
        let wd = WebDriver::start(driver_port);
        wd.wait_for_text("return document.body.dataset.ready || ''");
        poll(
            "the bridge on the old port",
            Duration::from_secs(30),
            || answers_health(old_port).then_some(()),
        );

        // the environment as it counted: the wrong variable named with the reason, and
        // only the good ones listed as in effect
        let refused = wd.wait_for_text(
            "const e = document.querySelector('#env'), l = document.querySelector('#env-refused'); return e.hidden || l.hidden ? '' : l.textContent",
        );
        assert_eq!(
            refused,
            "WORKSHOP_BRIDGE_MAX_CONNECTIONS was left out: lots is not a whole number from 0 to 18446744073709551615."
        );
        let note = wd.script("return document.querySelector('#env-note').textContent");
        let note = note.as_str().unwrap();
        assert!(
            note.contains("WORKSHOP_BRIDGE_BIND") && !note.contains("MAX_CONNECTIONS"),
            "{note}"
        );

        // a port that cannot be: an inline message, and nothing changes
        wd.type_into("#port", "70000");
        wd.click("#apply");
        let message = wd.wait_for_text(
            "return document.querySelector('.error-text[data-for=port]').textContent",
        );
        assert_eq!(
            message,
            "“70000” is not a port: enter a number from 1 to 65535."
        );
        assert!(answers_health(old_port));

        // a good port: Apply restarts the bridge there
        wd.type_into("#port", &new_port.to_string());
        wd.click("#apply");
        let applied = wd.wait_for_text(
            "const m = document.querySelector('#bar-message'); return m.classList.contains('ok') ? m.textContent : ''",
        );
        assert!(applied.starts_with("Applied"), "{applied}");
        assert!(
            answers_health(new_port),
            "the bridge answers on the new port"
        );
        assert!(!listens(old_port), "and no longer on the old one");
        let saved = workshop_bridge::Config::load(&home.config()).unwrap();
        assert_eq!(saved.port, new_port);

        // the status the window shows follows
        let line = wd.wait_for_text(&format!(
            "const t = document.querySelector('#hero-line').textContent; return t.includes(':{new_port}') ? t : ''"
        ));
        assert!(line.contains("0 clients"), "{line}");
        wd.quit();
    });
    desktop.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Xvfb, tauri-driver and WebKitWebDriver; run scripts/test-app"]
async fn the_window_says_what_the_bridge_does_and_opens_the_real_folders() {
    let home = Home::new();
    let old_port = free_port();
    let new_port = free_port();
    write_config(&home, old_port);
    // The file manager: a stand-in `xdg-open` that notes the folder it was handed.
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let opened = home.path().join("opened");
    let fake = bin.join("xdg-open");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\n",
            opened.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (desktop, driver_port) = start_driver(&home, &[("PATH", path)]);

    tokio::task::block_in_place(|| {
        let wd = WebDriver::start(driver_port);
        wd.wait_for_text("return document.body.dataset.ready || ''");
        // The command that gives an agent this very program as its MCP server.
        let command = wd.wait_for_text(
            "const t = document.querySelector('#mcp-command').textContent; return t.startsWith('claude ') ? t : ''",
        );
        assert_eq!(command, format!("claude mcp add workshop -- {APP} mcp"));
        let hero = |port: u16| {
            format!(
                "const t = document.querySelector('#hero-line').textContent; return t.includes(':{port}') ? t : ''"
            )
        };
        wd.wait_for_text(&hero(old_port));

        // stopped, Apply saves and says the bridge is stopped (it does not start it)
        wd.click("#toggle-bridge");
        wd.wait_for_text(
            "const t = document.querySelector('#hero-title').textContent; return t.includes('stopped') ? t : ''",
        );
        wd.type_into("#port", &new_port.to_string());
        wd.click("#apply");
        let applied = wd.wait_for_text(
            "const t = document.querySelector('#bar-message').textContent; return t.startsWith('Applied') ? t : ''",
        );
        assert_eq!(
            applied,
            "Applied and saved. The bridge is stopped; it uses them when you start it."
        );
        assert!(!listens(new_port) && !listens(old_port));
        assert_eq!(
            workshop_bridge::Config::load(&home.config()).unwrap().port,
            new_port
        );

        // started again, Apply says it runs, on the port it really has
        wd.click("#toggle-bridge");
        wd.wait_for_text(&hero(new_port));
        wd.type_into("#port", &old_port.to_string());
        wd.click("#apply");
        let applied = wd.wait_for_text(
            "const m = document.querySelector('#bar-message'); return m.classList.contains('ok') ? m.textContent : ''",
        );
        assert_eq!(
            applied,
            format!("Applied. The bridge is running on the new settings (port {old_port}).")
        );
        assert!(answers_health(old_port));

        // "Show in Finder" on the inbox (shown as ~/inbox): the real folder is opened
        wd.click(".nav a[data-section=folders]");
        assert_eq!(
            wd.script("return document.querySelector('#inbox_dir').value"),
            "~/inbox"
        );
        wd.click("[data-open=inbox_dir]");
        let handed = poll(
            "the file manager to be called",
            Duration::from_secs(30),
            || {
                std::fs::read_to_string(&opened)
                    .ok()
                    .filter(|s| s.ends_with('\n'))
            },
        );
        assert_eq!(
            handed.trim_end(),
            home.path().join("inbox").display().to_string()
        );
        assert!(
            !wd.script("return document.querySelector('#bar-message').className")
                .as_str()
                .unwrap()
                .contains("error")
        );

        // the window may be moved by its drag regions: the permission is granted
        assert!(
            wd.script("return document.querySelectorAll('[data-tauri-drag-region]').length")
                .as_u64()
                .unwrap()
                >= 1
        );
        let dragging = wd.script(
            "return window.__TAURI_INTERNALS__.invoke('plugin:window|start_dragging').then(() => 'allowed', (e) => String(e))",
        );
        assert!(
            !dragging.as_str().unwrap().contains("not allowed"),
            "start_dragging: {dragging}"
        );

        // a window whose first questions fail says so instead of staying blank
        let status = wd.script(
            r#"const real = window.__TAURI__.core.invoke;
               window.__TAURI__.core = { ...window.__TAURI__.core,
                 invoke: (cmd, args) => cmd === "live" ? Promise.reject("no answer") : real(cmd, args) };
               delete document.body.dataset.ready;
               start();
               return "";"#,
        );
        assert_eq!(status, "");
        wd.wait_for_text("return document.body.dataset.ready || ''");
        assert_eq!(
            wd.script("return document.querySelector('#bar-message').textContent"),
            "The bridge’s status could not be read (no answer). Close the window and open Settings again."
        );
        assert_eq!(
            wd.script("return document.querySelector('#hero-title').textContent"),
            "The bridge’s status is unknown"
        );
        wd.quit();
    });
    desktop.terminate().await;
}
