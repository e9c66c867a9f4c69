//! A change to the state file: reading only the top-level entries that changed gives what
//! reading the whole file gives, value, layout and error alike.
//!
//! The input is the old text, a 0xFF byte (never part of UTF-8), and the new text; without
//! one, the new text is the old with its middle third reversed by lines, so plain inputs
//! still make a change that keeps a head and a tail.
//!
//! As in `yaml_state`, the panics libyaml-safer reaches on a few inputs are caught by the
//! reader and let through here; any other panic ends the run as a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use workshop_bridge::fuzzing;

fuzz_target!(
    init: fuzzing::crash_on_panics_outside_the_yaml_parser(),
    |data: &[u8]| {
    let (old, new) = match data.iter().position(|&b| b == 0xFF) {
        Some(at) => (&data[..at], data[at + 1..].to_vec()),
        None => (data, middle_reversed(data)),
    };
    let (Ok(old), Ok(new)) = (std::str::from_utf8(old), String::from_utf8(new)) else {
        return;
    };
    if let Some((changed, full)) = fuzzing::state_change_readings(old, &new) {
        assert_eq!(changed, full, "{old:?} -> {new:?}");
    }
    }
);

/// `text` with the lines of its middle third in reverse order.
fn middle_reversed(text: &[u8]) -> Vec<u8> {
    let mut lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let (third, len) = (lines.len() / 3, lines.len());
    lines[third..len - third].reverse();
    lines.concat()
}
