//! The menu-bar app's entry point; everything is in the library so tests can build it.

// No console window next to the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() -> std::process::ExitCode {
    // `workshop-bridge-app mcp`: the MCP server on standard input and output, no window.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == workshop_bridge_app::mcp::MCP_ARG)
    {
        return workshop_bridge_app::mcp::run();
    }
    workshop_bridge_app::run();
    std::process::ExitCode::SUCCESS
}
