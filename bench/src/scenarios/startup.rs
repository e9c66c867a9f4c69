//! Scenario 6, start-up: from spawning the process to its port accepting a TCP connection
//! (found through the `listening on` line), and its RSS once idle with a 2 KB state.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpStream;

use super::Ctx;
use crate::results::{Better, Metric};
use crate::server::{Kind, Launch, Server};

pub(crate) const ID: u8 = 6;
pub(crate) const STARTUP: Metric = Metric::new("start-up to accepting", "ms", Better::Lower);
pub(crate) const RSS: Metric = Metric::new("idle RSS", "MB", Better::Lower);
pub(crate) const CASE: &str = "2 KB state, no clients";

pub(crate) async fn run(ctx: &mut Ctx, kinds: &[Kind]) -> bool {
    let reps = ctx.plan.startup_reps;
    super::each_server(
        ctx,
        kinds,
        ID,
        CASE,
        reps,
        Launch::default(),
        async |ctx, server, _| measure(ctx, server).await,
    )
    .await
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
