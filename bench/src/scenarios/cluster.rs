//! Scenario 8, cluster: the same clients all on one bridge (`bridge`), and spread evenly over
//! an origin and two relays joined through a local `nats-server` (`cluster`). Change
//! latency (the origin's state file replaced → every client has the new `seq`), bark
//! latency (an agent on the origin barks at a steady pace → every client has the bark),
//! fan-out (the agent sends a burst of barks as fast as they are acknowledged → deliveries
//! per second until every client has them all), and the CPU of every process involved (the
//! bridges and, for the cluster, the NATS server) per delivery.
//!
//! Everything shares the machine's cores: a cluster on one machine can show what the extra
//! hop costs, never what spreading the clients over machines gains.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::Ctx;
use crate::client::{self, Buffers, Ws};
use crate::procfs::{self, Cpu, Sample};
use crate::results::{Better, Metric, percentile};
use crate::server::{Kind, Launch, Server};
use crate::statefile::state_yaml;

pub(crate) const ID: u8 = 8;
pub(crate) const CHANGE_P50: Metric = Metric::new("change latency p50", "ms", Better::Lower);
pub(crate) const CHANGE_P99: Metric = Metric::new("change latency p99", "ms", Better::Lower);
pub(crate) const BARK_P50: Metric = Metric::new("bark latency p50", "ms", Better::Lower);
pub(crate) const BARK_P99: Metric = Metric::new("bark latency p99", "ms", Better::Lower);
pub(crate) const DELIVERIES: Metric =
    Metric::new("burst deliveries per second", "/s", Better::Higher);
pub(crate) const CPU_STATE: Metric = Metric::new(
    "CPU per delivered state, all processes",
    "µs",
    Better::Lower,
);
pub(crate) const CPU_BARK: Metric =
    Metric::new("CPU per delivered bark, all processes", "µs", Better::Lower);

/// The two ways of serving the same clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Every client on one bridge.
    One,
    /// Clients spread over an origin and two relays.
    Cluster,
}

impl Layout {
    fn label(self) -> &'static str {
        match self {
            Layout::One => "bridge",
            Layout::Cluster => "cluster",
        }
    }
}

pub(crate) fn case(clients: usize) -> String {
    format!("{clients} clients, 2 KB")
}

pub(crate) async fn run(ctx: &mut Ctx, kinds: &[Kind]) -> bool {
    if !kinds.contains(&Kind::Bridge) {
        return true;
    }
    let case = case(ctx.plan.cluster_clients);
    let mut ok = true;
    for rep in 0..ctx.plan.reps {
        for layout in [Layout::One, Layout::Cluster] {
            ctx.begin(&format!(
                "{ID} cluster · {} · {case} · rep {}/{}",
                layout.label(),
                rep + 1,
                ctx.plan.reps
            ));
            let outcome = unit(ctx, layout, &case).await;
            ok &= ctx.end(ID, layout.label(), &case, outcome);
        }
    }
    ok
}

/// The processes of one layout: the bridges (the origin first) and the NATS server.
struct Deployment {
    bridges: Vec<Server>,
    nats: Option<Nats>,
}

impl Deployment {
    async fn start(ctx: &Ctx, layout: Layout, state: &str) -> Result<Self> {
        let launch = Launch {
            raise_message_rate: true,
            raise_inbox_files: false,
        };
        let tools = &ctx.tools;
        if layout == Layout::One {
            let bridge = Server::start(Kind::Bridge, tools, state, launch).await?;
            return Ok(Self {
                bridges: vec![bridge],
                nats: None,
            });
        }
        let nats = Nats::start(&tools.tmp).await?;
        let mut deployment = Self {
            bridges: Vec::new(),
            nats: None,
        };
        let url = nats.url();
        deployment.nats = Some(nats);
        let origin = ["--cluster".to_owned(), url.clone()];
        deployment
            .bridges
            .push(Server::start_with(Kind::Bridge, tools, state, launch, &origin).await?);
        let relay = ["--relay".to_owned(), "--cluster".to_owned(), url];
        for _ in 0..2 {
            deployment
                .bridges
                .push(Server::start_with(Kind::Bridge, tools, state, launch, &relay).await?);
        }
        Ok(deployment)
    }

