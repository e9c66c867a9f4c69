//! The real app, on a real (virtual) display: it starts the bridge on the configured port,
//! and its status line follows the clients that come and go.
//!
//! Needs Xvfb, D-Bus and the GTK/WebKit runtime: `scripts/test-app` installs them and runs
//! this with `--include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{APP, Desktop, Home, STARTUP, free_port};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Xvfb and a desktop session; run scripts/test-app"]
async fn the_status_line_follows_clients() {
    let home = Home::new();
    let port = free_port();
    let mut app = Desktop::spawn(
        APP,
        &[],
        &home,
        &[("WORKSHOP_BRIDGE_PORT", port.to_string())],
    );

    let started = app.wait_for_line("the app is starting", STARTUP).await;
    let pid = support::field(&started, "pid");
    let running = format!("status: Running on 127.0.0.1:{port}");
    app.wait_for_line(&format!("{running} · 0 clients"), STARTUP)
        .await;
    // first run: a token was generated and saved where the CLI finds it
    let saved = workshop_bridge::Config::load(&home.config()).unwrap();
    assert_eq!(saved.token.as_deref().map(str::len), Some(64));

    let url = format!("ws://127.0.0.1:{port}/ws");
    let (first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    app.wait_for_line(&format!("{running} · 1 client"), Duration::from_secs(20))
        .await;
    let (second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    app.wait_for_line(&format!("{running} · 2 clients"), Duration::from_secs(20))
        .await;

    drop(first);
    app.wait_for_line(&format!("{running} · 1 client"), Duration::from_secs(20))
        .await;
    drop(second);
    app.wait_for_line(&format!("{running} · 0 clients"), Duration::from_secs(20))
        .await;

    // SIGTERM quits like the Quit item: the bridge shuts down gracefully
    support::signal_process(&pid, nix::sys::signal::Signal::SIGTERM);
    app.wait_for_line("terminated; quitting", Duration::from_secs(20))
        .await;
    app.wait_for_line("workshop_bridge: stopped", Duration::from_secs(20))
        .await;
    app.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Xvfb and a desktop session; run scripts/test-app"]
async fn a_taken_port_shows_as_an_error() {
    let home = Home::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut app = Desktop::spawn(
        APP,
        &[],
        &home,
        &[("WORKSHOP_BRIDGE_PORT", port.to_string())],
    );
    app.wait_for_line(
        &format!("status: Error: port {port} is already in use on 127.0.0.1"),
        STARTUP,
    )
    .await;
    app.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Xvfb and a desktop session; run scripts/test-app"]
async fn closing_the_settings_window_frees_it_and_the_app_stays() {
    let home = Home::new();
    let port = free_port();
    let mut app = Desktop::spawn(
        APP,
        &["--settings"],
        &home,
        &[("WORKSHOP_BRIDGE_PORT", port.to_string())],
    );
    let display = app.display().await;
    let running = format!("status: Running on 127.0.0.1:{port}");
    let lines = app
        .wait_for_all(
            &[
                "the app is starting",
                &format!("{running} · 0 clients"),
                "the settings window has loaded",
            ],
            STARTUP,
        )
        .await;
    let pid: u32 = support::field(&lines[0], "pid").parse().unwrap();
    assert!(
        !support::web_processes(pid).is_empty(),
        "the window has a web process: {:?}",
        support::children(pid)
    );

    // the user closes the window: it is destroyed, and its web process ends
    assert_eq!(support::close_window(&display, "Workshop Bridge"), 1);
    app.wait_for_line("the settings window closed", Duration::from_secs(20))
        .await;
    poll_until("the web process to end", || {
        support::web_processes(pid).is_empty()
    })
    .await;

    // the app keeps running: the bridge serves, and the status (tray) follows a client
    let url = format!("ws://127.0.0.1:{port}/ws");
    let (client, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    app.wait_for_line(&format!("{running} · 1 client"), Duration::from_secs(20))
        .await;

    // opening the app again shows a new settings window, which loads
    let again = support::launch_again(pid, &["--settings"]).await;
    assert!(again.success(), "the second copy exits: {again}");
    app.wait_for_all(
        &[
            "the settings window opened",
            "the settings window has loaded",
        ],
        STARTUP,
    )
    .await;
    assert!(!support::web_processes(pid).is_empty());
    drop(client);
    app.wait_for_line(&format!("{running} · 0 clients"), Duration::from_secs(20))
        .await;
    app.terminate().await;
}

/// Waits (at most a minute) for something the app does on its own time: a process ending
/// gives no event to await.
async fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
