//! What the bridge is doing, in the words the tray menu shows.

use serde::Serialize;
use workshop_bridge::pairing::PairingHost;

/// The longest error text the tray menu shows; the settings window shows all of it.
const MAX_ERROR_CHARS: usize = 60;

/// The bridge's state as the app shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum BridgeStatus {
    /// Not running (stopped by the user, or not started yet).
    Stopped,
    /// Serving.
    Running {
        /// What other devices use: the pairing host (the `.local` name or a LAN address)
        /// when bound to all addresses.
        host: PairingHost,
        /// The port it listens on.
        port: u16,
        /// Connected clients.
        clients: usize,
    },
    /// It could not start; the sentence says why.
    Error {
        /// The full sentence.
        message: String,
    },
}

impl BridgeStatus {
    /// The tray menu's status line: `Running on mac.local:8765 · 2 clients`, `Stopped`,
    /// `Error: port 8765 is already in use on 0.0.0.0`.
    pub fn line(&self) -> String {
        match self {
            Self::Stopped => "Stopped".to_owned(),
            Self::Running {
                host,
                port,
                clients,
            } => {
                let plural = if *clients == 1 { "" } else { "s" };
                format!(
                    "Running on {} · {clients} client{plural}",
                    host.authority(*port)
                )
            }
            Self::Error { message } => format!("Error: {}", short_error(message)),
        }
    }

    /// Whether the bridge is serving.
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running { .. })
    }

    /// Which look the tray icon takes.
    pub fn look(&self) -> Look {
        match self {
            Self::Stopped => Look::Stopped,
            Self::Running { .. } => Look::Running,
            Self::Error { .. } => Look::Error,
        }
    }
}

/// The three looks of the tray icon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Solid glyph.
    Running,
    /// Faded glyph.
    Stopped,
    /// Faded glyph with an exclamation badge.
    Error,
}

/// The first clause of an error sentence, cut to fit a menu.
///
/// The library's sentences put the advice after a semicolon ("port 8765 is already in use
/// on 0.0.0.0; stop the other program or …"); the menu has room for the fact only.
fn short_error(message: &str) -> String {
    let first = message.split(';').next().unwrap_or(message).trim();
    if first.chars().count() <= MAX_ERROR_CHARS {
        return first.to_owned();
    }
    let cut: String = first.chars().take(MAX_ERROR_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn running(host: &str, port: u16, clients: usize) -> BridgeStatus {
        BridgeStatus::Running {
            host: PairingHost::parse(host).unwrap(),
            port,
            clients,
        }
    }

    #[test]
    fn running_names_the_address_and_counts_clients() {
        assert_eq!(
            running("192.168.1.20", 8765, 2).line(),
            "Running on 192.168.1.20:8765 · 2 clients"
        );
        assert_eq!(
            running("192.168.1.20", 8765, 1).line(),
            "Running on 192.168.1.20:8765 · 1 client"
        );
        assert_eq!(
            running("192.168.1.20", 8765, 0).line(),
            "Running on 192.168.1.20:8765 · 0 clients"
        );
        assert_eq!(
            running("fd00::5", 8765, 3).line(),
            "Running on [fd00::5]:8765 · 3 clients"
        );
        assert_eq!(
            running("mac.local", 8765, 1).line(),
            "Running on mac.local:8765 · 1 client"
        );
    }

    #[test]
    fn stopped_says_so() {
        assert_eq!(BridgeStatus::Stopped.line(), "Stopped");
        assert!(!BridgeStatus::Stopped.is_running());
        assert_eq!(BridgeStatus::Stopped.look(), Look::Stopped);
    }

    #[test]
    fn errors_keep_the_fact_and_drop_the_advice() {
        let status = BridgeStatus::Error {
            message: "port 8765 is already in use on 0.0.0.0; stop the other program or choose another port with --port".into(),
        };
        assert_eq!(
            status.line(),
            "Error: port 8765 is already in use on 0.0.0.0"
        );
        assert_eq!(status.look(), Look::Error);
    }

    #[test]
    fn long_errors_are_cut_with_an_ellipsis() {
        let status = BridgeStatus::Error {
            message: format!(
                "the inbox directory /Users/timmy/{} is not writable",
                "x".repeat(80)
            ),
        };
        let line = status.line();
        assert!(line.ends_with('…'), "{line}");
        assert_eq!(line.chars().count(), "Error: ".len() + MAX_ERROR_CHARS);
    }
}
