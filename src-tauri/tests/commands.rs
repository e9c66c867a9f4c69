//! The commands the settings window calls, through Tauri's IPC on the mock runtime, with
//! a real bridge on a free port behind them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tauri::test::{MockRuntime, mock_builder, mock_context, noop_assets};
use tauri::{App, WebviewWindow, WebviewWindowBuilder};
use workshop_bridge::Config;
use workshop_bridge::config::EnvOverrides;
use workshop_bridge_app::app_builder;
use workshop_bridge_app::commands::{FileManager, LoginItems, MemoryLoginItem, OpenFolder};
use workshop_bridge_app::controller::{Controller, Paths};
use workshop_bridge_app::logs::LogBuffer;
use workshop_bridge_app::status::BridgeStatus;

mod support;
use support::free_port;

/// These tests open no folders (tests/folders.rs does).
struct NoFileManager;

impl OpenFolder for NoFileManager {
    fn open(&self, path: &Path) -> Result<(), String> {
        panic!("asked to open {}", path.display())
    }
}

struct TestApp {
    _app: App<MockRuntime>,
    window: WebviewWindow<MockRuntime>,
    controller: Arc<Controller>,
    dir: tempfile::TempDir,
    port: u16,
}

fn test_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = Config {
        port,
        bind: "127.0.0.1".parse().unwrap(),
        token: Some("first-token-0123456789abcdefghij".into()),
        state_file: dir.path().join("state.yaml"),
        inbox_dir: dir.path().join("inbox"),
        outbox_dir: dir.path().join("outbox"),
        heartbeat_secs: 5,
        ..Config::default()
    };
    let paths = Paths::beside(dir.path().join("config").join("config.toml"));
    let controller = Arc::new(Controller::with_config(paths, config, LogBuffer::new(50)));
    let app = app_builder(mock_builder(), Arc::clone(&controller))
        .manage(LoginItems(Box::new(MemoryLoginItem::default())))
        .manage(FileManager(Box::new(NoFileManager)))
        .build(mock_context(noop_assets()))
        .unwrap();
    let window = WebviewWindowBuilder::new(&app, "settings", Default::default())
        .build()
        .unwrap();
    TestApp {
        _app: app,
        window,
        controller,
        dir,
        port,
    }
}

impl TestApp {
    fn invoke(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        support::invoke(&self.window, cmd, args)
    }

    fn ok(&self, cmd: &str, args: Value) -> Value {
        self.invoke(cmd, args)
            .unwrap_or_else(|e| panic!("{cmd} failed: {e}"))
    }

    fn form(&self) -> Value {
        let mut form = self.ok("get_settings", json!({}));
        let form = form.as_object_mut().unwrap();
        for key in [
            "address",
            "start_bridge_on_launch",
            "no_auth",
            "config_path",
            "env_overrides",
            "env_problems",
        ] {
            form.remove(key);
        }
        Value::Object(form.clone())
    }

    fn config_file(&self) -> std::path::PathBuf {
        self.controller.paths().config.clone()
    }
}

fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// Waits until the status satisfies `done` (the controller publishes every change).
fn wait_for_status(controller: &Controller, done: impl Fn(&BridgeStatus) -> bool) -> BridgeStatus {
    let mut status = controller.subscribe();
    tauri::async_runtime::block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let now = status.borrow_and_update().clone();
                if done(&now) {
                    return now;
                }
                status.changed().await.unwrap();
            }
        })
        .await
        .expect("the status did not change in time")
    })
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[test]
fn settings_show_the_config_in_effect() {
    let t = test_app();
    let settings = t.ok("get_settings", json!({}));
    assert_eq!(settings["port"], t.port.to_string());
    assert_eq!(settings["bind"], "127.0.0.1");
    assert_eq!(settings["token"], "first-token-0123456789abcdefghij");
    assert_eq!(settings["workshop_url"], "");
    assert_eq!(settings["start_bridge_on_launch"], true);
    assert!(
        settings["config_path"]
            .as_str()
            .unwrap()
            .ends_with("config.toml")
    );
}

