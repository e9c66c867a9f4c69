//! Scenario 5, inbox: 10 concurrent senders, each sending a visitor `message` with an `id`
//! and waiting for its ack (sent once the file is fsynced) before the next. Messages
//! persisted per second, ack latency, and a check that every acknowledged message is a
//! file in the inbox.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::Ctx;
use crate::client::{self, Buffers, Ws};
use crate::results::{Better, Metric, percentile};
use crate::server::{Kind, Launch, Server};

pub(crate) const ID: u8 = 5;
pub(crate) const RATE: Metric = Metric::new("messages persisted per second", "/s", Better::Higher);
pub(crate) const P50: Metric = Metric::new("ack latency p50", "ms", Better::Lower);
pub(crate) const P99: Metric = Metric::new("ack latency p99", "ms", Better::Lower);

pub(crate) fn case(senders: usize) -> String {
    format!("{senders} senders")
}

pub(crate) async fn run(ctx: &mut Ctx, kinds: &[Kind]) -> bool {
    let case = case(ctx.plan.inbox_senders);
    let reps = ctx.plan.reps;
    let launch = Launch {
        raise_message_rate: true,
        raise_inbox_files: true,
    };
    super::each_server(
        ctx,
        kinds,
        ID,
        &case,
        reps,
        launch,
        async |ctx, server, _| measure(ctx, server).await,
    )
    .await
}

async fn measure(ctx: &mut Ctx, server: &mut Server) -> Result<()> {
    let plan = ctx.plan.clone();
    let n = plan.inbox_senders;
    let port = server.port;
    let (senders, failed) = client::open_many(n, n, |_| async move {
        let mut ws = client::connect(port, "", Buffers::Large).await?;
        // The state comes first; then the sender is ready.
        tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| anyhow!("no state on connect"))?;
        Ok(ws)
    })
    .await;
    if let Some(e) = failed {
        return Err(e.context(format!("connecting {n} senders")));
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(plan.inbox_secs);
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::spawn(send_until(ws, i, deadline)))
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("a sender panicked")??);
    }
    let secs = started.elapsed().as_secs_f64();
    server.check_alive()?;

    let acked = latencies.len();
    let files = count_inbox_files(&server.inbox_dir)?;
    if files < acked {
        bail!("only {files} of {acked} acknowledged messages are files in the inbox");
    }
    latencies.sort_by(f64::total_cmp);
    let label = server.kind.name();
    let case = case(n);
    let r = &mut ctx.results;
    r.add(ID, &case, RATE, label, acked as f64 / secs);
    r.add(ID, &case, P50, label, percentile(&latencies, 50.0));
    r.add(ID, &case, P99, label, percentile(&latencies, 99.0));
    Ok(())
}

/// Sends messages one at a time until `deadline`; returns each ack's latency in ms.
async fn send_until(mut ws: Ws, sender: usize, deadline: Instant) -> Result<Vec<f64>> {
    let mut latencies = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let id = format!("\"s{sender}-{n}\"");
        let text = format!(
            r#"{{"type":"message","text":"bench message {n}","visitor":"bench-{sender}","id":{id}}}"#
        );
        let sent = Instant::now();
        ws.send(Message::text(text)).await.context("cannot send")?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), ws.next())
                .await
                .map_err(|_| anyhow!("no ack for {id} within 20 s"))?;
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let bytes = t.as_bytes();
                    if client::is_ack_for(bytes, &id) {
                        break;
                    }
                    if client::is_error(bytes) {
                        bail!("the server refused {id}: {}", t.as_str());
                    }
                    // Another sender's message, relayed to everyone.
                }
                Some(Ok(Message::Close(f))) => bail!(
                    "the server closed sender {sender}{}",
                    f.map(|f| format!(" ({} {})", f.code, f.reason))
                        .unwrap_or_default()
                ),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("sender {sender}'s connection failed: {e}"),
                None => bail!("the server closed sender {sender}'s connection"),
            }
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        n += 1;
    }
    let _ = ws.close(None).await;
    Ok(latencies)
}

/// Inbox files as the agent sees them (dot-files are writes in progress).
fn count_inbox_files(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') && name.ends_with(".json") {
            n += 1;
        }
    }
    Ok(n)
}
