//! Hyperparameter grids of each method (the paper's ranges), selection of each method's setting by
//! mean rank over all metrics, and Pareto fronts (Fig. 2: quality vs diversity vs consistency).
use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::rank::{select_best, MetricSpec};
use super::RunRecord;
use crate::guidance::{preset, Cads, Guidance};
use crate::{Error, Result};

/// The grid of settings swept for `method` on a model of `depth` blocks, over guidance scales
/// `scales`. Method-specific ranges follow the paper: CADS τ₁ ∈ {0.6, 0.8}, τ₂ ∈ {0.8, 1.0}
/// (τ₁ < τ₂), s ∈ {0.25, 1.0}; I-ERG τ ∈ {0.01, 0.1, 0.5}, κ ∈ {0.2, 0.3, 0.4}; PAG/SEG/SAG/SLG
/// their perturbation scale ∈ {1, 3, 5} (×0.25 for SAG); others the guidance scale alone.
pub fn grid(method: &str, depth: usize, scales: &[f64]) -> Result<Vec<Guidance>> {
    let mut out = Vec::new();
    for &w in scales {
        let base = preset(method, w, depth)?;
        if base.terms.is_empty() {
            out.push(base); // no guidance: the scale does not enter
            break;
        }
        if base.cads.is_some() {
            for (t1, t2) in [(0.6, 0.8), (0.6, 1.0), (0.8, 1.0)] {
                for s in [0.25, 1.0] {
                    out.push(base.clone().with_cads(t1, t2, s)?);
                }
            }
        } else if base.has_rectified_attention() {
            for tau in [0.01, 0.1, 0.5] {
                for kappa in [0.2, 0.3, 0.4] {
                    out.push(base.clone().with_tau(tau)?.with_kappa(kappa)?);
                }
            }
        } else if let Some(perturbation) = base
            .terms
            .last()
            .filter(|t| t.negative.model == crate::guidance::ModelChoice::Main && (t.negative.condition == base.positive || t.negative.sag.is_some()))
        {
            // PAG/SEG/SAG/SLG: the perturbed term's own scale (SAG's a quarter of the others').
            let unit = if perturbation.negative.sag.is_some() { 0.25 } else { 1.0 };
            for s in [1.0, 3.0, 5.0] {
                out.push(base.clone().with_perturbation_scale(unit * s)?);
            }
            if base.terms.len() == 1 {
                break; // the guidance scale does not enter these methods
            }
        } else {
            out.push(base);
        }
    }
    Ok(out)
}

/// A compact grid for text-to-image models (a few settings per method, sized for a CPU), every
/// method with a guidance term at guidance scale w ∈ {2, 3} (the paper selects the strength of
/// each method, ERG included, by mean rank, Sec. 5 "Baselines"): CFG, APG, AutoGuidance w alone;
/// CADS (τ₁, τ₂) ∈ {(0.6, 0.9), (0.8, 1.0)}; SEG (with CFG) perturbation scale ∈ {0.5, 1}; PAG
/// (no CFG term, w does not enter) ∈ {0.5, 1}, SAG ∈ {0.25, 0.75}; ERG and its combinations with
/// I-ERG τ ∈ {0.1, 0.5}, γ = 1 (κ = 0.4, Table 7's blocks) and, for `erg`, C-ERG τ_c ∈ {0.01, 0.1};
/// `cerg` τ_c ∈ {0.01, 0.1, 0.5}. Table 1's eleven methods make 35 settings, Table 5's four 20.
///
/// Errors: an unknown method name.
pub fn text_grid(method: &str, depth: usize, text_layers: usize) -> Result<Vec<Guidance>> {
    const SCALES: [f64; 2] = [2.0, 3.0];
    let p = |w: f64| crate::guidance::preset_for(method, w, depth, Some(text_layers));
    // Each of SCALES × each variant of the preset at that scale.
    let at_each_scale = |vary: &dyn Fn(Guidance) -> Result<Vec<Guidance>>| -> Result<Vec<Guidance>> {
        let mut out = vec![];
        for w in SCALES {
            out.extend(vary(p(w)?)?);
        }
        Ok(out)
    };
    // I-ERG τ with γ = 1, and C-ERG τ_c where the method has it.
    let erg = |g: Guidance, tau: Option<f64>, tau_c: Option<f64>| -> Result<Guidance> {
        let mut g = g;
        if let Some(tau) = tau {
            g = g.with_tau(tau)?.with_gamma(1.0)?;
        }
        if let Some(tc) = tau_c {
            g = g.with_tau_c(tc)?;
        }
        Ok(g)
    };
    Ok(match method {
        "none" | "uncond" => vec![p(1.0)?],
        "cfg" | "apg" | "autoguidance" => at_each_scale(&|g| Ok(vec![g]))?,
        "cads" => at_each_scale(&|g| [(0.6, 0.9), (0.8, 1.0)].iter().map(|&(a, b)| g.clone().with_cads(a, b, Cads::default().noise_scale)).collect())?,
        "cfg+seg" | "cfg+pag" => at_each_scale(&|g| [0.5, 1.0].iter().map(|&s| g.clone().with_perturbation_scale(s)).collect())?,
        "pag" | "seg" => [0.5, 1.0].iter().map(|&s| p(3.0)?.with_perturbation_scale(s)).collect::<Result<_>>()?,
        "sag" => [0.25, 0.75].iter().map(|&s| p(3.0)?.with_perturbation_scale(s)).collect::<Result<_>>()?,
        "erg" => at_each_scale(&|g| {
            let mut v = vec![];
            for tau in [0.1, 0.5] {
                for tau_c in [0.01, 0.1] {
                    v.push(erg(g.clone(), Some(tau), Some(tau_c))?);
                }
            }
            Ok(v)
        })?,
        "ierg" | "erg+apg" | "erg+cads" => at_each_scale(&|g| [0.1, 0.5].iter().map(|&tau| erg(g.clone(), Some(tau), None)).collect())?,
        "cerg" => at_each_scale(&|g| [0.01, 0.1, 0.5].iter().map(|&tc| erg(g.clone(), None, Some(tc))).collect())?,
        m => vec![crate::guidance::preset_for(m, 3.0, depth, Some(text_layers))?],
    })
}

