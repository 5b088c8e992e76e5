//! Reporting evaluation runs: labelled markdown tables (the paper's Tables 4–6 layout) and
//! metric-vs-swept-value plots (Figs. 4 and 9), shared by the book's examples.
use std::path::Path;

use plotters::prelude::*;

use super::shard::{Shard, ShardPart};
use super::{Bench, EvalConfig, ResultsFile, RunRecord};
use crate::guidance::Guidance;
use crate::{Error, Result};

/// The metric columns of the paper's tables, with their arrows.
pub const COLUMNS: [(&str, &str); 6] = [
    ("fid", "FID ↓"),
    ("precision", "precision ↑"),
    ("recall", "recall ↑"),
    ("density", "density ↑"),
    ("coverage", "coverage ↑"),
    ("consistency", "consistency ↑"),
];

/// Evaluates each labelled variant with `bench` (or reuses its record from `results`), in order,
/// with a progress bar per run ([`cached_runs`]); an interrupted call resumes from `results`.
/// Errors: those of the runs; an unwritable results file.
pub fn evaluate_variants(
    bench: &Bench,
    variants: &[(String, Guidance)],
    cfg: &EvalConfig,
    results: &mut ResultsFile,
    device: &candle_core::Device,
) -> Result<Vec<(String, RunRecord)>> {
    cached_runs(variants, results, |g| bench.key(g, cfg), |_, g, on_step| bench.evaluate(g, cfg, device, on_step))
}

/// `--shard`: shard `shard` of every labelled variant without a record in `results`, saved to
/// `dir` (`run_shard(label, guidance, on_step)`, under a progress bar) unless already there; a
/// variant whose `shard.count` parts are all in `dir` is merged (`merge`) and appended to
/// `results`. Returns whether every variant now has its record (the table can be written).
/// Errors: those of `run_shard` and `merge`; unwritable files.
pub fn sharded_runs(
    variants: &[(String, Guidance)],
    results: &mut ResultsFile,
    dir: &std::path::Path,
    shard: Shard,
    key: impl Fn(&Guidance) -> String,
    mut run_shard: impl FnMut(&str, &Guidance, &mut dyn FnMut(usize, usize)) -> Result<ShardPart>,
    merge: impl Fn(&[ShardPart]) -> Result<RunRecord>,
) -> Result<bool> {
    let mut complete = true;
    for (label, g) in variants {
        let key = key(g);
        if results.contains(&key) {
            continue;
        }
        if !ShardPart::path(dir, &key, shard).exists() {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_prefix(format!("{label} {}/{}", shard.index, shard.count));
            bar.set_style(indicatif::ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} steps").expect("template").progress_chars("=> "));
            let part = run_shard(label, g, &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            });
            bar.finish_and_clear();
            eprintln!("{label:>28}: shard {}/{} → {}", shard.index, shard.count, part?.save(dir)?.display());
        }
        let parts = ShardPart::find(dir, &key)?;
        if parts.len() == shard.count {
            let rec = merge(&parts)?;
            eprintln!("{label:>28}: {} shards merged, FID {:.2}", parts.len(), rec.metrics["fid"]);
            results.append(rec)?;
        } else {
            eprintln!("{label:>28}: {} of {} shards in {} (waiting for the others)", parts.len(), shard.count, dir.display());
            complete = false;
        }
    }
    Ok(complete)
}

/// The record of each labelled variant, in order: from `results` when it holds the variant's
/// `key` (a line on stderr says it was reused), else from `run(label, guidance, on_step)` under a
/// progress bar fed by `on_step(done, total)`, appended to `results` at once (so an interrupted
/// caller resumes). The one cached-runs loop of every table and sweep (class-conditional
/// [`evaluate_variants`], [`super::TextBench::evaluate_variants`], the examples).
///
/// Errors: those of `run`; an unwritable results file.
pub fn cached_runs(
    variants: &[(String, Guidance)],
    results: &mut ResultsFile,
    key: impl Fn(&Guidance) -> String,
    mut run: impl FnMut(&str, &Guidance, &mut dyn FnMut(usize, usize)) -> Result<RunRecord>,
) -> Result<Vec<(String, RunRecord)>> {
    let mut out = Vec::with_capacity(variants.len());
    for (label, g) in variants {
        let key = key(g);
        if results.contains(&key) {
            eprintln!("{label:>28}: reused from {} ({key})", results.path().display());
        } else {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} steps eta {eta}").expect("template").progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            let rec = run(label, g, &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            });
            bar.finish_and_clear();
            let rec = rec?;
            eprintln!("{label:>28}: FID {:.2}, consistency {:.1} ({:.0} s)", rec.metrics["fid"], rec.metrics["consistency"], rec.wall_s);
            results.append(rec)?;
        }
        let rec = results.records().iter().find(|r| r.key == key).cloned().ok_or_else(|| Error::Other(format!("run {key} missing after evaluation")))?;
        out.push((label.clone(), rec));
    }
    Ok(out)
}

/// The columns of a markdown results table besides the metrics.
#[derive(Debug, Clone, Default)]
pub struct TableLayout {
    /// Header of the label column.
    pub first_header: String,
    /// Total NFE (NFE per step × this many steps) instead of NFE per step.
    pub total_nfe_over_steps: Option<usize>,
    /// A last column with each run's settings ([`Guidance::describe`]).
    pub settings: bool,
}

