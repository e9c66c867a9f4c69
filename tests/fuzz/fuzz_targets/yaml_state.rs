//! The state file reader: any text is read or refused in one line, and what is read goes to
//! clients as JSON that reads back as the same document.
//!
//! Hostile documents (alias bombs, deep nesting) must be refused by the reader's budgets;
//! libFuzzer's `-timeout` and `-rss_limit_mb` turn one that is read slowly or hugely into a
//! failure.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use workshop_bridge::fuzzing;

fuzz_target!(|data: &[u8]| {
    // The reader refuses a file that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match fuzzing::parse_yaml(text) {
        Ok(None) => assert!(text.trim().is_empty(), "non-blank text read as nothing"),
        Ok(Some(value)) => {
            assert!(!text.trim().is_empty(), "blank text read as {value}");
            // What every client is sent, and what it reads back.
            let json = serde_json::to_string(&value)
                .unwrap_or_else(|e| panic!("cannot send {value:?} as JSON: {e}"));
            let back: Value = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("clients cannot read {json}: {e}"));
            assert_eq!(back, value, "the JSON sent is another document");
            assert_eq!(
                serde_json::to_string(&back).ok().as_deref(),
                Some(json.as_str()),
                "the keys' order changed on the way"
            );
        }
        Err(message) => {
            assert!(
                message.starts_with("invalid YAML: ")
                    || message
                        .starts_with("the state file expands beyond what the bridge will read: "),
                "an error that says neither what nor why: {message:?}"
            );
            assert!(
                !message.contains(['\n', '\r']),
                "the status API and the logs take one line: {message:?}"
            );
        }
    }
});
