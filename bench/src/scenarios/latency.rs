//! Scenario 1, change latency: the state file is replaced (rename) → time until every
//! client has a state frame with the new `seq`. For 1, 100 and 1,000 clients (connected
//! cumulatively on one server), states of 2 KB and 200 KB, full states and (bridge) diffs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::Ctx;
use crate::client::{self, Buffers, Ws};
use crate::results::{Better, Metric, percentile};
use crate::server::{Kind, Launch, Server};
use crate::statefile::{size_label, state_yaml};

pub(crate) const ID: u8 = 1;
pub(crate) const P50: Metric = Metric::new("p50", "ms", Better::Lower);
pub(crate) const P99: Metric = Metric::new("p99", "ms", Better::Lower);
pub(crate) const MAX: Metric = Metric::new("max", "ms", Better::Lower);

/// A server and how its clients connect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Variant {
    pub(crate) kind: Kind,
    /// Clients ask for `state_patch` (`?diff=1`); only the bridge has it.
    pub(crate) diff: bool,
}

impl Variant {
    pub(crate) fn label(self) -> &'static str {
        if self.diff {
            "bridge-diff"
        } else {
            self.kind.name()
        }
    }
}

/// Every variant of the servers asked for: the bridge also in diff mode, the Python peer
/// also polling every 2 s.
pub(crate) fn variants(kinds: &[Kind]) -> Vec<Variant> {
    let mut out = Vec::new();
    for &kind in kinds {
        out.push(Variant { kind, diff: false });
        if kind == Kind::Bridge {
            out.push(Variant { kind, diff: true });
        }
        if kind == Kind::Python && !kinds.contains(&Kind::PythonPoll) {
            out.push(Variant {
                kind: Kind::PythonPoll,
                diff: false,
            });
        }
    }
    out
}

/// The case label the table and the chart share.
pub(crate) fn case(size: usize, clients: usize) -> String {
    format!(
        "{}, {clients} client{}",
        size_label(size),
        if clients == 1 { "" } else { "s" }
    )
}

pub(crate) async fn run(ctx: &mut Ctx, kinds: &[Kind]) -> bool {
    let mut ok = true;
    let variants = variants(kinds);
    for size in ctx.plan.latency_sizes.clone() {
        for rep in 0..ctx.plan.reps {
            for &v in &variants {
                if v.kind == Kind::PythonPoll && !ctx.plan.poll_sizes.contains(&size) {
                    continue;
                }
                let what = format!(
                    "1 change latency · {} · {} · rep {}/{}",
                    v.label(),
                    size_label(size),
                    rep + 1,
                    ctx.plan.reps
                );
                ctx.begin(&what);
                let outcome = unit(ctx, v, size).await;
                ok &= ctx.end(ID, v.label(), &size_label(size), outcome);
            }
        }
    }
    ok
}

async fn unit(ctx: &mut Ctx, v: Variant, size: usize) -> Result<()> {
    let state = state_yaml(size, 0);
    super::on_fresh_server(
        ctx,
        v.kind,
        &state,
        Launch::default(),
        async |ctx, server| measure(ctx, server, v, size).await,
    )
    .await
}

