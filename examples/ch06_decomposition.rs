//! Chapter 6 of the book: parallel and orthogonal parts of the guidance difference along
//! sampling (ERG Appendix B.2, Fig. 6), for CFG and I-ERG on the shipped emoji DiT, and the
//! kickoff κ the CFG curve suggests.
//!
//! ```text
//! cargo run --release --example ch06_decomposition     # → results/ch06/decomposition.{png,svg}
//! cargo run --release --example ch06_decomposition -- --quick   # CI-sized (2 per class, 10 steps)
//! ```
use std::path::Path;

use erg::analysis::decomposition::{along_sampling, suggest_kappa, DecompositionPoint};
use erg::guidance::{preset, Models};
use erg::models::Denoiser;
use plotters::prelude::*;

/// Chapter 6 of the book: parallel and orthogonal parts of the guidance difference along
/// sampling (ERG Appendix B.2, Fig. 6), for CFG and I-ERG on the shipped emoji DiT, and the
/// kickoff κ the CFG curve suggests.
#[derive(clap::Parser, Debug)]
struct Args {
    /// A CI-sized run: fewer samples, seeds and steps (a minute or less).
    #[arg(long)]
    quick: bool,
}

fn main() -> anyhow::Result<()> {
    <Args as clap::Parser>::parse(); // --help, and unknown flags are errors
                                     // ANCHOR: setup
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("ERG_QUICK").is_some(); // CI-sized run
    let out = Path::new("results/ch06");
    std::fs::create_dir_all(out)?;
    erg::imaging::register_font();
    let device = erg::device::best();
    let (model, _) = erg::models::dit::load(Path::new(erg::checkpoint::SHIPPED_EMOJI_DIT), &device)?;
    // 8 samples of each of the 9 classes, 50 Euler steps, seed 0.
    let labels = erg::sample::class_grid_labels(9, if quick { 2 } else { 8 }, &device)?;
    let num_steps: usize = if quick { 10 } else { 50 };
    // ANCHOR_END: setup

    // ANCHOR: decompose
    let mut curves: Vec<(String, Vec<DecompositionPoint>)> = Vec::new();
    for name in ["cfg", "ierg"] {
        let g = preset(name, 3.0, model.depth())?;
        curves.push((name.to_string(), along_sampling(Models::main(&model), &g, &labels, num_steps, 0)?));
    }
    let kappa = suggest_kappa(&curves[0].1, 0.9);
    println!("suggested κ (CFG's parallel part within 10 % of its floor after the peak): {kappa:?}");
    for (name, pts) in &curves {
        let late: Vec<_> = pts.iter().filter(|p| p.t >= 0.5).collect();
        let mean = |f: fn(&DecompositionPoint) -> f64| late.iter().map(|p| f(p)).sum::<f64>() / late.len() as f64;
        println!("{name}: for t ≥ 0.5, mean parallel {:.4}, orthogonal {:.4}", mean(|p| p.parallel), mean(|p| p.orthogonal));
    }
    // ANCHOR_END: decompose

    // ANCHOR: plot
    let ymax = curves.iter().flat_map(|(_, p)| p.iter().map(|q| q.parallel.max(q.orthogonal))).fold(0.0, f64::max) * 1.1;
    erg::png_and_svg!(out.join("decomposition"), (640, 420), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("‖Δ∥‖ and ‖Δ⊥‖ of D_pos − D_neg along sampling", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..1.0, 0.0..ymax)?;
        chart.configure_mesh().x_desc("t (0 = noise, 1 = data)").y_desc("RMS norm").draw()?;
        for (i, (name, pts)) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let par: Vec<(f64, f64)> = pts.iter().map(|p| (p.t, p.parallel)).collect();
            let orth: Vec<(f64, f64)> = pts.iter().map(|p| (p.t, p.orthogonal)).collect();
            chart
                .draw_series(LineSeries::new(par, color.stroke_width(2)))?
                .label(format!("{name} parallel"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            chart
                .draw_series(DashedLineSeries::new(orth, 5, 4, color.stroke_width(2)))?
                .label(format!("{name} orthogonal"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(1)));
        }
        if let Some(k) = kappa {
            chart
                .draw_series(LineSeries::new(vec![(k, 0.0), (k, ymax)], BLACK.mix(0.4)))?
                .label(format!("suggested κ = {k:.2}"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.4)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
        root.present()?;
    });
    println!("→ {}", out.join("decomposition.{png,svg}").display());
    // ANCHOR_END: plot
    Ok(())
}
