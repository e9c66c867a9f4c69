//! Following this machine's addresses: when an interface goes up or down or a new DHCP
//! lease arrives, the tray's status line and the pairing view (QR code included) change
//! with them, without restarting the bridge.
//!
//! The library's [`workshop_bridge::netwatch`] reports the changes; each one goes to the
//! [`Controller`] (which redraws the status, and so the tray) and, as a fresh
//! [`PairingView`](crate::controller::PairingView), to the settings window.

use std::sync::Arc;

use tauri::{AppHandle, Emitter, Runtime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use workshop_bridge::pairing::NetworkAddresses;

use crate::commands::PAIRING_EVENT;
use crate::controller::Controller;

/// Stops following the addresses when the app quits (managed as Tauri state).
pub struct NetworkWatch(pub CancellationToken);

/// Starts following the addresses until `shutdown` is cancelled. If the system will not
/// report changes, the addresses are read once and the app goes on without following.
pub fn spawn<R: Runtime>(
    app: &AppHandle<R>,
    controller: Arc<Controller>,
    shutdown: CancellationToken,
) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        match workshop_bridge::netwatch::watch(shutdown).await {
            Ok(addresses) => follow(&app, &controller, addresses).await,
            Err(e) => {
                tracing::warn!(error = %e, "address changes will not be followed");
                let now = NetworkAddresses::current().await;
                if controller.set_network(now).await {
                    send_pairing(&app, &controller).await;
                }
            }
        }
    });
}

/// Hands every address set `addresses` holds (the current one first) to the controller,
/// and a fresh pairing view to the window when something changed. Returns when the
/// channel closes.
pub async fn follow<R: Runtime>(
    app: &AppHandle<R>,
    controller: &Controller,
    mut addresses: watch::Receiver<NetworkAddresses>,
) {
    loop {
        let now = addresses.borrow_and_update().clone();
        if controller.set_network(now).await {
            send_pairing(app, controller).await;
        }
        if addresses.changed().await.is_err() {
            break;
        }
    }
}

async fn send_pairing<R: Runtime>(app: &AppHandle<R>, controller: &Controller) {
    match controller.pairing().await {
        Ok(view) => {
            if let Some(note) = &view.note {
                tracing::info!("{note}");
            }
            if let Err(e) = app.emit(PAIRING_EVENT, view) {
                tracing::debug!(error = %e, "cannot send the pairing view");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot make the pairing view"),
    }
}