/// For each method, the record with the lowest mean rank over `metrics` among that method's runs.
pub fn select_per_method<'a>(records: &'a [RunRecord], metrics: &[MetricSpec]) -> BTreeMap<String, &'a RunRecord> {
    let mut by: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    for r in records {
        by.entry(r.method.clone()).or_default().push(r);
    }
    by.into_iter()
        .filter_map(|(m, runs)| {
            let values: Vec<Vec<f64>> = runs.iter().map(|r| metrics.iter().map(|s| r.metrics.get(&s.name).copied().unwrap_or(f64::NAN)).collect()).collect();
            select_best(&values, metrics).map(|i| (m, runs[i]))
        })
        .collect()
}

/// One record per variant whose metrics are the means over seeds of `per_seed[s][v]` (the
/// variants in the same order at every seed, as [`super::report::evaluate_variants`] returns
/// them), each a copy of the first seed's record with its key naming the seeds and `wall_s`
/// summed. A metric missing or NaN at some seed is NaN (it then ranks last in
/// [`select_per_method`]).
///
/// Errors: no seeds, or seeds with different variant counts.
pub fn mean_over_seeds(per_seed: &[Vec<RunRecord>]) -> Result<Vec<RunRecord>> {
    let first = per_seed.first().ok_or_else(|| Error::hp("at least one seed"))?;
    if per_seed.iter().any(|runs| runs.len() != first.len()) {
        return Err(Error::Other("every seed needs the same variants".into()));
    }
    let seeds: Vec<String> = per_seed.iter().map(|runs| runs.first().map_or(String::new(), |r| r.seed.to_string())).collect();
    Ok((0..first.len())
        .map(|v| {
            let runs: Vec<&RunRecord> = per_seed.iter().map(|rs| &rs[v]).collect();
            let mut mean = runs[0].clone();
            for (name, value) in mean.metrics.iter_mut() {
                let xs: Vec<f64> = runs.iter().map(|r| r.metrics.get(name).copied().unwrap_or(f64::NAN)).collect();
                *value = xs.iter().sum::<f64>() / xs.len() as f64;
            }
            mean.key = format!("{} (mean over seeds {})", runs[0].key, seeds.join(","));
            mean.wall_s = runs.iter().map(|r| r.wall_s).sum();
            mean
        })
        .collect())
}

