//! The commands the settings window calls. Each is a thin call into the [`Controller`];
//! errors come back as sentences (or a [`FormError`] naming fields) the window shows
//! inline.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tauri::{AppHandle, Emitter, Manager, Runtime, State, WebviewWindow};
use workshop_bridge::pairing::PairingHost;

use crate::controller::{Controller, Live, PairingView};
use crate::settings::{FormError, SettingsForm, SettingsView};

/// Event carrying a fresh [`Live`] whenever the status, the clients or the log change.
pub const LIVE_EVENT: &str = "live";
/// Event carrying whether the app launches at login, when it changes.
pub const LOGIN_EVENT: &str = "launch-at-login";
/// Event carrying a fresh [`PairingView`] whenever this machine's addresses change.
pub const PAIRING_EVENT: &str = "pairing";
/// Event naming the section the settings window should show (`pairing`, …).
pub const SECTION_EVENT: &str = "show-section";

/// Launching at login, behind a trait so the commands can be tested without touching the
/// real login items.
pub trait LoginItem: Send + Sync {
    /// Whether the app is registered to launch at login.
    fn is_enabled(&self) -> Result<bool, String>;
    /// Registers or unregisters it.
    fn set_enabled(&self, enabled: bool) -> Result<(), String>;
}

/// The login item the app manages as state.
pub struct LoginItems(pub Box<dyn LoginItem>);

/// The real one: tauri-plugin-autostart (a LaunchAgent on macOS, an XDG autostart entry
/// on Linux).
pub struct AutostartLoginItem<R: Runtime>(pub AppHandle<R>);

impl<R: Runtime> LoginItem for AutostartLoginItem<R> {
    fn is_enabled(&self) -> Result<bool, String> {
        let manager = self
            .0
            .try_state::<tauri_plugin_autostart::AutoLaunchManager>()
            .ok_or("launching at login is not available")?;
        manager.is_enabled().map_err(|e| e.to_string())
    }

    fn set_enabled(&self, enabled: bool) -> Result<(), String> {
        let manager = self
            .0
            .try_state::<tauri_plugin_autostart::AutoLaunchManager>()
            .ok_or("launching at login is not available")?;
        let done = if enabled {
            manager.enable()
        } else {
            manager.disable()
        };
        done.map_err(|e| format!("Cannot change launching at login: {e}"))
    }
}

/// A login item that only remembers (for tests, and where the platform has none).
#[derive(Default)]
pub struct MemoryLoginItem(AtomicBool);

impl LoginItem for MemoryLoginItem {
    fn is_enabled(&self) -> Result<bool, String> {
        Ok(self.0.load(Ordering::SeqCst))
    }

    fn set_enabled(&self, enabled: bool) -> Result<(), String> {
        self.0.store(enabled, Ordering::SeqCst);
        Ok(())
    }
}

/// The settings in effect.
#[tauri::command]
pub async fn get_settings(controller: State<'_, Arc<Controller>>) -> Result<SettingsView, String> {
    Ok(controller.settings().await)
}

/// How an MCP host starts this app's binary as the Workshop's MCP server, for the window
/// to show with a Copy button.
#[tauri::command]
pub fn mcp_command() -> Result<crate::mcp::McpCommand, String> {
    crate::mcp::McpCommand::current()
}

/// Checks the form, restarts the bridge on it and saves it; or says what is wrong.
#[tauri::command]
pub async fn apply_settings(
    controller: State<'_, Arc<Controller>>,
    form: SettingsForm,
) -> Result<SettingsView, FormError> {
    controller.apply(&form).await
}

/// A new token; clients holding the old one are disconnected.
#[tauri::command]
pub async fn regenerate_token(
    controller: State<'_, Arc<Controller>>,
) -> Result<SettingsView, FormError> {
    controller.regenerate_token().await
}

/// Starts the bridge.
#[tauri::command]
pub async fn start_bridge(controller: State<'_, Arc<Controller>>) -> Result<Live, String> {
    controller.start().await?;
    Ok(controller.live().await)
}

/// Stops the bridge.
#[tauri::command]
pub async fn stop_bridge(controller: State<'_, Arc<Controller>>) -> Result<Live, String> {
    controller.stop().await;
    Ok(controller.live().await)
}

/// The live panel's contents.
#[tauri::command]
pub async fn live(controller: State<'_, Arc<Controller>>) -> Result<Live, String> {
    Ok(controller.live().await)
}

/// The pairing URL and its QR code.
#[tauri::command]
pub async fn pairing(controller: State<'_, Arc<Controller>>) -> Result<PairingView, String> {
    controller.pairing().await
}

/// Chooses what the pairing URL names: an address, this machine's `NAME.local` name, or
/// (an empty string) automatic.
#[tauri::command]
pub async fn set_pairing_address(
    controller: State<'_, Arc<Controller>>,
    address: String,
) -> Result<PairingView, String> {
    let address = match address.trim() {
        "" => None,
        a => Some(PairingHost::parse(a)?),
    };
    controller.set_pairing_address(address).await
}

/// Whether the bridge starts with the app.
#[tauri::command]
pub async fn set_start_on_launch(
    controller: State<'_, Arc<Controller>>,
    enabled: bool,
) -> Result<(), String> {
    controller.set_start_on_launch(enabled).await
}

