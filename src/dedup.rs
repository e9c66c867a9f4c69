//! Exactly-once inbox writes for messages re-sent after a reconnect.
//!
//! A client that lost its connection cannot know whether its last messages arrived, so it
//! sends them again with the same `id`. The bridge remembers each (client identity, id) for
//! a few minutes: a repeat is acknowledged again but not written again. Concurrent repeats
//! (the old half-dead socket and the new one) share one write through a `OnceCell`.
//!
//! The table is bounded in time and in bytes, not in entries: ids are chosen by clients,
//! so a count alone would let long ids take any amount of memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

/// Who sent it (the client's stable identity) and the id it gave the message.
type Key = (Box<str>, Box<str>);

/// The ids seen recently, oldest first, bounded in time and in bytes.
#[derive(Debug)]
pub(crate) struct RecentIds {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<Key, Arc<OnceCell<()>>>,
    order: VecDeque<(Instant, Key)>,
    /// What the entries take, as [`cost`] counts it.
    bytes: usize,
}

/// What one entry takes: its two strings, stored twice (map and queue), plus the fixed
/// part (hash-map bucket, queue slot, the `Arc<OnceCell>`), measured at about 100 bytes.
fn cost(key: &Key) -> usize {
    2 * (key.0.len() + key.1.len()) + 128
}

impl RecentIds {
    /// Remembers ids for `ttl`, in at most about `max_bytes` of memory.
    pub(crate) fn new(ttl: Duration, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ttl,
            max_bytes,
        }
    }

    /// The write slot for this message: initialised once the message is on disk.
    pub(crate) fn slot(&self, client: &str, id: &str) -> Arc<OnceCell<()>> {
        let now = Instant::now();
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key: Key = (client.into(), id.into());
        let room = self.max_bytes.saturating_sub(cost(&key));
        while let Some((at, _)) = inner.order.front() {
            let expired = now.duration_since(*at) > self.ttl;
            if !expired && inner.bytes <= room {
                break;
            }
            if let Some((_, old)) = inner.order.pop_front() {
                inner.bytes = inner.bytes.saturating_sub(cost(&old));
                inner.slots.remove(&old);
            }
        }
        if inner.order.is_empty() {
            // Give back what a burst took: an idle table should cost nothing.
            inner.order.shrink_to_fit();
            inner.slots.shrink_to_fit();
        }
        if let Some(slot) = inner.slots.get(&key) {
            return Arc::clone(slot);
        }
        let slot = Arc::new(OnceCell::new());
        inner.bytes += cost(&key);
        inner.slots.insert(key.clone(), Arc::clone(&slot));
        inner.order.push_back((now, key));
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn same_key_shares_a_slot_until_it_expires() {
        let recent = RecentIds::new(Duration::from_secs(60), 64 * 1024);
        let a = recent.slot("tab-1", "\"m1\"");
        a.set(()).unwrap();
        assert!(recent.slot("tab-1", "\"m1\"").initialized());
        assert!(!recent.slot("tab-2", "\"m1\"").initialized());
        tokio::time::advance(Duration::from_secs(61)).await;
        // Touching the map prunes the expired entries.
        let _ = recent.slot("tab-3", "x");
        assert!(!recent.slot("tab-1", "\"m1\"").initialized());
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_in_bytes_whatever_the_ids_length() {
        let recent = RecentIds::new(Duration::from_secs(60), 3 * 130);
        for i in 0..10 {
            recent.slot("c", &i.to_string()).set(()).unwrap();
        }
        assert!(recent.slot("c", "9").initialized());
        assert!(!recent.slot("c", "0").initialized());
        assert!(recent.inner.lock().unwrap().slots.len() <= 3);

        let recent = RecentIds::new(Duration::from_secs(60), 64 * 1024);
        let long = "x".repeat(1000);
        for i in 0..1000 {
            recent.slot("c", &format!("{long}{i}")).set(()).unwrap();
        }
        let inner = recent.inner.lock().unwrap();
        assert!(inner.bytes <= 64 * 1024, "{}", inner.bytes);
        assert!(inner.slots.len() < 40, "{}", inner.slots.len());
    }
}
