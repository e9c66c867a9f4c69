//! Workshop Bridge in the menu bar.
//!
//! The app runs the same [`workshop_bridge::Bridge`] as the CLI, in-process on Tauri's
//! tokio runtime. The [`controller`] owns it; the [`tray`] and the settings window (plain
//! HTML in `ui/settings/`, talking to the [`commands`]) show it and change it. Settings
//! live in the CLI's config file ([`settings`]).
//!
//! [`run`] builds and runs the app; [`app_builder`] adds the state and the commands to any
//! builder, so tests build the same app on Tauri's mock runtime.

pub mod commands;
pub mod controller;
pub mod logs;
pub mod mcp;
pub mod network;
pub mod settings;
pub mod status;
pub mod tray;

use std::sync::Arc;
use std::time::Duration;

use tauri::webview::PageLoadEvent;
use tauri::{AppHandle, Emitter, Manager, RunEvent, Runtime, WebviewUrl, WebviewWindowBuilder};

use crate::commands::{
    AutostartLoginItem, FileManager, LIVE_EVENT, LoginItems, SECTION_EVENT, SystemFileManager,
};
use crate::controller::{Controller, Paths};
use crate::logs::{KEPT_LINES, LogBuffer};

/// The settings window's label.
pub const SETTINGS_WINDOW: &str = "settings";

/// The argument the login item starts the app with: such a start never opens a window,
/// and a second copy started that way leaves the first alone.
pub const AUTOSTART_ARG: &str = "--autostart";

/// The argument that opens the settings window at start (also used by the WebDriver test,
/// which needs a window to drive).
pub const SETTINGS_ARG: &str = "--settings";

/// Adds the app's state and commands to `builder`.
pub fn app_builder<R: Runtime>(
    builder: tauri::Builder<R>,
    controller: Arc<Controller>,
) -> tauri::Builder<R> {
    builder
        .manage(controller)
        .invoke_handler(tauri::generate_handler![
            commands::get_settings,
            commands::apply_settings,
            commands::regenerate_token,
            commands::start_bridge,
            commands::stop_bridge,
            commands::live,
            commands::pairing,
            commands::set_pairing_address,
            commands::set_start_on_launch,
            commands::get_launch_at_login,
            commands::set_launch_at_login,
            commands::choose_path,
            commands::open_folder,
            commands::mcp_command,
        ])
}

/// Builds and runs the menu-bar app. Returns when the user quits.
pub fn run() {
    let logs = LogBuffer::new(KEPT_LINES);
    logs::init(logs.clone());
    tracing::info!(
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        "the app is starting"
    );
    let paths = match Paths::from_env() {
        Ok(paths) => paths,
        Err(e) => {
            tracing::error!(error = %e, "cannot find where to keep the settings");
            std::process::exit(1);
        }
    };
    let controller = Arc::new(Controller::load(paths, logs));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let autostarted = args.iter().any(|a| a == AUTOSTART_ARG);
    let open_settings =
        args.iter().any(|a| a == SETTINGS_ARG) || (controller.first_run() && !autostarted);

    let builder = tauri::Builder::default()
        // First, so a second copy exits before it sets anything else up.
        .plugin(tauri_plugin_single_instance::init(|app, args, _cwd| {
            // A second launch by the user shows the first copy's settings; a second copy
            // started by the login item (the user also added it by hand, say) does nothing.
            if !args.iter().any(|a| a == AUTOSTART_ARG) {
                show_settings(app, None);
            }
        }))
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec![AUTOSTART_ARG]),
        ))
        .plugin(tauri_plugin_dialog::init());

    let setup_controller = Arc::clone(&controller);
    let app = app_builder(builder, Arc::clone(&controller))
        .setup(move |app| {
            // A menu-bar app: no Dock icon, no app menu.
            #[cfg(target_os = "macos")]
            app.set_activation_policy(tauri::ActivationPolicy::Accessory);

            let handle = app.handle().clone();
            app.manage(LoginItems(Box::new(AutostartLoginItem(handle.clone()))));
            app.manage(FileManager(Box::new(SystemFileManager)));
            tray::create(&handle, &setup_controller.status())?;
            spawn_status_forwarder(&handle, Arc::clone(&setup_controller));
            let network = tokio_util::sync::CancellationToken::new();
            app.manage(network::NetworkWatch(network.clone()));
            network::spawn(&handle, Arc::clone(&setup_controller), network);
            let controller = Arc::clone(&setup_controller);
            tauri::async_runtime::spawn(async move {
                if controller.start_on_launch().await
                    && let Err(e) = controller.start().await
                {
                    tracing::warn!(error = %e, "the bridge did not start with the app");
                }
            });
            #[cfg(unix)]
            spawn_terminate_handler(&handle);
            if open_settings {
                show_settings(&handle, None);
            }
            Ok(())
        })
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "the app cannot start");
            std::process::exit(1);
        }
    };
    app.run(move |app, event| match event {
        // Closing the last window keeps the app in the menu bar; Quit (an exit code) quits.
        RunEvent::ExitRequested {
            code: None, api, ..
        } => api.prevent_exit(),
        RunEvent::Exit => {
            if let Some(network) = app.try_state::<network::NetworkWatch>() {
                network.0.cancel();
            }
            // Tell clients the bridge is going away and finish inbox writes (≤ 2 s).
            tauri::async_runtime::block_on(controller.stop());
        }
        _ => {}
    });
}