/// Whether the app launches at login.
#[tauri::command]
pub async fn get_launch_at_login(login: State<'_, LoginItems>) -> Result<bool, String> {
    login.0.is_enabled()
}

/// Turns launching at login on or off, and updates the tray's checkbox.
#[tauri::command]
pub async fn set_launch_at_login<R: Runtime>(
    app: AppHandle<R>,
    login: State<'_, LoginItems>,
    enabled: bool,
) -> Result<bool, String> {
    login.0.set_enabled(enabled)?;
    let now = login.0.is_enabled()?;
    login_changed(&app, now);
    Ok(now)
}

/// Tells the tray and the window that launching at login is now `enabled`.
pub fn login_changed<R: Runtime>(app: &AppHandle<R>, enabled: bool) {
    crate::tray::set_login_checked(app, enabled);
    if let Err(e) = app.emit(LOGIN_EVENT, enabled) {
        tracing::debug!(error = %e, "cannot tell the window about the login item");
    }
}

/// Asks the user for a folder (or, for `state_file`, a YAML file) with the system's file
/// dialog; `None` when cancelled.
#[tauri::command]
pub async fn choose_path<R: Runtime>(
    window: WebviewWindow<R>,
    field: String,
    current: String,
) -> Result<Option<String>, String> {
    use tauri_plugin_dialog::DialogExt;

    let (tx, rx) = tokio::sync::oneshot::channel();
    let current = std::path::PathBuf::from(current.trim());
    let start = if current.is_dir() {
        Some(current)
    } else {
        current
            .parent()
            .filter(|p| p.is_dir())
            .map(ToOwned::to_owned)
    };
    let mut dialog = window.dialog().file().set_parent(&window);
    if let Some(dir) = start {
        dialog = dialog.set_directory(dir);
    }
    let send = move |picked: Option<tauri_plugin_dialog::FilePath>| {
        let _ = tx.send(picked);
    };
    match field.as_str() {
        "state_file" => dialog
            .set_title("Choose the agent’s state file")
            .add_filter("YAML", &["yaml", "yml"])
            .pick_file(send),
        "inbox_dir" => dialog
            .set_title("Choose the inbox folder")
            .pick_folder(send),
        "outbox_dir" => dialog
            .set_title("Choose the outbox folder")
            .pick_folder(send),
        other => return Err(format!("no folder setting is called “{other}”")),
    }
    let picked = rx
        .await
        .map_err(|_| "the file dialog closed unexpectedly")?;
    picked
        .map(|p| {
            p.into_path()
                .map(|p| p.display().to_string())
                .map_err(|e| e.to_string())
        })
        .transpose()
}

/// Opens one of the bridge's folders (`inbox_dir`, `outbox_dir`, `config`) in the file
/// manager. The window names the folder, never a path: the path is the one in effect (`~`
/// expanded), so the window cannot make the app open anything else.
#[tauri::command]
pub async fn open_folder(
    controller: State<'_, Arc<Controller>>,
    files: State<'_, FileManager>,
    which: String,
) -> Result<(), String> {
    let folder = Folder::from_name(&which)?;
    show_folder(&controller, files.0.as_ref(), folder).await
}

/// The folders the app shows in the file manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// Where visitor messages arrive.
    Inbox,
    /// Where the agent drops its barks.
    Outbox,
    /// The folder holding the config file.
    Config,
}

impl Folder {
    /// The folder a settings field (or `config`) names.
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name {
            "inbox_dir" => Ok(Self::Inbox),
            "outbox_dir" => Ok(Self::Outbox),
            "config" => Ok(Self::Config),
            other => Err(format!("no folder is called “{other}”")),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Inbox => "inbox folder",
            Self::Outbox => "outbox folder",
            Self::Config => "settings folder",
        }
    }
}

/// Showing a folder in the file manager (Finder on macOS), behind a trait so tests can see
/// which path the app hands over without a file manager opening.
pub trait OpenFolder: Send + Sync {
    /// Opens `path`, an existing folder.
    fn open(&self, path: &Path) -> Result<(), String>;
}

/// The file manager the app manages as state.
pub struct FileManager(pub Box<dyn OpenFolder>);

/// The real one: tauri-plugin-opener (`open` on macOS, `xdg-open` on Linux).
pub struct SystemFileManager;

impl OpenFolder for SystemFileManager {
    fn open(&self, path: &Path) -> Result<(), String> {
        tauri_plugin_opener::open_path(path, None::<&str>)
            .map_err(|e| format!("Cannot open {}: {e}.", path.display()))
    }
}

/// Opens `folder` as the bridge has it now. A folder that is not there yet (the bridge has
/// not run) is made first, one level deep, as the bridge itself would make it.
pub async fn show_folder(
    controller: &Controller,
    files: &dyn OpenFolder,
    folder: Folder,
) -> Result<(), String> {
    let path = match folder {
        Folder::Inbox => controller.inbox_dir().await,
        Folder::Outbox => controller.outbox_dir().await,
        Folder::Config => controller
            .paths()
            .config
            .parent()
            .map(ToOwned::to_owned)
            .ok_or("the config file has no folder")?,
    };
    match std::fs::create_dir(&path) {
        Ok(()) => tracing::info!(dir = %path.display(), "made the {}", folder.noun()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(format!(
                "Cannot make the {} {}: {e}.",
                folder.noun(),
                path.display()
            ));
        }
    }
    files.open(&path)
}
