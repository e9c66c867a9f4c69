//! The menu-bar app's entry point; everything is in the library so tests can build it.

// No console window next to the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    workshop_bridge_app::run();
}