/// The selection of each method's setting by mean rank over `metrics` among `records` (one per
/// setting, e.g. from [`mean_over_seeds`]), with what it rests on, to be stored in the
/// checkpoint's card ([`crate::checkpoint::GuidanceSelection`]).
pub fn selection(records: &[RunRecord], metrics: &[MetricSpec], seeds: &[u64], cfg: &super::EvalConfig) -> crate::checkpoint::GuidanceSelection {
    let names: Vec<String> =
        metrics.iter().map(|m| format!("{}{}", m.name, if m.direction == super::rank::Direction::LowerIsBetter { "↓" } else { "↑" })).collect();
    crate::checkpoint::GuidanceSelection {
        rule: format!("mean rank over {} (ERG Appendix A.1), metrics averaged over the seeds", names.join(", ")),
        seeds: seeds.to_vec(),
        samples_per_class: cfg.samples_per_class,
        num_steps: cfg.num_steps,
        features: cfg.features.clone().unwrap_or_else(|| "classifier".into()),
        methods: select_per_method(records, metrics).into_iter().map(|(m, r)| (m, r.guidance.clone())).collect(),
    }
}

/// Indices of the Pareto-optimal points when both coordinates are to be maximised.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let (x, y) = points[i];
            !x.is_nan() && !y.is_nan() && !points.iter().any(|&(a, b)| a >= x && b >= y && (a > x || b > y))
        })
        .collect();
    front.sort_by(|&a, &b| points[a].0.partial_cmp(&points[b].0).unwrap());
    front
}

/// Scatter plots of `records` (one colour per method) for metric pairs `pairs` (x, y), with each
/// method's Pareto front dashed; written to `path` as PNG if it ends in `.png` (embedded font),
/// SVG otherwise (headless either way).
pub fn plot_pareto(records: &[RunRecord], pairs: &[(&str, &str)], path: &Path) -> Result<()> {
    crate::imaging::register_font();
    let size = (480 * pairs.len() as u32 + 180, 440); // panels + a legend column
    if path.extension().is_some_and(|e| e == "png") {
        draw_pareto(BitMapBackend::new(path, size).into_drawing_area(), records, pairs, path)
    } else {
        draw_pareto(SVGBackend::new(path, size).into_drawing_area(), records, pairs, path)
    }
}

fn draw_pareto<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, records: &[RunRecord], pairs: &[(&str, &str)], path: &Path) -> Result<()> {
    let err = |e: String| Error::Other(format!("plot {}: {e}", path.display()));
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (plots, legend) = root.split_horizontally(480 * pairs.len() as u32);
    let panels = plots.split_evenly((1, pairs.len()));
    let mut methods: Vec<&str> = records.iter().map(|r| r.method.as_str()).collect();
    methods.dedup();
    methods.sort();
    methods.dedup();
    for (panel, (xm, ym)) in panels.iter().zip(pairs) {
        let pts: Vec<(f64, f64)> =
            records.iter().map(|r| (r.metrics.get(*xm).copied().unwrap_or(f64::NAN), r.metrics.get(*ym).copied().unwrap_or(f64::NAN))).collect();
        let finite: Vec<&(f64, f64)> = pts.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        if finite.is_empty() {
            continue;
        }
        let (x0, x1) = finite.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (y0, y1) = finite.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let (px, py) = (((x1 - x0) * 0.1).max(1e-3), ((y1 - y0) * 0.1).max(1e-3));
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .caption(format!("{ym} vs {xm}"), ("sans-serif", 18))
            .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))
            .map_err(|e| err(e.to_string()))?;
        chart.configure_mesh().x_desc(*xm).y_desc(*ym).draw().map_err(|e| err(e.to_string()))?;
        for (mi, m) in methods.iter().enumerate() {
            let color = Palette99::pick(mi).to_rgba();
            let mine: Vec<(f64, f64)> =
                records.iter().zip(&pts).filter(|(r, p)| r.method == *m && p.0.is_finite() && p.1.is_finite()).map(|(_, p)| *p).collect();
            chart.draw_series(mine.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|e| err(e.to_string()))?;
            let front: Vec<(f64, f64)> = pareto_front(&mine).into_iter().map(|i| mine[i]).collect();
            if front.len() > 1 {
                chart.draw_series(DashedLineSeries::new(front, 4, 3, color.stroke_width(1))).map_err(|e| err(e.to_string()))?;
            }
        }
    }
    for (mi, m) in methods.iter().enumerate() {
        let (x, y) = (12, 40 + 20 * mi as i32);
        legend.draw(&Circle::new((x, y), 5, Palette99::pick(mi).to_rgba().filled())).map_err(|e| err(e.to_string()))?;
        legend.draw(&Text::new(m.to_string(), (x + 12, y - 8), ("sans-serif", 15))).map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
