//! Hyperparameter selection by mean rank (ERG Appendix A.1): each candidate setting is ranked on
//! every metric (1 = best, ties share the average rank), and the setting with the lowest mean
//! rank over all metrics is selected.
use serde::{Deserialize, Serialize};

/// Whether larger or smaller values of a metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// e.g. FID.
    LowerIsBetter,
    /// e.g. precision, recall, density, coverage, consistency.
    HigherIsBetter,
}

/// A metric taking part in the ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// Metric name (key in the records).
    pub name: String,
    /// Its direction.
    pub direction: Direction,
}

impl MetricSpec {
    /// The paper's class-conditional metrics: FID ↓, precision, recall, density, coverage,
    /// consistency ↑.
    pub fn paper_defaults() -> Vec<MetricSpec> {
        let m = |n: &str, d| MetricSpec { name: n.into(), direction: d };
        vec![
            m("fid", Direction::LowerIsBetter),
            m("precision", Direction::HigherIsBetter),
            m("recall", Direction::HigherIsBetter),
            m("density", Direction::HigherIsBetter),
            m("coverage", Direction::HigherIsBetter),
            m("consistency", Direction::HigherIsBetter),
        ]
    }
}

/// Mean rank of each candidate; `values[c][m]` is candidate c's value of metric m.
/// A missing (NaN) value ranks last.
pub fn mean_ranks(values: &[Vec<f64>], metrics: &[MetricSpec]) -> Vec<f64> {
    let n = values.len();
    let mut total = vec![0.0; n];
    for (m, spec) in metrics.iter().enumerate() {
        let key = |c: usize| {
            let v = values[c][m];
            match (v.is_nan(), spec.direction) {
                (true, _) => f64::INFINITY,
                (false, Direction::LowerIsBetter) => v,
                (false, Direction::HigherIsBetter) => -v,
            }
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| key(a).partial_cmp(&key(b)).unwrap());
        let mut i = 0;
        while i < n {
            let mut j = i;
            while j + 1 < n && key(order[j + 1]) == key(order[i]) {
                j += 1;
            }
            let avg = (i + j) as f64 / 2.0 + 1.0; // ranks i+1 ..= j+1 share their mean
            for &c in &order[i..=j] {
                total[c] += avg;
            }
            i = j + 1;
        }
    }
    total.iter().map(|t| t / metrics.len().max(1) as f64).collect()
}

/// Index of the candidate with the lowest mean rank (the first one on ties), or `None` if empty.
pub fn select_best(values: &[Vec<f64>], metrics: &[MetricSpec]) -> Option<usize> {
    let r = mean_ranks(values, metrics);
    (0..r.len()).min_by(|&a, &b| r[a].partial_cmp(&r[b]).unwrap())
}
