//! `bridge-bench`: the bridge, the Python peer and the Node peer, side by side, in one run.
//!
//! Starts each server on port 0 with a temporary state file and inbox, drives it over real
//! WebSockets (the eight scenarios of bench/BENCHMARKS.md), reads its cost from `/proc`, and
//! writes a table (stdout), `results.json` (every figure), `results.md` (the tables for
//! BENCHMARKS.md) and `latency.svg`. `--quick` is the small version the test command runs so this cannot rot.

mod chart;
mod client;
mod procfs;
mod report;
mod results;
mod scenarios;
mod server;
mod statefile;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Serialize;

use crate::results::Results;
use crate::scenarios::{Ctx, Plan, Progress};
use crate::server::{Kind, Launch, Tools};

/// Benchmarks the bridge against the Python and Node peers (run it through scripts/bench,
/// which installs the peers' dependencies and builds the bridge first).
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Small counts and one repetition, under two minutes: checks that the harness and every
    /// server still work (exits non-zero if any server fails to start or a scenario errors)
    #[arg(long)]
    quick: bool,
    /// Scenarios to run: 1 latency, 2 fan-out, 3 connections, 4 idle, 5 inbox, 6 start-up,
    /// 7 CPU per delivery, 8 cluster (the bridge alone and through NATS; needs nats-server)
    #[arg(long, value_delimiter = ',', default_values_t = [1u8, 2, 3, 4, 5, 6, 7, 8])]
    scenarios: Vec<u8>,
    /// Servers to compare (python also runs python-poll in scenario 1)
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = [Kind::Bridge, Kind::Python, Kind::Node])]
    servers: Vec<Kind>,
    /// Repetitions of every measurement [default: 3; 1 with --quick]
    #[arg(long)]
    reps: Option<usize>,
    /// Most idle connections in scenario 3 [default: 10000; 300 with --quick]
    #[arg(long)]
    connections: Option<usize>,
    /// Seconds of the idle scenario with clients [default: 60; 3 with --quick]
    #[arg(long)]
    idle_secs: Option<u64>,
    /// Client counts of scenario 1, connected cumulatively [default: 1,100,1000; 1,20 with --quick]
    #[arg(long, value_delimiter = ',')]
    latency_clients: Vec<usize>,
    /// State sizes of scenario 1, in bytes [default: 2000,200000]
    #[arg(long, value_delimiter = ',')]
    latency_sizes: Vec<usize>,
    /// Clients of scenario 7 [default: 200; 20 with --quick]
    #[arg(long)]
    cost_clients: Option<usize>,
    /// State changes of scenario 7 [default: 100; 10 with --quick]
    #[arg(long)]
    cost_changes: Option<usize>,
    /// Barks of scenario 7 [default: 100; 10 with --quick]
    #[arg(long)]
    cost_barks: Option<usize>,
    /// Where results.json, results.md and latency.svg go
    /// [default: bench/results; target/bench-quick with --quick]
    #[arg(long)]
    out: Option<PathBuf>,
    /// The bridge binary
    #[arg(long, default_value = "target/release/workshop-bridge")]
    bridge: PathBuf,
    /// The Python interpreter with the peer's requirements
    #[arg(long, default_value = "bench/peers/python/.venv/bin/python")]
    python: PathBuf,
    /// The Node binary
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// The peers' directory (python/server.py, node/server.js)
    #[arg(long, default_value = "bench/peers")]
    peers: PathBuf,
    /// Where the servers' temporary directories go (their inbox is fsynced there)
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    tmp: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "bridge-bench: cannot start the runtime: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "bridge-bench: {e:#}");
            let _ = writeln!(std::io::stdout(), "bench: 0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let started = Instant::now();
    let started_utc = utc_now();
    let mut plan = if cli.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(reps) = cli.reps {
        plan.reps = reps.max(1);
        plan.startup_reps = plan.startup_reps.max(plan.reps);
    }
    if let Some(c) = cli.connections {
        plan.connections = c.max(1);
    }
    if let Some(s) = cli.idle_secs {
        plan.idle_secs = s.max(1);
    }
    if !cli.latency_clients.is_empty() {
        let mut c = cli.latency_clients.clone();
        c.sort_unstable();
        c.dedup();
        plan.latency_clients = c;
    }
    if let Some(c) = cli.cost_clients {
        plan.cost_clients = c.max(1);
    }
    if let Some(c) = cli.cost_changes {
        plan.cost_changes = c;
    }
    if let Some(b) = cli.cost_barks {
        plan.cost_barks = b;
    }
    if !cli.latency_sizes.is_empty() {
        plan.latency_sizes = cli.latency_sizes.clone();
        plan.poll_sizes.retain(|s| cli.latency_sizes.contains(s));
    }
    let out_dir = cli.out.clone().unwrap_or_else(|| {
        if cli.quick {
            PathBuf::from("target/bench-quick")
        } else {
            PathBuf::from("bench/results")
        }
    });
    let mut kinds = cli.servers.clone();
    kinds.sort();
    kinds.dedup();
    let mut ids = cli.scenarios.clone();
    ids.sort_unstable();
    ids.dedup();
    if let Some(bad) = ids.iter().find(|i| !(1..=8).contains(*i)) {
        bail!("there is no scenario {bad}; scenarios are 1 to 8");
    }

    // Thousands of sockets in this process, and in the servers, which inherit the limit.
    let nofile =
        rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-files limit")?;
    if nofile < plan.connections as u64 + 512 {
        bail!(
            "the open-files limit is {nofile}, too low for {} connections; raise the hard limit (ulimit -Hn)",
            plan.connections
        );
    }

    // Absolute (not canonical: the venv's python is a symlink that must stay one), since
    // the Node peer runs in its own directory.
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let tools = Tools {
        bridge: abs(&cli.bridge),
        python: abs(&cli.python),
        node: if cli.node.components().count() > 1 {
            abs(&cli.node)
        } else {
            cli.node.clone()
        },
        peers: abs(&cli.peers),
        tmp: abs(&cli.tmp),
    };
    tools.check(&kinds)?;
    let machine = Machine::read(&tools, nofile);
    let load_start = procfs::loadavg();

    let total: u64 = ids
        .iter()
        .map(|id| scenarios::units(*id, &plan, &kinds))
        .sum();
    let mut ctx = Ctx {
        tools,
        plan: plan.clone(),
        results: Results::default(),
        progress: Progress::new(total),
        builds_seen: procfs::builds_running(),
    };
    let mut ran = Vec::new();
    let mut interrupted = false;
    for &id in &ids {
        let cpu0 = procfs::own_cpu_secs();
        let t0 = Instant::now();
        let passed = tokio::select! {
            passed = scenarios::run(id, &mut ctx, &kinds) => passed,
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
                false
            }
        };
        ran.push(ScenarioRun {
            id,
            name: scenarios::name(id),
            passed,
            wall_secs: t0.elapsed().as_secs_f64(),
            load_generator_cpu_secs: procfs::own_cpu_secs() - cpu0,
        });
        if interrupted {
            break;
        }
    }
    ctx.progress.finish();
    ctx.results.summarise();

    let tables = report::tables(&ctx.results, true);
    let targets = report::targets(&ctx.results, &plan);
    let passed = ran.iter().filter(|r| r.passed).count();
    let failed = ran.len() - passed;

    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let chart_path = out_dir.join("latency.svg");
    let charted = if ids.contains(&1) {
        chart::latency_chart(
            &ctx.results,
            &plan.latency_sizes,
            &plan.latency_clients,
            &chart_path,
        )?
    } else {
        false
    };
    let json = Report {
        tool: "bridge-bench",
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_utc,
        duration_secs: started.elapsed().as_secs_f64(),
        quick: plan.quick,
        interrupted,
        plan: &plan,
        machine: &machine,
        load: Load {
            loadavg_start: load_start,
            loadavg_end: procfs::loadavg(),
            compiler_processes_seen_max: ctx.builds_seen,
        },
        bridge_flags: BridgeFlags::default(),
        scenarios: &ran,
        targets: &targets,
        results: &ctx.results,
    };
    write_atomically(
        &out_dir.join("results.json"),
        &serde_json::to_vec_pretty(&json).context("cannot encode the results")?,
    )?;
    let mut md = report::markdown(&tables);
    md.push_str("\n#### Targets\n\n");
    for t in &targets {
        let mark = match t.met {
            _ if plan.quick => "not judged at quick-mode counts",
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        md.push_str(&format!("- {mark}: {} — {}\n", t.target, t.measured));
    }
    write_atomically(&out_dir.join("results.md"), md.as_bytes())?;

    let mut out = std::io::stdout().lock();
    let w = |e| anyhow::Error::new(e).context("cannot write to standard output");
    writeln!(
        out,
        "bridge-bench{} on {} ({} CPUs, {}, Linux {}); load generator and servers share the machine",
        if plan.quick { " --quick" } else { "" },
        machine.cpu_model,
        machine.cpus,
        machine.memory,
        machine.kernel
    )
    .map_err(w)?;
    writeln!(
        out,
        "medians of {} repetition(s), (min–max) when several; ↓ lower is better, ↑ higher",
        plan.reps
    )
    .map_err(w)?;
    write!(out, "{}", report::plain(&tables)).map_err(w)?;
    writeln!(out, "\nload generator CPU per scenario:").map_err(w)?;
    for r in &ran {
        writeln!(
            out,
            "  {} {}: {:.1} CPU-s in {:.0} s of wall time ({:.0}% of one core)",
            r.id,
            r.name,
            r.load_generator_cpu_secs,
            r.wall_secs,
            100.0 * r.load_generator_cpu_secs / r.wall_secs.max(1e-9)
        )
        .map_err(w)?;
    }
    for note in &ctx.results.notes {
        writeln!(out, "note: {note}").map_err(w)?;
    }
    writeln!(
        out,
        "\ntargets (bench/BENCHMARKS.md){}:",
        if plan.quick {
            ", not judged: quick mode's counts are too small for them to be met or missed, so the figures only show the harness runs"
        } else {
            ""
        }
    )
    .map_err(w)?;
    write!(out, "{}", report::targets_text(&targets, plan.quick)).map_err(w)?;
    for f in &ctx.results.failures {
        writeln!(
            out,
            "FAILED: scenario {} on {}, {}: {}",
            f.scenario, f.server, f.case, f.error
        )
        .map_err(w)?;
    }
    writeln!(
        out,
        "\nwrote {}/results.json, results.md{}",
        out_dir.display(),
        if charted { ", latency.svg" } else { "" }
    )
    .map_err(w)?;
    if interrupted {
        writeln!(out, "interrupted").map_err(w)?;
    }
    writeln!(out, "bench: {passed} passed, {failed} failed").map_err(w)?;
    Ok(if failed == 0 && !interrupted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Serialize)]
struct Report<'a> {
    tool: &'static str,
    command: String,
    started_utc: String,
    duration_secs: f64,
    quick: bool,
    interrupted: bool,
    plan: &'a Plan,
    machine: &'a Machine,
    load: Load,
    bridge_flags: BridgeFlags,
    scenarios: &'a [ScenarioRun],
    targets: &'a [report::Target],
    results: &'a Results,
}

