//! Every figure measured: one value per repetition, summarised as median and spread.

use serde::Serialize;

/// Which direction is good for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Better {
    Lower,
    Higher,
    /// A count or a fact, not a score.
    Neither,
}

/// One metric of one server in one case, over the repetitions.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: u8,
    pub(crate) case: String,
    pub(crate) metric: String,
    pub(crate) unit: String,
    pub(crate) better: Better,
    pub(crate) server: String,
    /// One value per repetition, in the order they ran.
    pub(crate) values: Vec<f64>,
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

/// A unit of work that failed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Failure {
    pub(crate) scenario: u8,
    pub(crate) server: String,
    pub(crate) case: String,
    pub(crate) error: String,
}

/// Everything measured so far.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Results {
    pub(crate) rows: Vec<Row>,
    pub(crate) failures: Vec<Failure>,
    /// Observations worth a sentence (e.g. which server dropped clients, and how).
    pub(crate) notes: Vec<String>,
}

/// What a metric is, for [`Results::add`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metric {
    pub(crate) name: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) better: Better,
}

impl Metric {
    pub(crate) const fn new(name: &'static str, unit: &'static str, better: Better) -> Self {
        Self { name, unit, better }
    }
}

impl Results {
    /// Records one repetition's value.
    pub(crate) fn add(
        &mut self,
        scenario: u8,
        case: &str,
        metric: Metric,
        server: &str,
        value: f64,
    ) {
        let found = self.rows.iter_mut().find(|r| {
            r.scenario == scenario
                && r.case == case
                && r.metric == metric.name
                && r.server == server
        });
        match found {
            Some(row) => row.values.push(value),
            None => self.rows.push(Row {
                scenario,
                case: case.to_owned(),
                metric: metric.name.to_owned(),
                unit: metric.unit.to_owned(),
                better: metric.better,
                server: server.to_owned(),
                values: vec![value],
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            }),
        }
    }

    pub(crate) fn fail(&mut self, scenario: u8, server: &str, case: &str, error: &anyhow::Error) {
        self.failures.push(Failure {
            scenario,
            server: server.to_owned(),
            case: case.to_owned(),
            error: format!("{error:#}"),
        });
    }

    /// Computes medians and spreads.
    pub(crate) fn summarise(&mut self) {
        for row in &mut self.rows {
            row.median = median(&row.values);
            row.min = row.values.iter().copied().fold(f64::INFINITY, f64::min);
            row.max = row.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        }
    }

    pub(crate) fn get(&self, scenario: u8, case: &str, metric: &str, server: &str) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.scenario == scenario && r.case == case && r.metric == metric && r.server == server
        })
    }

    pub(crate) fn median_of(
        &self,
        scenario: u8,
        case: &str,
        metric: &str,
        server: &str,
    ) -> Option<f64> {
        self.get(scenario, case, metric, server)
            .map(|r| r.median)
            .filter(|m| m.is_finite())
    }
}

/// The median (mean of the middle two for an even count); NaN for none.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Nearest-rank percentile of sorted `values` (`p` in 0..=100).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 50.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&sorted, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
