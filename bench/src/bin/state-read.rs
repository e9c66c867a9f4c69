//! How long the bridge takes to read a state file: text to the JSON every client is sent,
//! for the benchmark's 2 KB and 200 KB states (bench/src/statefile.rs), in this process, on
//! one core. Two readings: the first read of a file (all of it is parsed), and a change as
//! the benchmark makes them (one key rewritten in the whole file), which is read as the
//! bridge reads it: only the changed entries parsed, then compared with the last state and
//! written as the `state` and `state_patch` messages.
//! Run with `cargo run --release -p workshop-bridge-bench --bin state-read`.

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
        "| state | read | rounds | min (ms) | median (ms) | p99 (ms) |"
    )?;
    writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: |")?;
    for size in [2_000, 200_000] {
        let text = statefile::state_yaml(size, 1);
        let first = time(rounds, || match workshop_bridge::state_to_json(&text) {
            Ok(Some(json)) if json.len() > size / 2 => Ok(()),
            other => bail!("the {size}-byte state was not read: {other:?}"),
        })?;
        row(&mut out, size, "first read", rounds, &first)?;
        // Every read a change: the tick goes back and forth between two versions.
        let versions = [text, statefile::state_yaml(size, 2)];
        let mut reader = workshop_bridge::StateReader::new();
        reader.read(&versions[1]).map_err(anyhow::Error::msg)?;
        let mut next = 0;
        let change = time(rounds, || {
            let read = reader.read(&versions[next]);
            next = 1 - next;
            match read {
                Ok(Some(json)) if json.len() > size / 2 => Ok(()),
                other => bail!("the {size}-byte change was not read: {other:?}"),
            }
        })?;
        row(&mut out, size, "a change", rounds, &change)?;
    }
    Ok(())
}

/// Milliseconds each of `rounds` calls of `read` took, sorted.
fn time(rounds: usize, mut read: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        read()?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

fn row(out: &mut impl Write, size: usize, read: &str, rounds: usize, times: &[f64]) -> Result<()> {
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    writeln!(
        out,
        "| {} | {read} | {rounds} | {:.2} | {:.2} | {:.2} |",
        statefile::size_label(size),
        at(0.0),
        at(0.5),
        at(0.99)
    )?;
    Ok(())
}
