//! The eight scenarios of bench/BENCHMARKS.md, and what they share.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::procfs::{self, Cpu, Sample};
use crate::results::{Better, Metric, Results};
use crate::server::{Kind, Launch, Server, Tools};
use crate::statefile::state_yaml;

pub(crate) mod cluster;
pub(crate) mod connections;
pub(crate) mod cost;
pub(crate) mod fanout;
pub(crate) mod idle;
pub(crate) mod inbox;
pub(crate) mod latency;
pub(crate) mod startup;

/// The scenarios, by number.
pub(crate) const NAMES: [(u8, &str); 8] = [
    (1, "change latency"),
    (2, "fan-out"),
    (3, "connections"),
    (4, "idle cost"),
    (5, "inbox"),
    (6, "start-up"),
    (7, "CPU per delivery"),
    (8, "cluster"),
];

pub(crate) fn name(id: u8) -> &'static str {
    NAMES
        .iter()
        .find(|(n, _)| *n == id)
        .map_or("?", |(_, name)| name)
}

/// The server's CPU per message delivered to one client, in user space and in the kernel.
pub(crate) const STATE_USER: Metric =
    Metric::new("user CPU per delivered state", "µs", Better::Lower);
pub(crate) const STATE_KERNEL: Metric =
    Metric::new("kernel CPU per delivered state", "µs", Better::Lower);
pub(crate) const BARK_USER: Metric =
    Metric::new("user CPU per delivered bark", "µs", Better::Lower);
pub(crate) const BARK_KERNEL: Metric =
    Metric::new("kernel CPU per delivered bark", "µs", Better::Lower);

/// Records the server's user and kernel CPU between `before` and `after`, per delivery,
/// as `metrics` (user, kernel). Everything the server did in between is counted (reading
/// and parsing the state too), so this is what a delivery costs all told.
pub(crate) fn add_cpu_per_delivery(
    results: &mut Results,
    (id, case, server): (u8, &str, &str),
    metrics: (Metric, Metric),
    (before, after): (&Sample, &Sample),
    deliveries: u64,
) {
    let spent = before.cpu_split_until(after);
    if let Some((user, kernel)) = spent.micros_per(deliveries) {
        results.add(id, case, metrics.0, server, user);
        results.add(id, case, metrics.1, server, kernel);
        note_if_coarse(results, (id, case, server), spent);
    }
}

/// Clock ticks of CPU time below which a figure is too coarse to compare (±1 tick is
/// then more than 5 %).
const FINE_TICKS: f64 = 20.0;

/// Notes, once per scenario, the cases whose CPU figures rest on too few clock ticks.
pub(crate) fn note_if_coarse(
    results: &mut Results,
    (id, case, server): (u8, &str, &str),
    spent: Cpu,
) {
    let ticks = (spent.user_secs + spent.system_secs) * procfs::TICKS_PER_SEC;
    if ticks >= FINE_TICKS {
        return;
    }
    let prefix = format!(
        "{}: read CPU figures as rough where they rest on fewer than {FINE_TICKS} clock ticks of 10 ms:",
        name(id)
    );
    let this = format!("{case} ({server})");
    match results.notes.iter_mut().find(|n| n.starts_with(&prefix)) {
        Some(note) if !note.contains(&this) => {
            note.push_str("; ");
            note.push_str(&this);
        }
        Some(_) => {}
        None => results.notes.push(format!("{prefix} {this}")),
    }
}

