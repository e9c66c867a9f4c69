//! The state file reader: any text is read or refused in one line, and what is read goes to
//! clients as JSON that reads back as the same document.
//!
//! Hostile documents (alias bombs, deep nesting) must be refused by the reader's budgets;
//! libFuzzer's `-timeout` and `-rss_limit_mb` turn one that is read slowly or hugely into a
//! failure.
//!
//! The YAML parser, libyaml-safer, panics on a few inputs (`[!tag, x]` reaches a
//! `panic!("TODO")` in its tag scanner); the reader catches those and refuses the file. Those
//! panics, and only those, are let through to the reader here: any other panic still ends
//! the run as a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use workshop_bridge::fuzzing;

fuzz_target!(
    init: fuzzing::crash_on_panics_outside_the_yaml_parser(),
    |data: &[u8]| {
    // The reader refuses a file that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match fuzzing::state_to_json(text) {
        Ok(None) => {}
        Ok(Some(json)) => {
            // What every client is sent: JSON, on one line. (Checked for its syntax only:
            // integers keep every digit, beyond what serde_json's numbers hold.)
            serde_json::from_str::<serde::de::IgnoredAny>(&json)
                .unwrap_or_else(|e| panic!("clients cannot read {json}: {e}"));
            assert!(!json.contains('\n'), "a raw line break in {json}");
            // Read back by the bridge's own JSON rules, it is the same text: nothing was
            // lost or reordered on the way out.
            let again = fuzzing::state_to_json(&json)
                .unwrap_or_else(|e| panic!("the bridge cannot read its own {json}: {e}"));
            assert_eq!(again.as_deref(), Some(json.as_str()), "another document came back");
        }
        Err(message) => {
            assert!(
                message.starts_with("invalid YAML: ")
                    || message.starts_with("the state file is beyond the bridge's limits: "),
                "an error that says neither what nor why: {message:?}"
            );
            assert!(
                !message.contains(['\n', '\r']),
                "the status API and the logs take one line: {message:?}"
            );
        }
    }
    }
);
