//! Following this machine's addresses as they change: an interface going up or down, a
//! new DHCP lease, a VPN connecting.
//!
//! [`watch()`] publishes the current [`NetworkAddresses`] on a `watch` channel and replaces
//! them whenever the system reports a change (netlink on Linux, the routing socket on
//! macOS, through the `netwatcher` crate: no polling). After each change the `.local`
//! name is looked up again, since the addresses it leads to may have changed with it. The
//! menu-bar app subscribes, so its tray status and QR code name an address the machine
//! still has.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::localname::{Resolve, SystemResolver};
use crate::pairing::{NetworkAddresses, lan_of};

/// Starts following the addresses, resolving the `.local` name with the system's
/// resolver, until `shutdown` is cancelled. See [`watch_with`].
pub async fn watch(
    shutdown: CancellationToken,
) -> Result<watch::Receiver<NetworkAddresses>, Error> {
    watch_with(SystemResolver, shutdown).await
}

/// Starts following the addresses until `shutdown` is cancelled (or every receiver is
/// gone). The channel holds the addresses as they were when this returns; each change the
/// system reports replaces them, and receivers are told only when what pairing can name
/// differs. Must run inside a tokio runtime; fails when the system refuses a watch.
pub async fn watch_with<R: Resolve + 'static>(
    resolver: R,
    shutdown: CancellationToken,
) -> Result<watch::Receiver<NetworkAddresses>, Error> {
    let mut interfaces = netwatcher::watch_interfaces_async::<netwatcher::async_adapter::Tokio>()
        .map_err(|e| Error::NetworkWatch(e.to_string()))?;
    // The first update is the current state, at once.
    let first = interfaces.changed().await;
    let current = NetworkAddresses::resolve(lan_of(first.interfaces.values()), &resolver).await;
    let (tx, rx) = watch::channel(current);
    tokio::spawn(async move {
        loop {
            let update = tokio::select! {
                () = shutdown.cancelled() => break,
                () = tx.closed() => break,
                update = interfaces.changed() => update,
            };
            let lan = lan_of(update.interfaces.values());
            let now = NetworkAddresses::resolve(lan, &resolver).await;
            tx.send_if_modified(|held| {
                if *held == now {
                    return false;
                }
                tracing::info!(
                    addresses = ?now.lan.iter().map(|a| a.ip).collect::<Vec<_>>(),
                    local_name = ?now.local_name.as_ref().filter(|n| !n.addresses.is_empty()).map(|n| &n.name),
                    "this machine's addresses changed"
                );
                *held = now;
                true
            });
        }
    });
    Ok(rx)
}
