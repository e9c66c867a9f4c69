//! `workshop-bridge qr`: the pairing URL and a QR code to scan, from the same config file
//! the bridge and the menu-bar app use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn qr_prints_the_pairing_url_and_a_scannable_code() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "token = \"pairing-token\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_workshop-bridge"))
        .args(["qr", "--port", "9123", "--bind", "127.0.0.1", "--config"])
        .arg(&config)
        .env_remove("WORKSHOP_BRIDGE_PORT")
        .env_remove("WORKSHOP_BRIDGE_BIND")
        .env_remove("WORKSHOP_BRIDGE_TOKEN")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("http://127.0.0.1:9123/?token=pairing-token")
    );
    assert!(stdout.contains('█') || stdout.contains('▀'), "{stdout}");
    // loopback cannot be reached from an iPad, and the command says so
    assert!(
        stdout.contains("reachable from this machine only"),
        "{stdout}"
    );
}

#[test]
fn qr_uses_the_workshop_url_saved_by_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "token = \"t\"\nport = 8765\n\n[pairing]\nworkshop_url = \"https://workshop.example/\"\naddress = \"192.168.1.20\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_workshop-bridge"))
        .args(["qr", "--bind", "10.1.2.3", "--config"])
        .arg(&config)
        .env_remove("WORKSHOP_BRIDGE_PORT")
        .env_remove("WORKSHOP_BRIDGE_BIND")
        .env_remove("WORKSHOP_BRIDGE_TOKEN")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().next(),
        Some("https://workshop.example/?bridge=ws%3A%2F%2F10.1.2.3%3A8765%2Fws&token=t")
    );
}
