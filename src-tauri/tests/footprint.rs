//! The app's idle footprint on Linux, under Xvfb: the proportional memory (PSS) of the app
//! and of the WebKit processes it starts, before the settings window is opened, while it is
//! open and after it was closed, and the CPU the whole tree uses over a minute idle.
//!
//! A measurement, not a test (it asserts nothing about the figures): `scripts/app-footprint`
//! runs it and prints the table the README quotes. scripts/test-app leaves it out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // the table is its output

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{APP, Desktop, Home, STARTUP, free_port};

/// How long the idle CPU is measured over.
const IDLE: Duration = Duration::from_secs(60);
/// How long the app is left to settle before memory is read.
const SETTLE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement of a minute or more; run scripts/app-footprint"]
async fn app_footprint() {
    let home = Home::new();
    let port = free_port();
    let mut app = Desktop::spawn(
        APP,
        &[AUTOSTART],
        &home,
        &[("WORKSHOP_BRIDGE_PORT", port.to_string())],
    );
    let display = app.display().await;
    let lines = app
        .wait_for_all(
            &[
                "the app is starting",
                &format!("status: Running on 127.0.0.1:{port} · 0 clients"),
            ],
            STARTUP,
        )
        .await;
    let pid: u32 = support::field(&lines[0], "pid").parse().unwrap();
    app.echo_in_background();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("Workshop Bridge app ({build} build), Linux under Xvfb, bridge running, no clients");

    tokio::time::sleep(SETTLE).await;
    report("idle, the window never opened", &memory(pid));
    report_cpu("idle, the window never opened", pid).await;

    // open the window, as a second launch does
    let again = support::launch_again(pid, &["--settings"]).await;
    assert!(again.success());
    wait_for("the window's web process", || {
        !support::web_processes(pid).is_empty()
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    report("the settings window open", &memory(pid));

    assert_eq!(support::close_window(&display, "Workshop Bridge"), 1);
    wait_for("the web process to end", || {
        support::web_processes(pid).is_empty()
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    report("idle, after the window was opened and closed", &memory(pid));
    report_cpu("idle, after the window was opened and closed", pid).await;
    app.terminate().await;
}

/// A login item's start: no window.
const AUTOSTART: &str = "--autostart";

/// PSS in KiB of `pid` and every process below it, summed by process name.
fn memory(pid: u32) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    for (p, name) in tree(pid) {
        let pss = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        *by_name.entry(name).or_insert(0) += pss;
    }
    by_name
}

/// `pid` and its descendants, with their names.
fn tree(pid: u32) -> Vec<(u32, String)> {
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut all = vec![(pid, name)];
    let mut i = 0;
    while i < all.len() {
        let below = support::children(all[i].0);
        all.extend(below);
        i += 1;
    }
    all
}

/// CPU time (user + system) in clock ticks of the whole tree.
fn cpu_ticks(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|(p, _)| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|stat| {
            let rest = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .collect::<Vec<_>>();
            // fields 14 and 15 of stat; `rest` starts at field 3
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

fn report(when: &str, memory: &BTreeMap<String, u64>) {
    let total: u64 = memory.values().sum();
    println!("\nPSS, {when}: {:.1} MiB in all", mib(total));
    for (name, kib) in memory {
        println!("  {name:<20} {:>7.1} MiB", mib(*kib));
    }
}

async fn report_cpu(when: &str, pid: u32) {
    let ticks_per_sec: u64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100);
    let before = cpu_ticks(pid);
    tokio::time::sleep(IDLE).await;
    let used = cpu_ticks(pid) - before;
    let seconds = used as f64 / ticks_per_sec as f64;
    println!(
        "CPU, {when}: {seconds:.2} s over {} s ({:.2} %), {used} clock ticks",
        IDLE.as_secs(),
        100.0 * seconds / IDLE.as_secs_f64()
    );
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + STARTUP;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