    fn ports(&self) -> Vec<u16> {
        self.bridges.iter().map(|b| b.port).collect()
    }

    /// Every process's counters, to add up.
    fn sample(&mut self) -> Result<Vec<Sample>> {
        let mut samples = Vec::new();
        for bridge in &mut self.bridges {
            samples.push(bridge.sample()?);
        }
        if let Some(nats) = &self.nats {
            samples.push(procfs::sample(nats.pid).context("cannot sample nats-server")?);
        }
        Ok(samples)
    }

    async fn stop(self) {
        for bridge in self.bridges {
            bridge.stop().await;
        }
        if let Some(nats) = self.nats {
            nats.stop().await;
        }
    }
}

/// Records the CPU (user and kernel together) all processes spent between two samples,
/// in microseconds per delivery, noting when it rests on too few clock ticks.
fn add_cpu(
    ctx: &mut Ctx,
    (case, label, metric): (&str, &str, Metric),
    (before, after): (&[Sample], &[Sample]),
    deliveries: u64,
) {
    let mut spent = Cpu {
        user_secs: 0.0,
        system_secs: 0.0,
    };
    for (b, a) in before.iter().zip(after) {
        let cpu = b.cpu_split_until(a);
        spent.user_secs += cpu.user_secs;
        spent.system_secs += cpu.system_secs;
    }
    if let Some((user, kernel)) = spent.micros_per(deliveries) {
        ctx.results.add(ID, case, metric, label, user + kernel);
        super::note_if_coarse(&mut ctx.results, (ID, case, label), spent);
    }
}

async fn unit(ctx: &mut Ctx, layout: Layout, case: &str) -> Result<()> {
    let mut deployment = Deployment::start(ctx, layout, &state_yaml(2_000, 0)).await?;
    let outcome = measure(ctx, &mut deployment, layout, case).await;
    deployment.stop().await;
    outcome
}

