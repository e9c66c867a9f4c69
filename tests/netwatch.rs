//! The addresses pairing names, followed live on real interfaces: in a network namespace
//! of its own, an address comes and goes on a veth interface, the interface goes down and
//! up, and the library's watch channel reports each change as it happens.
//!
//! The namespace also gets its own `/etc/hosts` (`ip netns exec` mounts
//! `/etc/netns/NAME/hosts` over it), in which this machine's `NAME.local` leads to the test
//! address: the system resolver (getaddrinfo) then answers for the name the way an mDNS
//! responder would, so the test sees the name become the pairing default when its
//! address arrives and stop being it when the address goes. (This machine runs no avahi;
//! the hosts file stands in for the responder, the resolver is the real one.)
//!
//! Linux and root only, as `lan.rs`: anywhere else the test says why it is skipped and
//! passes. The checks run inside the namespace by re-running this test binary under
//! `ip netns exec`, selecting [`addresses_followed_when_run_inside_the_namespace`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use support::netns::ip;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use workshop_bridge::pairing::{self, NetworkAddresses, PairingHost};

/// Names the interface the checks inside the namespace work on, and its address. Unset,
/// the inner test does nothing.
const INNER_ENV: &str = "WORKSHOP_NETWATCH_INSIDE";
/// The inner test, run by its exact name.
const INNER_TEST: &str = "addresses_followed_when_run_inside_the_namespace";
/// How long one awaited change may take before the test gives up (a hang guard, not a
/// measurement).
const DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn the_watch_channel_follows_addresses_on_real_interfaces() {
    let test = "the_watch_channel_follows_addresses_on_real_interfaces";
    let Some(name) = workshop_bridge::localname::local_name() else {
        support::report::skipped(test, "this machine has no host name");
        return;
    };
    let ns = match Namespace::create(&name) {
        Ok(ns) => ns,
        Err(why) => {
            support::report::skipped(test, why);
            return;
        }
    };
    let output = StdCommand::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(std::env::current_exe().unwrap())
        .args([INNER_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER_ENV, format!("{} {}", ns.interface, ns.address))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the checks inside the namespace failed ({}):\n{text}",
        output.status
    );
    // `1 passed` shows the inner test ran its checks rather than finding nothing to do.
    assert!(
        text.contains("1 passed") && text.contains("netwatch-checked"),
        "{text}"
    );
}

/// Inside the namespace: the checks themselves. Does nothing when run on its own.
#[tokio::test]
async fn addresses_followed_when_run_inside_the_namespace() {
    let Ok(inside) = std::env::var(INNER_ENV) else {
        return;
    };
    let (interface, address) = inside.split_once(' ').unwrap();
    let address: IpAddr = address.parse().unwrap();
    let name = workshop_bridge::localname::local_name().unwrap();
    let with_prefix = format!("{address}/24");
    let config = workshop_bridge::Config {
        port: 8765,
        token: Some("t".into()),
        ..workshop_bridge::Config::default()
    };
    let all: IpAddr = Ipv4Addr::UNSPECIFIED.into();
    let chosen = |net: &NetworkAddresses, preferred: Option<&PairingHost>| {
        pairing::choose_host(all, preferred, net)
    };

    let stop = CancellationToken::new();
    let mut rx = workshop_bridge::netwatch::watch(stop.clone())
        .await
        .unwrap();
    {
        let now = rx.borrow_and_update();
        assert!(
            !has(&now, address),
            "no address yet on {interface}: {now:?}"
        );
        let local = now.local_name.as_ref().unwrap();
        assert_eq!(local.name, name);
        assert!(
            local.addresses.is_empty(),
            "{name} leads to {address}, which is not this namespace's yet: {now:?}"
        );
        assert_eq!(
            chosen(&now, None).host,
            PairingHost::Ip(Ipv4Addr::LOCALHOST.into())
        );
    }

    // A new address (a DHCP lease): reported, and the name now leads here, so pairing
    // names it.
    ip(&["addr", "add", &with_prefix, "dev", interface]);
    let now = until(&mut rx, "the new address", |n| {
        has(n, address)
            && n.local_name
                .as_ref()
                .is_some_and(|l| !l.addresses.is_empty())
    })
    .await;
    assert_eq!(
        now.local_name.as_ref().unwrap().addresses,
        vec![address],
        "{now:?}"
    );
    assert_eq!(now.lan[0].interface, interface, "{now:?}");
    let url = pairing::pairing(&config, &Default::default(), &now)
        .unwrap()
        .url;
    assert_eq!(url, format!("http://{name}:8765/?token=t"));

    // The interface goes down: its address is no longer one to offer.
    ip(&["link", "set", interface, "down"]);
    let now = until(&mut rx, "the interface going down", |n| !has(n, address)).await;
    assert!(now.local_name.unwrap().addresses.is_empty());
    ip(&["link", "set", interface, "up"]);
    until(&mut rx, "the interface coming back", |n| has(n, address)).await;

    // The address goes away: gone from the set; the user's pick of it falls back, and
    // the pairing says so.
    ip(&["addr", "del", &with_prefix, "dev", interface]);
    let now = until(&mut rx, "the address going away", |n| !has(n, address)).await;
    let picked = PairingHost::Ip(address);
    let fallback = chosen(&now, Some(&picked));
    assert_eq!(
        fallback.host,
        PairingHost::Ip(Ipv4Addr::LOCALHOST.into()),
        "{now:?}"
    );
    assert_eq!(
        fallback.note.as_deref(),
        Some(
            format!("{address} is not an address of this machine now, so the pairing URL names 127.0.0.1")
                .as_str()
        )
    );

    // Shutting down ends the watch: the channel closes.
    stop.cancel();
    tokio::time::timeout(DEADLINE, async { while rx.changed().await.is_ok() {} })
        .await
        .expect("the watch ends when its token is cancelled");
    checked();
}

