//! The accept loop: what every TCP connection gets before the router sees it.
//!
//! A per-address connection count (one host cannot take every slot), `TCP_NODELAY` (small
//! messages and acks go out at once, not after the peer's delayed ACK), a deadline for the
//! request headers (a client that trickles them, or never sends them, is cut off) and a
//! bound on their size. `axum::serve` offers none of these, so this is the loop from axum's
//! "serve with hyper" example with them added.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Limits applied to every connection as it is accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AcceptLimits {
    /// Most open connections from one IP address (WebSockets and plain HTTP alike).
    pub(crate) per_address: usize,
    /// Time allowed for a request's headers to arrive.
    pub(crate) header_timeout: Duration,
}

/// Largest request head (request line and headers) read, in bytes; beyond it the client
/// gets `431 Request Header Fields Too Large`. Hyper's smallest allowed buffer.
const MAX_HEADER_BYTES: usize = 8192;

/// Serves `router` on `listener` until `shutdown`; connections still open are asked to
/// finish and tracked by `http_connections`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: AcceptLimits,
    shutdown: CancellationToken,
    http_connections: TaskTracker,
) {
    let counts = AddressCounts::default();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to be freed rather
                    // than spin on an error that will repeat.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let Some(slot) = counts.take(peer.ip(), limits.per_address) else {
            drop(stream);
            continue;
        };
        http_connections.spawn(serve_connection(
            stream,
            peer,
            Arc::new(slot),
            router.clone(),
            limits,
            shutdown.clone(),
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<AddressSlot>,
    router: Router,
    limits: AcceptLimits,
    shutdown: CancellationToken,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(peer = %peer, error = %e, "cannot set TCP_NODELAY");
    }
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        // A WebSocket keeps the slot for as long as it is open (see `server`).
        request.extensions_mut().insert(Arc::clone(&slot));
        router.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
    }
}

/// Open connections per IP address.
#[derive(Clone, Default)]
struct AddressCounts(Arc<Mutex<HashMap<IpAddr, Count>>>);

#[derive(Default)]
struct Count {
    open: usize,
    /// Whether the last connection from this address was refused: the warning is logged
    /// once per run of refusals, so a flood cannot flood the log too.
    refusing: bool,
}

impl AddressCounts {
    /// A slot for one more connection from `ip`, or `None` when it has `limit` open.
    fn take(&self, ip: IpAddr, limit: usize) -> Option<AddressSlot> {
        // Nothing under this lock can panic; recover the guard rather than refuse everyone.
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_default();
        if count.open >= limit {
            if !count.refusing {
                count.refusing = true;
                tracing::warn!(peer = %ip, limit, "connection refused: too many connections from this address");
            }
            return None;
        }
        count.open += 1;
        count.refusing = false;
        Some(AddressSlot {
            ip,
            counts: self.clone(),
        })
    }
}

/// One open connection from an address; gives its place back when dropped.
pub(crate) struct AddressSlot {
    ip: IpAddr,
    counts: AddressCounts,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            count.open = count.open.saturating_sub(1);
            if count.open == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_limit_and_its_slots_back() {
        let counts = AddressCounts::default();
        let a: IpAddr = [192, 168, 1, 20].into();
        let b: IpAddr = [192, 168, 1, 21].into();
        let first = counts.take(a, 2).unwrap();
        let _second = counts.take(a, 2).unwrap();
        assert!(counts.take(a, 2).is_none(), "a third from the same address");
        assert!(
            counts.take(b, 2).is_some(),
            "another address is not affected"
        );
        drop(first);
        assert!(
            counts.take(a, 2).is_some(),
            "a closed connection frees its slot"
        );
    }

    #[test]
    fn addresses_with_nothing_open_are_forgotten() {
        let counts = AddressCounts::default();
        let slot = counts.take([10, 0, 0, 1].into(), 1).unwrap();
        drop(slot);
        assert!(counts.0.lock().unwrap().is_empty());
    }
}