/// The window's "Connect your agent" command names the program that is running (the app's
/// own binary, which answers `mcp`).
#[test]
fn the_mcp_command_names_this_program() {
    let t = test_app();
    let command = t.ok("mcp_command", json!({}));
    let exe = std::env::current_exe().unwrap().display().to_string();
    assert_eq!(command["program"], exe);
    assert_eq!(command["args"], json!(["mcp"]));
    assert_eq!(
        command["claude"],
        format!("claude mcp add workshop -- {exe} mcp")
    );
}

/// The app started with `WORKSHOP_BRIDGE_*` variables, two of them wrong: the settings
/// window names those two with the reason, lists only the good ones as in effect, and the
/// bridge runs on the good ones.
#[test]
fn a_wrong_variable_is_named_in_the_settings_and_the_others_apply() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let paths = Paths::beside(dir.path().join("config.toml"));
    std::fs::write(
        &paths.config,
        format!(
            "token = \"first-token-0123456789abcdefghij\"\nstate_file = \"{}\"\ninbox_dir = \"{}\"\noutbox_dir = \"{}\"\n",
            dir.path().join("state.yaml").display(),
            dir.path().join("inbox").display(),
            dir.path().join("outbox").display(),
        ),
    )
    .unwrap();
    let env = EnvOverrides::from_vars(
        [
            ("WORKSHOP_BRIDGE_PORT", port.to_string()),
            ("WORKSHOP_BRIDGE_BIND", "127.0.0.1".to_owned()),
            ("WORKSHOP_BRIDGE_MAX_CONNECTIONS", "lots".to_owned()),
            ("WORKSHOP_BRIDGE_HEARTBEAT_SECS", "0".to_owned()),
        ]
        .map(|(k, v)| (k.into(), v.into())),
    );
    let controller = Arc::new(Controller::load_with_env(paths, env, LogBuffer::new(50)));
    let app = app_builder(mock_builder(), Arc::clone(&controller))
        .manage(LoginItems(Box::new(MemoryLoginItem::default())))
        .build(mock_context(noop_assets()))
        .unwrap();
    let window = WebviewWindowBuilder::new(&app, "settings", Default::default())
        .build()
        .unwrap();
    let t = TestApp {
        _app: app,
        window,
        controller,
        dir,
        port,
    };
    let settings = t.ok("get_settings", json!({}));
    assert_eq!(
        settings["env_overrides"],
        json!(["WORKSHOP_BRIDGE_PORT", "WORKSHOP_BRIDGE_BIND"])
    );
    assert_eq!(
        settings["env_problems"],
        json!([
            {
                "variable": "WORKSHOP_BRIDGE_MAX_CONNECTIONS",
                "message": "lots is not a whole number from 0 to 18446744073709551615",
            },
            {
                "variable": "WORKSHOP_BRIDGE_HEARTBEAT_SECS",
                "message": "must be between 1 and 3600 seconds",
            },
        ])
    );
    assert_eq!(settings["port"], port.to_string());
    assert_eq!(settings["bind"], "127.0.0.1");
    let live = t.ok("start_bridge", json!({}));
    assert_eq!(live["status"]["state"], "running", "{live}");
    assert!(answers(t.port));
}

#[test]
fn start_and_stop_report_the_status_line() {
    let t = test_app();
    let live = t.ok("start_bridge", json!({}));
    assert_eq!(live["status"]["state"], "running");
    assert_eq!(
        live["line"],
        format!("Running on 127.0.0.1:{} · 0 clients", t.port)
    );
    assert!(answers(t.port));

    let live = t.ok("stop_bridge", json!({}));
    assert_eq!(live["line"], "Stopped");
    assert!(live["clients"].as_array().unwrap().is_empty());
    assert!(!answers(t.port));
}