/// Shows the settings window (building it if it is not open), at `section` if given.
pub fn show_settings<R: Runtime>(app: &AppHandle<R>, section: Option<&str>) {
    if let Some(window) = app.get_webview_window(SETTINGS_WINDOW) {
        let shown = window
            .show()
            .and_then(|()| window.unminimize())
            .and_then(|()| window.set_focus());
        if let Err(e) = shown {
            tracing::warn!(error = %e, "cannot show the settings window");
        }
        if let Some(section) = section
            && let Err(e) = window.emit(SECTION_EVENT, section)
        {
            tracing::warn!(error = %e, "cannot switch the settings section");
        }
        return;
    }
    let url = match section {
        Some(section) => format!("index.html#{section}"),
        None => "index.html".to_owned(),
    };
    let builder = WebviewWindowBuilder::new(app, SETTINGS_WINDOW, WebviewUrl::App(url.into()))
        .title("Workshop Bridge")
        .inner_size(860.0, 620.0)
        .min_inner_size(760.0, 520.0)
        .center()
        .focused(true)
        .on_page_load(|_, payload| {
            if matches!(payload.event(), PageLoadEvent::Finished) {
                tracing::info!("the settings window has loaded");
            }
        });
    #[cfg(target_os = "macos")]
    let builder = builder
        .title_bar_style(tauri::TitleBarStyle::Overlay)
        .hidden_title(true);
    match builder.build() {
        Ok(window) => {
            tracing::info!("the settings window opened");
            window.on_window_event(|event| {
                // Closing destroys the window and frees its web view (the web process's
                // memory with it); the app stays in the menu bar (`RunEvent::ExitRequested`
                // in `run`) and the next "Settings…" builds a new window from the
                // controller's state.
                if let tauri::WindowEvent::Destroyed = event {
                    tracing::info!("the settings window closed");
                }
            });
        }
        Err(e) => tracing::error!(error = %e, "cannot open the settings window"),
    }
}

/// Keeps the tray and the settings window current: on every status change the tray is
/// redrawn (and the line logged, which is also how the end-to-end test watches it); on
/// any change the window gets a fresh [`controller::Live`].
pub fn spawn_status_forwarder<R: Runtime>(app: &AppHandle<R>, controller: Arc<Controller>) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let mut status = controller.subscribe();
        let mut logs = controller.logs().subscribe();
        let mut shown_line = String::new();
        loop {
            let current = status.borrow_and_update().clone();
            let line = current.line();
            if line != shown_line {
                tray::show_status(&app, &current);
                tracing::info!("status: {line}");
                shown_line = line;
            }
            logs.mark_unchanged();
            let live = controller.live().await;
            if let Err(e) = app.emit(LIVE_EVENT, live) {
                tracing::debug!(error = %e, "cannot send the live panel");
            }
            tokio::select! {
                changed = status.changed() => if changed.is_err() { break },
                changed = logs.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // A burst of log lines becomes one update.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

/// SIGTERM (from launchd when the login item is removed, or `kill`) quits like Quit does,
/// so the bridge shuts down gracefully.
#[cfg(unix)]
fn spawn_terminate_handler<R: Runtime>(app: &AppHandle<R>) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
                tracing::info!("terminated; quitting");
                app.exit(0);
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGTERM"),
        }
    });
}