/// How much of everything: the full run, or the quick one that guards against rot.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    pub(crate) reps: usize,
    pub(crate) startup_reps: usize,
    /// Scenario 1: client counts (connected cumulatively), state sizes, changes per count.
    pub(crate) latency_clients: Vec<usize>,
    pub(crate) latency_sizes: Vec<usize>,
    pub(crate) changes: usize,
    /// The 2 s polling peer takes a second per change on average: fewer, on fewer sizes.
    pub(crate) poll_changes: usize,
    pub(crate) poll_sizes: Vec<usize>,
    #[serde(with = "secs")]
    pub(crate) delivery_timeout: Duration,
    /// Scenario 2.
    pub(crate) fanout_receivers: usize,
    pub(crate) fanout_secs: f64,
    pub(crate) fanout_window: usize,
    #[serde(with = "secs")]
    pub(crate) fanout_drain: Duration,
    /// Scenario 3.
    pub(crate) connections: usize,
    pub(crate) connect_concurrency: usize,
    /// Scenario 4.
    pub(crate) idle_clients: usize,
    pub(crate) idle_secs: u64,
    pub(crate) idle_empty_secs: u64,
    /// Scenario 5.
    pub(crate) inbox_senders: usize,
    pub(crate) inbox_secs: f64,
    /// Scenario 6: how long after start-up the idle RSS is read.
    #[serde(with = "secs")]
    pub(crate) startup_rss_after: Duration,
    /// Scenario 7: clients, state changes, then barks.
    pub(crate) cost_clients: usize,
    pub(crate) cost_changes: usize,
    pub(crate) cost_barks: usize,
    /// Scenario 8: clients (spread over three nodes, or all on one), state changes, paced
    /// barks, then a burst of barks.
    pub(crate) cluster_clients: usize,
    pub(crate) cluster_changes: usize,
    pub(crate) cluster_barks: usize,
    pub(crate) cluster_burst: usize,
}

impl Plan {
    pub(crate) fn full() -> Self {
        Self {
            quick: false,
            reps: 3,
            startup_reps: 10,
            latency_clients: vec![1, 100, 1000],
            latency_sizes: vec![2_000, 200_000],
            changes: 20,
            poll_changes: 10,
            poll_sizes: vec![2_000, 200_000],
            delivery_timeout: Duration::from_secs(60),
            fanout_receivers: 1000,
            fanout_secs: 5.0,
            fanout_window: 64,
            fanout_drain: Duration::from_secs(60),
            connections: 10_000,
            connect_concurrency: 64,
            idle_clients: 100,
            idle_secs: 60,
            idle_empty_secs: 20,
            inbox_senders: 10,
            inbox_secs: 10.0,
            startup_rss_after: Duration::from_secs(1),
            cost_clients: 200,
            cost_changes: 100,
            cost_barks: 100,
            cluster_clients: 300,
            cluster_changes: 50,
            cluster_barks: 50,
            cluster_burst: 200,
        }
    }

    pub(crate) fn quick() -> Self {
        Self {
            quick: true,
            reps: 1,
            startup_reps: 2,
            latency_clients: vec![1, 20],
            latency_sizes: vec![2_000, 200_000],
            changes: 3,
            poll_changes: 2,
            poll_sizes: vec![2_000],
            delivery_timeout: Duration::from_secs(20),
            fanout_receivers: 50,
            fanout_secs: 1.0,
            fanout_window: 64,
            fanout_drain: Duration::from_secs(10),
            connections: 300,
            connect_concurrency: 64,
            idle_clients: 20,
            idle_secs: 3,
            idle_empty_secs: 2,
            inbox_senders: 10,
            inbox_secs: 1.0,
            startup_rss_after: Duration::from_millis(500),
            cost_clients: 20,
            cost_changes: 10,
            cost_barks: 10,
            cluster_clients: 30,
            cluster_changes: 5,
            cluster_barks: 5,
            cluster_burst: 20,
        }
    }
}

mod secs {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// The progress bar, or plain lines when stderr is not a terminal (logs of the test run).
pub(crate) struct Progress {
    bar: ProgressBar,
    plain: bool,
}

impl Progress {
    pub(crate) fn new(total: u64) -> Self {
        let plain = !std::io::stderr().is_terminal();
        let bar = if plain {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(total)
        };
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar, plain }
    }

    /// Says what runs now.
    pub(crate) fn start(&self, what: &str) {
        self.bar.set_message(what.to_owned());
        if self.plain {
            let _ = writeln!(std::io::stderr(), "bench: {what}");
        }
    }

    /// One unit done.
    pub(crate) fn done(&self) {
        self.bar.inc(1);
    }

