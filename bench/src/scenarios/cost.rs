//! Scenario 7, CPU per delivery: what one message delivered to one client costs the server,
//! in user space and in the kernel, read from `/proc`. A 2 KB state is changed 100 times
//! with one client connected, then 100 times with 200, each change made once every client
//! has the one before; then 100 barks go to the 200, each sent once every client has the
//! one before. One frame per client per message: the cost of a single send, not of a
//! batch as in fan-out.
//!
//! A change costs the server once (reading, parsing and serializing the state) and then
//! once per client; the one-client run measures the first part, so the cost of each client
//! beyond the first is reported apart from the cost per delivery all told.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::fanout::AbortOnDrop;
use super::{BARK_KERNEL, BARK_USER, Ctx, STATE_KERNEL, STATE_USER};
use crate::client::{self, BARK_PREFIX, Buffers, Ws};
use crate::procfs::{Cpu, Sample};
use crate::results::{Better, Metric};
use crate::server::{Kind, Launch, Server};
use crate::statefile::state_yaml;

pub(crate) const ID: u8 = 7;
pub(crate) const CHANGE_USER: Metric = Metric::new("user CPU per change", "µs", Better::Lower);
pub(crate) const CHANGE_KERNEL: Metric = Metric::new("kernel CPU per change", "µs", Better::Lower);
pub(crate) const EXTRA_USER: Metric = Metric::new(
    "user CPU per state, per client beyond the first",
    "µs",
    Better::Lower,
);
pub(crate) const EXTRA_KERNEL: Metric = Metric::new(
    "kernel CPU per state, per client beyond the first",
    "µs",
    Better::Lower,
);
pub(crate) const STATES: Metric = Metric::new("states delivered", "", Better::Neither);
pub(crate) const BARKS: Metric = Metric::new("barks delivered", "", Better::Neither);

pub(crate) fn case(clients: usize) -> String {
    format!(
        "2 KB, {clients} client{}",
        if clients == 1 { "" } else { "s" }
    )
}