async fn measure(
    ctx: &mut Ctx,
    deployment: &mut Deployment,
    layout: Layout,
    case: &str,
) -> Result<()> {
    let plan = ctx.plan.clone();
    let label = layout.label();
    let n = plan.cluster_clients;
    let ports = deployment.ports();
    let mut fleet = Fleet::connect(&ports, n, plan.connect_concurrency).await?;
    fleet
        .wait(plan.delivery_timeout, |f| f.seqs.iter().all(|s| *s >= 1))
        .await
        .context("not every client got the state on connect")?;
    let first = fleet.seqs.iter().copied().max().unwrap_or(1);
    if fleet.seqs.iter().any(|s| *s != first) {
        bail!("clients were sent different states on connect");
    }

    // Change latency.
    let mut latencies = Vec::with_capacity(n * plan.cluster_changes);
    let cpu_before = deployment.sample()?;
    for tick in 1..=plan.cluster_changes as u64 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(20..70))).await;
        let at = deployment.bridges[0].write_state(&state_yaml(2_000, tick))?;
        // Each change is a new value: the state's `seq` grows by one.
        let want = first + tick;
        let got = fleet
            .wait(plan.delivery_timeout, |f| f.seqs.iter().all(|s| *s >= want))
            .await
            .with_context(|| format!("change {tick}"))?;
        latencies.extend(
            got.states
                .iter()
                .filter(|(s, _)| *s == want)
                .map(|(_, t)| ms(*t, at)),
        );
    }
    let cpu_after = deployment.sample()?;
    latencies.sort_by(f64::total_cmp);
    let results = &mut ctx.results;
    results.add(ID, case, CHANGE_P50, label, percentile(&latencies, 50.0));
    results.add(ID, case, CHANGE_P99, label, percentile(&latencies, 99.0));
    add_cpu(
        ctx,
        (case, label, CPU_STATE),
        (&cpu_before, &cpu_after),
        (n * plan.cluster_changes) as u64,
    );

    // Bark latency, at a steady pace (50 a second), from an agent on the origin.
    let mut agent = client::connect(ports[0], "", Buffers::Large).await?;
    let mut sent_at = Vec::with_capacity(plan.cluster_barks);
    let mut bark_latencies = Vec::with_capacity(n * plan.cluster_barks);
    let cpu_before = deployment.sample()?;
    for i in 0..plan.cluster_barks {
        tokio::time::sleep(Duration::from_millis(20)).await;
        sent_at.push(Instant::now());
        send_bark(&mut agent, i, false).await?;
        let want = i as u64 + 1;
        let got = fleet
            .wait(plan.delivery_timeout, |f| {
                f.barks.iter().all(|b| *b >= want)
            })
            .await
            .with_context(|| format!("bark {i}"))?;
        bark_latencies.extend(got.barks.iter().map(|(k, t)| ms(*t, sent_at[*k as usize])));
    }
    let cpu_after = deployment.sample()?;
    bark_latencies.sort_by(f64::total_cmp);
    ctx.results
        .add(ID, case, BARK_P50, label, percentile(&bark_latencies, 50.0));
    ctx.results
        .add(ID, case, BARK_P99, label, percentile(&bark_latencies, 99.0));
    add_cpu(
        ctx,
        (case, label, CPU_BARK),
        (&cpu_before, &cpu_after),
        (n * plan.cluster_barks) as u64,
    );

    // A burst: as fast as the origin acknowledges them, a window of 64 ahead.
    let base = plan.cluster_barks;
    let burst = plan.cluster_burst;
    let started = Instant::now();
    let mut acked = 0;
    let mut sent = 0;
    while acked < burst {
        while sent < burst && sent - acked < 64 {
            send_bark(&mut agent, base + sent, true).await?;
            sent += 1;
        }
        let frame = tokio::time::timeout(plan.delivery_timeout, agent.next())
            .await
            .map_err(|_| anyhow!("the origin stopped acknowledging barks"))?;
        match frame {
            Some(Ok(Message::Text(t))) if client::is_ack(t.as_bytes()) => acked += 1,
            Some(Ok(Message::Text(t))) if client::is_error(t.as_bytes()) => {
                bail!("a bark was refused: {}", t.as_str())
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("the agent's connection failed: {e}"),
            None => bail!("the origin closed the agent's connection"),
        }
    }
    let want = (base + burst) as u64;
    let got = fleet
        .wait(plan.fanout_drain, |f| f.barks.iter().all(|b| *b >= want))
        .await
        .context("the burst")?;
    let last = got.barks.iter().map(|(_, t)| *t).max().unwrap_or(started);
    let secs = last.saturating_duration_since(started).as_secs_f64();
    if secs > 0.0 {
        ctx.results
            .add(ID, case, DELIVERIES, label, (n * burst) as f64 / secs);
    }
    fleet.close();
    Ok(())
}

fn ms(at: Instant, since: Instant) -> f64 {
    at.saturating_duration_since(since).as_secs_f64() * 1000.0
}