#[test]
fn the_live_panel_lists_clients_as_they_come() {
    let t = test_app();
    t.ok("start_bridge", json!({}));
    let url = format!("ws://127.0.0.1:{}/ws", t.port);
    let client = tauri::async_runtime::block_on(tokio_tungstenite::connect_async(url)).unwrap();
    wait_for_status(&t.controller, |s| {
        matches!(s, BridgeStatus::Running { clients: 1, .. })
    });
    let live = t.ok("live", json!({}));
    assert_eq!(
        live["line"],
        format!("Running on 127.0.0.1:{} · 1 client", t.port)
    );
    assert_eq!(live["clients"][0]["path"], "/ws");
    assert_eq!(
        live["state"]["path"],
        t.dir.path().join("state.yaml").display().to_string()
    );
    drop(client);
    wait_for_status(&t.controller, |s| {
        matches!(s, BridgeStatus::Running { clients: 0, .. })
    });
}

#[test]
fn port_70000_gets_an_inline_message_and_changes_nothing() {
    let t = test_app();
    t.ok("start_bridge", json!({}));
    let mut form = t.form();
    form["port"] = json!("70000");
    let err = t
        .invoke("apply_settings", json!({ "form": form }))
        .unwrap_err();
    assert_eq!(
        err["fields"]["port"],
        "“70000” is not a port: enter a number from 1 to 65535."
    );
    assert_eq!(
        err["message"],
        "One setting needs fixing; nothing was changed."
    );
    assert!(read(&t.config_file()).is_none(), "nothing is saved");
    assert!(answers(t.port), "the bridge still runs where it was");
    assert_eq!(t.ok("get_settings", json!({}))["port"], t.port.to_string());
}

#[test]
fn an_empty_token_and_a_file_for_a_folder_get_inline_messages() {
    let t = test_app();
    let file = t.dir.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let mut form = t.form();
    form["token"] = json!("");
    form["inbox_dir"] = json!(file.display().to_string());
    let err = t
        .invoke("apply_settings", json!({ "form": form }))
        .unwrap_err();
    assert!(
        err["fields"]["token"]
            .as_str()
            .unwrap()
            .starts_with("The token cannot be empty"),
        "{err}"
    );
    assert_eq!(
        err["fields"]["inbox_dir"],
        format!("“{}” is a file, not a folder.", file.display())
    );
    assert!(read(&t.config_file()).is_none());
    assert_eq!(
        t.ok("get_settings", json!({}))["token"],
        "first-token-0123456789abcdefghij"
    );
}

#[test]
fn apply_restarts_the_bridge_on_the_new_port_and_saves_it() {
    let t = test_app();
    t.ok("start_bridge", json!({}));
    let new_port = free_port();
    let mut form = t.form();
    form["port"] = json!(new_port.to_string());
    form["workshop_url"] = json!("https://workshop.example/");
    let settings = t.ok("apply_settings", json!({ "form": form }));
    assert_eq!(settings["port"], new_port.to_string());
    assert!(answers(new_port));
    assert!(!answers(t.port));

    // the CLI reads what the app saved
    let saved = Config::load(&t.config_file()).unwrap();
    assert_eq!(saved.port, new_port);
    assert_eq!(
        saved.token.as_deref(),
        Some("first-token-0123456789abcdefghij")
    );
    let pairing = t.ok("pairing", json!({}));
    assert_eq!(
        pairing["url"],
        format!(
            "https://workshop.example/?bridge=ws%3A%2F%2F127.0.0.1%3A{new_port}%2Fws&token=first-token-0123456789abcdefghij"
        )
    );
}