pub(crate) async fn run(ctx: &mut Ctx, kinds: &[Kind]) -> bool {
    let case = case(ctx.plan.cost_clients);
    let reps = ctx.plan.reps;
    // Barks come faster than the bridge's default 100 a second per connection allows.
    let launch = Launch {
        raise_message_rate: true,
        raise_inbox_files: false,
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
    let (n, changes, barks) = (plan.cost_clients, plan.cost_changes, plan.cost_barks);
    let timeout = plan.delivery_timeout;
    let port = server.port;
    let label = server.kind.name();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut seen = Seen::new(rx);
    let concurrency = plan.connect_concurrency;
    let mut readers = AbortOnDrop(Vec::new());

    // One client: the cost of a change itself.
    readers
        .0
        .extend(seen.connect(1, port, &tx, concurrency).await?);
    seen.settle(timeout).await?;
    let one = changing(server, &mut seen, changes, timeout).await?;

    // Every client: the cost of a change, and per client.
    readers
        .0
        .extend(seen.connect(n - 1, port, &tx, concurrency).await?);
    seen.settle(timeout).await?;
    let all = changing(server, &mut seen, changes, timeout).await?;

    // Barks, from one more client, to every client.
    let publisher = client::connect(port, "", Buffers::Large)
        .await
        .context("the publisher could not connect")?;
    let (mut sink, stream) = publisher.split();
    // The publisher gets the state on connect and nothing else; read it away regardless.
    readers.0.push(tokio::spawn(stream.for_each(|_| async {})));
    tokio::time::sleep(SETTLE).await;
    let bark_before = server.sample()?;
    let barks_before = seen.barks();
    for i in 1..=barks {
        let bark = format!(r#"{BARK_PREFIX}"text":"The stones know where they go.","n":{i}}}"#);
        sink.send(Message::text(bark))
            .await
            .context("the publisher could not send")?;
        seen.wait(Want::Barks(i as u64), timeout)
            .await
            .with_context(|| format!("bark {i}"))?;
    }
    let bark_after = server.sample()?;
    let barks_delivered = seen.barks() - barks_before;
    let _ = sink.close().await;

    let r = &mut ctx.results;
    if let Some((user, kernel)) = one.cpu().micros_per(changes as u64) {
        r.add(ID, &case(1), CHANGE_USER, label, user);
        r.add(ID, &case(1), CHANGE_KERNEL, label, kernel);
        super::note_if_coarse(r, (ID, &case(1), label), one.cpu());
    }
    let case = case(n);
    super::add_cpu_per_delivery(
        r,
        (ID, &case, label),
        (STATE_USER, STATE_KERNEL),
        (&all.before, &all.after),
        all.delivered,
    );
    // What the other clients added to each change, per client.
    let (cpu_one, cpu_all) = (one.cpu(), all.cpu());
    let extra = Cpu {
        user_secs: cpu_all.user_secs - cpu_one.user_secs,
        system_secs: cpu_all.system_secs - cpu_one.system_secs,
    };
    if let Some((user, kernel)) = extra.micros_per((changes * (n - 1)) as u64) {
        r.add(ID, &case, EXTRA_USER, label, user);
        r.add(ID, &case, EXTRA_KERNEL, label, kernel);
    }
    super::add_cpu_per_delivery(
        r,
        (ID, &case, label),
        (BARK_USER, BARK_KERNEL),
        (&bark_before, &bark_after),
        barks_delivered,
    );
    r.add(ID, &case, STATES, label, all.delivered as f64);
    r.add(ID, &case, BARKS, label, barks_delivered as f64);
    Ok(())
}

/// How long connections are left to settle before anything is measured.
const SETTLE: Duration = Duration::from_millis(300);

/// The server before and after a run of changes, and the states it delivered.
struct Changes {
    before: Sample,
    after: Sample,
    delivered: u64,
}

impl Changes {
    fn cpu(&self) -> Cpu {
        self.before.cpu_split_until(&self.after)
    }
}

/// Makes `changes` changes, each once every client has the one before.
async fn changing(
    server: &mut Server,
    seen: &mut Seen,
    changes: usize,
    timeout: Duration,
) -> Result<Changes> {
    let before = server.sample()?;
    let states_before = seen.states;
    for _ in 0..changes {
        // The next `seq` as the tick: a content never written before.
        seen.seq += 1;
        server.write_state(&state_yaml(2_000, seen.seq))?;
        seen.wait(Want::Seq(seen.seq), timeout)
            .await
            .with_context(|| format!("change {}", seen.seq))?;
    }
    let after = server.sample()?;
    Ok(Changes {
        before,
        after,
        delivered: seen.states - states_before,
    })
}

enum Event {
    State { client: usize, seq: u64 },
    Bark { client: usize },
    Gone { client: usize, why: String },
}

/// What to wait for every client to have.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The state with this `seq` (or a newer one).
    Seq(u64),
    /// This many barks.
    Barks(u64),
}

/// The newest state and the number of barks each client has received.
struct Seen {
    /// Per client: the newest `seq`, and barks.
    clients: Vec<(u64, u64)>,
    /// The `seq` of the newest state.
    seq: u64,
    /// State frames received, by all clients together.
    states: u64,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Seen {
    fn new(rx: mpsc::UnboundedReceiver<Event>) -> Self {
        Self {
            clients: Vec::new(),
            seq: 0,
            states: 0,
            rx,
        }
    }

    fn barks(&self) -> u64 {
        self.clients.iter().map(|c| c.1).sum()
    }

    /// Connects `n` more clients; returns their reader tasks.
    async fn connect(
        &mut self,
        n: usize,
        port: u16,
        tx: &mpsc::UnboundedSender<Event>,
        concurrency: usize,
    ) -> Result<Vec<JoinHandle<()>>> {
        let first = self.clients.len();
        let (readers, failed) = client::open_many(n, concurrency, |i| {
            let tx = tx.clone();
            async move {
                let ws = client::connect(port, "", Buffers::Large).await?;
                Ok(tokio::spawn(read(first + i, ws, tx)))
            }
        })
        .await;
        self.clients.resize(first + readers.len(), (0, 0));
        if let Some(e) = failed {
            for r in &readers {
                r.abort();
            }
            return Err(e.context(format!("connecting {n} clients")));
        }
        Ok(readers)
    }

    /// Waits for every client to have the state of the moment (its first message), and
    /// for the connections to settle.
    async fn settle(&mut self, timeout: Duration) -> Result<()> {
        let current = self.clients.iter().map(|c| c.0).max().unwrap_or(0);
        self.wait(Want::Seq(current.max(1)), timeout)
            .await
            .context("waiting for the state on connect")?;
        self.seq = self.clients.iter().map(|c| c.0).max().unwrap_or(0);
        tokio::time::sleep(SETTLE).await;
        Ok(())
    }

    /// Waits until every client has what `want` says.
    async fn wait(&mut self, want: Want, timeout: Duration) -> Result<()> {
        let has = |c: &(u64, u64)| match want {
            Want::Seq(seq) => c.0 >= seq,
            Want::Barks(n) => c.1 >= n,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while let Some(late) = self.clients.iter().position(|c| !has(c)) {
            let event = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "client {late} did not get {want:?} within {} s",
                        timeout.as_secs()
                    )
                })?;
            match event {
                None => bail!("every client reader stopped"),
                Some(Event::Gone { client, why }) => {
                    bail!("client {client} was disconnected: {why}")
                }
                Some(Event::State { client, seq }) => {
                    self.states += 1;
                    if let Some(c) = self.clients.get_mut(client) {
                        c.0 = c.0.max(seq);
                    }
                }
                Some(Event::Bark { client }) => {
                    if let Some(c) = self.clients.get_mut(client) {
                        c.1 += 1;
                    }
                }
            }
        }
        Ok(())
    }
}

async fn read(client: usize, mut ws: Ws, tx: mpsc::UnboundedSender<Event>) {
    let why = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let bytes = t.as_bytes();
                let event = if client::is_bark(bytes) {
                    Event::Bark { client }
                } else if let Some(seq) = client::state_seq(bytes) {
                    Event::State { client, seq }
                } else {
                    continue;
                };
                let _ = tx.send(event);
            }
            Some(Ok(Message::Close(frame))) => break client::closed_by_server(frame),
            Some(Ok(_)) => {}
            Some(Err(e)) => break e.to_string(),
            None => break "the connection ended".to_owned(),
        }
    };
    let _ = tx.send(Event::Gone { client, why });
}