/// Sends bark `i`, with an `id` (so it is acknowledged) if `acked`.
async fn send_bark(agent: &mut Ws, i: usize, acked: bool) -> Result<()> {
    let bark = if acked {
        format!(r#"{{"type":"bark","n":{i},"id":"b{i}"}}"#)
    } else {
        format!(r#"{{"type":"bark","n":{i}}}"#)
    };
    agent
        .send(Message::text(bark))
        .await
        .context("cannot send a bark")
}

enum Event {
    State {
        client: usize,
        seq: u64,
        at: Instant,
    },
    Bark {
        client: usize,
        n: u64,
        at: Instant,
    },
    Gone {
        client: usize,
        why: String,
    },
}

/// What arrived while waiting: `(seq, when)` of each state, `(bark, when)` of each bark.
#[derive(Default)]
struct Arrivals {
    states: Vec<(u64, Instant)>,
    barks: Vec<(u64, Instant)>,
}

/// Clients spread over `ports` in turn, reporting every state and bark they receive.
struct Fleet {
    rx: mpsc::UnboundedReceiver<Event>,
    readers: Vec<JoinHandle<()>>,
    /// The newest `seq` each client has.
    seqs: Vec<u64>,
    /// How many barks each client has (they arrive in order).
    barks: Vec<u64>,
}

impl Fleet {
    async fn connect(ports: &[u16], n: usize, concurrency: usize) -> Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (opened, failed) = client::open_many(n, concurrency, |i| {
            let port = ports[i % ports.len()];
            client::connect(port, "", Buffers::Large)
        })
        .await;
        if let Some(e) = failed {
            return Err(e.context(format!("only {} of {n} clients connected", opened.len())));
        }
        let readers = opened
            .into_iter()
            .enumerate()
            .map(|(i, ws)| tokio::spawn(read(i, ws, tx.clone())))
            .collect();
        Ok(Self {
            rx,
            readers,
            seqs: vec![0; n],
            barks: vec![0; n],
        })
    }

    /// Takes events until `done` holds; returns what arrived meanwhile.
    async fn wait(&mut self, timeout: Duration, done: impl Fn(&Self) -> bool) -> Result<Arrivals> {
        let mut arrivals = Arrivals::default();
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            let event = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| anyhow!("not every client had it within {}s", timeout.as_secs()))?;
            match event {
                None => bail!("every client reader stopped"),
                Some(Event::Gone { client, why }) => {
                    bail!("client {client} was disconnected: {why}")
                }
                Some(Event::State { client, seq, at }) => {
                    if let Some(have) = self.seqs.get_mut(client) {
                        *have = (*have).max(seq);
                    }
                    arrivals.states.push((seq, at));
                }
                Some(Event::Bark { client, n, at }) => {
                    if let Some(have) = self.barks.get_mut(client) {
                        *have = (*have).max(n + 1);
                    }
                    arrivals.barks.push((n, at));
                }
            }
        }
        Ok(arrivals)
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
                let at = Instant::now();
                let bytes = t.as_bytes();
                if let Some(seq) = client::state_seq(bytes) {
                    let _ = tx.send(Event::State { client, seq, at });
                } else if let Some(n) = bark_number(bytes) {
                    let _ = tx.send(Event::Bark { client, n, at });
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

/// The `n` of a bark this scenario sent (relayed byte for byte).
fn bark_number(frame: &[u8]) -> Option<u64> {
    let rest = frame.strip_prefix(br#"{"type":"bark","n":"#)?;
    let digits: Vec<u8> = rest
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// A `nats-server` with JetStream, its store in a temporary folder, on a free port.
struct Nats {
    child: Child,
    pid: u32,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nats {
    async fn start(tmp: &Path) -> Result<Self> {
        let program = nats_server().ok_or_else(|| {
            anyhow!("nats-server is not installed (apt-get install nats-server); the cluster scenario needs it")
        })?;
        let dir = tempfile::Builder::new()
            .prefix("bridge-bench-nats-")
            .tempdir_in(tmp)
            .context("cannot create the NATS server's store")?;
        let mut child = Command::new(&program)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id().context("nats-server exited at once")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let mut lines = BufReader::new(stderr).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            let mut port = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((_, at)) = line.split_once("Listening for client connections on ") {
                    port = at.trim().rsplit(':').next().and_then(|p| p.parse().ok());
                }
                if line.contains("Server is ready") {
                    return port;
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .context("nats-server did not say it was ready")?;
        // Keep its stderr drained.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            port,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

fn nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_number_of_its_own_barks_only() {
        assert_eq!(
            bark_number(br#"{"type":"bark","n":42,"id":"b42"}"#),
            Some(42)
        );
        assert_eq!(bark_number(br#"{"type":"bark","text":"hi"}"#), None);
        assert_eq!(bark_number(br#"{"type":"state","seq":1}"#), None);
    }
}
