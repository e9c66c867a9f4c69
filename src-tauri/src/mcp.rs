//! The app's binary answers `mcp` as the CLI does: the MCP server over standard input and
//! output, no window, no tray. The app is often installed without the CLI, so the
//! settings window offers this very binary to agents.

use std::path::Path;
use std::process::ExitCode;

use workshop_bridge::{Config, Overrides};

use crate::controller::Paths;

/// The argument that runs the MCP server instead of the app.
pub const MCP_ARG: &str = "mcp";

/// What the settings window shows: how an MCP host starts this binary's server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct McpCommand {
    /// The program to run.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// `claude mcp add workshop -- PROGRAM mcp`, quoted for a shell.
    pub claude: String,
}

impl McpCommand {
    /// The command for the binary at `program`.
    pub fn for_program(program: &Path) -> Self {
        let program = program.display().to_string();
        Self {
            claude: format!(
                "claude mcp add workshop -- {} {MCP_ARG}",
                shell_quoted(&program)
            ),
            program,
            args: vec![MCP_ARG.to_owned()],
        }
    }

    /// The command for this running binary.
    pub fn current() -> Result<Self, String> {
        std::env::current_exe()
            .map(|exe| Self::for_program(&exe))
            .map_err(|e| format!("cannot tell where the app's program is: {e}"))
    }
}

/// `s` as one shell word: as it is when it is plain, else in single quotes.
fn shell_quoted(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'.' | b'-' | b'_' | b'+' | b':' | b'@' | b'%' | b','
                )
        });
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs the MCP server on the settings the app uses (the config file, then the
/// `WORKSHOP_BRIDGE_*` variables), logging to standard error only.
pub fn run() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> Result<(), String> {
    let paths = Paths::from_env().map_err(|e| e.to_string())?;
    let mut config = Config::load(&paths.config).map_err(|e| e.to_string())?;
    let mut env = Overrides::from_env();
    for problem in env.problems() {
        tracing::warn!("{problem}; the other settings apply");
    }
    env.apply_to(&mut config);
    config.validate().map_err(|e| e.to_string())?;
    tauri::async_runtime::block_on(workshop_bridge::mcp::serve_stdio(config))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_names_this_program_quoted_for_a_shell() {
        let plain = McpCommand::for_program(Path::new("/usr/bin/workshop-bridge-app"));
        assert_eq!(
            plain.claude,
            "claude mcp add workshop -- /usr/bin/workshop-bridge-app mcp"
        );
        assert_eq!(plain.args, ["mcp"]);
        let spaced = McpCommand::for_program(Path::new(
            "/Applications/Workshop Bridge.app/Contents/MacOS/workshop-bridge-app",
        ));
        assert_eq!(
            spaced.claude,
            "claude mcp add workshop -- '/Applications/Workshop Bridge.app/Contents/MacOS/workshop-bridge-app' mcp"
        );
        assert_eq!(shell_quoted("it's"), r"'it'\''s'");
    }
}
