//! Hostile files: a state file far too big, an alias bomb, deep nesting, a symlink, a
//! directory, a named pipe, garbage and an unreadable file where the state should be; an inbox
//! that disappears, turns read-only or fills its disk. In every case the bridge keeps serving
//! everyone, clients keep the last good state, `state_health()` says what is wrong in one
//! line, the sender of a message that could not be saved gets an error and its retry is
//! accepted once the inbox is usable again, and nothing half-written is left behind.
//!
//! Permissions do not stop root, so as root the read-only inbox is a read-only bind mount and
//! the unreadable state file is tested with the real binary running as `nobody`. The full
//! disk is a 64 KiB tmpfs. A test that cannot set its case up prints why and passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

mod support;

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::*;
use workshop_bridge::{BridgeHandle, Config};

// --- helpers ---------------------------------------------------------------------------

/// Waits until the state file's health reports an error containing `needle`, and checks it
/// is one line (for logs, the status API and the app's Activity pane).
///
/// A liveness bound, not a speed test: refusing an alias bomb takes 250,000 nodes of work,
/// which an unoptimized build on a busy machine may take more than [`DEADLINE`] to do.
async fn state_error(bridge: &BridgeHandle, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + 6 * DEADLINE;
    let error = loop {
        if let Some(e) = bridge
            .state_health()
            .last_error
            .filter(|e| e.contains(needle))
        {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no error containing {needle:?}; health: {:?}",
            bridge.state_health()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(!error.contains('\n'), "one line: {error}");
    error
}

fn message(text: &str, id: &str) -> Value {
    json!({"type": "message", "text": text, "visitor": "Alexander", "id": id})
}

/// The bridge still works for everyone: a newcomer gets `data` as its first state, and a
/// message it sends is acknowledged, written to the inbox and relayed to `watcher`.
async fn still_serving(bridge: &BridgeHandle, world: &World, watcher: &mut Ws, data: Value) {
    let (mut newcomer, state) = connect_with_state(bridge, "/ws").await;
    assert_eq!(state["data"], data, "a newcomer gets the last good state");
    let before = world.inbox_files().len();
    let id = format!("still-serving-{before}");
    send(&mut newcomer, message("still there?", &id)).await;
    assert_eq!(recv(&mut newcomer).await, json!({"type": "ack", "id": id}));
    assert_eq!(world.inbox_files().len(), before + 1);
    let relayed = recv_type(watcher, "message").await;
    assert_eq!(relayed["text"], "still there?");
}

/// Whether `name` is one of the bridge's temporary files.
fn is_partial(name: &str) -> bool {
    name.starts_with(".tmp-") && name.ends_with(".partial")
}

/// The total bytes this process has read through `read()`-like calls, where Linux tells.
fn bytes_read_by_this_process() -> Option<u64> {
    let io = fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|n| n.trim().parse().ok())
}

/// A mount that is undone when the test ends, whether it passed or panicked.
struct Mount {
    path: PathBuf,
    mounted: bool,
}

impl Mount {
    /// `mount ARGS… PATH`; `Err` says why it was not possible (not root, no mount command).
    fn new(args: &[&str], path: &Path) -> Result<Self, String> {
        let target = path.to_str().unwrap();
        let mut all = args.to_vec();
        all.push(target);
        run_to_end("mount", &all)?;
        Ok(Self {
            path: path.to_owned(),
            mounted: true,
        })
    }

    /// A read-only view of `dir` mounted over itself: even root cannot write through it.
    fn read_only(dir: &Path) -> Result<Self, String> {
        let target = dir.to_str().unwrap();
        let mount = Self::new(&["--bind", target], dir)?;
        run_to_end("mount", &["-o", "remount,ro,bind", target])?;
        Ok(mount)
    }

    fn unmount(&mut self) {
        if self.mounted {
            let target = self.path.to_str().unwrap();
            if run_to_end("umount", &[target]).is_err() {
                // Busy (a file still open after a failure): detach it anyway.
                let _ = run_to_end("umount", &["-l", target]);
            }
            self.mounted = false;
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

// --- the state file ----------------------------------------------------------------------

#[tokio::test]
async fn a_state_file_over_max_state_bytes_is_refused_with_a_size_error_and_the_last_good_state_is_served()
 {
    let world = World::with_state("mood: calm\n");
    let bridge = start(Config {
        max_state_bytes: 1024,
        ..world.config()
    })
    .await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    let huge = format!("mood: huge\nnotes: \"{}\"\n", "x".repeat(2000));
    world.write_state(&huge);
    let error = state_error(&bridge, "limit").await;
    assert_eq!(
        error,
        format!(
            "the state file is {} bytes, over the 1024-byte limit",
            huge.len()
        )
    );
    assert_eq!(bridge.state_health().seq, 1, "clients keep state 1");
    assert_nothing_pending(&mut ipad).await;
    still_serving(&bridge, &world, &mut ipad, json!({"mood": "calm"})).await;

    // Exactly at the limit is allowed, and clears the error.
    let at_limit = format!("mood: ok\npad: \"{}\"\n", "y".repeat(1024 - 17));
    assert_eq!(at_limit.len(), 1024);
    world.write_state(&at_limit);
    let next = recv_type(&mut ipad, "state").await;
    assert_eq!(
        (next["seq"].clone(), next["data"]["mood"].clone()),
        (json!(2), json!("ok"))
    );
    assert_eq!(bridge.state_health().last_error, None);
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_100_mb_sparse_state_file_is_refused_by_its_size_without_being_read() {
    let world = World::with_state("mood: calm\n");
    let bridge = start(world.config()).await;
    assert_eq!(
        world.config().max_state_bytes,
        16 * 1024 * 1024,
        "the default limit"
    );
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    let read_before = bytes_read_by_this_process();
    // 100 MB of nothing: no disk used, but reading it would allocate and scan 100 MB.
    File::create(&world.state_file)
        .unwrap()
        .set_len(100 * 1024 * 1024)
        .unwrap();
    let error = state_error(&bridge, "limit").await;
    assert_eq!(
        error,
        "the state file is 104857600 bytes, over the 16777216-byte limit"
    );
    match (read_before, bytes_read_by_this_process()) {
        // Every read of this process (all tests running in parallel) stays far below what
        // reading even the limit's worth of the file would cost.
        (Some(before), Some(after)) => assert!(
            after - before < 8 * 1024 * 1024,
            "{} bytes were read: the file was read, not refused by its size",
            after - before
        ),
        _ => support::report::skipped(
            "a_100_mb_sparse_state_file_is_refused_by_its_size_without_being_read (how much was read)",
            "/proc/self/io is not available",
        ),
    }
    assert_nothing_pending(&mut ipad).await;
    still_serving(&bridge, &world, &mut ipad, json!({"mood": "calm"})).await;
    bridge.shutdown().await;
}

/// The classic "billion laughs": ten levels of nine aliases, 9^10 "lol"s from 300 bytes.
fn billion_laughs() -> String {
    let mut bomb = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let mut prev = 'a';
    for name in 'b'..='j' {
        let refs = vec![format!("*{prev}"); 9].join(", ");
        bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
        prev = name;
    }
    bomb
}

/// Few aliases and nodes, but a 1 MiB string behind them: 81 MiB of text from 1 MiB.
fn long_laughs() -> String {
    let mut bomb = format!("a: &a \"{}\"\n", "lol".repeat(350_000));
    bomb.push_str(&format!("b: &b [{}]\n", ["*a"; 9].join(", ")));
    bomb.push_str(&format!("c: [{}]\n", ["*b"; 9].join(", ")));
    bomb
}

/// A bomb of work rather than of size: merge keys, each map merging the one before it
/// twice, fifteen deep (377 bytes). Under the parser's default cap of 10,000 merge keys it
/// cost seconds of CPU at every write (1.7 s in a release build, 14 s in a debug one); the
/// bridge's own cap of 256 refuses it at once (see `src/state/yaml.rs`), and the last state is kept.
fn merge_key_bomb() -> String {
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}: {i}")).collect();
    let mut bomb = format!("a: &a {{{}}}\n", keys.join(", "));
    let mut prev = 'a';
    for name in 'b'..='p' {
        bomb.push_str(&format!("{name}: &{name} {{<<: [*{prev},*{prev}]}}\n"));
        prev = name;
    }
    bomb
}

#[tokio::test]
async fn yaml_alias_bombs_are_refused_by_the_parser_budget_and_the_last_state_is_kept() {
    let world = World::with_state("mood: calm\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    world.write_state(&long_laughs());
    let error = state_error(&bridge, "MiB of text").await;
    assert!(
        error.starts_with("the state file is beyond the bridge's limits: its aliases copy"),
        "{error}"
    );
    assert_eq!(bridge.state_health().seq, 1);
    assert_nothing_pending(&mut ipad).await;

    world.write_state("mood: alert\n");
    let next = recv_type(&mut ipad, "state").await;
    assert_eq!(next["data"], json!({"mood": "alert"}));

    world.write_state(&merge_key_bomb());
    // Each map copies the one before it twice: the copies' budget refuses it first.
    let error = state_error(&bridge, "limits").await;
    assert!(
        error.starts_with("the state file is beyond the bridge's limits: its aliases copy"),
        "{error}"
    );
    assert_eq!(bridge.state_health().seq, 2);
    assert_nothing_pending(&mut ipad).await;

    // Last, as it is the slow one to refuse: nothing after it waits for the state reader.
    world.write_state(&billion_laughs());
    // (Waited for by where it is refused: the merge-key bomb's error names the same budget.)
    let error = state_error(&bridge, "(line 7 ").await;
    assert!(error.contains("its aliases copy more than"), "{error}");
    assert_eq!(bridge.state_health().seq, 2);
    assert_nothing_pending(&mut ipad).await;
    still_serving(&bridge, &world, &mut ipad, json!({"mood": "alert"})).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn deeply_nested_yaml_is_refused_without_overflowing_the_stack() {
    let world = World::with_state("mood: calm\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    // A stack overflow would abort the whole bridge, not just refuse the file.
    let flow = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    world.write_state(&flow);
    let error = state_error(&bridge, "nests deeper").await;
    assert!(
        error.starts_with("the state file is beyond the bridge's limits"),
        "{error}"
    );
    assert!(error.contains("line 1 column 257"), "{error}");

    world.write_state("mood: alert\n");
    assert_eq!(
        recv_type(&mut ipad, "state").await["data"],
        json!({"mood": "alert"})
    );
    let block: String = (0..1_000)
        .map(|depth| format!("{}a:\n", " ".repeat(depth)))
        .collect();
    world.write_state(&block);
    let error = state_error(&bridge, "nests deeper").await;
    assert!(error.contains("line 257"), "{error}");

    assert_eq!(bridge.state_health().seq, 2);
    assert_nothing_pending(&mut ipad).await;
    still_serving(&bridge, &world, &mut ipad, json!({"mood": "alert"})).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_symlinked_state_file_is_followed_and_changes_to_its_target_are_delivered() {
    let world = World::new();
    let project = world.dir.path().join("agent-project");
    fs::create_dir_all(&project).unwrap();
    fs::create_dir_all(world.state_file.parent().unwrap()).unwrap();
    let target = project.join("state.yaml");
    fs::write(&target, "mood: calm\n").unwrap();
    std::os::unix::fs::symlink(&target, &world.state_file).unwrap();

    let bridge = start(world.config()).await;
    let (mut ipad, first) = connect_with_state(&bridge, "/ws").await;
    assert_eq!(
        first["data"],
        json!({"mood": "calm"}),
        "the link is followed"
    );

    // The agent writes its own file, in place.
    fs::write(&target, "mood: alert\n").unwrap();
    let next = recv_type(&mut ipad, "state").await;
    assert_eq!(next["data"], json!({"mood": "alert"}));

    // And by rename, in its own directory.
    let aside = project.join(".state.yaml.tmp");
    fs::write(&aside, "mood: sleepy\n").unwrap();
    fs::rename(&aside, &target).unwrap();
    let next = recv_type(&mut ipad, "state").await;
    assert_eq!(next["data"], json!({"mood": "sleepy"}));

    // Pointing the link at another file (`ln -sfn`: a new link renamed over the old one).
    let other = project.join("other.yaml");
    fs::write(&other, "mood: other\n").unwrap();
    let new_link = world.state_file.with_file_name(".link.tmp");
    std::os::unix::fs::symlink(&other, &new_link).unwrap();
    fs::rename(&new_link, &world.state_file).unwrap();
    let next = recv_type(&mut ipad, "state").await;
    assert_eq!(next["data"], json!({"mood": "other"}));
    // The new target's changes are followed; the old one's no longer matter.
    fs::write(&target, "mood: stale\n").unwrap();
    fs::write(&other, "mood: fresh\n").unwrap();
    let next = recv_type(&mut ipad, "state").await;
    assert_eq!(next["data"], json!({"mood": "fresh"}));

    // A dangling link keeps the last state, with a clear error.
    fs::remove_file(&other).unwrap();
    let error = state_error(&bridge, "does not exist").await;
    assert_eq!(error, "the state file does not exist (yet)");
    still_serving(&bridge, &world, &mut ipad, json!({"mood": "fresh"})).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_directory_at_the_state_path_is_a_clear_error_and_the_file_replacing_it_is_served() {
    let world = World::with_state("mood: calm\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    fs::remove_file(&world.state_file).unwrap();
    fs::create_dir(&world.state_file).unwrap();
    let error = state_error(&bridge, "regular file").await;
    assert_eq!(error, "the state file path is not a regular file");
    assert_nothing_pending(&mut ipad).await;
    still_serving(&bridge, &world, &mut ipad, json!({"mood": "calm"})).await;

    fs::remove_dir(&world.state_file).unwrap();
    world.write_state("mood: back\n");
    let next = recv_type(&mut ipad, "state").await;
    assert_eq!(
        (next["seq"].clone(), next["data"].clone()),
        (json!(2), json!({"mood": "back"}))
    );
    assert_eq!(bridge.state_health().last_error, None);
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_bridge_started_with_a_directory_at_the_state_path_runs_and_serves_the_file_that_replaces_it()
 {
    let world = World::new();
    fs::create_dir_all(&world.state_file).unwrap();
    let bridge = start(world.config()).await;
    let error = state_error(&bridge, "folder").await;
    assert_eq!(
        error,
        "the state file is a folder, not a file; clients get no state until a file replaces it"
    );
    let mut ipad = connect(&bridge, "/ws").await;
    assert_nothing_pending(&mut ipad).await;

    fs::remove_dir(&world.state_file).unwrap();
    world.write_state("mood: here\n");
    let state = recv_type(&mut ipad, "state").await;
    assert_eq!(
        state,
        json!({"type": "state", "seq": 1, "data": {"mood": "here"}})
    );
    bridge.shutdown().await;
}

/// Should the reader ever get stuck opening the pipe again, the test would fail, and then
/// hang for ever as the runtime waits for that reader: this opens the other end, so it fails.
struct UnblockPipe(PathBuf);

impl Drop for UnblockPipe {
    fn drop(&mut self) {
        let path = self.0.clone();
        // Blocks until a reader opens the pipe (if nobody ever does, dies with the process).
        std::thread::spawn(move || {
            let is_pipe = fs::metadata(&path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_fifo()
            });
            if is_pipe {
                let _ = File::options().write(true).open(&path);
            }
        });
    }
}

#[tokio::test]
async fn a_named_pipe_at_the_state_path_is_refused_without_blocking_the_state_reader() {
    let world = World::with_state("mood: calm\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    // Opening a pipe for reading waits for a writer: a reader that opens it first would hang.
    fs::remove_file(&world.state_file).unwrap();
    if let Err(e) = run_to_end("mkfifo", &[world.state_file.to_str().unwrap()]) {
        support::report::skipped(
            "a_named_pipe_at_the_state_path_is_refused_without_blocking_the_state_reader",
            format_args!("cannot make a named pipe ({e})"),
        );
        return;
    }
    let _unblock = UnblockPipe(world.state_file.clone());
    let error = state_error(&bridge, "regular file").await;
    assert_eq!(error, "the state file path is not a regular file");
    still_serving(&bridge, &world, &mut ipad, json!({"mood": "calm"})).await;

    // The reader is not stuck: the next real file is delivered.
    fs::remove_file(&world.state_file).unwrap();
    world.write_state("mood: piped\n");
    let next = recv_type(&mut ipad, "state").await;
    assert_eq!(next["data"], json!({"mood": "piped"}));
    bridge.shutdown().await;
}

/// A named pipe kept under a name of its own, so that it can be put over a file again and
/// again, and so that a reader stuck opening it can always be let go: dropping it opens the
/// other end without waiting, which frees a reader waiting for a writer (one stuck for ever
/// would make the test hang instead of failing).
struct Pipe(PathBuf);

impl Pipe {
    /// `Err` says why a pipe cannot be made here.
    fn new(path: PathBuf) -> Result<Self, String> {
        run_to_end("mkfifo", &[path.to_str().unwrap()])?;
        Ok(Self(path))
    }

    /// Puts the pipe at `path` as a hostile writer would: linked under a temporary name
    /// beside it, then renamed over it.
    fn rename_over(&self, path: &Path) {
        rename_over(path, |temp| fs::hard_link(&self.0, temp).unwrap());
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = File::options()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.0);
    }
}

/// Makes something with `make` under a dot-name beside `path`, then renames it over `path`.
fn rename_over(path: &Path, make: impl FnOnce(&Path)) {
    let temp = path.with_file_name(format!(
        ".{}.swap",
        path.file_name().unwrap().to_string_lossy()
    ));
    let _ = fs::remove_file(&temp);
    make(&temp);
    fs::rename(&temp, path).unwrap();
}

/// How many times the swapping tests put a hostile file over a good one: enough that a reader
/// that looks at a path before opening it is caught in between (the review saw 1 in 99).
const SWAPS: usize = 2_000;

#[tokio::test]
async fn named_pipes_renamed_over_the_state_file_again_and_again_never_stall_its_reader() {
    let world = World::with_state("round: 0\n");
    let pipe = match Pipe::new(world.dir.path().join("pipe")) {
        Ok(p) => p,
        Err(e) => {
            support::report::skipped(
                "named_pipes_renamed_over_the_state_file_again_and_again_never_stall_its_reader",
                format_args!("cannot make a named pipe ({e})"),
            );
            return;
        }
    };
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    // Each round: a valid state renamed into place, then the pipe renamed over it.
    let state_file = world.state_file.clone();
    let mut swapper = tokio::task::spawn_blocking(move || {
        for round in 1..=SWAPS {
            rename_over(&state_file, |temp| {
                fs::write(temp, format!("round: {round}\n")).unwrap()
            });
            pipe.rename_over(&state_file);
        }
        pipe
    });
    // Meanwhile the client gets the valid states the reader catches; the pipes are refused.
    let pipe = loop {
        tokio::select! {
            state = recv_type(&mut ipad, "state") => {
                assert!(state["data"]["round"].is_u64(), "{state}");
            }
            pipe = &mut swapper => break pipe.unwrap(),
        }
    };

    // And it still reacts to the next valid write.
    world.write_state("round: done\n");
    let last = loop {
        let state = recv_type(&mut ipad, "state").await;
        if state["data"]["round"] == "done" {
            break state;
        }
    };
    assert_eq!(last["seq"], bridge.state_health().seq);
    assert_eq!(bridge.state_health().last_error, None);
    still_serving(&bridge, &world, &mut ipad, json!({"round": "done"})).await;
    bridge.shutdown().await;
    drop(pipe);
}

#[tokio::test]
async fn binary_garbage_and_a_symlink_loop_at_the_state_path_keep_the_last_state() {
    let world = World::with_state("mood: calm\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    let aside = world.state_file.with_file_name(".garbage.tmp");
    fs::write(&aside, [0xff_u8, 0xfe, 0x00, 0x01, 0x80, b'\n', 0xc3]).unwrap();
    fs::rename(&aside, &world.state_file).unwrap();
    let error = state_error(&bridge, "UTF-8").await;
    assert_eq!(
        error,
        "cannot read the state file: stream did not contain valid UTF-8"
    );

    // A link to itself: opening it fails with "too many levels of symbolic links".
    let link = world.state_file.with_file_name(".loop.tmp");
    std::os::unix::fs::symlink(&world.state_file, &link).unwrap();
    fs::rename(&link, &world.state_file).unwrap();
    let error = state_error(&bridge, "cannot open").await;
    assert!(error.contains("symbolic links"), "{error}");

    assert_nothing_pending(&mut ipad).await;
    still_serving(&bridge, &world, &mut ipad, json!({"mood": "calm"})).await;
    world.write_state("mood: sane\n");
    assert_eq!(
        recv_type(&mut ipad, "state").await["data"],
        json!({"mood": "sane"})
    );
    bridge.shutdown().await;
}

/// Whether taking every permission away from `path` stops this process reading it (it does
/// not for root).
fn permissions_stop_us(path: &Path) -> bool {
    chmod(path, 0o000);
    let readable = File::open(path).is_ok();
    chmod(path, 0o644);
    !readable
}

#[tokio::test]
async fn an_unreadable_state_file_is_a_permission_error_and_the_last_state_is_kept() {
    let world = World::with_state("mood: calm\n");
    if !permissions_stop_us(&world.state_file) {
        unreadable_state_as_nobody(world).await;
        return;
    }
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    chmod(&world.state_file, 0o000);
    let error = state_error(&bridge, "ermission denied").await;
    assert!(error.starts_with("cannot open the state file: "), "{error}");
    assert_nothing_pending(&mut ipad).await;
    still_serving(&bridge, &world, &mut ipad, json!({"mood": "calm"})).await;

    chmod(&world.state_file, 0o644);
    world.write_state("mood: readable\n");
    assert_eq!(
        recv_type(&mut ipad, "state").await["data"],
        json!({"mood": "readable"})
    );
    bridge.shutdown().await;
}

/// Root reads anything, so the bridge under test must not be root: the real binary, as
/// `nobody`, in a world that `nobody` owns. Checked through the status API instead.
async fn unreadable_state_as_nobody(world: World) {
    const NOBODY: u32 = 65534;
    fs::create_dir_all(&world.inbox).unwrap();
    fs::create_dir_all(&world.outbox).unwrap();
    for path in [
        world.dir.path(),
        world.state_file.parent().unwrap(),
        &world.state_file,
        &world.inbox,
        &world.outbox,
    ] {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let mut args = serve_args(&world);
    args.extend(["--port".into(), "0".into(), "--no-auth".into()]);
    let mut child = command(&world, &args)
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    let addr = listening(&mut child).await;
    let url = format!("ws://{addr}/ws");
    let (mut ipad, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(
        recv_type(&mut ipad, "state").await["data"],
        json!({"mood": "calm"})
    );

    chmod(&world.state_file, 0o000);
    let mut status = gateway_status_at(addr).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !status["state"]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("ermission denied"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no error in time: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        status = gateway_status_at(addr).await;
    }
    let error = status["state"]["last_error"].as_str().unwrap();
    assert!(error.starts_with("cannot open the state file: "), "{error}");
    assert_eq!(status["state"]["seq"], 1);

    // Everyone is still served the last good state, and messages still get through.
    let (mut newcomer, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(
        recv_type(&mut newcomer, "state").await["data"],
        json!({"mood": "calm"})
    );
    send(&mut newcomer, message("can you read?", "n-1")).await;
    assert_eq!(
        recv(&mut newcomer).await,
        json!({"type": "ack", "id": "n-1"})
    );
    assert_eq!(
        recv_type(&mut ipad, "message").await["text"],
        "can you read?"
    );

    chmod(&world.state_file, 0o644);
    world.write_state("mood: readable\n");
    assert_eq!(
        recv_type(&mut ipad, "state").await["data"],
        json!({"mood": "readable"})
    );
    child.kill().await.unwrap();
}

// --- the inbox ---------------------------------------------------------------------------

#[tokio::test]
async fn a_removed_inbox_is_made_again_and_the_message_is_accepted() {
    let world = World::with_state("mood: calm\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws?client=ipad").await;
    let (mut watcher, _) = connect_with_state(&bridge, "/ws").await;

    fs::remove_dir_all(&world.inbox).unwrap();
    send(&mut ipad, message("anyone there?", "m-1")).await;
    assert_eq!(recv(&mut ipad).await, json!({"type": "ack", "id": "m-1"}));
    let files = world.inbox_files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].1["text"], "anyone there?");
    assert_eq!(
        recv_type(&mut watcher, "message").await["text"],
        "anyone there?"
    );
    still_serving(&bridge, &world, &mut watcher, json!({"mood": "calm"})).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn an_inbox_whose_parent_is_gone_is_not_made_again_and_the_retry_is_accepted_once_it_is_back()
{
    let world = World::with_state("mood: calm\n");
    let volume = world.dir.path().join("volume");
    let inbox = volume.join("inbox");
    fs::create_dir(&volume).unwrap();
    let bridge = start(Config {
        inbox_dir: inbox.clone(),
        ..world.config()
    })
    .await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws?client=ipad").await;
    let (mut watcher, _) = connect_with_state(&bridge, "/ws").await;

    fs::remove_dir_all(&volume).unwrap();
    send(&mut ipad, message("anyone there?", "m-1")).await;
    assert_eq!(
        recv(&mut ipad).await,
        json!({"type": "error", "code": "inbox_unavailable",
               "message": "the message could not be saved: the inbox directory is missing",
               "id": "m-1"})
    );
    assert!(!volume.exists(), "no look-alike of an unmounted volume");
    assert_nothing_pending(&mut watcher).await;

    fs::create_dir(&volume).unwrap();
    send(&mut ipad, message("anyone there?", "m-1")).await;
    assert_eq!(recv(&mut ipad).await, json!({"type": "ack", "id": "m-1"}));
    assert_eq!(names_in(&inbox).len(), 1);
    assert_eq!(
        recv_type(&mut watcher, "message").await["text"],
        "anyone there?"
    );
    bridge.shutdown().await;
}

/// How the inbox was made read-only, so it can be made writable again.
enum ReadOnly {
    Permissions(PathBuf),
    BindMount(Mount),
}

impl ReadOnly {
    /// `chmod 555`, or, where that does not stop this process (root), a read-only bind mount.
    fn make(dir: &Path) -> Result<Self, String> {
        chmod(dir, 0o555);
        let probe = dir.join("probe.json");
        if File::create(&probe).is_err() {
            return Ok(Self::Permissions(dir.to_owned()));
        }
        fs::remove_file(&probe).unwrap();
        chmod(dir, 0o755);
        Mount::read_only(dir).map(Self::BindMount)
    }

    fn undo(self) {
        match self {
            Self::Permissions(dir) => chmod(&dir, 0o755),
            Self::BindMount(mut mount) => mount.unmount(),
        }
    }
}

#[tokio::test]
async fn a_read_only_inbox_gives_the_sender_inbox_unavailable_and_the_retry_is_accepted_once_writable()
 {
    let world = World::with_state("mood: calm\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws?client=ipad").await;
    let (mut watcher, _) = connect_with_state(&bridge, "/ws").await;

    let read_only = match ReadOnly::make(&world.inbox) {
        Ok(r) => r,
        Err(e) => {
            support::report::skipped(
                "a_read_only_inbox_gives_the_sender_inbox_unavailable_and_the_retry_is_accepted_once_writable",
                format_args!("cannot make the inbox read-only ({e})"),
            );
            return;
        }
    };
    send(&mut ipad, message("hello?", "m-1")).await;
    assert_eq!(
        recv(&mut ipad).await,
        json!({"type": "error", "code": "inbox_unavailable",
               "message": "the message could not be saved: the inbox directory is not writable",
               "id": "m-1"})
    );
    assert_eq!(world.inbox_names_all(), Vec::<String>::new());
    assert_nothing_pending(&mut watcher).await;

    read_only.undo();
    send(&mut ipad, message("hello?", "m-1")).await;
    assert_eq!(recv(&mut ipad).await, json!({"type": "ack", "id": "m-1"}));
    let files = world.inbox_files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].1["text"], "hello?");
    assert_eq!(recv_type(&mut watcher, "message").await["text"], "hello?");
    still_serving(&bridge, &world, &mut watcher, json!({"mood": "calm"})).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_full_disk_gives_the_sender_inbox_unavailable_leaves_no_partial_file_and_recovers_when_space_is_freed()
 {
    let world = World::with_state("mood: calm\n");
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws?client=ipad").await;
    let (mut watcher, _) = connect_with_state(&bridge, "/ws").await;

    // A 64 KiB disk mounted over the inbox while the bridge runs.
    let _disk = match Mount::new(&["-t", "tmpfs", "-o", "size=64k", "tmpfs"], &world.inbox) {
        Ok(m) => m,
        Err(e) => {
            support::report::skipped(
                "a_full_disk_gives_the_sender_inbox_unavailable_leaves_no_partial_file_and_recovers_when_space_is_freed",
                format_args!("cannot mount a small tmpfs ({e})"),
            );
            return;
        }
    };
    send(&mut ipad, message("before", "m-0")).await;
    assert_eq!(recv(&mut ipad).await, json!({"type": "ack", "id": "m-0"}));
    assert_eq!(recv_type(&mut watcher, "message").await["text"], "before");

    // Filled by something else, to the last byte.
    let filler_path = world.inbox.join("filler.bin");
    let mut filler = File::create(&filler_path).unwrap();
    let chunk = vec![0u8; 4096];
    let full = loop {
        if let Err(e) = filler.write_all(&chunk).and_then(|()| filler.sync_all()) {
            break e;
        }
    };
    assert_eq!(full.kind(), std::io::ErrorKind::StorageFull, "{full}");
    drop(filler);

    for n in 1..=3 {
        let id = format!("m-{n}");
        send(&mut ipad, message("is this saved?", &id)).await;
        assert_eq!(
            recv(&mut ipad).await,
            json!({"type": "error", "code": "inbox_unavailable",
                   "message": "the message could not be saved: the disk is full", "id": id})
        );
    }
    let mut names = world.inbox_names_all();
    names.sort();
    assert_eq!(
        names.len(),
        2,
        "only the first message and the filler: {names:?}"
    );
    assert!(names[0].ends_with("-message.json") && names[1] == "filler.bin");
    assert_nothing_pending(&mut watcher).await;

    // Space is freed: the retries are accepted, each written once.
    fs::remove_file(&filler_path).unwrap();
    for n in 1..=3 {
        let id = format!("m-{n}");
        send(&mut ipad, message("is this saved?", &id)).await;
        assert_eq!(recv(&mut ipad).await, json!({"type": "ack", "id": id}));
        assert_eq!(
            recv_type(&mut watcher, "message").await["text"],
            "is this saved?"
        );
    }
    let files = world.inbox_files();
    assert_eq!(files.len(), 4);
    assert!(files.iter().all(|(n, _)| !is_partial(n)));
    still_serving(&bridge, &world, &mut watcher, json!({"mood": "calm"})).await;
    bridge.shutdown().await;
}

// --- the outbox --------------------------------------------------------------------------

#[tokio::test]
async fn pipes_and_symlinks_renamed_over_outbox_files_are_rejected_never_read_and_never_stall_it() {
    let world = World::with_state("mood: calm\n");
    let secret = world.dir.path().join("secret.json");
    fs::write(&secret, r#"{"type":"bark","text":"SECRET"}"#).unwrap();
    let pipe = match Pipe::new(world.dir.path().join("pipe")) {
        Ok(p) => p,
        Err(e) => {
            support::report::skipped(
                "pipes_and_symlinks_renamed_over_outbox_files_are_rejected_never_read_and_never_stall_it",
                format_args!("cannot make a named pipe ({e})"),
            );
            return;
        }
    };
    let bridge = start(world.config()).await;
    let (mut ipad, _) = connect_with_state(&bridge, "/ws").await;

    // Each round: two valid barks dropped in, then a symlink to the secret renamed over one and
    // the pipe over the other, as the bridge may be between listing and reading them.
    let outbox = world.outbox.clone();
    let mut swapper = tokio::task::spawn_blocking(move || {
        for round in 0..SWAPS {
            let linked = outbox.join(format!("r{round:05}-link.json"));
            let piped = outbox.join(format!("r{round:05}-pipe.json"));
            for file in [&linked, &piped] {
                rename_over(file, |temp| {
                    fs::write(temp, r#"{"type":"bark","text":"ok"}"#).unwrap()
                });
            }
            rename_over(&linked, |temp| {
                std::os::unix::fs::symlink(&secret, temp).unwrap()
            });
            pipe.rename_over(&piped);
        }
        pipe
    });
    let mut barks = Vec::new();
    let pipe = loop {
        tokio::select! {
            bark = recv_type(&mut ipad, "bark") => barks.push(bark["text"].clone()),
            pipe = &mut swapper => break pipe.unwrap(),
        }
    };

    // A later file is still delivered, and nothing was ever read through a link.
    world.drop_in_outbox("zz-last.json", r#"{"type":"bark","text":"last"}"#);
    loop {
        let bark = recv_type(&mut ipad, "bark").await;
        barks.push(bark["text"].clone());
        if bark["text"] == "last" {
            break;
        }
    }
    assert!(
        barks.iter().all(|text| text == "ok" || text == "last"),
        "a symlink's target was broadcast: {barks:?}"
    );
    // Every link and pipe was moved aside like a file that does not parse.
    wait_until(|| names_in(&world.outbox).eq(&["rejected"]).then_some(())).await;
    let rejected = names_in(&world.outbox.join("rejected"));
    assert!(!rejected.is_empty());
    for name in &rejected {
        let kind = fs::symlink_metadata(world.outbox.join("rejected").join(name))
            .unwrap()
            .file_type();
        assert!(!kind.is_file(), "a valid bark was rejected: {name}");
    }
    still_serving(&bridge, &world, &mut ipad, json!({"mood": "calm"})).await;
    bridge.shutdown().await;
    drop(pipe);
}

// --- the workshop directory --------------------------------------------------------------

#[tokio::test]
async fn the_workshop_dir_never_serves_a_file_whose_real_path_is_outside_it() {
    let world = World::with_state("mood: calm\n");
    let site = world.dir.path().join("site");
    let private = world.dir.path().join("private");
    fs::create_dir_all(site.join("assets")).unwrap();
    fs::create_dir_all(&private).unwrap();
    fs::write(private.join("secret.txt"), "SECRET").unwrap();
    fs::write(site.join("index.html"), "<h1>my scene</h1>").unwrap();
    fs::write(site.join("assets/app.js"), "console.log(1)").unwrap();
    let link = |target: &Path, at: &str| std::os::unix::fs::symlink(target, site.join(at)).unwrap();
    // Out of the folder: to a file, to a system file, relatively, and through a directory.
    link(&private.join("secret.txt"), "leak.txt");
    link(Path::new("/etc/passwd"), "passwd.txt");
    link(Path::new("../../private/secret.txt"), "assets/relative.txt");
    link(&private, "linked");
    // Within it: followed, as the real file is in the folder.
    link(Path::new("index.html"), "alias.html");
    let bridge = start(Config {
        workshop_dir: Some(site.clone()),
        ..world.config()
    })
    .await;

    for path in [
        "/leak.txt",
        "/passwd.txt",
        "/assets/relative.txt",
        "/linked/secret.txt",
        "/linked/",
    ] {
        let (status, body) = http_get(&bridge, path, &[]).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            !body.contains("SECRET") && !body.contains("root:"),
            "{path}: {body}"
        );
    }
    assert_eq!(
        http_get(&bridge, "/alias.html", &[]).await,
        (200, "<h1>my scene</h1>".to_owned())
    );

    // A named pipe in the folder is not a file to serve, and does not hold the request up.
    let pipe = match Pipe::new(site.join("pipe.js")) {
        Ok(p) => Some(p),
        Err(e) => {
            support::report::skipped(
                "the_workshop_dir_never_serves_a_file_whose_real_path_is_outside_it (a named pipe)",
                format_args!("cannot make a named pipe ({e})"),
            );
            None
        }
    };
    if pipe.is_some() {
        assert_eq!(http_get(&bridge, "/pipe.js", &[]).await.0, 404);
    }
    assert_eq!(
        http_get(&bridge, "/", &[]).await,
        (200, "<h1>my scene</h1>".to_owned())
    );
    assert_eq!(
        http_get(&bridge, "/assets/app.js", &[]).await,
        (200, "console.log(1)".to_owned())
    );
    bridge.shutdown().await;
    drop(pipe);
}
