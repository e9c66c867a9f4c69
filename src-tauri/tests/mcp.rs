//! `workshop-bridge-app mcp`: the app's own binary serves the Workshop's MCP tools over
//! standard input and output, with no window and no tray (so no display either), on the
//! settings the app uses: its config file and the `WORKSHOP_BRIDGE_*` variables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

mod support;
use support::{APP, Home, free_port};

#[tokio::test]
async fn the_apps_binary_answers_mcp_on_stdio_without_a_window() {
    let home = Home::new();
    std::fs::create_dir_all(home.config().parent().unwrap()).unwrap();
    std::fs::write(
        home.config(),
        format!("port = {}\ntoken = \"{}\"\n", free_port(), "ab".repeat(32)),
    )
    .unwrap();
    std::fs::write(home.path().join("state.yaml"), "mood:\n  primary: calm\n").unwrap();
    let mut cmd = Command::new(APP);
    home.apply_env(&mut cmd);
    let mut child = cmd
        .arg("mcp")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut rpc = async |message: Value| {
        stdin
            .write_all(format!("{message}\n").as_bytes())
            .await
            .unwrap();
    };
    rpc(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "app-test", "version": "1"}}}),
    )
    .await;
    rpc(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    rpc(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "update_state", "arguments": {"patch": {"mood": {"energy": "1e3"}}}}}))
    .await;
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the app answers in time")
            .unwrap()
            .expect("the app ended early");
        // Standard output carries the protocol and nothing else.
        let message: Value = serde_json::from_str(&line).unwrap();
        answers.push(message);
    }
    assert_eq!(
        answers[0]["result"]["serverInfo"]["name"],
        "workshop-bridge"
    );
    assert_eq!(answers[1]["id"], 2);
    assert_eq!(answers[1]["result"]["isError"], false, "{}", answers[1]);
    assert_eq!(
        std::fs::read_to_string(home.path().join("state.yaml")).unwrap(),
        "mood:\n  primary: calm\n  energy: \"1e3\"\n"
    );
    // The client goes: standard input closes.
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the app ends when its client goes")
        .unwrap();
    assert!(status.success());
}
