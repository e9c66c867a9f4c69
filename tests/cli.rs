//! The `workshop-bridge` command as a user runs it: flags, environment, config file, errors
//! and signals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

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

/// SIGTERM while the inbox's disk has stopped answering (frozen) in the middle of a
/// visitor's message: the bridge says how many writes did not finish, says its goodbye
/// without waiting for the disk, and the message is never acknowledged. The process then
/// exits (its main thread is gone), but the system removes it only once the frozen write
/// returns: a thread waiting on a frozen disk cannot be ended by any program, not even by
/// SIGKILL. When the disk thaws, it is gone, with exit status 0.
#[cfg(unix)]
#[tokio::test]
async fn sigterm_during_a_stalled_inbox_write_says_goodbye_and_acknowledges_nothing_unwritten() {
    let world = World::with_state("a: 1\n");
    std::fs::create_dir_all(&world.inbox).unwrap();
    let mut disk = match disk::FreezableDisk::mount(world.dir.path(), &world.inbox) {
        Ok(disk) => disk,
        Err(e) => {
            support::report::skipped(
                "sigterm_during_a_stalled_inbox_write_says_goodbye_and_acknowledges_nothing_unwritten",
                format_args!("cannot mount a disk to freeze ({e})"),
            );
            return;
        }
    };
    let mut child = command(&world, with(&world, &["--port", "0", "--token", TOKEN]))
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let addr = loop {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("no `listening on` line in time")
            .unwrap()
            .expect("the bridge exited without listening");
        let addr = line
            .split_once("listening on ws://")
            .map(|(_, rest)| rest.split_whitespace().next().unwrap().to_owned());
        seen.push(line);
        if let Some(addr) = addr {
            break addr;
        }
    };
    let (mut ipad, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?client=ipad"))
        .await
        .unwrap();
    recv_type(&mut ipad, "state").await;
    let message = |id: &str| json!({"type": "message", "visitor": "Ada", "text": id, "id": id});
    send(&mut ipad, message("m-1")).await;
    assert_eq!(recv(&mut ipad).await, json!({"type": "ack", "id": "m-1"}));

    disk.freeze();
    send(&mut ipad, message("m-2")).await;
    // The write has begun once a thread of the bridge waits on the frozen disk.
    disk::until_a_thread_waits_on_the_disk(pid).await;
    terminate(&child);

    // Its last words, while the disk is still frozen.
    loop {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no goodbye while the disk is frozen: {seen:#?}"))
            .unwrap()
            .expect("stderr ended before the goodbye");
        let done = line.ends_with(" INFO workshop_bridge: stopped");
        seen.push(line);
        if done {
            break;
        }
    }
    let unconfirmed: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("writes did not finish in time"))
        .collect();
    assert_eq!(unconfirmed.len(), 1, "{seen:#?}");
    assert!(
        unconfirmed[0].contains("WARN")
            && unconfirmed[0].contains(" 1 of the inbox's writes did not finish in time: their messages are not confirmed written and were not acknowledged"),
        "{seen:#?}"
    );
    // The goodbye and nothing else: no ack for the message that was not written.
    assert_goodbye_only(&mut ipad).await;

    // The process has ended its part: its main thread has exited, and all that is left is
    // the thread the kernel keeps on the frozen disk.
    wait_until(|| {
        let threads = disk::thread_states(pid);
        let exited = threads.contains(&(pid, 'Z'));
        let left = threads.iter().filter(|&&(tid, _)| tid != pid);
        (exited && left.clone().count() > 0 && left.clone().all(|&(_, s)| s == 'D')).then_some(())
    })
    .await;

    disk.thaw();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("the process is gone once the disk answers")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{seen:#?}");
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

// --- start-up errors --------------------------------------------------------------------

/// Every path under `dir`: a failed start must leave it as it was.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                todo.push(path.clone());
            }
            paths.push(path);
        }
    }
    paths.sort();
    paths
}

/// One way to start the bridge wrongly, and the one sentence it must answer with.
struct Case {
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Run as `nobody`, for permissions that root would ignore.
    as_nobody: bool,
    code: i32,
    sentence: String,
    /// Whatever must stay open while the bridge starts (a listener on the port it wants).
    hold: Option<std::net::TcpListener>,
}

const NOBODY: u32 = 65534;