/// A markdown table: one row per labelled record, the [`COLUMNS`] and NFE per step.
pub fn markdown_table(first_header: &str, rows: &[(String, RunRecord)]) -> String {
    write_table(&TableLayout { first_header: first_header.into(), ..Default::default() }, rows)
}

/// The one markdown table writer: one row per labelled record, the [`COLUMNS`] (2 decimals, "–"
/// for NaN), NFE, and optionally the settings, as `layout` says.
pub fn write_table(layout: &TableLayout, rows: &[(String, RunRecord)]) -> String {
    let fmt = |v: Option<&f64>| match v {
        Some(v) if v.is_finite() => format!("{v:.2}"),
        _ => "–".into(),
    };
    let nfe_header = if layout.total_nfe_over_steps.is_some() { "NFE" } else { "NFE / step" };
    let (settings_header, settings_rule) = if layout.settings { (" setting |", "---|") } else { ("", "") };
    let mut md = format!(
        "| {} | {} | {nfe_header} |{settings_header}\n|---|{}---|{settings_rule}\n",
        layout.first_header,
        COLUMNS.iter().map(|c| c.1).collect::<Vec<_>>().join(" | "),
        "---|".repeat(COLUMNS.len())
    );
    for (label, r) in rows {
        let cells: Vec<String> = COLUMNS.iter().map(|(k, _)| fmt(r.metrics.get(*k))).collect();
        let nfe = match layout.total_nfe_over_steps {
            Some(steps) => format!("{:.0}", r.nfe_per_step * steps as f64),
            None => format!("{:.2}", r.nfe_per_step),
        };
        md.push_str(&format!("| {label} | {} | {nfe} |", cells.join(" | ")));
        if layout.settings {
            let setting = serde_json::from_value::<Guidance>(r.guidance.clone()).map(|g| g.describe()).unwrap_or_default();
            md.push_str(&format!(" {setting} |"));
        }
        md.push('\n');
    }
    md
}

/// One panel per metric of [`COLUMNS`], each metric against the swept value `xs[i]` of
/// `rows[i]` (optionally one dashed horizontal reference line per metric, e.g. CFG), written as
/// `<stem>.png` and `<stem>.svg`.
pub fn plot_metric_curves(stem: &Path, x_label: &str, xs: &[f64], rows: &[(String, RunRecord)], reference: Option<&RunRecord>) -> Result<()> {
    crate::imaging::register_font();
    if xs.len() != rows.len() || xs.is_empty() {
        return Err(Error::shape(format!("{} swept values for {} runs", xs.len(), rows.len())));
    }
    let err = |e: String| Error::Other(format!("plot {}: {e}", stem.display()));
    crate::png_and_svg!(stem, (1080, 560), |root| {
        draw_curves(root, x_label, xs, rows, reference).map_err(err)?;
    });
    Ok(())
}

fn draw_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    x_label: &str,
    xs: &[f64],
    rows: &[(String, RunRecord)],
    reference: Option<&RunRecord>,
) -> std::result::Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (x0, x1) = xs.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let px = ((x1 - x0) * 0.05).max(1e-3);
    for (panel, (key, title)) in root.split_evenly((2, 3)).iter().zip(COLUMNS) {
        let ys: Vec<f64> = rows.iter().map(|(_, r)| r.metrics.get(key).copied().unwrap_or(f64::NAN)).collect();
        let mut all: Vec<f64> = ys.iter().copied().filter(|v| v.is_finite()).collect();
        if let Some(v) = reference.and_then(|r| r.metrics.get(key)).filter(|v| v.is_finite()) {
            all.push(*v);
        }
        if all.is_empty() {
            continue;
        }
        let (y0, y1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let py = ((y1 - y0) * 0.1).max(0.5);
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(44)
            .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))
            .map_err(|x| e(&x))?;
        chart.configure_mesh().x_desc(x_label).draw().map_err(|x| e(&x))?;
        let pts: Vec<(f64, f64)> = xs.iter().copied().zip(ys).filter(|p| p.1.is_finite()).collect();
        chart.draw_series(LineSeries::new(pts.clone(), BLUE.stroke_width(2))).map_err(|x| e(&x))?;
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE.filled()))).map_err(|x| e(&x))?;
        if let Some(v) = reference.and_then(|r| r.metrics.get(key)).filter(|v| v.is_finite()) {
            chart.draw_series(DashedLineSeries::new(vec![(x0 - px, *v), (x1 + px, *v)], 5, 4, BLACK.mix(0.5).stroke_width(1))).map_err(|x| e(&x))?;
        }
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// File-name stems for method names (which may come from user JSON): characters other than
/// ASCII letters, digits, `-`, `_`, `+` and `.` become `_`, leading dots are dropped, and a
/// repeated name gets `-2`, `-3`, … so no two methods share an output file.
pub fn file_stems<S: AsRef<str>>(names: &[S]) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    names
        .iter()
        .map(|n| {
            let clean: String = n.as_ref().chars().map(|c| if c.is_ascii_alphanumeric() || "-_+.".contains(c) { c } else { '_' }).collect();
            let clean = clean.trim_start_matches('.').to_string();
            let clean = if clean.is_empty() { "method".to_string() } else { clean };
            let k = seen.entry(clean.clone()).or_insert(0);
            *k += 1;
            if *k == 1 {
                clean
            } else {
                format!("{clean}-{k}")
            }
        })
        .collect()
}
