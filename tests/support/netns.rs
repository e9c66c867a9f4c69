//! Network namespaces for the tests that need another network: a client that is not on
//! loopback, addresses that come and go. Linux only, as root.

use std::process::Command;

/// Adds the network namespace `name` for a test `what` needs; `Err` says why this machine
/// cannot (not Linux, not root, no `ip`, or namespaces refused), and the test then skips.
pub fn add(name: &str, what: &str) -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err(format!("{what} needs Linux network namespaces"));
    }
    if let Some(uid) = effective_uid().filter(|uid| *uid != 0) {
        return Err(format!(
            "{what} needs root to create a network namespace (running as uid {uid})"
        ));
    }
    match Command::new("ip").args(["netns", "add", name]).output() {
        Err(e) => Err(format!("cannot run `ip` from iproute2: {e}")),
        Ok(out) if !out.status.success() => Err(format!(
            "`ip netns add` is not possible here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// Runs `ip ARGS`, failing the test with its error if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The effective user id, from `/proc/self/status`; `None` if it cannot be read (then
/// `ip netns add` decides).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
