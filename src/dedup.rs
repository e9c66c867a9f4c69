//! Exactly-once inbox writes for messages re-sent after a reconnect.
//!
//! A client that lost its connection cannot know whether its last messages arrived, so it
//! sends them again with the same `id`. The bridge remembers each (client identity, id) for
//! a few minutes: a repeat is acknowledged again but not written again. Concurrent repeats
//! (the old half-dead socket and the new one) share one write through a `OnceCell`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

/// Who sent it (the client's stable identity) and the id it gave the message.
type Key = (Box<str>, Box<str>);

/// The ids seen recently, oldest first, bounded in time and in number.
#[derive(Debug)]
pub(crate) struct RecentIds {
    inner: Mutex<Inner>,
    ttl: Duration,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<Key, Arc<OnceCell<()>>>,
    order: VecDeque<(Instant, Key)>,
}

impl RecentIds {
    /// Remembers ids for `ttl`, and at most `capacity` of them.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ttl,
            capacity,
        }
    }

    /// The write slot for this message: initialised once the message is on disk.
    pub(crate) fn slot(&self, client: &str, id: &str) -> Arc<OnceCell<()>> {
        let now = Instant::now();
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((at, _)) = inner.order.front() {
            let expired = now.duration_since(*at) > self.ttl;
            if !expired && inner.order.len() < self.capacity {
                break;
            }
            if let Some((_, key)) = inner.order.pop_front() {
                inner.slots.remove(&key);
            }
        }
        let key: Key = (client.into(), id.into());
        if let Some(slot) = inner.slots.get(&key) {
            return Arc::clone(slot);
        }
        let slot = Arc::new(OnceCell::new());
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
        let recent = RecentIds::new(Duration::from_secs(60), 100);
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
    async fn bounded_in_number() {
        let recent = RecentIds::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            recent.slot("c", &i.to_string()).set(()).unwrap();
        }
        assert!(recent.slot("c", "9").initialized());
        assert!(!recent.slot("c", "0").initialized());
        let inner = recent.inner.lock().unwrap();
        assert!(inner.slots.len() <= 3);
    }
}