async fn measure(ctx: &mut Ctx, server: &mut Server, v: Variant, size: usize) -> Result<()> {
    let plan = ctx.plan.clone();
    let poll = v.kind == Kind::PythonPoll;
    let changes = if poll {
        plan.poll_changes
    } else {
        plan.changes
    };
    let mut fleet = Fleet::new(server.port, if v.diff { "?diff=1" } else { "" });
    let mut tick = 0;
    for &n in &plan.latency_clients {
        fleet
            .grow(n, plan.connect_concurrency, plan.delivery_timeout)
            .await
            .with_context(|| format!("connecting {n} clients"))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut samples = Vec::with_capacity(n * changes);
        let cpu_before = server.sample()?;
        let frames_before = fleet.frames;
        for _ in 0..changes {
            // Polling: change at a random phase of the 2 s cycle; otherwise a short pause.
            let pause = if poll {
                fastrand::u64(0..2000)
            } else {
                fastrand::u64(20..70)
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            tick += 1;
            let at = server.write_state(&state_yaml(size, tick))?;
            let got = fleet
                .wait_for_next(at, plan.delivery_timeout)
                .await
                .with_context(|| format!("{n} clients, change {tick}"))?;
            samples.extend(got);
            server.check_alive()?;
        }
        let cpu_after = server.sample()?;
        samples.sort_by(f64::total_cmp);
        let case = case(size, n);
        let label = v.label();
        super::add_cpu_per_delivery(
            &mut ctx.results,
            (ID, &case, label),
            (super::STATE_USER, super::STATE_KERNEL),
            (&cpu_before, &cpu_after),
            fleet.frames - frames_before,
        );
        ctx.results
            .add(ID, &case, P50, label, percentile(&samples, 50.0));
        ctx.results
            .add(ID, &case, P99, label, percentile(&samples, 99.0));
        ctx.results
            .add(ID, &case, MAX, label, percentile(&samples, 100.0));
    }
    fleet.close();
    Ok(())
}

enum Event {
    State {
        client: usize,
        seq: u64,
        at: Instant,
    },
    Gone {
        client: usize,
        why: String,
    },
}

/// Clients that report every state frame they receive.
struct Fleet {
    port: u16,
    query: &'static str,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    readers: Vec<JoinHandle<()>>,
    /// The newest `seq` each client has.
    seqs: Vec<u64>,
    /// The `seq` every client has.
    seq: u64,
    /// State frames received, by all clients together.
    frames: u64,
}

impl Fleet {
    fn new(port: u16, query: &'static str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            port,
            query,
            tx,
            rx,
            readers: Vec::new(),
            seqs: Vec::new(),
            seq: 0,
            frames: 0,
        }
    }

    /// Connects clients until there are `n`, and waits for each to have the current state.
    async fn grow(&mut self, n: usize, concurrency: usize, timeout: Duration) -> Result<()> {
        let have = self.seqs.len();
        if n <= have {
            return Ok(());
        }
        let (port, query) = (self.port, self.query);
        let (opened, failed) = client::open_many(n - have, concurrency, |_| {
            client::connect(port, query, Buffers::Large)
        })
        .await;
        let opened_count = opened.len();
        for ws in opened {
            let client = self.seqs.len();
            self.seqs.push(0);
            self.readers
                .push(tokio::spawn(read(client, ws, self.tx.clone())));
        }
        if let Some(e) = failed {
            return Err(e.context(format!(
                "only {} of {n} clients connected",
                have + opened_count
            )));
        }
        // The first state every client gets is the current one.
        let want = self.seq.max(1);
        let deadline = tokio::time::Instant::now() + timeout;
        while let Some(late) = self.seqs.iter().position(|s| *s < want) {
            let event = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "client {late} got no state within {}s of connecting",
                        timeout.as_secs()
                    )
                })?;
            self.apply(event, u64::MAX, Instant::now())?;
        }
        let newest = self.seqs.iter().copied().max().unwrap_or(0);
        if self.seqs.iter().any(|s| *s != newest) {
            bail!("clients were sent different states on connect");
        }
        self.seq = newest;
        Ok(())
    }

    /// Waits until every client has state `seq + 1`; returns each client's latency in ms,
    /// counted from `since`.
    async fn wait_for_next(&mut self, since: Instant, timeout: Duration) -> Result<Vec<f64>> {
        let want = self.seq + 1;
        let mut latencies = Vec::with_capacity(self.seqs.len());
        let deadline = tokio::time::Instant::now() + timeout;
        while latencies.len() < self.seqs.len() {
            let event = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "{} of {} clients did not get the new state within {}s",
                        self.seqs.len() - latencies.len(),
                        self.seqs.len(),
                        timeout.as_secs()
                    )
                })?;
            if let Some(ms) = self.apply(event, want, since)? {
                latencies.push(ms);
            }
        }
        self.seq = want;
        Ok(latencies)
    }

    /// Applies one event; the latency if it brought a client to `want` for the first time.
    fn apply(&mut self, event: Option<Event>, want: u64, since: Instant) -> Result<Option<f64>> {
        match event {
            None => bail!("every client reader stopped"),
            Some(Event::Gone { client, why }) => bail!("client {client} was disconnected: {why}"),
            Some(Event::State { client, seq, at }) => {
                self.frames += 1;
                let Some(have) = self.seqs.get_mut(client) else {
                    return Ok(None);
                };
                let reached = *have < want && seq >= want;
                *have = (*have).max(seq);
                Ok(reached.then(|| at.saturating_duration_since(since).as_secs_f64() * 1000.0))
            }
        }
    }

    fn close(&mut self) {
        for r in self.readers.drain(..) {
            r.abort();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.close();
    }
}

async fn read(client: usize, mut ws: Ws, tx: mpsc::UnboundedSender<Event>) {
    let why = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if let Some(seq) = client::state_seq(t.as_bytes()) {
                    let _ = tx.send(Event::State {
                        client,
                        seq,
                        at: Instant::now(),
                    });
                }
            }
            Some(Ok(Message::Close(frame))) => break client::closed_by_server(frame),
            Some(Ok(_)) => {}
            Some(Err(e)) => break e.to_string(),
            None => break "the connection ended".to_owned(),
        }
    };
    let _ = tx.send(Event::Gone { client, why });
}
