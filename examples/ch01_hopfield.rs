//! Chapter 1 of the book: the Hopfield energy of attention (ERG Eq. 4, 9; Algorithm 1).
//!
//! ```text
//! cargo run --release --example ch01_hopfield          # → results/ch01/{landscape,entropy}.{png,svg}
//! ```
//! Draws the rectified energy E(ξ; X) of four stored 2-D patterns as a heat map, with the update
//! trajectories of Algorithm 1 for several (τ, α, γ, K) from one start, and the entropy of the
//! attention weights as a function of τ. Prints the summary the tests snapshot.
use std::path::Path;

use erg::analysis::hopfield::{energy_grid, label, summarize, trajectory};
use erg::attention::Energy;
use plotters::prelude::*;

// ANCHOR: helpers
/// A perceptual dark-blue → teal → yellow ramp for v ∈ [lo, hi].
fn ramp(v: f64, lo: f64, hi: f64) -> RGBColor {
    let stops = [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let x = ((v - lo) / (hi - lo)).clamp(0.0, 1.0) * (stops.len() - 1) as f64;
    let (i, f) = ((x.floor() as usize).min(stops.len() - 2), x - x.floor().min((stops.len() - 2) as f64));
    let (a, b) = (stops[i], stops[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f) as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

// ANCHOR_END: helpers

/// Chapter 1 of the book: the Hopfield energy of attention (ERG Eq. 4, 9; Algorithm 1).
#[derive(clap::Parser, Debug)]
struct Args {}

fn main() -> anyhow::Result<()> {
    <Args as clap::Parser>::parse(); // --help; no flags
                                     // ANCHOR: setup
    let out = Path::new("results/ch01");
    std::fs::create_dir_all(out)?;
    erg::imaging::register_font(); // the embedded font, for headless bitmap figures
                                   // Four stored patterns (the keys = values X) in 2-D, and a start state ξ₀ (the query).
    let patterns = vec![vec![2.0, 1.5], vec![-2.0, 1.0], vec![0.5, -2.5], vec![2.5, -1.0]];
    let start = vec![-0.5, -0.3];
    // Standard attention, lower temperatures, the energy re-weighting α, a smaller step γ, K steps.
    let settings = [
        Energy { tau: 1.0, alpha: 1.0, gamma: 1.0, steps: 4 },
        Energy { tau: 0.3, alpha: 1.0, gamma: 1.0, steps: 4 },
        Energy { tau: 0.01, alpha: 1.0, gamma: 1.0, steps: 4 },
        Energy { tau: 1.0, alpha: 0.5, gamma: 1.0, steps: 4 },
        Energy { tau: 1.0, alpha: 1.0, gamma: 0.5, steps: 4 },
    ];
    let taus = [0.01, 0.03, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];
    let summary = summarize(&patterns, &[start.clone(), vec![1.0, 0.0], vec![0.0, 1.0]], &taus, &start, &settings)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    // ANCHOR_END: setup

    // ANCHOR: landscape
    // The standard (τ = α = 1) landscape as a heat map; each setting's trajectory on top.
    let (lo, hi, n) = (-3.5, 3.5, 120);
    let grid = energy_grid(&patterns, &settings[0], (lo, hi), (lo, hi), n);
    let (emin, emax) = grid.iter().flatten().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    erg::png_and_svg!(out.join("landscape"), (640, 600), |root| {
        {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption("E(ξ; X) at τ = α = 1, and Algorithm 1 from ξ₀", ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(40)
                .build_cartesian_2d(lo..hi, lo..hi)?;
            chart.configure_mesh().disable_mesh().draw()?;
            let step = (hi - lo) / (n - 1) as f64;
            chart.draw_series(grid.iter().enumerate().flat_map(|(j, row)| {
                row.iter().enumerate().map(move |(i, &v)| {
                    let (x, y) = (lo + step * i as f64, lo + step * j as f64);
                    let c = ramp(v, emin, emax);
                    Rectangle::new([(x - step / 2.0, y - step / 2.0), (x + step / 2.0, y + step / 2.0)], c.filled())
                })
            }))?;
            chart.draw_series(patterns.iter().map(|p| Cross::new((p[0], p[1]), 7, WHITE.stroke_width(3))))?;
            for (si, e) in settings.iter().enumerate() {
                let color = Palette99::pick(si).to_rgba();
                let tr: Vec<(f64, f64)> = trajectory(&start, &patterns, e)?.iter().map(|s| (s[0], s[1])).collect();
                chart
                    .draw_series(LineSeries::new(tr.clone(), color.stroke_width(2)))?
                    .label(label(e))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
                chart.draw_series(tr.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).position(SeriesLabelPosition::UpperLeft).draw()?;
            root.present()?;
        }
    });
    // ANCHOR_END: landscape

    // ANCHOR: entropy
    // Mean attention entropy against τ (log axis): τ → 0 flattens the weights to ln N.
    erg::png_and_svg!(out.join("entropy"), (560, 400), |root| {
        {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption("attention entropy vs temperature", ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(34)
                .y_label_area_size(48)
                .build_cartesian_2d((0.008f64..6.0).log_scale(), 0.0..summary.max_entropy * 1.1)?;
            chart.configure_mesh().x_desc("τ").y_desc("entropy (nats)").draw()?;
            chart.draw_series(LineSeries::new(summary.entropy_vs_tau.clone(), BLUE.stroke_width(2)))?;
            chart.draw_series(summary.entropy_vs_tau.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
            chart.draw_series(LineSeries::new(vec![(0.008, summary.max_entropy), (6.0, summary.max_entropy)], BLACK.mix(0.5)))?;
            root.present()?;
        }
    });
    // ANCHOR_END: entropy
    eprintln!("→ {}", out.display());
    Ok(())
}
