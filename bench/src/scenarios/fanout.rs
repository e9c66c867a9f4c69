//! Scenario 2, fan-out: one agent client publishes barks as fast as the server accepts them
//! (a window of un-acknowledged barks, each carrying an `id`), 1,000 clients receive them.
//! Deliveries per second count every bark that reached a client, over the time from the
//! first bark sent to the last one delivered; clients that fell behind or were dropped are
//! counted, with the close code the server gave.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::Ctx;
use crate::client::{self, BARK_PREFIX, Buffers, Ws};
use crate::results::{Better, Metric};
use crate::server::{Kind, Launch, Server};

pub(crate) const ID: u8 = 2;
pub(crate) const DELIVERIES: Metric = Metric::new("deliveries per second", "/s", Better::Higher);
pub(crate) const ACCEPTED: Metric = Metric::new("barks accepted per second", "/s", Better::Higher);
pub(crate) const DELIVERED: Metric = Metric::new("share delivered", "%", Better::Higher);
pub(crate) const DROPPED: Metric = Metric::new("clients dropped", "", Better::Lower);
pub(crate) const BEHIND: Metric = Metric::new("clients behind at the end", "", Better::Lower);
pub(crate) const DRAIN: Metric = Metric::new("last delivery after last ack", "ms", Better::Lower);

pub(crate) fn case(receivers: usize) -> String {
    format!("{receivers} clients")
}

pub(crate) async fn run(ctx: &mut Ctx, kinds: &[Kind]) -> bool {
    let case = case(ctx.plan.fanout_receivers);
    let reps = ctx.plan.reps;
    let launch = Launch {
        raise_message_rate: true,
        raise_inbox_files: false,
    };
    super::each_server(ctx, kinds, ID, &case, reps, launch, measure).await
}

/// What one receiving client saw.
#[derive(Default)]
struct Seen {
    barks: AtomicU64,
    /// Nanoseconds after the run's base instant.
    last_bark: AtomicU64,
    got_state: AtomicBool,
    /// 0 while open; the close code (1006 for an abrupt end) once closed.
    closed: AtomicU32,
}