/// Whether file permissions stop this process (they do not stop root).
fn permissions_stop_us(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let probe = dir.join(".probe");
    std::fs::write(&probe, "x").unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o000)).unwrap();
    let stopped = std::fs::File::open(&probe).is_err();
    std::fs::remove_file(&probe).unwrap();
    stopped
}

/// Makes `world` one that `nobody` can look into (but not write), unless permissions
/// already stop this process; returns whether the bridge must run as `nobody`.
fn for_nobody(world: &World) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if permissions_stop_us(world.dir.path()) {
        return false;
    }
    std::fs::set_permissions(world.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    true
}

fn with(world: &World, extra: &[&str]) -> Vec<String> {
    let mut args = serve_args(world);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

fn replace_arg(args: &mut [String], flag: &str, value: &Path) {
    let i = args.iter().position(|a| a == flag).unwrap();
    args[i + 1] = value.display().to_string();
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

type Setup = fn(&World) -> Case;

/// Each mistake a user can make at start, from a flag, a variable, the config file or the
/// file system: one sentence naming the thing, what is wrong and what to do; the same check
/// in the same words from every source; and nothing written, no token saved, no folder
/// made.
#[cfg(unix)]
#[tokio::test]
async fn start_up_errors_are_one_sentence_and_leave_nothing_behind() {
    const PORT: &str = "70000 is not a port number; use one from 0 to 65535 (0 picks a free port)";
    const HEARTBEAT: &str = "must be between 1 and 3600 seconds";
    let cases: Vec<(&str, Setup)> = vec![
        ("a port out of range, as a flag", |w| Case {
            args: with(w, &["--port", "70000"]),
            env: vec![],
            as_nobody: false,
            hold: None,
            code: 2,
            sentence: format!("`--port`: {PORT}"),
        }),
        ("a port out of range, in the environment", |w| Case {
            args: with(w, &[]),
            env: vec![("WORKSHOP_BRIDGE_PORT", "70000".into())],
            as_nobody: false,
            hold: None,
            code: 2,
            sentence: format!("`WORKSHOP_BRIDGE_PORT` in the environment: {PORT}"),
        }),
        ("a port out of range, in the config file", |w| {
            let config = write(&w.dir.path().join("c.toml"), "# mine\nport = 70000\n");
            Case {
                args: with(w, &["--config", &config]),
                env: vec![],
                as_nobody: false,
                hold: None,
                code: 1,
                sentence: format!("`port` in the config file {config} (line 2, column 8): {PORT}"),
            }
        }),
        ("a port that is not a number, in the environment", |w| {
            Case {
            args: with(w, &[]),
            env: vec![("WORKSHOP_BRIDGE_PORT", "abc".into())],
            as_nobody: false,
            hold: None,
            code: 2,
            sentence: "`WORKSHOP_BRIDGE_PORT` in the environment: abc is not a port number; use one from 0 to 65535 (0 picks a free port)".into(),
        }
        }),
        (
            "several variables, two of them wrong: each named, the good one not",
            |w| {
                Case {
            args: with(w, &[]),
            env: vec![
                ("WORKSHOP_BRIDGE_NO_AUTH", "maybe".into()),
                ("WORKSHOP_BRIDGE_HEARTBEAT_SECS", "20".into()),
                ("WORKSHOP_BRIDGE_PORT", "abc".into()),
            ],
            as_nobody: false,
            hold: None,
            code: 2,
            sentence: "`WORKSHOP_BRIDGE_PORT` in the environment: abc is not a port number; use one from 0 to 65535 (0 picks a free port); `WORKSHOP_BRIDGE_NO_AUTH` in the environment: maybe is not true or false".into(),
        }
            },
        ),
        ("a wrong variable whose flag is given is not read", |w| {
            Case {
                args: with(w, &["--port", "0"]),
                env: vec![
                    ("WORKSHOP_BRIDGE_PORT", "abc".into()),
                    ("WORKSHOP_BRIDGE_NO_AUTH", "maybe".into()),
                ],
                as_nobody: false,
                hold: None,
                code: 2,
                sentence:
                    "`WORKSHOP_BRIDGE_NO_AUTH` in the environment: maybe is not true or false"
                        .into(),
            }
        }),
        ("no heartbeat, as a flag", |w| Case {
            args: with(w, &["--heartbeat-secs", "0"]),
            env: vec![],
            as_nobody: false,
            hold: None,
            code: 1,
            sentence: format!("`--heartbeat-secs`: {HEARTBEAT}"),
        }),
        ("no heartbeat, in the environment", |w| Case {
            args: with(w, &[]),
            env: vec![("WORKSHOP_BRIDGE_HEARTBEAT_SECS", "0".into())],
            as_nobody: false,
            hold: None,
            code: 1,
            sentence: format!("`WORKSHOP_BRIDGE_HEARTBEAT_SECS` in the environment: {HEARTBEAT}"),
        }),
        ("no heartbeat, in the config file", |w| {
            let config = write(&w.dir.path().join("c.toml"), "heartbeat_secs = 0\n");
            Case {
                args: with(w, &["--config", &config]),
                env: vec![],
                as_nobody: false,
                hold: None,
                code: 1,
                sentence: format!(
                    "`heartbeat_secs` in the config file {config} (line 1, column 1): {HEARTBEAT}"
                ),
            }
        }),
        ("a switch that is neither on nor off", |w| Case {
            args: with(w, &[]),
            env: vec![("WORKSHOP_BRIDGE_NO_AUTH", "maybe".into())],
            as_nobody: false,
            hold: None,
            code: 2,
            sentence: "`WORKSHOP_BRIDGE_NO_AUTH` in the environment: maybe is not true or false"
                .into(),
        }),
        ("an unreadable config file", |w| {
            use std::os::unix::fs::PermissionsExt;
            let as_nobody = for_nobody(w);
            let config = write(&w.dir.path().join("c.toml"), "port = 9000\n");
            let mode = if as_nobody { 0o600 } else { 0o000 };
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).unwrap();
            Case {
                args: with(w, &["--config", &config]),
                env: vec![],
                as_nobody,
                hold: None,
                code: 1,
                sentence: format!(
                    "the config file {config} cannot be read (permission denied); make it readable by this user or give another with --config"
                ),
            }
        }),
        ("a config file that is a folder", |w| {
            let config = w.dir.path().join("config.d");
            std::fs::create_dir(&config).unwrap();
            Case {
                args: with(w, &["--config", &config.display().to_string()]),
                env: vec![],
                as_nobody: false,
                hold: None,
                code: 1,
                sentence: format!(
                    "the config file {} is a folder, not a file; give a file's path with --config",
                    config.display()
                ),
            }
        }),
        ("a config file that is not TOML", |w| {
            let config = write(
                &w.dir.path().join("c.toml"),
                "port = 8765\nstate_file = ~/w.yaml\n",
            );
            Case {
                args: with(w, &["--config", &config]),
                env: vec![],
                as_nobody: false,
                hold: None,
                code: 1,
                sentence: format!(
                    "the config file {config} is not valid TOML at line 2, column 14: string values must be quoted, expected literal string"
                ),
            }
        }),
        ("a key in the config file that is not a setting", |w| {
            let config = write(&w.dir.path().join("c.toml"), "prot = 9000\n");
            Case {
                args: with(w, &["--config", &config]),
                env: vec![],
                as_nobody: false,
                hold: None,
                code: 1,
                sentence: format!(
                    "`prot` in the config file {config} (line 1, column 1): there is no such setting; the settings are the flags' names with underscores, as `workshop-bridge serve --help` lists them"
                ),
            }
        }),
        ("an inbox that is a file", |w| {
            std::fs::create_dir_all(w.inbox.parent().unwrap()).unwrap();
            let inbox = write(&w.inbox, "a file where the inbox should be");
            Case {
                args: with(w, &[]),
                env: vec![],
                as_nobody: false,
                hold: None,
                code: 1,
                sentence: format!(
                    "the inbox folder {inbox} is a file, not a folder; move the file away or choose another folder with --inbox-dir"
                ),
            }
        }),
        ("an inbox that is not writable", |w| {
            use std::os::unix::fs::PermissionsExt;
            let as_nobody = for_nobody(w);
            std::fs::create_dir_all(&w.inbox).unwrap();
            let mode = if as_nobody { 0o755 } else { 0o555 };
            for dir in [w.inbox.parent().unwrap(), &w.inbox] {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            Case {
                args: with(w, &[]),
                env: vec![],
                as_nobody,
                hold: None,
                code: 1,
                sentence: format!(
                    "the inbox folder {} is not writable (permission denied); make it writable for this user or choose another folder with --inbox-dir",
                    w.inbox.display()
                ),
            }
        }),
        ("an inbox two folders below what exists", |w| {
            let mut args = with(w, &[]);
            let inbox = w.dir.path().join("volume").join("agent").join("inbox");
            replace_arg(&mut args, "--inbox-dir", &inbox);
            let missing = w.dir.path().join("volume").join("agent");
            Case {
                args,
                env: vec![],
                as_nobody: false,
                hold: None,
                code: 1,
                sentence: format!(
                    "the inbox folder {} cannot be made because {} does not exist (only the last folder of a path is made); create {} first or check --inbox-dir",
                    inbox.display(),
                    missing.display(),
                    missing.display()
                ),
            }
        }),
        ("a state file two folders below what exists", |w| {
            let mut args = with(w, &[]);
            let state = w.dir.path().join("nonexistent").join("dir").join("s.yaml");
            replace_arg(&mut args, "--state-file", &state);
            let folder = state.parent().unwrap();
            let missing = folder.parent().unwrap();
            Case {
                args,
                env: vec![],
                as_nobody: false,
                hold: None,
                code: 1,
                sentence: format!(
                    "the state file's folder {} cannot be made because {} does not exist (only the last folder of a path is made); create {} first or check --state-file",
                    folder.display(),
                    missing.display(),
                    missing.display()
                ),
            }
        }),
        ("a config file two folders below what exists", |w| {
            let config = w.dir.path().join("typo").join("bridge").join("c.toml");
            let folder = config.parent().unwrap();
            let missing = folder.parent().unwrap();
            Case {
                args: with(w, &["--config", &config.display().to_string()]),
                env: vec![],
                as_nobody: false,
                hold: None,
                code: 1,
                sentence: format!(
                    "the config file's folder {} cannot be made because {} does not exist (only the last folder of a path is made); create {} first or check --config",
                    folder.display(),
                    missing.display(),
                    missing.display()
                ),
            }
        }),
        ("an outbox below a file", |w| {
            let file = write(&w.dir.path().join("notes.txt"), "x");
            let mut args = with(w, &[]);
            let outbox = Path::new(&file).join("outbox");
            replace_arg(&mut args, "--outbox-dir", &outbox);
            Case {
                args,
                env: vec![],
                as_nobody: false,
                hold: None,
                code: 1,
                sentence: format!(
                    "the outbox folder {} cannot be made because {file} is a file, not a folder; check --outbox-dir",
                    outbox.display()
                ),
            }
        }),
        ("a port in use", |w| {
            let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = taken.local_addr().unwrap().port().to_string();
            Case {
                args: with(w, &["--port", &port]),
                env: vec![],
                as_nobody: false,
                hold: Some(taken),
                code: 1,
                sentence: format!(
                    "port {port} is already in use on 127.0.0.1; stop the other program or choose another port with --port"
                ),
            }
        }),
    ];
    for (name, setup) in cases {
        let world = World::new();
        let case = setup(&world);
        let before = tree(world.dir.path());
        let mut cmd = command(&world, &case.args);
        for (key, value) in &case.env {
            cmd.env(key, value);
        }
        if case.as_nobody {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        let (code, stderr) = run_to_end(cmd).await;
        assert_eq!(
            (code, stderr.as_str()),
            (
                case.code,
                format!("workshop-bridge: {}\n", case.sentence).as_str()
            ),
            "{name}"
        );
        assert_eq!(tree(world.dir.path()), before, "{name}: nothing written");
        drop(case.hold);
    }
}

/// A fresh machine: no state file, no config file. The bridge says once that there is no
/// state yet and how to get one, says that it made the config file, and serves; a message
/// gets its ack; `init` writes the example state, which clients then get, and never
/// overwrites it.
#[tokio::test]
async fn a_first_run_says_once_that_there_is_no_state_yet_and_init_writes_the_example() {
    let world = World::new();
    let mut child = command(&world, with(&world, &["--port", "0"]))
        .spawn()
        .unwrap();
    let (addr, before) = listening_after(&mut child).await;
    let config = world.dir.path().join(".config/workshop-bridge/config.toml");
    let messages: Vec<&str> = before
        .iter()
        .map(|l| l.split_once(": ").map_or(l.as_str(), |(_, m)| m))
        .collect();
    assert_eq!(
        messages,
        [
            format!(
                "the config file {} did not exist: made it, with a newly generated token; `workshop-bridge token` shows it",
                config.display()
            ),
            format!(
                "there is no state file yet: clients get the state as soon as the agent writes it (`workshop-bridge init` writes an example there to start from) path={}",
                world.state_file.display()
            ),
        ],
        "{before:?}"
    );
    assert!(before.iter().all(|l| l.contains(" INFO ")), "{before:?}");
    assert_eq!(
        gateway_status_at(addr).await["state"]["last_error"],
        "there is no state file yet; clients get the state as soon as the agent writes it"
    );

    // The README's console snippet: with no state, the ack comes first.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let hello = json!({"type": "message", "text": "Hey Timmy", "visitor": "Alexander", "id": "m1"});
    support::send(&mut ws, hello).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "ack", "id": "m1"}));

    let state_file = world.state_file.display().to_string();
    let output = command(&world, ["init", "--state-file", &state_file])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "wrote the example state to {state_file}; the bridge serves it, and the agent replaces it with its own\n"
        )
    );
    assert!(output.status.success());
    let example = example_as_json(&world.state_file);
    let state = recv_type(&mut ws, "state").await;
    assert_eq!(state["data"], example);
    assert_eq!(state["data"]["mood"]["primary"], "contemplative");

    // Never over the agent's own file.
    world.write_state("mood: mine\n");
    let output = command(&world, ["init", "--state-file", &state_file])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "workshop-bridge: the state file {state_file} already exists, and init never replaces one; remove it first to start again from the example\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(&world.state_file).unwrap(),
        "mood: mine\n"
    );
    terminate(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

/// The example state written at `path`, as the JSON clients get, spelled out by hand.
fn example_as_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(text, workshop_bridge::EXAMPLE_STATE);
    json!({
        "identity": {"name": "Timmy", "title": "The Workshop Wizard", "uptime_seconds": 14523},
        "mood": {"primary": "contemplative", "confidence": 0.72, "energy": 0.6},
        "activity": {"current": "watching-gitea", "detail": "new commit on main", "duration_seconds": 45},
        "attention": {"focus": "gitea", "last_event": "push to main", "last_event_at": "2026-03-18T21:30:00Z"},
        "interaction": {"visitor_present": false, "visitor_name": null, "last_message_at": null, "conversation_turns": 0},
        "environment": {"time_of_day": "evening", "local_time": "9:06 PM", "day_of_week": "Wednesday"},
        "familiar": {"name": "Pip", "state": "sleeping", "position": [2.1, 0.0, -1.3]},
        "meta": {"schema_version": 1, "updated_at": "2026-03-18T21:30:15Z", "writer": "timmy-loop"}
    })
}

