//! Tables over seeds: each variant evaluated at several seeds (independent sample sets) and
//! reported as mean ± sample standard deviation, with a test of which differences exceed the
//! spread, instead of one number from one sample set.
use std::collections::BTreeMap;

use serde::Serialize;

use super::report::{evaluate_variants, COLUMNS};
use super::{Bench, EvalConfig, ResultsFile, RunRecord};
use crate::guidance::Guidance;
use crate::{Error, Result};

/// One variant's metrics over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct SeedStats {
    /// The variant's label.
    pub label: String,
    /// Seeds (runs) aggregated.
    pub seeds: usize,
    /// NFE per step (the same at every seed).
    pub nfe_per_step: f64,
    /// Metric → (mean, sample standard deviation, n − 1 in the denominator; 0 for one seed).
    /// Metrics that are NaN at some seed (consistency of unconditional methods) are left out.
    pub metrics: BTreeMap<String, (f64, f64)>,
}

impl SeedStats {
    /// The statistics of `runs`, one variant at several seeds.
    /// Errors: no runs.
    pub fn of(label: &str, runs: &[&RunRecord]) -> Result<Self> {
        let first = runs.first().ok_or_else(|| Error::Other(format!("{label}: no runs to aggregate")))?;
        let mut metrics = BTreeMap::new();
        for name in first.metrics.keys() {
            let xs: Vec<f64> = runs.iter().filter_map(|r| r.metrics.get(name).copied()).collect();
            if xs.len() != runs.len() || xs.iter().any(|x| !x.is_finite()) {
                continue;
            }
            let n = xs.len() as f64;
            let mean = xs.iter().sum::<f64>() / n;
            let std = if xs.len() > 1 { (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
            metrics.insert(name.clone(), (mean, std));
        }
        Ok(Self { label: label.into(), seeds: runs.len(), nfe_per_step: first.nfe_per_step, metrics })
    }

    /// Whether this variant and `other` differ in `metric` by more than the sum of their
    /// standard deviations (`None` when either lacks it).
    pub fn separated_from(&self, other: &Self, metric: &str) -> Option<bool> {
        let ((ma, sa), (mb, sb)) = (self.metrics.get(metric)?, other.metrics.get(metric)?);
        Some((ma - mb).abs() > sa + sb)
    }
}

/// Evaluates every variant at every seed of `seeds` (`cfg.seed` replaced; runs cached in
/// `results` as by [`evaluate_variants`]) and aggregates per variant, in order.
/// Errors: no seeds; those of the runs.
pub fn evaluate_over_seeds(
    bench: &Bench,
    variants: &[(String, Guidance)],
    cfg: &EvalConfig,
    seeds: &[u64],
    results: &mut ResultsFile,
    device: &candle_core::Device,
) -> Result<Vec<SeedStats>> {
    let labels: Vec<String> = variants.iter().map(|(l, _)| l.clone()).collect();
    over_seeds(&labels, seeds, |seed| {
        Ok(evaluate_variants(bench, variants, &EvalConfig { seed, ..cfg.clone() }, results, device)?.into_iter().map(|(_, r)| r).collect())
    })
}

/// The statistics of `labels.len()` variants over `seeds`: `evaluate(seed)` returns one record
/// per label, in order (any evaluator: the class-conditional [`Bench`], the text-to-image bench).
/// Errors: no seeds; an evaluation that fails or returns another number of records.
pub fn over_seeds(labels: &[String], seeds: &[u64], mut evaluate: impl FnMut(u64) -> Result<Vec<RunRecord>>) -> Result<Vec<SeedStats>> {
    if seeds.is_empty() {
        return Err(Error::hp("at least one seed"));
    }
    let mut per_seed = Vec::with_capacity(seeds.len());
    for &seed in seeds {
        let rows = evaluate(seed)?;
        if rows.len() != labels.len() {
            return Err(Error::Other(format!("seed {seed}: {} records for {} variants", rows.len(), labels.len())));
        }
        per_seed.push(rows);
    }
    labels.iter().enumerate().map(|(i, label)| SeedStats::of(label, &per_seed.iter().map(|rows| &rows[i]).collect::<Vec<_>>())).collect()
}

/// A markdown table of `stats`: one row per variant, each metric as `mean ± std` (– when it
/// does not apply), then NFE per step; the header names the seed count.
pub fn markdown_table_over_seeds(first_header: &str, stats: &[SeedStats]) -> String {
    let seeds = stats.first().map_or(0, |s| s.seeds);
    let mut md = format!("| {first_header} (mean ± std over {seeds} seeds) |");
    for (_, h) in COLUMNS {
        md.push_str(&format!(" {h} |"));
    }
    md.push_str(" NFE / step |\n|---|");
    md.push_str(&"---|".repeat(COLUMNS.len() + 1));
    md.push('\n');
    for s in stats {
        md.push_str(&format!("| {} |", s.label));
        for (k, _) in COLUMNS {
            match s.metrics.get(k) {
                Some((m, sd)) => md.push_str(&format!(" {m:.2} ± {sd:.2} |")),
                None => md.push_str(" – |"),
            }
        }
        md.push_str(&format!(" {:.2} |\n", s.nfe_per_step));
    }
    md
}

/// [`markdown_table_over_seeds`], then [`separations`] from the variant labelled `reference` (the
/// first variant when none is), under a line saying what "beyond the spread" means.
pub fn table_with_separations(first_header: &str, stats: &[SeedStats], reference: &str) -> String {
    let mut md = markdown_table_over_seeds(first_header, stats);
    if let Some(r) = stats.iter().find(|s| s.label == reference).or(stats.first()) {
        md.push_str(&format!("\nDifferences from `{}` larger than the spread (|Δ mean| > std + std):\n\n{}", r.label, separations(r, stats)));
    }
    md
}

/// Sentences naming, for each metric, the variants whose difference from `reference`'s exceeds
/// the spread (|Δ mean| > std + std), e.g. for the text under a table.
pub fn separations(reference: &SeedStats, stats: &[SeedStats]) -> String {
    let mut out = String::new();
    for (k, h) in COLUMNS {
        let names: Vec<&str> =
            stats.iter().filter(|s| s.label != reference.label && s.separated_from(reference, k) == Some(true)).map(|s| s.label.as_str()).collect();
        out.push_str(&format!(
            "- {h}: {}\n",
            if names.is_empty() {
                format!("no method differs from `{}` by more than the spread", reference.label)
            } else {
                let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
                format!("{} {} from `{}` beyond the spread", quoted.join(", "), if names.len() == 1 { "differs" } else { "differ" }, reference.label)
            }
        ));
    }
    out
}