    /// A line above the bar (a failure, a notable event).
    pub(crate) fn say(&self, line: &str) {
        if self.plain {
            let _ = writeln!(std::io::stderr(), "bench: {line}");
        } else {
            self.bar.println(line);
        }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// What every scenario gets.
pub(crate) struct Ctx {
    pub(crate) tools: Tools,
    pub(crate) plan: Plan,
    pub(crate) results: Results,
    pub(crate) progress: Progress,
    /// The most compiler processes seen at once while measuring (other builds on the machine).
    pub(crate) builds_seen: usize,
}

impl Ctx {
    /// Marks the start of a unit of work.
    pub(crate) fn begin(&mut self, what: &str) {
        self.builds_seen = self.builds_seen.max(procfs::builds_running());
        self.progress.start(what);
    }

    /// Records the outcome of a unit; false if it failed.
    pub(crate) fn end(
        &mut self,
        scenario: u8,
        server: &str,
        case: &str,
        outcome: anyhow::Result<()>,
    ) -> bool {
        self.progress.done();
        match outcome {
            Ok(()) => true,
            Err(e) => {
                self.progress.say(&format!(
                    "FAILED: scenario {scenario} ({}) on {server}, {case}: {e:#}",
                    name(scenario)
                ));
                self.results.fail(scenario, server, case, &e);
                false
            }
        }
    }
}

/// Units of work scenario `id` will run, for the progress bar.
pub(crate) fn units(id: u8, plan: &Plan, kinds: &[Kind]) -> u64 {
    let n = event_driven(kinds).len() as u64;
    let reps = plan.reps as u64;
    match id {
        1 => latency::variants(kinds)
            .iter()
            .map(|v| {
                let sizes = if v.kind == Kind::PythonPoll {
                    &plan.poll_sizes
                } else {
                    &plan.latency_sizes
                };
                sizes.len() as u64 * reps
            })
            .sum(),
        2..=5 | 7 => n * reps,
        6 => n * plan.startup_reps as u64,
        8 if kinds.contains(&Kind::Bridge) => 2 * reps,
        _ => 0,
    }
}

/// Runs scenario `id` against `kinds`; false if any unit failed.
pub(crate) async fn run(id: u8, ctx: &mut Ctx, kinds: &[Kind]) -> bool {
    match id {
        1 => latency::run(ctx, kinds).await,
        2 => fanout::run(ctx, kinds).await,
        3 => connections::run(ctx, kinds).await,
        4 => idle::run(ctx, kinds).await,
        5 => inbox::run(ctx, kinds).await,
        6 => startup::run(ctx, kinds).await,
        7 => cost::run(ctx, kinds).await,
        8 => cluster::run(ctx, kinds).await,
        _ => true,
    }
}

/// Starts a fresh server of `kind` on `state`, runs `measure` on it, and stops it whether
/// or not the measurement worked.
pub(crate) async fn on_fresh_server(
    ctx: &mut Ctx,
    kind: Kind,
    state: &str,
    launch: Launch,
    measure: impl AsyncFnOnce(&mut Ctx, &mut Server) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut server = Server::start(kind, &ctx.tools, state, launch).await?;
    let outcome = measure(ctx, &mut server).await;
    server.stop().await;
    outcome
}

/// Scenarios 2–7: `reps` times, on every event-driven server in turn, a fresh server with a
/// 2 KB state and `measure(ctx, server, rep)`; false if any run failed.
pub(crate) async fn each_server(
    ctx: &mut Ctx,
    kinds: &[Kind],
    id: u8,
    case: &str,
    reps: usize,
    launch: Launch,
    mut measure: impl AsyncFnMut(&mut Ctx, &mut Server, usize) -> anyhow::Result<()>,
) -> bool {
    let state = state_yaml(2_000, 0);
    let mut ok = true;
    for rep in 0..reps {
        for kind in event_driven(kinds) {
            ctx.begin(&format!(
                "{id} {} · {kind} · {case} · rep {}/{reps}",
                name(id),
                rep + 1
            ));
            let outcome = on_fresh_server(ctx, kind, &state, launch, async |ctx, server| {
                measure(ctx, server, rep).await
            })
            .await;
            ok &= ctx.end(id, kind.name(), case, outcome);
        }
    }
    ok
}

/// Kinds for scenarios 2–7: the polling variant only matters for latency.
pub(crate) fn event_driven(kinds: &[Kind]) -> Vec<Kind> {
    kinds
        .iter()
        .copied()
        .filter(|k| *k != Kind::PythonPoll)
        .collect()
}
