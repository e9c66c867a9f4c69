//! State values, with PyYAML as the oracle: a state file written by PyYAML's `safe_dump` (with
//! the options agents use) or by `json.dumps` reaches clients as exactly the value PyYAML
//! reads from it, converted to JSON by the rules of docs/PROTOCOL.md ("State values").
//!
//! The documents, the expected values and the comparison are Python's
//! (tests/python/state_values.py, run with the pinned PyYAML that `scripts/test` installs in
//! tests/python/.venv); this side runs the bridge and one client and forwards, for each
//! document Python writes, the raw `data` of the `state` that follows (or the bridge's
//! refusal). `STATE_VALUES_SEED` repeats a run; `STATE_VALUES_COUNT` sets how many random
//! documents it writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;
use workshop_bridge::BridgeHandle;

/// The Python interpreter to use instead of tests/python/.venv's.
const PYTHON_VARIABLE: &str = "WORKSHOP_BRIDGE_TEST_PYTHON";

/// Random documents whose failures are shown in full (the rest are counted).
const SHOWN_RANDOM_FAILURES: usize = 5;

#[tokio::test]
async fn state_values_reach_clients_as_pyyaml_reads_them() {
    let python = python();
    let mut resets = 0u64;
    let world = World::with_state(&reset_yaml(resets));
    let bridge = start(world.config()).await;
    let (mut client, first) = connect_with_state(&bridge, "/ws").await;
    assert_eq!(first["data"], reset_json(resets));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/state_values.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(&world.state_file)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run scripts/test, which installs the pinned PyYAML in tests/python/.venv",
                python.display()
            )
        });
    let mut to_python = child.stdin.take().unwrap();
    let mut from_python = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let python_stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let hello = next_line(&mut from_python).await;
    if let Some(missing) = hello.as_ref().and_then(|h| h.get("missing")) {
        panic!(
            "{}: run scripts/test, which installs it",
            missing.as_str().unwrap()
        );
    }
    let Some(hello) = hello.and_then(|h| h.get("hello").cloned()) else {
        let stderr = python_stderr.await.unwrap();
        panic!("the Python side did not start:\n{stderr}");
    };
    let pinned = pinned_pyyaml();
    let found = hello["pyyaml"].as_str().unwrap_or_default();
    assert!(
        found == pinned,
        "{} has PyYAML {found} but tests/python/requirements.txt pins {pinned}: run scripts/test, which installs it",
        python.display()
    );
    let seed = &hello["seed"];
    eprintln!("state values: seed {seed} (STATE_VALUES_SEED={seed} repeats this run)");

    let mut named_failures = Vec::new();
    let mut random_failures = Vec::new();
    let done = loop {
        let Some(line) = next_line(&mut from_python).await else {
            let stderr = python_stderr.await.unwrap();
            panic!("the Python side ended early:\n{stderr}");
        };
        if let Some(done) = line.get("done") {
            break done.clone();
        }
        let kind = line["kind"].as_str().expect("a `wrote` line").to_owned();
        let outcome = outcome(&mut client, &bridge).await;
        // Back to a state no document has, so the next document is a change the bridge sends;
        // unless the next is this one edited, to be read over it.
        let keep = line["keep"] == true && outcome.get("data").is_some();
        if !keep {
            resets += 1;
            world.write_state(&reset_yaml(resets));
            let reset = recv_type(&mut client, "state").await;
            assert_eq!(reset["data"], reset_json(resets), "the reset document");
        }

        to_python
            .write_all(format!("{outcome}\n").as_bytes())
            .await
            .unwrap();
        let Some(verdict) = next_line(&mut from_python).await else {
            let stderr = python_stderr.await.unwrap();
            panic!("the Python side ended before its verdict:\n{stderr}");
        };
        if verdict["verdict"] != "ok" {
            let report = verdict["report"].as_str().unwrap().to_owned();
            if kind == "named" {
                named_failures.push(report);
            } else {
                random_failures.push(report);
            }
        }
    };
    drop(to_python);
    let _ = child.wait().await;
    bridge.shutdown().await;

    let named = done["named"].as_u64().unwrap();
    let random = done["random"].as_u64().unwrap();
    let edited = done["edited"].as_u64().unwrap();
    let pyyaml = done["pyyaml"].as_str().unwrap();
    let roundtrip = done["pyyaml_roundtrip_differences"].as_u64().unwrap();
    assert!(named > 0, "the named table is empty: nothing was checked");
    let roundtrip_note = if roundtrip > 0 {
        format!(
            "; PyYAML read {roundtrip} of its own documents back differently from what it dumped, and the bridge was held to what it read"
        )
    } else {
        String::new()
    };
    if named_failures.is_empty() && random_failures.is_empty() {
        report::note(format_args!(
            "state values: {random} random documents (seed {seed}), {edited} of them written again with one member changed, and {named} named scalars matched PyYAML {pyyaml}{roundtrip_note}"
        ));
        return;
    }
    let summary = format!(
        "state values: {} of {named} named scalars and {} of {random} random documents (seed {seed}) differ from PyYAML {pyyaml}",
        named_failures.len(),
        random_failures.len()
    );
    report::note(&summary);
    let mut message = format!("{summary}\n");
    for report in &named_failures {
        message.push_str(&format!("\n{report}\n"));
    }
    for report in random_failures.iter().take(SHOWN_RANDOM_FAILURES) {
        message.push_str(&format!("\n{report}\n"));
    }
    if random_failures.len() > SHOWN_RANDOM_FAILURES {
        message.push_str(&format!(
            "\n… and {} more random documents (STATE_VALUES_SEED={seed} repeats them)\n",
            random_failures.len() - SHOWN_RANDOM_FAILURES
        ));
    }
    panic!("{message}");
}