/// A folder where the state file should be is not a start-up failure (the agent may
/// replace it), but it is said once, plainly, at start.
#[tokio::test]
async fn a_folder_at_the_state_path_is_said_once_at_start_and_the_bridge_serves() {
    let world = World::new();
    std::fs::create_dir_all(&world.state_file).unwrap();
    let mut child = command(&world, with(&world, &["--port", "0", "--token", TOKEN]))
        .spawn()
        .unwrap();
    let (addr, before) = listening_after(&mut child).await;
    let about_state: Vec<&String> = before.iter().filter(|l| l.contains("state")).collect();
    assert_eq!(about_state.len(), 1, "{before:?}");
    assert!(
        about_state[0].ends_with(&format!(
            " WARN workshop_bridge: the state file is a folder, not a file: clients get no state until a file replaces it path={}",
            world.state_file.display()
        )),
        "{before:?}"
    );
    assert_eq!(
        gateway_status_at(addr).await["state"]["last_error"],
        "the state file is a folder, not a file; clients get no state until a file replaces it"
    );
    terminate(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

/// `--config PATH` naming a file that does not exist: the bridge makes it with a new token
/// (scripts that pass a fresh temporary path rely on that) and says so, as a warning, since
/// a mistyped path would otherwise change the token unnoticed.
#[tokio::test]
async fn a_config_file_that_did_not_exist_is_made_and_said_so_as_a_warning() {
    let world = World::with_state("a: 1\n");
    let config = world.dir.path().join("fresh").join("bridge.toml");
    let path = config.display().to_string();
    let mut child = command(&world, with(&world, &["--port", "0", "--config", &path]))
        .spawn()
        .unwrap();
    let (_, before) = listening_after(&mut child).await;
    let before: Vec<String> = before
        .into_iter()
        .filter(|l| l.contains("config"))
        .collect();
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(
        before[0].ends_with(&format!(
            " WARN workshop_bridge: the config file {path} did not exist: made it, with a newly generated token; `workshop-bridge token --config {path}` shows it"
        )),
        "{before:?}"
    );
    terminate(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with("token = \""), "{text}");

    // Once it exists, nothing more is said.
    let mut child = command(&world, with(&world, &["--port", "0", "--config", &path]))
        .spawn()
        .unwrap();
    let (_, before) = listening_after(&mut child).await;
    assert!(!before.iter().any(|l| l.contains("config")), "{before:?}");
    terminate(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));

    // `token` says so as well, beside the token it prints.
    let other = world.dir.path().join("other.toml").display().to_string();
    let output = command(&world, ["token", "--config", &other])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim().len(), 64);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "workshop-bridge: the config file {other} did not exist: made it, with a newly generated token; `workshop-bridge token --config {other}` shows it\n"
        )
    );
}

