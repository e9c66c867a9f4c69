//! Scenario 6, start-up: from spawning the process to its port accepting a TCP connection
//! (found through the `listening on` line), and its RSS once idle with a 2 KB state.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpStream;

use super::Ctx;
use crate::results::{Better, Metric};
use crate::server::{Kind, Launch, Server};
use crate::statefile::state_yaml;

pub(crate) const ID: u8 = 6;
pub(crate) const STARTUP: Metric = Metric::new("start-up to accepting", "ms", Better::Lower);
pub(crate) const RSS: Metric = Metric::new("idle RSS", "MB", Better::Lower);
pub(crate) const CASE: &str = "2 KB state, no clients";

pub(crate) async fn run(ctx: &mut Ctx, kinds: &[Kind]) -> bool {
    let mut ok = true;
    let reps = ctx.plan.startup_reps;
    for rep in 0..reps {
        for kind in super::event_driven(kinds) {
            ctx.begin(&format!("6 start-up · {kind} · rep {}/{reps}", rep + 1));
            let outcome = unit(ctx, kind).await;
            ok &= ctx.end(ID, kind.name(), CASE, outcome);
        }
    }
    ok
}

async fn unit(ctx: &mut Ctx, kind: Kind) -> Result<()> {
    let mut server =
        Server::start(kind, &ctx.tools, &state_yaml(2_000, 0), Launch::default()).await?;
    let outcome = measure(ctx, &mut server).await;
    server.stop().await;
    outcome
}

async fn measure(ctx: &mut Ctx, server: &mut Server) -> Result<()> {
    let probe = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .context("the port does not accept connections")?;
    let accepting = server.spawned_at.elapsed();
    drop(probe);
    tokio::time::sleep(ctx.plan.startup_rss_after.max(Duration::from_millis(100))).await;
    let sample = server.sample()?;
    let label = server.kind.name();
    ctx.results
        .add(ID, CASE, STARTUP, label, accepting.as_secs_f64() * 1000.0);
    ctx.results
        .add(ID, CASE, RSS, label, sample.rss_kib as f64 * 1.024 / 1000.0);
    Ok(())
}
