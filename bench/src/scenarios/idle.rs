//! Scenario 4, idle cost: the server's CPU time and wake-ups (context switches of all its
//! threads) first with no client at all, then with 100 idle clients for 60 s. With clients,
//! the heartbeat pings they receive are counted too: a server without polling loops wakes
//! up for its heartbeats and nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::Ctx;
use super::fanout::{AbortOnDrop, wait_until};
use crate::client::{self, Buffers, Ws};
use crate::results::{Better, Metric};
use crate::server::{Kind, Launch, Server};

pub(crate) const ID: u8 = 4;
pub(crate) const CPU: Metric = Metric::new("CPU time", "s", Better::Lower);
pub(crate) const WAKEUPS: Metric = Metric::new("wake-ups", "", Better::Lower);
pub(crate) const WAKEUPS_PER_SEC: Metric = Metric::new("wake-ups per second", "/s", Better::Lower);
pub(crate) const PINGS: Metric = Metric::new("heartbeat pings received", "", Better::Neither);
pub(crate) const PER_PING: Metric = Metric::new("wake-ups per heartbeat ping", "", Better::Lower);
pub(crate) const RSS: Metric = Metric::new("RSS", "MB", Better::Lower);

pub(crate) fn case_empty(secs: u64) -> String {
    format!("no clients, {secs} s")
}

pub(crate) fn case_clients(clients: usize, secs: u64) -> String {
    format!("{clients} idle clients, {secs} s")
}

pub(crate) async fn run(ctx: &mut Ctx, kinds: &[Kind]) -> bool {
    let case = case_clients(ctx.plan.idle_clients, ctx.plan.idle_secs);
    let reps = ctx.plan.reps;
    super::each_server(
        ctx,
        kinds,
        ID,
        &case,
        reps,
        Launch::default(),
        async |ctx, server, _| measure(ctx, server).await,
    )
    .await
}

async fn measure(ctx: &mut Ctx, server: &mut Server) -> Result<()> {
    let plan = ctx.plan.clone();
    let label = server.kind.name();

    // No clients: anything here is a polling loop or a timer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s0 = server.sample()?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(plan.idle_empty_secs)).await;
    let s1 = server.sample()?;
    let secs = t0.elapsed().as_secs_f64();
    let case = case_empty(plan.idle_empty_secs);
    let wakeups = s0.switches_until(&s1) as f64;
    ctx.results.add(ID, &case, CPU, label, s0.cpu_until(&s1));
    ctx.results.add(ID, &case, WAKEUPS, label, wakeups);
    ctx.results
        .add(ID, &case, WAKEUPS_PER_SEC, label, wakeups / secs);

    // Idle clients.
    let n = plan.idle_clients;
    let got_state = Arc::new(AtomicUsize::new(0));
    let pings = Arc::new(AtomicU64::new(0));
    let port = server.port;
    let (clients, failed) = client::open_many(n, plan.connect_concurrency, |_| {
        let got_state = Arc::clone(&got_state);
        let pings = Arc::clone(&pings);
        async move {
            let ws = client::connect(port, "", Buffers::Small).await?;
            Ok(tokio::spawn(idle_client(ws, got_state, Some(pings))))
        }
    })
    .await;
    let _abort = AbortOnDrop(clients);
    if let Some(e) = failed {
        return Err(e.context(format!("connecting {n} idle clients")));
    }
    wait_until(Duration::from_secs(30), || {
        got_state.load(Ordering::Relaxed) >= n
    })
    .await
    .context("not every idle client got the state")?;
    tokio::time::sleep(Duration::from_secs(if plan.quick { 1 } else { 2 })).await;

    let s0 = server.sample()?;
    let p0 = pings.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(plan.idle_secs)).await;
    let s1 = server.sample()?;
    let p1 = pings.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    if got_state.load(Ordering::Relaxed) < n {
        anyhow::bail!("an idle client was disconnected");
    }
    let case = case_clients(n, plan.idle_secs);
    let wakeups = s0.switches_until(&s1) as f64;
    let heartbeats = (p1 - p0) as f64;
    let r = &mut ctx.results;
    r.add(ID, &case, CPU, label, s0.cpu_until(&s1));
    r.add(ID, &case, WAKEUPS, label, wakeups);
    r.add(ID, &case, WAKEUPS_PER_SEC, label, wakeups / secs);
    r.add(ID, &case, PINGS, label, heartbeats);
    if heartbeats > 0.0 {
        r.add(ID, &case, PER_PING, label, wakeups / heartbeats);
    }
    r.add(ID, &case, RSS, label, s1.rss_kib as f64 * 1.024 / 1000.0);
    Ok(())
}

/// A client that only listens: counts itself in `got_state` on its first frame (and out
/// again when the connection ends), and counts pings.
pub(crate) async fn idle_client(
    mut ws: Ws,
    got_state: Arc<AtomicUsize>,
    pings: Option<Arc<AtomicU64>>,
) {
    let mut counted = false;
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(_) | Message::Binary(_) if !counted => {
                counted = true;
                got_state.fetch_add(1, Ordering::Relaxed);
            }
            Message::Ping(_) => {
                if let Some(p) = &pings {
                    p.fetch_add(1, Ordering::Relaxed);
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    if counted {
        got_state.fetch_sub(1, Ordering::Relaxed);
    }
}