#[derive(Serialize)]
struct ScenarioRun {
    id: u8,
    name: &'static str,
    passed: bool,
    wall_secs: f64,
    load_generator_cpu_secs: f64,
}

#[derive(Serialize)]
struct Load {
    loadavg_start: f64,
    loadavg_end: f64,
    /// rustc, cc1, ld… processes seen at the start of a unit: other builds on the machine.
    compiler_processes_seen_max: usize,
}

/// Flags the bridge ran with beyond `--port 0 --bind 127.0.0.1 --no-auth` and temp paths.
#[derive(Serialize)]
struct BridgeFlags {
    fan_out: String,
    inbox: String,
    other_scenarios: &'static str,
    all_scenarios: String,
}

impl Default for BridgeFlags {
    fn default() -> Self {
        Self {
            fan_out: format!("--max-messages-per-sec {}", Launch::MESSAGE_RATE),
            inbox: format!(
                "--max-messages-per-sec {} --max-inbox-files {}",
                Launch::MESSAGE_RATE,
                Launch::INBOX_FILES
            ),
            other_scenarios: "defaults",
            all_scenarios: format!(
                "--max-connections-per-address {} (every client comes from 127.0.0.1)",
                Launch::PER_ADDRESS
            ),
        }
    }
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    memory: String,
    kernel: String,
    open_files_limit: u64,
    temp_dir: String,
    temp_dir_fs: String,
    node: String,
    python: String,
    bridge_commit: String,
}

impl Machine {
    fn read(tools: &Tools, nofile: u64) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            memory: format!("{:.1} GiB RAM", mem_kib / 1024.0 / 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            open_files_limit: nofile,
            temp_dir: tools.tmp.display().to_string(),
            temp_dir_fs: fs_of(&tools.tmp),
            node: version(&tools.node, &["--version"]),
            python: version(&tools.python, &["--version"]),
            bridge_commit: version(Path::new("git"), &["describe", "--always", "--dirty"]),
        }
    }
}

fn version(program: &Path, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_owned()
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The file system type and device of the mount holding `dir` (from /proc/mounts).
fn fs_of(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, point, fs) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), format!("{fs} on {dev}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".to_owned(), |(_, s)| s)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The current time as `2026-11-25T01:02:03Z`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
