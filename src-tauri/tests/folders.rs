//! "Show in Finder" and "Open Inbox Folder" with the default folders (`~/.timmy/…`, shown
//! with the `~` in the window): the file manager is handed the real folder, `~` expanded.
//!
//! The defaults come from HOME, so the test runs itself again in a child process whose HOME
//! is a temporary folder (the test process's own environment is left alone).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tauri::WebviewWindowBuilder;
use tauri::test::{mock_builder, mock_context, noop_assets};
use workshop_bridge_app::app_builder;
use workshop_bridge_app::commands::{FileManager, OpenFolder};
use workshop_bridge_app::controller::{Controller, Paths};
use workshop_bridge_app::logs::LogBuffer;

mod support;

/// Set (to the temporary HOME) in the child that runs the test proper.
const CHILD_HOME: &str = "FOLDERS_TEST_CHILD_HOME";

/// A file manager that only notes what it was asked to open.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<PathBuf>>>);

impl OpenFolder for Recorder {
    fn open(&self, path: &Path) -> Result<(), String> {
        self.0.lock().unwrap().push(path.to_owned());
        Ok(())
    }
}

#[test]
fn the_folder_buttons_open_the_expanded_default_folders() {
    let Some(home) = std::env::var_os(CHILD_HOME).map(PathBuf::from) else {
        run_in_a_temporary_home("the_folder_buttons_open_the_expanded_default_folders");
        return;
    };
    assert_eq!(
        std::env::var_os("HOME").map(PathBuf::from),
        Some(home.clone())
    );
    let config = home.join(".config/workshop-bridge/config.toml");
    let controller = Arc::new(Controller::load(Paths::beside(config), LogBuffer::new(10)));
    let opened = Recorder::default();
    let app = app_builder(mock_builder(), Arc::clone(&controller))
        .manage(FileManager(Box::new(opened.clone())))
        .build(mock_context(noop_assets()))
        .unwrap();
    let window = WebviewWindowBuilder::new(&app, "settings", Default::default())
        .build()
        .unwrap();
    let invoke = |cmd: &str, args: Value| support::invoke(&window, cmd, args);

    // the window shows the defaults the short way…
    let settings = invoke("get_settings", json!({})).unwrap();
    assert_eq!(settings["inbox_dir"], "~/.timmy/inbox");
    assert_eq!(settings["outbox_dir"], "~/.timmy/outbox");

    // …and each button opens the real folder, made if the bridge has not made it yet
    std::fs::create_dir_all(home.join(".timmy")).unwrap();
    for which in ["inbox_dir", "outbox_dir", "config"] {
        invoke("open_folder", json!({ "which": which }))
            .unwrap_or_else(|e| panic!("open_folder {which}: {e}"));
    }
    let opened = opened.0.lock().unwrap().clone();
    assert_eq!(
        opened,
        [
            home.join(".timmy/inbox"),
            home.join(".timmy/outbox"),
            home.join(".config/workshop-bridge"),
        ]
    );
    assert!(opened.iter().all(|p| p.is_dir()), "{opened:?}");

    // a name the window does not have is refused, and nothing is opened
    let err = invoke("open_folder", json!({ "which": "~/.ssh" })).unwrap_err();
    assert_eq!(err, json!("no folder is called “~/.ssh”"));
}

/// Runs the test `name` again in a child process with HOME (and the XDG folders) in a new
/// temporary folder, and no `WORKSHOP_BRIDGE_*` variables; fails if it fails.
fn run_in_a_temporary_home(name: &str) {
    let home = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .env(CHILD_HOME, home.path());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WORKSHOP_BRIDGE_") && key != CHILD_HOME {
            child.env_remove(key);
        }
    }
    let status = child.status().unwrap();
    assert!(status.success(), "the test failed in its temporary home");
}