#[allow(
    clippy::print_stdout,
    reason = "the test that started this one checks that the checks ran"
)]
fn checked() {
    println!("netwatch-checked");
}

fn has(net: &NetworkAddresses, address: IpAddr) -> bool {
    net.lan.iter().any(|a| a.ip == address)
}

/// Waits for the channel to hold a set for which `wanted` holds, and returns it.
async fn until(
    rx: &mut watch::Receiver<NetworkAddresses>,
    what: &str,
    wanted: impl Fn(&NetworkAddresses) -> bool,
) -> NetworkAddresses {
    let found = match tokio::time::timeout(DEADLINE, rx.wait_for(|n| wanted(n))).await {
        Ok(Ok(now)) => Some(now.clone()),
        Ok(Err(_)) => panic!("the watch ended while waiting for {what}"),
        Err(_) => None,
    };
    found.unwrap_or_else(|| {
        panic!(
            "the watch did not report {what} within {DEADLINE:?}; it holds {:?}",
            *rx.borrow()
        )
    })
}

/// A network namespace with a veth pair inside it (no address yet) and its own hosts
/// file; all of it removed on drop.
struct Namespace {
    name: String,
    /// The end the checks give an address to.
    interface: String,
    /// The address it gets, which the hosts file gives the `.local` name.
    address: Ipv4Addr,
    /// `/etc/netns/NAME`, the namespace's own files.
    etc: PathBuf,
}

impl Namespace {
    fn create(local_name: &str) -> Result<Self, String> {
        let pid = std::process::id();
        let name = format!("workshop-netwatch-{pid}");
        support::netns::add(&name, "the test")?;
        let ns = Self {
            interface: format!("wn{pid}a"),
            address: Ipv4Addr::new(10, 231, 78, u8::try_from(pid % 250).unwrap() + 2),
            etc: PathBuf::from("/etc/netns").join(&name),
            name,
        };
        let peer = format!("wn{pid}b");
        ip(&[
            "-n",
            &ns.name,
            "link",
            "add",
            &ns.interface,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        for link in ["lo", ns.interface.as_str(), peer.as_str()] {
            ip(&["-n", &ns.name, "link", "set", link, "up"]);
        }
        std::fs::create_dir_all(&ns.etc).unwrap();
        std::fs::write(
            ns.etc.join("hosts"),
            format!("127.0.0.1 localhost\n{} {local_name}\n", ns.address),
        )
        .unwrap();
        Ok(ns)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // The veth pair lives inside the namespace and goes with it.
        if let Err(e) = StdCommand::new("ip")
            .args(["netns", "del", &self.name])
            .status()
        {
            eprintln!(
                "cleaning up: cannot delete the namespace {}: {e}",
                self.name
            );
        }
        if let Err(e) = std::fs::remove_dir_all(&self.etc) {
            eprintln!("cleaning up: cannot remove {}: {e}", self.etc.display());
        }
        // An empty /etc/netns goes too; one holding other namespaces' files stays.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}