#[test]
fn a_taken_port_is_reported_on_the_port_field_and_the_bridge_stays() {
    let t = test_app();
    t.ok("start_bridge", json!({}));
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let mut form = t.form();
    form["port"] = json!(taken_port.to_string());
    let err = t
        .invoke("apply_settings", json!({ "form": form }))
        .unwrap_err();
    assert!(
        err["fields"]["port"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Port {taken_port} is already in use")),
        "{err}"
    );
    assert!(answers(t.port), "back on the old settings");
    assert!(read(&t.config_file()).is_none());
    let status = wait_for_status(&t.controller, BridgeStatus::is_running);
    assert_eq!(
        status.line(),
        format!("Running on 127.0.0.1:{} · 0 clients", t.port)
    );
}

#[test]
fn regenerating_the_token_saves_it_and_disconnects_clients() {
    use futures_util::StreamExt;

    let t = test_app();
    t.ok("start_bridge", json!({}));
    let url = format!("ws://127.0.0.1:{}/ws", t.port);
    let (mut client, _) =
        tauri::async_runtime::block_on(tokio_tungstenite::connect_async(url)).unwrap();
    wait_for_status(&t.controller, |s| {
        matches!(s, BridgeStatus::Running { clients: 1, .. })
    });

    let settings = t.ok("regenerate_token", json!({}));
    let token = settings["token"].as_str().unwrap();
    assert_ne!(token, "first-token-0123456789abcdefghij");
    assert_eq!(token.len(), 64);
    assert_eq!(
        Config::load(&t.config_file()).unwrap().token.as_deref(),
        Some(token)
    );

    // the client is told to go, and goes
    let closed = tauri::async_runtime::block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(msg) = client.next().await {
                match msg {
                    Ok(m) if m.is_close() => return true,
                    Ok(_) => continue,
                    Err(_) => return true,
                }
            }
            true
        })
        .await
    });
    assert_eq!(closed, Ok(true));
    wait_for_status(&t.controller, |s| {
        matches!(s, BridgeStatus::Running { clients: 0, .. })
    });
}

#[test]
fn launch_at_login_round_trips() {
    let t = test_app();
    assert_eq!(t.ok("get_launch_at_login", json!({})), json!(false));
    assert_eq!(
        t.ok("set_launch_at_login", json!({ "enabled": true })),
        json!(true)
    );
    assert_eq!(t.ok("get_launch_at_login", json!({})), json!(true));
    assert_eq!(
        t.ok("set_launch_at_login", json!({ "enabled": false })),
        json!(false)
    );
}

#[test]
fn the_apps_settings_all_live_in_the_one_config_file_the_cli_reads() {
    let t = test_app();
    t.ok("set_start_on_launch", json!({ "enabled": false }));
    assert_eq!(
        t.ok("get_settings", json!({}))["start_bridge_on_launch"],
        false
    );
    let new_port = free_port();
    let mut form = t.form();
    form["port"] = json!(new_port.to_string());
    form["workshop_url"] = json!("https://workshop.example/");
    t.ok("apply_settings", json!({ "form": form }));

    let dir = t.config_file().parent().unwrap().to_owned();
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["config.toml"], "one file, nothing beside it");
    let text = read(&t.config_file()).unwrap();
    assert!(
        text.contains("[app]") && text.contains("start_bridge_on_launch = false"),
        "{text}"
    );
    // The CLI's own loader accepts what the app wrote, sections included.
    let config = Config::load(&t.config_file()).unwrap();
    assert_eq!(config.port, new_port);
    assert_eq!(
        config.pairing.workshop_url.as_deref(),
        Some("https://workshop.example/")
    );
}

#[test]
fn pairing_gives_the_url_with_the_token_and_its_qr_code() {
    let t = test_app();
    let pairing = t.ok("pairing", json!({}));
    assert_eq!(
        pairing["url"],
        format!(
            "http://127.0.0.1:{}/?token=first-token-0123456789abcdefghij",
            t.port
        )
    );
    assert_eq!(
        pairing["reachable"], false,
        "loopback is for this machine only"
    );
    assert_eq!(pairing["bind_all"], false);
    assert!(pairing["svg"].as_str().unwrap().starts_with("<svg"));

    let err = t
        .invoke("set_pairing_address", json!({ "address": "not-an-ip" }))
        .unwrap_err();
    assert_eq!(
        err,
        json!(
            "“not-an-ip” is neither an IP address nor a NAME.local name; use one like 192.168.1.20 or mac.local"
        )
    );
}

#[test]
fn unknown_folders_are_not_opened() {
    let t = test_app();
    let err = t
        .invoke("open_folder", json!({ "which": "/etc" }))
        .unwrap_err();
    assert_eq!(err, json!("no folder is called “/etc”"));
}
