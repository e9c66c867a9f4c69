//! The menu-bar icon and its menu: the bridge's status at a glance, and every action.
//!
//! Built in code only (not also in `tauri.conf.json`, which would add a second icon).

use std::sync::Arc;

use tauri::image::Image;
use tauri::menu::{CheckMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager, Runtime};

use crate::commands::{FileManager, Folder, LoginItems, login_changed, show_folder};
use crate::controller::Controller;
use crate::status::{BridgeStatus, Look};

const TRAY_ID: &str = "workshop-bridge";

/// The menu items that change while the app runs.
pub struct TrayMenu<R: Runtime> {
    tray: TrayIcon<R>,
    status: MenuItem<R>,
    toggle: MenuItem<R>,
    login: CheckMenuItem<R>,
}

/// Creates the tray icon and its menu, showing `status` and the login item's state.
pub fn create<R: Runtime>(app: &AppHandle<R>, status: &BridgeStatus) -> tauri::Result<()> {
    let login_enabled = app
        .try_state::<LoginItems>()
        .and_then(|l| l.0.is_enabled().ok())
        .unwrap_or(false);
    let status_item = MenuItem::with_id(app, "status", status.line(), false, None::<&str>)?;
    let toggle = MenuItem::with_id(app, "toggle", toggle_text(status), true, None::<&str>)?;
    let login = CheckMenuItem::with_id(
        app,
        "login",
        "Launch at Login",
        true,
        login_enabled,
        None::<&str>,
    )?;
    let menu = Menu::with_items(
        app,
        &[
            &status_item,
            &PredefinedMenuItem::separator(app)?,
            &toggle,
            &MenuItem::with_id(app, "qr", "Show QR Code…", true, None::<&str>)?,
            &MenuItem::with_id(app, "settings", "Settings…", true, Some("CmdOrCtrl+,"))?,
            &MenuItem::with_id(app, "inbox", "Open Inbox Folder", true, None::<&str>)?,
            &PredefinedMenuItem::separator(app)?,
            &login,
            &PredefinedMenuItem::separator(app)?,
            &MenuItem::with_id(
                app,
                "quit",
                "Quit Workshop Bridge",
                true,
                Some("CmdOrCtrl+Q"),
            )?,
        ],
    )?;
    let tray = TrayIconBuilder::with_id(TRAY_ID)
        .icon(icon(status.look()))
        .icon_as_template(cfg!(target_os = "macos"))
        .tooltip(tooltip(status))
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(on_menu_event)
        .build(app)?;
    app.manage(TrayMenu {
        tray,
        status: status_item,
        toggle,
        login,
    });
    Ok(())
}

/// Shows `status`: the line, the Start/Stop item, the icon's look and the tooltip.
pub fn show_status<R: Runtime>(app: &AppHandle<R>, status: &BridgeStatus) {
    let Some(menu) = app.try_state::<TrayMenu<R>>() else {
        return;
    };
    let results = [
        menu.status.set_text(status.line()),
        menu.toggle.set_text(toggle_text(status)),
        menu.tray.set_tooltip(Some(tooltip(status))),
        set_icon(&menu.tray, status.look()),
    ];
    for result in results {
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot update the tray");
        }
    }
}

/// Checks or unchecks "Launch at Login".
pub fn set_login_checked<R: Runtime>(app: &AppHandle<R>, enabled: bool) {
    if let Some(menu) = app.try_state::<TrayMenu<R>>()
        && let Err(e) = menu.login.set_checked(enabled)
    {
        tracing::warn!(error = %e, "cannot update the tray's login item");
    }
}

fn toggle_text(status: &BridgeStatus) -> &'static str {
    if status.is_running() {
        "Stop Bridge"
    } else {
        "Start Bridge"
    }
}

fn tooltip(status: &BridgeStatus) -> String {
    format!("Workshop Bridge — {}", status.line())
}

