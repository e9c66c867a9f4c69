//! This machine's Bonjour name (`NAME.local`), and whether it answers on the network now.
//!
//! A DHCP lease changes the Mac's address; its `NAME.local` name stays. macOS always
//! publishes that name by Bonjour: it is the LocalHostName setting (System Settings ›
//! General › Sharing › Local hostname). On Linux, avahi publishes the host name with
//! `.local` when it runs. Either way the name is worth putting in a pairing URL only when
//! it resolves, through the system's own resolver, to an address of this machine; the
//! lookup is bounded, so a missing mDNS responder costs a short wait, never a hang.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// How long a lookup of the `.local` name may take before the name counts as not
/// answering. mDNS answers for the machine's own name at once; a resolver without mDNS
/// may instead wait for a DNS server that never answers.
pub const RESOLVE_BOUND: Duration = Duration::from_millis(1500);

/// This machine's `NAME.local` name, lower case: macOS's LocalHostName, elsewhere the host
/// name's first label. `None` if the machine has no name.
pub fn local_name() -> Option<String> {
    #[cfg(target_os = "macos")]
    if let Some(name) = macos_local_host_name() {
        return Some(format!("{name}.local"));
    }
    let host = normalize(&gethostname::gethostname().to_string_lossy());
    let short = host.split('.').next().unwrap_or_default();
    (!short.is_empty()).then(|| format!("{short}.local"))
}

/// The Bonjour name macOS publishes (without `.local`), from `scutil`, the system's own
/// tool for its dynamic store.
#[cfg(target_os = "macos")]
fn macos_local_host_name() -> Option<String> {
    let out = std::process::Command::new("/usr/sbin/scutil")
        .args(["--get", "LocalHostName"])
        .output()
        .ok()?;
    let name = normalize(&String::from_utf8_lossy(&out.stdout));
    (out.status.success() && !name.is_empty()).then_some(name)
}

/// Whether `name` is this machine's `NAME.local` name (any case, with or without the
/// trailing dot).
pub fn is_local_name(name: &str) -> bool {
    local_name().is_some_and(|own| normalize(name) == own)
}

/// Lower case, without surrounding blanks or the one trailing dot of a fully qualified name.
/// One only: `localhost..` or `127.0.0.1..` is no name at all, not the name without its dots.
pub(crate) fn normalize(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Looks names up. The system's resolver in the product ([`SystemResolver`]); tests may put
/// their own in its place.
pub trait Resolve: Send + Sync {
    /// The addresses `name` resolves to.
    fn lookup(&self, name: String) -> impl Future<Output = io::Result<Vec<IpAddr>>> + Send;
}

/// The operating system's resolver (`getaddrinfo`): mDNSResponder on macOS, nss-mdns and
/// avahi on Linux where they are installed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    async fn lookup(&self, name: String) -> io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((name.as_str(), 0))
            .await?
            .map(|a| a.ip())
            .collect())
    }
}

/// Which of `own` (this machine's addresses) `name` resolves to, waiting at most `bound`.
/// Empty when it does not resolve, resolves elsewhere, or takes too long.
pub async fn resolve_to_own<R: Resolve>(
    resolver: &R,
    name: &str,
    own: &[IpAddr],
    bound: Duration,
) -> Vec<IpAddr> {
    match tokio::time::timeout(bound, resolver.lookup(name.to_owned())).await {
        Ok(Ok(found)) => {
            let mut mine: Vec<IpAddr> = found.into_iter().filter(|ip| own.contains(ip)).collect();
            mine.sort();
            mine.dedup();
            mine
        }
        Ok(Err(e)) => {
            tracing::debug!(name, error = %e, "the local name does not resolve");
            Vec::new()
        }
        Err(_) => {
            tracing::debug!(name, ?bound, "the local name did not resolve in time");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers from a fixed list, or never.
    struct Fixed(Option<Vec<IpAddr>>);

    impl Resolve for Fixed {
        async fn lookup(&self, _name: String) -> io::Result<Vec<IpAddr>> {
            match &self.0 {
                Some(found) => Ok(found.clone()),
                None => std::future::pending().await,
            }
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn only_this_machines_addresses_count() {
        let own = ips(&["192.168.1.20", "fd00::5"]);
        let resolver = Fixed(Some(ips(&["10.0.0.1", "192.168.1.20", "192.168.1.20"])));
        let found = resolve_to_own(&resolver, "mac.local", &own, RESOLVE_BOUND).await;
        assert_eq!(found, ips(&["192.168.1.20"]));
        let elsewhere = Fixed(Some(ips(&["10.0.0.1"])));
        assert!(
            resolve_to_own(&elsewhere, "mac.local", &own, RESOLVE_BOUND)
                .await
                .is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_resolver_that_never_answers_does_not_hold_anyone_up() {
        let own = ips(&["192.168.1.20"]);
        let found = resolve_to_own(&Fixed(None), "mac.local", &own, RESOLVE_BOUND).await;
        assert!(found.is_empty());
    }

    #[test]
    fn the_local_name_is_the_host_name_with_local() {
        if let Some(name) = local_name() {
            assert!(
                name.ends_with(".local") && name.len() > ".local".len(),
                "{name}"
            );
            assert_eq!(name, name.to_ascii_lowercase());
            assert!(is_local_name(&format!("{}.", name.to_ascii_uppercase())));
        }
        assert!(!is_local_name("someone-else.local"));
    }
}
