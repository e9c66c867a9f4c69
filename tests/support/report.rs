//! Lines for the test command's final summary: what a test measured, or why it could not run
//! its setup. Cargo captures the output of passing tests, so a skip printed there is never
//! seen; `scripts/test` names a file in `WORKSHOP_BRIDGE_TEST_REPORT` and prints it at the end.

use std::fmt::Display;
use std::io::Write;

/// Adds one line to the summary (and to the test's own output).
pub fn note(line: impl Display) {
    let line = line.to_string();
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("WORKSHOP_BRIDGE_TEST_REPORT") {
        // One `write` of one line with O_APPEND: tests running in parallel do not interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "cannot add to the test report {}: {e}",
                path.to_string_lossy()
            );
        }
    }
}

/// Records that a test could not run its setup and checked nothing.
pub fn skipped(test: &str, reason: impl Display) {
    note(format_args!("SKIPPED {test}: {reason}"));
}
