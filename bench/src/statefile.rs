//! State files of a chosen size, shaped like the agent's (examples/workshop-state.yaml)
//! plus a list of placed objects to reach the size. Only `meta.tick` changes between
//! versions, so a diff is one `replace`.

use std::fmt::Write;

/// A state of at least `bytes` bytes (YAML) for version `tick`.
pub(crate) fn state_yaml(bytes: usize, tick: u64) -> String {
    let mut s = String::with_capacity(bytes + 256);
    s.push_str(HEAD);
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "meta:\n  schema_version: 1\n  writer: bridge-bench\n  tick: {tick}\nobjects:\n"
    );
    let mut i = 0u32;
    while s.len() < bytes {
        let _ = write!(
            s,
            "  - id: stone-{i:05}\n    kind: stone\n    position: [{:.2}, 0.0, {:.2}]\n    placed_by: timmy\n    note: \"a stone laid in the tower wall, row {i}\"\n",
            f64::from(i) * 0.5,
            -f64::from(i) * 0.25,
        );
        i += 1;
    }
    s
}

const HEAD: &str = "identity:
  name: Timmy
  title: The Workshop Wizard
  uptime_seconds: 14523
mood:
  primary: contemplative
  confidence: 0.72
  energy: 0.6
activity:
  current: watching-gitea
  detail: new commit on main
  duration_seconds: 45
familiar:
  name: Pip
  state: sleeping
  position: [2.1, 0.0, -1.3]
";

/// `2 KB`, `200 KB`.
pub(crate) fn size_label(bytes: usize) -> String {
    if bytes >= 1000 {
        format!("{} KB", bytes / 1000)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_met_and_only_the_tick_changes() {
        for size in [2_000, 200_000] {
            let a = state_yaml(size, 1);
            let b = state_yaml(size, 2);
            assert!(a.len() >= size && a.len() < size + 200, "{}", a.len());
            assert_eq!(a.replace("tick: 1\n", "tick: 2\n"), b);
        }
    }
}
