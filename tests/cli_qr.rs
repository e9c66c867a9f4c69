//! `workshop-bridge qr`: the pairing URL and a QR code to scan, from the same config file
//! the bridge and the menu-bar app use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

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

fn qr(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_workshop-bridge"))
        .arg("qr")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("WORKSHOP_BRIDGE_PORT")
        .env_remove("WORKSHOP_BRIDGE_BIND")
        .env_remove("WORKSHOP_BRIDGE_TOKEN")
        .env_remove("WORKSHOP_BRIDGE_NO_AUTH")
        .output()
        .unwrap()
}

fn failure(output: &std::process::Output) -> (Option<i32>, String, String) {
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_address_that_is_not_this_machines_is_refused_with_the_ones_that_are() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "token = \"t\"\n").unwrap();
    // TEST-NET-3: documentation only, never a real machine's address.
    let output = qr(&config, &["--address", "203.0.113.77"]);
    let addresses: Vec<String> = workshop_bridge::pairing::lan_addresses()
        .iter()
        .map(|a| format!("{} ({})", a.ip, a.interface))
        .collect();
    let expected = if addresses.is_empty() {
        "workshop-bridge: `--address`: 203.0.113.77 is not an address of this machine, which has none on a network (only 127.0.0.1, for itself)\n".to_owned()
    } else {
        format!(
            "workshop-bridge: `--address`: 203.0.113.77 is not an address of this machine; its addresses are {}\n",
            addresses.join(", ")
        )
    };
    assert_eq!(failure(&output), (Some(1), String::new(), expected));

    // Bound to one address, the bridge is reachable there only.
    let output = qr(&config, &["--bind", "127.0.0.1", "--address", "10.9.9.9"]);
    assert_eq!(
        failure(&output),
        (
            Some(1),
            String::new(),
            "workshop-bridge: `--address`: the bridge listens on 127.0.0.1 only, so 10.9.9.9 would not reach it; leave --address out, or change --bind\n".to_owned()
        )
    );

    // One of its own is taken as it is.
    if let Some(own) = workshop_bridge::pairing::lan_addresses().first() {
        let own = own.ip.to_string();
        let output = qr(&config, &["--address", &own]);
        assert!(output.status.success(), "{output:?}");
        let url = String::from_utf8(output.stdout).unwrap();
        let host = if own.contains(':') {
            format!("[{own}]")
        } else {
            own
        };
        assert!(
            url.starts_with(&format!("http://{host}:8765/?token=t\n")),
            "{url}"
        );
    }
}

#[test]
fn port_zero_cannot_go_into_a_pairing_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "token = \"t\"\n").unwrap();
    let why = "0 cannot go into a pairing URL, as the bridge picks a free port only when it starts; give the port it listens on";
    let output = qr(&config, &["--port", "0"]);
    assert_eq!(
        failure(&output),
        (
            Some(1),
            String::new(),
            format!("workshop-bridge: `--port`: {why}\n")
        )
    );
    std::fs::write(&config, "token = \"t\"\nport = 0\n").unwrap();
    let output = qr(&config, &[]);
    assert_eq!(
        failure(&output),
        (
            Some(1),
            String::new(),
            format!(
                "workshop-bridge: `port` in the config file {} (line 2, column 1): {why}\n",
                config.display()
            )
        )
    );
}

#[test]
fn qr_help_lists_only_what_goes_into_the_url() {
    let output = Command::new(env!("CARGO_BIN_EXE_workshop-bridge"))
        .args(["qr", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .collect();
    assert_eq!(
        flags,
        [
            "--config",
            "--address",
            "--url",
            "--port",
            "--bind",
            "--token",
            "--no-auth",
            "--help"
        ],
        "{help}"
    );
}

#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_qr_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "token = \"t\"\n").unwrap();
    // Like `workshop-bridge qr | head -0`: the reader is gone before the first write.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_workshop-bridge"))
        .args(["qr", "--config"])
        .arg(&config)
        .env_remove("WORKSHOP_BRIDGE_PORT")
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        ),
        (Some(0), "".into())
    );
}

/// The Bonjour name outlives a DHCP lease: `--address NAME.local` puts it in the URL when
/// it is this machine's name, in any case, with or without the trailing dot; another
/// machine's `.local` name is refused with this one's.
#[test]
fn the_machines_local_name_can_be_asked_for_and_no_other() {
    let Some(own) = workshop_bridge::localname::local_name() else {
        support::report::skipped(
            "the_machines_local_name_can_be_asked_for_and_no_other",
            "this machine has no host name",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "token = \"t\"\n").unwrap();
    for asked in [own.clone(), format!("{}.", own.to_ascii_uppercase())] {
        let output = qr(&config, &["--address", &asked]);
        assert!(output.status.success(), "{asked}: {output:?}");
        let url = String::from_utf8(output.stdout).unwrap();
        assert!(
            url.starts_with(&format!("http://{own}:8765/?token=t\n")),
            "{asked}: {url}"
        );
    }
    let output = qr(&config, &["--address", "someone-else.local"]);
    assert_eq!(
        failure(&output),
        (
            Some(1),
            String::new(),
            format!(
                "workshop-bridge: `--address`: someone-else.local is not the name of this machine; its name on the network is {own}\n"
            )
        )
    );
    // Not a name nor an address: refused by the parser, naming both forms.
    let output = qr(&config, &["--address", "evil.example"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("neither an IP address nor a NAME.local name"),
        "{output:?}"
    );
}