/// Whether the process `pid` has its own handlers for SIGINT and SIGTERM (Linux's
/// `SigCgt`); `None` where that cannot be read.
fn catches_int_and_term(pid: u32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let caught = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
    let mask = u64::from_str_radix(caught.trim(), 16).ok()?;
    let bit = |signal: u32| 1u64 << (signal - 1);
    Some(mask & bit(2) != 0 && mask & bit(15) != 0)
}

/// A signal at any moment once the process runs its own code, long before it listens, as
/// it says it listens, and after: the goodbye (`stopped`) and exit status 0, never a death
/// by signal. (Before the process's own code runs, while the system loads it, no program
/// can catch a signal; on Linux the test waits until the process catches them, and sends
/// at once.)
#[cfg(unix)]
#[tokio::test]
async fn a_signal_at_any_moment_ends_with_the_goodbye_and_exit_zero() {
    let world = World::with_state("a: 1\n");
    let mut early_rounds = 0;
    for round in 0..45 {
        let signal = if round % 2 == 0 { "-TERM" } else { "-INT" };
        let mut child = command(&world, with(&world, &["--port", "0", "--token", TOKEN]))
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        match round % 3 {
            // As soon as the process can catch it: start-up has barely begun.
            0 => {
                let deadline = tokio::time::Instant::now() + DEADLINE;
                match catches_int_and_term(pid) {
                    None => {
                        // Not Linux: no way to see the moment; the other rounds still run.
                        assert!(child.kill().await.is_ok());
                        continue;
                    }
                    Some(_) => {
                        while catches_int_and_term(pid) != Some(true) {
                            assert!(tokio::time::Instant::now() < deadline, "no handlers");
                            tokio::task::yield_now().await;
                        }
                        early_rounds += 1;
                    }
                }
            }
            // On its first line, while it starts.
            1 => seen.push(lines.next_line().await.unwrap().unwrap()),
            // Just after it says it listens, where signals used to be lost.
            _ => loop {
                let line = lines.next_line().await.unwrap().unwrap();
                let done = line.contains("listening on ws://");
                seen.push(line);
                if done {
                    break;
                }
            },
        }
        let sent = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        while let Some(line) = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
        {
            seen.push(line);
        }
        let status = tokio::time::timeout(DEADLINE, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(0), "round {round}, {signal}: {seen:?}");
        let last = seen.last().map(String::as_str).unwrap_or_default();
        assert!(
            last.ends_with(" INFO workshop_bridge: stopped")
                || last.ends_with(" INFO workshop_bridge: stopped before it was listening"),
            "round {round}, {signal}: {seen:?}"
        );
    }
    if early_rounds == 0 {
        support::report::skipped(
            "a_signal_at_any_moment_ends_with_the_goodbye_and_exit_zero (its earliest rounds)",
            "no /proc/PID/status to see when the process catches signals",
        );
    }
}
