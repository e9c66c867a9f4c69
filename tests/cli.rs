//! The `workshop-bridge` command as a user runs it: flags, environment, config file, errors
//! and signals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn run_to_end(mut cmd: Command) -> (i32, String) {
    let output = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .unwrap()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The run failed, and its last line is the bridge's one sentence about `needle`.
fn assert_fails_with(code: i32, stderr: &str, needle: &str) {
    assert_ne!(code, 0, "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("workshop-bridge: "), "{stderr}");
    assert!(last.contains(needle), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn assert_one_clear_sentence(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("workshop-bridge: "), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_listens_on_a_free_port_and_sigterm_says_goodbye_and_exits_zero() {
    let world = World::with_state("mood: calm\n");
    let mut args = serve_args(&world);
    args.extend(["--port".into(), "0".into()]);
    let mut child = command(&world, &args).spawn().unwrap();
    let addr = listening(&mut child).await;
    assert_ne!(addr.port(), 0, "the real port is logged");

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let state = recv(&mut ws).await;
    assert_eq!(state["data"], json!({"mood": "calm"}));

    terminate(&child);
    assert_eq!(
        recv_type(&mut ws, "system_status").await["data"]["status"],
        "shutting_down"
    );
    assert_eq!(u16::from(recv_close(&mut ws).await.unwrap().code), 1001);
    // Within the two seconds the promise allows (plus slack for a loaded machine).
    let status = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait())
        .await
        .expect("exited in time")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_first_run_generates_a_private_token_that_the_token_command_prints() {
    let world = World::with_state("a: 1\n");
    let mut args = serve_args(&world);
    // Without loopback trust this test's client must present the token like an iPad.
    args.extend(["--port".into(), "0".into(), "--no-trust-loopback".into()]);
    let mut child = command(&world, &args).spawn().unwrap();
    let addr = listening(&mut child).await;
    let config_file = world.dir.path().join(".config/workshop-bridge/config.toml");
    let text = std::fs::read_to_string(&config_file).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    assert_eq!(token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let output = command(&world, ["token"]).output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), token);

    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await;
    assert!(refused.is_err(), "without the token: refused");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}"))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws).await["type"], "state");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_port_in_use_is_one_sentence_and_a_failure_exit() {
    let world = World::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut args = serve_args(&world);
    args.extend(["--port".into(), port.clone()]);
    let (code, stderr) = run_to_end(command(&world, &args)).await;
    assert_fails_with(code, &stderr, &format!("port {port} is already in use"));
}

#[tokio::test]
async fn an_invalid_config_file_is_named_in_one_sentence() {
    let world = World::new();
    let config = world.dir.path().join("broken.toml");
    std::fs::write(&config, "port = \"eighty\"\n").unwrap();
    let (code, stderr) = run_to_end(command(
        &world,
        ["serve", "--config", config.to_str().unwrap()],
    ))
    .await;
    assert_ne!(code, 0);
    assert_one_clear_sentence(&stderr);
    assert!(stderr.contains("broken.toml"), "{stderr}");
}

#[tokio::test]
async fn an_inbox_that_cannot_be_created_is_one_sentence() {
    let world = World::new();
    let blocker = world.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "a file where the inbox should be").unwrap();
    let inbox = blocker.join("inbox");
    let mut args = serve_args(&world);
    let i = args.iter().position(|a| a == "--inbox-dir").unwrap();
    args[i + 1] = inbox.display().to_string();
    args.extend(["--port".into(), "0".into(), "--no-auth".into()]);
    let (code, stderr) = run_to_end(command(&world, &args)).await;
    assert_fails_with(code, &stderr, "inbox directory");
}

#[tokio::test]
async fn environment_overrides_the_config_file_and_flags_override_the_environment() {
    let world = World::with_state("a: 1\n");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let config = world.dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("port = {taken_port}\ntoken = \"{TOKEN}\"\n"),
    )
    .unwrap();
    let mut args = serve_args(&world);
    args.extend(["--config".into(), config.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // The file's port is taken; the environment's 0 wins, so it starts.
    let mut cmd = command(&world, &args);
    cmd.env("WORKSHOP_BRIDGE_PORT", "0");
    let mut child = cmd.spawn().unwrap();
    let addr = listening(&mut child).await;
    assert_ne!(addr.port(), taken_port);
    child.kill().await.unwrap();

    // The environment names the taken port; the flag's 0 wins.
    let mut with_flag = args.clone();
    with_flag.extend(["--port", "0"]);
    let mut cmd = command(&world, &with_flag);
    cmd.env("WORKSHOP_BRIDGE_PORT", taken_port.to_string());
    let mut child = cmd.spawn().unwrap();
    listening(&mut child).await;
    child.kill().await.unwrap();
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_never_hold_the_token() {
    let world = World::with_state("a: 1\n");
    let mut args = serve_args(&world);
    args.extend([
        "--port".into(),
        "0".into(),
        "--log-format".into(),
        "json".into(),
        "--token".into(),
        "super-secret-token-value".into(),
        "--no-trust-loopback".into(),
    ]);
    let mut child = command(&world, &args).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let first = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut seen = vec![first];
    let addr: std::net::SocketAddr = loop {
        let line = seen.last().unwrap().clone();
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        if let Some(rest) = v["fields"]["message"]
            .as_str()
            .and_then(|m| m.strip_prefix("listening on ws://"))
        {
            break rest.parse().unwrap();
        }
        seen.push(
            tokio::time::timeout(DEADLINE, lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    };
    // A wrong token and a right one: neither appears in the log.
    let wrong =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token=wrong-guess-value")).await;
    assert!(wrong.is_err());
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token=super-secret-token-value"))
            .await
            .unwrap();
    recv(&mut ws).await;
    drop(ws);
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    while let Ok(Some(line)) = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .unwrap()
    {
        seen.push(line);
    }
    let log = seen.join("\n");
    assert!(log.contains("request refused"), "{log}");
    assert!(log.contains("the token is wrong"), "{log}");
    assert!(log.contains("client disconnected"), "{log}");
    assert!(!log.contains("super-secret-token-value"), "{log}");
    assert!(!log.contains("wrong-guess-value"), "{log}");
    child.wait().await.unwrap();
}

/// Sends SIGTERM to the bridge process.
fn terminate(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_while_named_pipes_are_swapped_over_the_state_file_exits_zero_within_two_seconds() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let world = World::with_state("round: 0\n");
    let pipe = world.dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&pipe).status();
    if !made.is_ok_and(|s| s.success()) {
        support::report::skipped(
            "sigterm_while_named_pipes_are_swapped_over_the_state_file_exits_zero_within_two_seconds",
            "cannot make a named pipe",
        );
        return;
    }
    let mut args = serve_args(&world);
    args.extend(["--port".into(), "0".into()]);
    let mut child = command(&world, &args).spawn().unwrap();
    listening(&mut child).await;

    // A valid state and then the pipe renamed over the state file, round after round, until
    // the bridge has gone: a reader that looks before it opens gets caught on the pipe.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let swapper = {
        let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
        let state_file = world.state_file.clone();
        let dir = state_file.parent().unwrap().to_owned();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = rounds.fetch_add(1, Ordering::Relaxed);
                std::fs::write(dir.join(".state.tmp"), format!("round: {n}\n")).unwrap();
                std::fs::rename(dir.join(".state.tmp"), &state_file).unwrap();
                let _ = std::fs::remove_file(dir.join(".pipe.tmp"));
                std::fs::hard_link(&pipe, dir.join(".pipe.tmp")).unwrap();
                std::fs::rename(dir.join(".pipe.tmp"), &state_file).unwrap();
            }
        })
    };
    wait_until(|| (rounds.load(Ordering::Relaxed) >= 2_000).then_some(())).await;

    let asked = tokio::time::Instant::now();
    terminate(&child);
    let exited = tokio::time::timeout(std::time::Duration::from_secs(2), child.wait()).await;
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    let status = exited
        .unwrap_or_else(|_| panic!("still running {:?} after SIGTERM", asked.elapsed()))
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn trace_logs_kept_beside_the_state_file_do_not_feed_on_themselves() {
    let world = World::with_state("mood: calm\n");
    let log_path = world.state_file.parent().unwrap().join("bridge.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut args = serve_args(&world);
    args.extend(["--port".into(), "0".into()]);
    let mut cmd = command(&world, &args);
    cmd.env("RUST_LOG", "trace").stderr(log);
    let mut child = cmd.spawn().unwrap();
    wait_until(|| {
        let text = std::fs::read_to_string(&log_path).ok()?;
        text.contains("listening on ws://").then_some(())
    })
    .await;

    // No client, no file changes: whatever is written now, the bridge wrote about itself.
    let size = || std::fs::metadata(&log_path).unwrap().len();
    let before = size();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let grown = size() - before;
    assert!(
        grown < 4 * 1024,
        "the log grew by {grown} bytes in a second with nothing happening"
    );
    terminate(&child);
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("TRACE"), "trace logging was on");
    assert!(log.contains("stopped"), "the bridge said it stopped");
}