async fn measure(ctx: &mut Ctx, server: &mut Server, rep: usize) -> Result<()> {
    let plan = ctx.plan.clone();
    let n = plan.fanout_receivers;
    let base = Instant::now();
    let seen: Arc<Vec<Seen>> = Arc::new((0..n).map(|_| Seen::default()).collect());
    let port = server.port;
    let (readers, failed) = client::open_many(n, plan.connect_concurrency, |i| {
        let seen = Arc::clone(&seen);
        async move {
            let ws = client::connect(port, "", Buffers::Large).await?;
            Ok(tokio::spawn(receive(ws, seen, i, base)))
        }
    })
    .await;
    let _abort = AbortOnDrop(readers);
    if let Some(e) = failed {
        return Err(e.context(format!("connecting {n} clients")));
    }
    wait_until(Duration::from_secs(30), || {
        seen.iter().all(|s| s.got_state.load(Ordering::Relaxed))
    })
    .await
    .context("not every client got the state on connect")?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let publisher = client::connect(port, "", Buffers::Large)
        .await
        .context("the publisher could not connect")?;
    let cpu_before = server.sample()?;
    let published = publish(
        publisher,
        Duration::from_secs_f64(plan.fanout_secs),
        plan.fanout_window,
    )
    .await?;
    server.check_alive()?;

    // Let the server deliver what it accepted, while it makes progress.
    let expected = published.acked;
    let drain_deadline = Instant::now() + plan.fanout_drain;
    let mut last_total = u64::MAX;
    let mut last_progress = Instant::now();
    loop {
        let total: u64 = seen.iter().map(|s| s.barks.load(Ordering::Relaxed)).sum();
        let behind = seen
            .iter()
            .filter(|s| {
                s.closed.load(Ordering::Relaxed) == 0 && s.barks.load(Ordering::Relaxed) < expected
            })
            .count();
        if behind == 0 || Instant::now() >= drain_deadline {
            break;
        }
        if total != last_total {
            last_total = total;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_after = server.sample()?;

    let total: u64 = seen.iter().map(|s| s.barks.load(Ordering::Relaxed)).sum();
    let last_ns = seen
        .iter()
        .map(|s| s.last_bark.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let last_delivery = base + Duration::from_nanos(last_ns);
    let mut closes: BTreeMap<u32, usize> = BTreeMap::new();
    for s in seen.iter() {
        let code = s.closed.load(Ordering::Relaxed);
        if code != 0 {
            *closes.entry(code).or_default() += 1;
        }
    }
    let dropped: usize = closes.values().sum();
    let behind = seen
        .iter()
        .filter(|s| {
            s.closed.load(Ordering::Relaxed) == 0 && s.barks.load(Ordering::Relaxed) < expected
        })
        .count();
    let span = last_delivery
        .max(published.last_ack)
        .saturating_duration_since(published.first_send);
    let deliveries = if total == 0 {
        0.0
    } else {
        total as f64 / span.as_secs_f64().max(1e-9)
    };
    let publish_secs = published
        .last_ack
        .saturating_duration_since(published.first_send)
        .as_secs_f64();
    let label = server.kind.name();
    let case = case(n);
    let r = &mut ctx.results;
    r.add(ID, &case, DELIVERIES, label, deliveries);
    r.add(
        ID,
        &case,
        ACCEPTED,
        label,
        expected as f64 / publish_secs.max(1e-9),
    );
    r.add(
        ID,
        &case,
        DELIVERED,
        label,
        100.0 * total as f64 / (expected as f64 * n as f64).max(1.0),
    );
    super::add_cpu_per_delivery(
        r,
        (ID, &case, label),
        (super::BARK_USER, super::BARK_KERNEL),
        (&cpu_before, &cpu_after),
        total,
    );
    r.add(ID, &case, DROPPED, label, dropped as f64);
    r.add(ID, &case, BEHIND, label, behind as f64);
    r.add(
        ID,
        &case,
        DRAIN,
        label,
        last_delivery
            .saturating_duration_since(published.last_ack)
            .as_secs_f64()
            * 1000.0,
    );
    if dropped > 0 || behind > 0 || published.refused > 0 {
        let codes: Vec<String> = closes
            .iter()
            .map(|(code, k)| format!("{k} closed with {code}"))
            .collect();
        let note = format!(
            "fan-out, {label}, rep {}: {} barks accepted, {} refused; {dropped} of {n} clients dropped ({}), {behind} still behind when the run stopped",
            rep + 1,
            expected,
            published.refused,
            if codes.is_empty() {
                "none".to_owned()
            } else {
                codes.join(", ")
            },
        );
        ctx.progress.say(&note);
        ctx.results.notes.push(note);
    }
    Ok(())
}

struct Published {
    first_send: Instant,
    last_ack: Instant,
    acked: u64,
    refused: u64,
}

/// Sends barks for `duration`, keeping up to `window` of them un-acknowledged, then waits
/// for the last acks.
async fn publish(ws: Ws, duration: Duration, window: usize) -> Result<Published> {
    let (mut sink, mut stream) = ws.split();
    let first_send = Instant::now();
    let end = first_send + duration;
    let (mut sent, mut acked, mut refused) = (0u64, 0u64, 0u64);
    let mut last_ack = first_send;
    loop {
        let in_flight = sent - acked - refused;
        if Instant::now() < end {
            if in_flight < window as u64 {
                for _ in in_flight..window as u64 {
                    let bark = format!(
                        r#"{BARK_PREFIX}"text":"Slowly. But the stones know where they go.","mood":"contemplative","id":{sent}}}"#
                    );
                    sink.feed(Message::text(bark))
                        .await
                        .context("the publisher could not send")?;
                    sent += 1;
                }
                sink.flush().await.context("the publisher could not send")?;
            }
        } else if in_flight == 0 {
            break;
        }
        let frame = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .map_err(|_| anyhow!("the server answered none of {in_flight} barks within 20 s"))?;
        match frame {
            Some(Ok(Message::Text(t))) => {
                let bytes = t.as_bytes();
                if client::is_ack(bytes) {
                    acked += 1;
                    last_ack = Instant::now();
                } else if client::is_error(bytes) {
                    refused += 1;
                }
            }
            Some(Ok(Message::Close(f))) => bail!(
                "the server closed the publisher{}",
                f.map(|f| format!(" ({} {})", f.code, f.reason))
                    .unwrap_or_default()
            ),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("the publisher's connection failed: {e}"),
            None => bail!("the server closed the publisher's connection"),
        }
    }
    let _ = sink.close().await;
    Ok(Published {
        first_send,
        last_ack,
        acked,
        refused,
    })
}

async fn receive(mut ws: Ws, seen: Arc<Vec<Seen>>, i: usize, base: Instant) {
    let Some(me) = seen.get(i) else { return };
    let code = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if client::is_bark(t.as_bytes()) {
                    me.barks.fetch_add(1, Ordering::Relaxed);
                    let ns = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    me.last_bark.store(ns, Ordering::Relaxed);
                } else {
                    me.got_state.store(true, Ordering::Relaxed);
                }
            }
            Some(Ok(Message::Close(f))) => break f.map_or(1005, |f| u32::from(u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break 1006,
        }
    };
    me.closed.store(code, Ordering::Relaxed);
}

/// Aborts the reader tasks when the run ends, however it ends.
pub(crate) struct AbortOnDrop(pub(crate) Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Polls `done` every 10 ms until it holds or `timeout` passes.
pub(crate) async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            bail!("timed out after {}s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
