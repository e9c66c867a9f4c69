//! The state across nodes: the origin puts each snapshot once into a JetStream key-value
//! bucket (history 1: the last value is all there is); each relay watches the key, so it
//! gets the current state as soon as it joins or comes back, then every change.
//!
//! The value is three lines: a header (`{"run":…,"seq":…}`), the `state` message exactly
//! as the origin's own clients get it, and the `state_patch` from the state before, if any
//! (the JSON the bridge writes never holds a raw newline). A relay serves the patch only
//! when it has the state before it from the same run of the origin; else its clients get
//! the whole state, as after any gap.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::{Link, subject};
use crate::state::{Snapshot, SnapshotRx, StateHealth};

/// How long to wait before trying again when NATS refused or is away.
const RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    /// The origin's run: its seqs start again at 1 when it restarts.
    run: String,
    seq: u64,
}

/// The bucket, made if it is not there yet. Made as a stream with the settings of a
/// key-value bucket (history 1) rather than through the client's own call, which first asks
/// for account details that NATS 2.9 words differently.
async fn bucket(link: &Link) -> Result<async_nats::jetstream::kv::Store, String> {
    let js = async_nats::jetstream::new(link.client().clone());
    if let Ok(store) = js.get_key_value(subject::STATE_BUCKET).await {
        return Ok(store);
    }
    let made = js
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: format!("KV_{}", subject::STATE_BUCKET),
            description: Some("the Workshop's last state".to_owned()),
            subjects: vec![format!("$KV.{}.>", subject::STATE_BUCKET)],
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: 1,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await;
    match js.get_key_value(subject::STATE_BUCKET).await {
        Ok(store) => Ok(store),
        Err(e) => Err(match made {
            Err(made) => format!("cannot make the state's bucket: {made}"),
            Ok(_) => format!("cannot open the state's bucket: {e}"),
        }),
    }
}

/// The origin's side: puts every new snapshot, and the current one again whenever the link
/// comes back (the server may have lost it).
pub(crate) async fn publish(
    link: Link,
    mut snapshots: SnapshotRx,
    reconnected: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let run = link.node().to_owned();
    let mut store = None;
    // Whether the newest snapshot still has to be put.
    let mut pending = true;
    loop {
        if pending {
            let newest = snapshots.borrow_and_update().clone();
            match newest {
                None => pending = false,
                Some(snapshot) => match put(&link, &mut store, &run, &snapshot).await {
                    Ok(()) => pending = false,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot publish the state to the cluster; retrying");
                    }
                },
            }
        }
        let retry = async {
            if pending {
                tokio::time::sleep(RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                pending = true;
            }
            () = reconnected.notified() => pending = true,
            () = retry => {}
        }
    }
}

async fn put(
    link: &Link,
    store: &mut Option<async_nats::jetstream::kv::Store>,
    run: &str,
    snapshot: &Snapshot,
) -> Result<(), String> {
    let kv = match store {
        Some(kv) => kv,
        None => store.insert(bucket(link).await?),
    };
    let header = serde_json::to_string(&Header {
        run: run.to_owned(),
        seq: snapshot.seq,
    })
    .map_err(|e| e.to_string())?;
    let mut value = Vec::with_capacity(
        header.len() + snapshot.full.len() + snapshot.patch.as_ref().map_or(0, |p| p.len()) + 2,
    );
    value.extend_from_slice(header.as_bytes());
    value.push(b'\n');
    value.extend_from_slice(snapshot.full.as_bytes());
    if let Some(patch) = &snapshot.patch {
        value.push(b'\n');
        value.extend_from_slice(patch.as_bytes());
    }
    let max = link.client().server_info().max_payload;
    if max > 0 && value.len() > max {
        // Trying again would not help: said once per state, and the next state is tried.
        tracing::warn!(
            seq = snapshot.seq,
            bytes = value.len(),
            max_payload = max,
            "the state is larger than the NATS server takes in one message (its max_payload); relays keep the last state they had"
        );
        return Ok(());
    }
    kv.put(subject::STATE_KEY, value.into())
        .await
        .map_err(|e| e.to_string())?;
    tracing::debug!(seq = snapshot.seq, "state published to the cluster");
    Ok(())
}

/// A relay's side: watches the key from its last value on, and starts over whenever the
/// watch ends or the link comes back. Until the first value comes, clients get no state.
pub(crate) async fn follow(
    link: Link,
    publish: watch::Sender<Option<Arc<Snapshot>>>,
    health: Arc<Mutex<StateHealth>>,
    reconnected: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut last: Option<Header> = None;
    set_health(
        &health,
        None,
        Some("waiting for the origin's state through the cluster"),
    );
    loop {
        let watched = async {
            let kv = bucket(&link).await?;
            let mut watch = kv
                .watch_with_history(subject::STATE_KEY)
                .await
                .map_err(|e| e.to_string())?;
            while let Some(entry) = watch.next().await {
                let entry = entry.map_err(|e| e.to_string())?;
                if entry.operation != async_nats::jetstream::kv::Operation::Put {
                    continue;
                }
                match read(&entry.value, last.as_ref()) {
                    Ok(Some((header, snapshot))) => {
                        tracing::info!(
                            seq = header.seq,
                            bytes = snapshot.full.len(),
                            "state changed (from the origin)"
                        );
                        set_health(&health, Some(header.seq), None);
                        last = Some(header);
                        publish.send_replace(Some(Arc::new(snapshot)));
                    }
                    Ok(None) => set_health(&health, last.as_ref().map(|h| h.seq), None),
                    Err(e) => {
                        tracing::warn!(error = %e, "refused a state from the cluster; keeping the last");
                        set_health(&health, last.as_ref().map(|h| h.seq), Some(&e));
                    }
                }
            }
            Err::<(), String>("the watch ended".to_owned())
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = reconnected.notified() => continue,
            Err(e) = watched => {
                tracing::debug!(error = %e, "watching the cluster's state again");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = reconnected.notified() => {}
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// The snapshot in a value, unless it is the one the relay has.
fn read(value: &[u8], last: Option<&Header>) -> Result<Option<(Header, Snapshot)>, String> {
    let text = std::str::from_utf8(value).map_err(|_| "a state that is not UTF-8".to_owned())?;
    let mut lines = text.splitn(3, '\n');
    let header: Header = lines
        .next()
        .and_then(|h| serde_json::from_str(h).ok())
        .ok_or_else(|| "a state without its header".to_owned())?;
    let full = lines
        .next()
        .filter(|f| f.starts_with("{\"type\":\"state\""))
        .ok_or_else(|| "a value that is not a state".to_owned())?;
    if last.is_some_and(|l| l.run == header.run && l.seq == header.seq) {
        return Ok(None);
    }
    let follows = last.is_some_and(|l| l.run == header.run && l.seq + 1 == header.seq);
    let patch = lines
        .next()
        .filter(|_| follows)
        .map(|p| Utf8Bytes::from(p.to_owned()));
    let snapshot = Snapshot {
        seq: header.seq,
        full: Utf8Bytes::from(full.to_owned()),
        patch,
    };
    Ok(Some((header, snapshot)))
}

fn set_health(health: &Mutex<StateHealth>, seq: Option<u64>, error: Option<&str>) {
    if let Ok(mut h) = health.lock() {
        if let Some(seq) = seq {
            h.seq = seq;
            h.last_load = Some(SystemTime::now());
        }
        h.last_error = error.map(ToOwned::to_owned);
    }
}
