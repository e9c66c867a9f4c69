//! The tables (for the terminal and for BENCHMARKS.md) and the project's targets, checked.

use std::fmt::Write;

use serde::Serialize;

use crate::results::{Better, Results, Row};
use crate::scenarios::{self, connections, fanout, idle, latency, startup};

/// Servers in the order columns show them.
const ORDER: [&str; 6] = [
    "bridge",
    "bridge-diff",
    "python",
    "python-poll",
    "node",
    "cluster",
];
/// Peers the bridge is divided by, in the ratio columns.
const PEERS: [&str; 4] = ["python", "python-poll", "node", "cluster"];

/// A table: a title, a header and rows of cells.
pub(crate) struct Table {
    pub(crate) title: String,
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

/// One table per scenario that produced figures.
pub(crate) fn tables(results: &Results, show_spread: bool) -> Vec<Table> {
    let mut out = Vec::new();
    for (id, name) in scenarios::NAMES {
        let rows: Vec<&Row> = results.rows.iter().filter(|r| r.scenario == id).collect();
        if rows.is_empty() {
            continue;
        }
        let servers: Vec<&str> = ORDER
            .iter()
            .copied()
            .filter(|s| rows.iter().any(|r| r.server == *s))
            .collect();
        let peers: Vec<&str> = PEERS
            .iter()
            .copied()
            .filter(|p| servers.contains(p))
            .collect();
        let has_bridge = servers.contains(&"bridge");
        let mut header = vec!["case".to_owned(), "metric".to_owned()];
        header.extend(servers.iter().map(|s| (*s).to_owned()));
        if has_bridge {
            header.extend(peers.iter().map(|p| format!("bridge ÷ {p}")));
        }
        // (case, metric) in the order first measured.
        let mut keys: Vec<(&str, &str, &str, Better)> = Vec::new();
        for r in &rows {
            if !keys
                .iter()
                .any(|(c, m, _, _)| *c == r.case && *m == r.metric)
            {
                keys.push((&r.case, &r.metric, &r.unit, r.better));
            }
        }
        if id == latency::ID {
            // Group by size, then clients, then metric, whatever the measuring order.
            keys.sort_by_key(|(case, metric, _, _)| {
                let m = ["p50", "p99", "max"]
                    .iter()
                    .position(|x| x == metric)
                    .unwrap_or(9);
                (latency_case_order(case), m)
            });
        }
        let mut table_rows = Vec::new();
        for (case, metric, unit, better) in keys {
            let arrow = match better {
                Better::Lower => " ↓",
                Better::Higher => " ↑",
                Better::Neither => "",
            };
            let unit = if unit.is_empty() {
                String::new()
            } else {
                format!(" ({unit})")
            };
            let mut cells = vec![case.to_owned(), format!("{metric}{unit}{arrow}")];
            for s in &servers {
                cells.push(match results.get(id, case, metric, s) {
                    Some(r) => cell(r, show_spread),
                    None => "—".to_owned(),
                });
            }
            if has_bridge {
                let bridge = results.median_of(id, case, metric, "bridge");
                for p in &peers {
                    let peer = results.median_of(id, case, metric, p);
                    cells.push(match (bridge, peer, better) {
                        (Some(b), Some(p), Better::Lower | Better::Higher) => ratio(b, p),
                        _ => "".to_owned(),
                    });
                }
            }
            table_rows.push(cells);
        }
        out.push(Table {
            title: format!("{id} · {name}"),
            header,
            rows: table_rows,
        });
    }
    out
}

fn latency_case_order(case: &str) -> (usize, usize) {
    let mut nums = case
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let size = nums.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let clients = nums.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (size, clients)
}

/// Median, and the spread over repetitions when there are several.
fn cell(r: &Row, show_spread: bool) -> String {
    if r.values.len() > 1 && show_spread && r.min != r.max {
        format!("{} ({}–{})", num(r.median), num(r.min), num(r.max))
    } else {
        num(r.median)
    }
}

/// A number with as many digits as it deserves.
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        return "—".to_owned();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if a >= 10_000.0 {
        thousands(v.round() as i64)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `bridge ÷ peer`; blank when either is zero (a count of nothing has no ratio).
fn ratio(bridge: f64, peer: f64) -> String {
    if peer == 0.0 || bridge == 0.0 {
        return String::new();
    }
    let r = bridge / peer;
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else if r >= 0.01 {
        format!("{r:.2}×")
    } else {
        format!("{r:.4}×")
    }
}

/// Plain text, columns aligned.
pub(crate) fn plain(tables: &[Table]) -> String {
    let mut out = String::new();
    for t in tables {
        let widths: Vec<usize> = (0..t.header.len())
            .map(|i| {
                std::iter::once(&t.header[i])
                    .chain(t.rows.iter().filter_map(|r| r.get(i)))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let _ = writeln!(out, "\n{}", t.title);
        let line = |cells: &[String]| -> String {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = widths[i].saturating_sub(c.chars().count());
                if i < 2 {
                    let _ = write!(s, "{c}{}  ", " ".repeat(pad));
                } else {
                    let _ = write!(s, "{}{c}  ", " ".repeat(pad));
                }
            }
            s.trim_end().to_owned()
        };
        let _ = writeln!(out, "{}", line(&t.header));
        let _ = writeln!(
            out,
            "{}",
            "-".repeat(widths.iter().sum::<usize>() + 2 * widths.len())
        );
        for r in &t.rows {
            let _ = writeln!(out, "{}", line(r));
        }
    }
    out
}

/// Markdown, for BENCHMARKS.md.
pub(crate) fn markdown(tables: &[Table]) -> String {
    let mut out = String::new();
    for t in tables {
        let _ = writeln!(out, "\n#### {}\n", t.title);
        let _ = writeln!(out, "| {} |", t.header.join(" | "));
        let aligns: Vec<&str> = (0..t.header.len())
            .map(|i| if i < 2 { "---" } else { "---:" })
            .collect();
        let _ = writeln!(out, "| {} |", aligns.join(" | "));
        for r in &t.rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
    }
    out
}

/// One target, checked against this run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Target {
    pub(crate) target: String,
    pub(crate) measured: String,
    /// None when this run could not tell (a server or scenario missing).
    pub(crate) met: Option<bool>,
}

/// The targets, from the medians of this run.
pub(crate) fn targets(results: &Results, plan: &scenarios::Plan) -> Vec<Target> {
    let mut out = Vec::new();
    let most = plan.latency_clients.iter().copied().max().unwrap_or(0);
    let least = plan.latency_clients.iter().copied().min().unwrap_or(0);
    let get =
        |id, case: &str, metric: &str, server: &str| results.median_of(id, case, metric, server);
    for &size in &plan.latency_sizes {
        let case = latency::case(size, most);
        let b = get(latency::ID, &case, "p99", "bridge");
        let py = get(latency::ID, &case, "p99", "python");
        let node = get(latency::ID, &case, "p99", "node");
        out.push(check(
            format!("change latency p99, {case}: at least 5× lower than the Python peer"),
            b.zip(py).map(|(b, p)| {
                (
                    p / b,
                    format!(
                        "bridge {} ms, python {} ms: {}× lower",
                        num(b),
                        num(p),
                        num(p / b)
                    ),
                )
            }),
            |x| x >= 5.0,
        ));
        out.push(check(
            format!("change latency p99, {case}: below the Node peer"),
            b.zip(node)
                .map(|(b, n)| (b - n, format!("bridge {} ms, node {} ms", num(b), num(n)))),
            |x| x < 0.0,
        ));
        let single = latency::case(size, least);
        out.push(check(
            format!("change latency p99, {single}: under 10 ms"),
            get(latency::ID, &single, "p99", "bridge")
                .map(|b| (b, format!("bridge {} ms", num(b)))),
            |x| x < 10.0,
        ));
    }
    let case = fanout::case(plan.fanout_receivers);
    let b = get(fanout::ID, &case, fanout::DELIVERIES.name, "bridge");
    for (peer, factor) in [("python", 10.0), ("node", 2.0)] {
        let p = get(fanout::ID, &case, fanout::DELIVERIES.name, peer);
        out.push(check(
            format!("fan-out deliveries/s, {case}: at least {factor}× the {peer} peer"),
            b.zip(p).map(|(b, p)| {
                (
                    b / p,
                    format!("bridge {}/s, {peer} {}/s: {}×", num(b), num(p), num(b / p)),
                )
            }),
            |x| x >= factor,
        ));
    }
    let case = connections::case(plan.connections);
    let open = get(connections::ID, &case, connections::OPEN.name, "bridge");
    out.push(check(
        format!("{} concurrent connections", plan.connections),
        open.map(|o| (o, format!("bridge held {}", num(o)))),
        |x| x >= plan.connections as f64,
    ));
    out.push(check(
        "under 20 KB of server RSS per idle connection".to_owned(),
        get(connections::ID, &case, connections::PER_CONN.name, "bridge")
            .map(|k| (k, format!("bridge {} KB", num(k)))),
        |x| x < 20.0,
    ));
    let empty = idle::case_empty(plan.idle_empty_secs);
    out.push(check(
        format!(
            "idle with no clients ({} s): zero wake-ups",
            plan.idle_empty_secs
        ),
        get(idle::ID, &empty, idle::WAKEUPS.name, "bridge")
            .map(|w| (w, format!("bridge {} wake-ups", num(w)))),
        |x| x == 0.0,
    ));
    let with = idle::case_clients(plan.idle_clients, plan.idle_secs);
    out.push(check(
        format!(
            "idle, {with}: wake-ups only for heartbeats (≤ 2.5 per ping: its timer and the pong)"
        ),
        get(idle::ID, &with, idle::PER_PING.name, "bridge")
            .map(|w| (w, format!("bridge {} wake-ups per ping", num(w)))),
        |x| x <= 2.5,
    ));
    out.push(check(
        "idle RSS of the headless bridge under 15 MB".to_owned(),
        get(startup::ID, startup::CASE, startup::RSS.name, "bridge")
            .map(|m| (m, format!("bridge {} MB", num(m)))),
        |x| x < 15.0,
    ));
    out.push(check(
        "start-up under 50 ms".to_owned(),
        get(startup::ID, startup::CASE, startup::STARTUP.name, "bridge")
            .map(|m| (m, format!("bridge {} ms", num(m)))),
        |x| x < 50.0,
    ));
    out
}

fn check(target: String, value: Option<(f64, String)>, ok: impl Fn(f64) -> bool) -> Target {
    match value {
        Some((v, measured)) if v.is_finite() => Target {
            target,
            measured,
            met: Some(ok(v)),
        },
        _ => Target {
            target,
            measured: "not measured".to_owned(),
            met: None,
        },
    }
}

/// The targets, one line each. At quick-mode counts a target can be neither met nor missed
/// (the counts are far below what it is about), so quick mode marks none of them.
pub(crate) fn targets_text(targets: &[Target], quick: bool) -> String {
    let mut out = String::new();
    for t in targets {
        let mark = match t.met {
            _ if quick => "quick ",
            Some(true) => "met   ",
            Some(false) => "MISSED",
            None => "  ?   ",
        };
        let _ = writeln!(out, "  {mark}  {} — {}", t.target, t.measured);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(123_456.7), "123,457");
        assert_eq!(num(1234.4), "1234");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(0.01234), "0.012");
        assert_eq!(num(0.0), "0");
        assert_eq!(ratio(1.0, 50.0), "0.02×");
        assert_eq!(ratio(30.0, 2.0), "15.0×");
    }

    #[test]
    fn quick_mode_judges_no_target() {
        let targets = [Target {
            target: "start-up under 50 ms".to_owned(),
            measured: "bridge 80 ms".to_owned(),
            met: Some(false),
        }];
        assert_eq!(
            targets_text(&targets, true),
            "  quick   start-up under 50 ms — bridge 80 ms\n"
        );
        assert!(targets_text(&targets, false).contains("MISSED"));
    }
}