fn set_icon<R: Runtime>(tray: &TrayIcon<R>, look: Look) -> tauri::Result<()> {
    // Template on macOS (tinted for the menu bar); elsewhere this is a plain `set_icon`.
    tray.set_icon_with_as_template(Some(icon(look)), cfg!(target_os = "macos"))
}

/// The icon for a look: template images (black and alpha) that macOS tints for the menu
/// bar; coloured tiles elsewhere, where panels may be light or dark.
fn icon(look: Look) -> Image<'static> {
    let bytes: &'static [u8] = if cfg!(target_os = "macos") {
        match look {
            Look::Running => include_bytes!("../../icons/tray/template-running.png"),
            Look::Stopped => include_bytes!("../../icons/tray/template-stopped.png"),
            Look::Error => include_bytes!("../../icons/tray/template-error.png"),
        }
    } else {
        match look {
            Look::Running => include_bytes!("../../icons/tray/color-running.png"),
            Look::Stopped => include_bytes!("../../icons/tray/color-stopped.png"),
            Look::Error => include_bytes!("../../icons/tray/color-error.png"),
        }
    };
    // The PNGs are part of the binary and tested; a broken one shows an empty icon rather
    // than taking the app down.
    Image::from_bytes(bytes).unwrap_or_else(|e| {
        tracing::error!(error = %e, "a tray icon does not decode");
        Image::new_owned(vec![0; 4], 1, 1)
    })
}

fn on_menu_event<R: Runtime>(app: &AppHandle<R>, event: MenuEvent) {
    let Some(controller) = app.try_state::<Arc<Controller>>().map(|c| Arc::clone(&c)) else {
        return;
    };
    match event.id().as_ref() {
        "toggle" => {
            tauri::async_runtime::spawn(async move {
                if controller.status().is_running() {
                    controller.stop().await;
                } else if let Err(e) = controller.start().await {
                    tracing::warn!(error = %e, "start from the tray failed");
                }
            });
        }
        "qr" => crate::show_settings(app, Some("pairing")),
        "settings" => crate::show_settings(app, None),
        "inbox" => {
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                let Some(files) = app.try_state::<FileManager>() else {
                    return;
                };
                if let Err(e) = show_folder(&controller, files.0.as_ref(), Folder::Inbox).await {
                    tracing::warn!(error = %e, "cannot open the inbox");
                }
            });
        }
        "login" => toggle_login(app),
        "quit" => app.exit(0),
        _ => {}
    }
}

/// The check item has already flipped its mark; make the login item follow it, or put
/// the mark back if that fails.
fn toggle_login<R: Runtime>(app: &AppHandle<R>) {
    let (Some(menu), Some(login)) = (
        app.try_state::<TrayMenu<R>>(),
        app.try_state::<LoginItems>(),
    ) else {
        return;
    };
    let wanted = menu.login.is_checked().unwrap_or(false);
    if let Err(e) = login.0.set_enabled(wanted) {
        tracing::warn!(error = %e, "cannot change launching at login");
    }
    let now = login.0.is_enabled().unwrap_or(!wanted);
    login_changed(app, now);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn every_icon_decodes() {
        for look in [Look::Running, Look::Stopped, Look::Error] {
            let image = icon(look);
            assert!(image.width() >= 32 && image.height() >= 32, "{look:?}");
        }
    }

    #[test]
    fn the_toggle_offers_the_opposite_of_the_state() {
        assert_eq!(toggle_text(&BridgeStatus::Stopped), "Start Bridge");
        let running = BridgeStatus::Running {
            host: workshop_bridge::pairing::PairingHost::Ip("127.0.0.1".parse().unwrap()),
            port: 1,
            clients: 0,
        };
        assert_eq!(toggle_text(&running), "Stop Bridge");
        assert_eq!(
            tooltip(&running),
            "Workshop Bridge — Running on 127.0.0.1:1 · 0 clients"
        );
    }
}
