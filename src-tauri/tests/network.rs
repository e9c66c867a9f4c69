//! The Mac's addresses change while the bridge runs: the status line (the tray's and the
//! live panel's) and the pairing view the window receives follow, on the mock runtime,
//! with a real bridge behind them. The address sets are handed in on a watch channel, as
//! the library's watcher publishes them (that watcher is tested on real interfaces in the
//! library's `tests/netwatch.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tauri::Listener;
use tauri::test::{mock_builder, mock_context, noop_assets};
use tokio::sync::{mpsc, watch};
use workshop_bridge::Config;
use workshop_bridge::pairing::{LanAddress, LocalName, NetworkAddresses, PairingHost};
use workshop_bridge_app::commands::{LIVE_EVENT, PAIRING_EVENT};
use workshop_bridge_app::controller::{Controller, Paths};
use workshop_bridge_app::logs::LogBuffer;
use workshop_bridge_app::{app_builder, network, spawn_status_forwarder};

mod support;
use support::free_port;

/// How long one awaited event may take (a hang guard, not a measurement).
const DEADLINE: Duration = Duration::from_secs(20);

fn set(lan: &[(&str, &str)], name_leads_to: &[&str]) -> NetworkAddresses {
    NetworkAddresses {
        lan: lan
            .iter()
            .map(|(interface, ip)| LanAddress {
                interface: (*interface).into(),
                ip: ip.parse().unwrap(),
            })
            .collect(),
        local_name: Some(LocalName {
            name: "mac.local".into(),
            addresses: name_leads_to.iter().map(|ip| ip.parse().unwrap()).collect(),
        }),
    }
}

/// Waits for the next event payload on `rx` for which `wanted` holds.
async fn next(
    rx: &mut mpsc::Receiver<Value>,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let value = rx.recv().await.expect("the app went away");
            if wanted(&value) {
                return value;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
}

/// Forwards every payload of `event` to a channel the test awaits.
fn events(app: &tauri::App<tauri::test::MockRuntime>, event: &str) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel(64);
    app.listen_any(event, move |e| {
        let _ = tx.try_send(serde_json::from_str(e.payload()).unwrap());
    });
    rx
}

#[test]
fn a_new_address_reaches_the_status_line_and_the_pairing_view() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = Config {
        port,
        bind: "0.0.0.0".parse().unwrap(),
        token: Some("t0ken-0123456789abcdefghijklmnop".into()),
        state_file: dir.path().join("state.yaml"),
        inbox_dir: dir.path().join("inbox"),
        outbox_dir: dir.path().join("outbox"),
        ..Config::default()
    };
    let paths = Paths::beside(dir.path().join("config.toml"));
    let controller = Arc::new(Controller::with_config(paths, config, LogBuffer::new(50)));
    let app = app_builder(mock_builder(), Arc::clone(&controller))
        .build(mock_context(noop_assets()))
        .unwrap();
    let mut pairing = events(&app, PAIRING_EVENT);
    let mut live = events(&app, LIVE_EVENT);
    let line = |host: &str| format!("Running on {host}:{port} · 0 clients");
    let running_on = |host: String| move |v: &Value| v["line"] == host;

    tauri::async_runtime::block_on(async {
        controller.start().await.unwrap();
        // The tray is redrawn from the same loop that sends the live panel its line.
        spawn_status_forwarder(app.handle(), Arc::clone(&controller));
        let (tx, rx) = watch::channel(set(&[("en0", "192.0.2.77")], &[]));
        let handle = app.handle().clone();
        let follower = Arc::clone(&controller);
        tauri::async_runtime::spawn(async move { network::follow(&handle, &follower, rx).await });

        // Wi-Fi on 192.0.2.77, the Bonjour name not answering: the address it is.
        let view = next(&mut pairing, "pairing view on 192.0.2.77", |v| {
            v["host"] == "192.0.2.77"
        })
        .await;
        assert_eq!(
            view["url"],
            format!("http://192.0.2.77:{port}/?token=t0ken-0123456789abcdefghijklmnop")
        );
        assert_eq!(view["local_name"]["name"], "mac.local");
        next(
            &mut live,
            "status on 192.0.2.77",
            running_on(line("192.0.2.77")),
        )
        .await;

        // The user picks that address; then the lease changes and the name answers at
        // the new one: the URL names the name, and says why the pick is not used.
        controller
            .set_pairing_address(Some(PairingHost::parse("192.0.2.77").unwrap()))
            .await
            .unwrap();
        tx.send(set(&[("en0", "198.51.100.5")], &["198.51.100.5"]))
            .unwrap();
        let view = next(&mut pairing, "pairing view on mac.local", |v| {
            v["host"] == "mac.local"
        })
        .await;
        assert_eq!(
            view["url"],
            format!("http://mac.local:{port}/?token=t0ken-0123456789abcdefghijklmnop")
        );
        assert_eq!(
            view["note"],
            "192.0.2.77 is not an address of this machine now, so the pairing URL names mac.local"
        );
        assert_eq!(view["addresses"][0]["ip"], "198.51.100.5");
        next(
            &mut live,
            "status on mac.local",
            running_on(line("mac.local")),
        )
        .await;
        assert_eq!(controller.status().line(), line("mac.local"));

        // The name stops answering (the responder went away): the address stands in.
        tx.send(set(&[("en0", "198.51.100.5")], &[])).unwrap();
        next(&mut pairing, "pairing view on 198.51.100.5", |v| {
            v["host"] == "198.51.100.5"
        })
        .await;
        next(
            &mut live,
            "status on 198.51.100.5",
            running_on(line("198.51.100.5")),
        )
        .await;

        // Asking for another machine's name is refused.
        let err = controller
            .set_pairing_address(Some(PairingHost::parse("other.local").unwrap()))
            .await
            .unwrap_err();
        assert_eq!(err, "“other.local” is not this Mac’s name on the network.");
        controller.stop().await;
    });
}