/// The Python with PyYAML: `WORKSHOP_BRIDGE_TEST_PYTHON`, else tests/python/.venv's.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os(PYTHON_VARIABLE) {
        return python.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/.venv/bin/python");
    assert!(
        venv.exists(),
        "there is no {} (nor {PYTHON_VARIABLE}): run scripts/test, which installs the pinned PyYAML there",
        venv.display()
    );
    venv
}

/// The PyYAML version tests/python/requirements.txt pins.
fn pinned_pyyaml() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/requirements.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .find_map(|line| line.trim().strip_prefix("PyYAML=="))
        .expect("tests/python/requirements.txt pins PyYAML")
        .to_owned()
}

fn reset_yaml(n: u64) -> String {
    format!("reset: {n}\n")
}

fn reset_json(n: u64) -> Value {
    json!({ "reset": n })
}

/// The next line from the Python side, parsed; `None` when it has ended.
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<Value> {
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("no line from the Python side in time")
        .unwrap()?;
    Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")))
}

/// What the bridge made of the file just written, as a line for the Python side: the raw
/// `data` of the next `state`, or the error the bridge reported reading it. The file before
/// it was a reset, read without error, so an error now is this file's.
async fn outcome(client: &mut Ws, bridge: &BridgeHandle) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(error) = bridge.state_health().last_error {
            return json!({ "refused": error });
        }
        if tokio::time::Instant::now() >= deadline {
            return json!({ "silent": format!("the bridge sent no state and reported no error in {DEADLINE:?}") });
        }
        // A short wait, then the health again: a refused file sends nothing.
        let Ok(frame) = tokio::time::timeout(Duration::from_millis(20), client.next()).await else {
            continue;
        };
        match frame.expect("connection ended").expect("read error") {
            Message::Text(text) => {
                let message: HashMap<String, Box<RawValue>> =
                    serde_json::from_str(text.as_str()).unwrap();
                if message["type"].get() == r#""state""# {
                    return json!({ "data": message["data"].get() });
                }
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}
