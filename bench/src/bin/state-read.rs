//! How long the bridge takes to read a state file: text to the JSON every client is sent,
//! for the benchmark's 2 KB and 200 KB states (bench/src/statefile.rs), in this process, on
//! one core. Run with `cargo run --release -p workshop-bridge-bench --bin state-read`.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result, bail};

#[path = "../statefile.rs"]
mod statefile;

fn main() -> Result<()> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().context("the argument is the number of rounds")?,
        None => 300,
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| state | rounds | min (ms) | median (ms) | p99 (ms) |"
    )?;
    writeln!(out, "| --- | ---: | ---: | ---: | ---: |")?;
    for size in [2_000, 200_000] {
        let text = statefile::state_yaml(size, 1);
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = Instant::now();
            let json = workshop_bridge::state_to_json(&text);
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            match json {
                Ok(Some(json)) if json.len() > size / 2 => {}
                other => bail!("the {size}-byte state was not read: {other:?}"),
            }
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        writeln!(
            out,
            "| {} | {rounds} | {:.2} | {:.2} | {:.2} |",
            statefile::size_label(size),
            at(0.0),
            at(0.5),
            at(0.99)
        )?;
    }
    Ok(())
}
