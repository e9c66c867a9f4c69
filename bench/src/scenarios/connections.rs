//! Scenario 3, connections: idle clients are opened (64 handshakes at a time) until 10,000
//! or the first failure; the server's RSS per connection and the time to connect them all.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Ctx;
use super::fanout::{AbortOnDrop, wait_until};
use super::idle::idle_client;
use crate::client::{self, Buffers};
use crate::results::{Better, Metric};
use crate::server::{Kind, Launch, Server};

pub(crate) const ID: u8 = 3;
pub(crate) const OPEN: Metric = Metric::new("connections open", "", Better::Higher);
pub(crate) const TIME: Metric = Metric::new("time to connect them all", "s", Better::Lower);
pub(crate) const PER_CONN: Metric = Metric::new("RSS per connection", "KB", Better::Lower);
pub(crate) const RSS: Metric = Metric::new("RSS with all connected", "MB", Better::Lower);

pub(crate) fn case(target: usize) -> String {
    format!("up to {target} idle clients")
}

pub(crate) async fn run(ctx: &mut Ctx, kinds: &[Kind]) -> bool {
    let case = case(ctx.plan.connections);
    let reps = ctx.plan.reps;
    super::each_server(ctx, kinds, ID, &case, reps, Launch::default(), measure).await
}

async fn measure(ctx: &mut Ctx, server: &mut Server, rep: usize) -> Result<()> {
    let plan = ctx.plan.clone();
    let target = plan.connections;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.sample()?;
    let got_state = Arc::new(AtomicUsize::new(0));
    let port = server.port;
    let started = Instant::now();
    let (clients, failed) = client::open_many(target, plan.connect_concurrency, |_| {
        let got_state = Arc::clone(&got_state);
        async move {
            let ws = client::connect(port, "", Buffers::Small).await?;
            Ok(tokio::spawn(idle_client(ws, got_state, None)))
        }
    })
    .await;
    let connect_secs = started.elapsed().as_secs_f64();
    let open = clients.len();
    let _abort = AbortOnDrop(clients);
    server.check_alive()?;
    wait_until(Duration::from_secs(60), || {
        got_state.load(Ordering::Relaxed) >= open
    })
    .await
    .with_context(|| {
        format!(
            "{} of {open} clients got no state",
            open - got_state.load(Ordering::Relaxed)
        )
    })?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.sample()?;

    let label = server.kind.name();
    let case = case(target);
    let per_conn_kb =
        (after.rss_kib.saturating_sub(before.rss_kib)) as f64 * 1.024 / open.max(1) as f64;
    let r = &mut ctx.results;
    r.add(ID, &case, OPEN, label, open as f64);
    r.add(ID, &case, TIME, label, connect_secs);
    r.add(ID, &case, PER_CONN, label, per_conn_kb);
    r.add(ID, &case, RSS, label, after.rss_kib as f64 * 1.024 / 1000.0);
    if let Some(e) = failed {
        let note = format!(
            "connections, {label}, rep {}: stopped at {open} of {target}: {e:#}",
            rep + 1
        );
        ctx.progress.say(&note);
        ctx.results.notes.push(note);
    }
    Ok(())
}
