//! Chapter 7 of the book: attention certainty per block (ERG Appendix B.4, Fig. 7) and the I-ERG
//! layer range (Fig. 8) on the shipped emoji DiT.
//!
//! ```text
//! cargo run --release --example ch07_attention_blocks              # → results/ch07/
//! cargo run --release --example ch07_attention_blocks -- --fig8    # + every [l_min, l_max) evaluated (≈ 5 min)
//! cargo run --release --example ch07_attention_blocks -- --fig8 --quick   # CI-sized grid (1 per class, 4 steps)
//! ```
use std::path::Path;

use erg::analysis::certainty::{noise_like, profile, suggest_layer_range};
use erg::attention::Rectifier;
use erg::eval::{Bench, BenchPaths, EvalConfig};
use erg::guidance::preset;
use erg::models::Denoiser;
use plotters::prelude::*;

/// Chapter 7 of the book: attention certainty per block (ERG Appendix B.4, Fig. 7) and the
/// I-ERG layer range (Fig. 8) on the shipped emoji DiT.
#[derive(clap::Parser, Debug)]
struct Args {
    /// A CI-sized run: fewer samples, seeds and steps (a minute or less).
    #[arg(long)]
    quick: bool,
    /// Also evaluate I-ERG's layer range (Fig. 8), which samples and scores every block range.
    #[arg(long)]
    fig8: bool,
}

fn main() -> anyhow::Result<()> {
    <Args as clap::Parser>::parse(); // --help, and unknown flags are errors
    let fig8 = std::env::args().any(|a| a == "--fig8");
    // ANCHOR: certainty
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("ERG_QUICK").is_some(); // CI-sized run
    let out = Path::new("results/ch07");
    std::fs::create_dir_all(out)?;
    erg::imaging::register_font();
    let device = erg::device::best();
    let (model, _) = erg::models::dit::load(Path::new(erg::checkpoint::SHIPPED_EMOJI_DIT), &device)?;
    let data = erg::data::emoji::load(erg::data::emoji::DEFAULT_DIR, model.image_shape().1)?;
    let (x1, labels) = data.per_class(8)?; // 8 real images of each class
    let (x1, labels) = (x1.to_device(&device)?, candle_core::Tensor::new(labels.as_slice(), &device)?);
    let ts = [0.1, 0.3, 0.5, 0.7, 0.9];
    let prof = profile(&model, &x1, &labels, &noise_like(&x1, 0)?, &ts, 0.95)?;
    let (l_min, l_max) = suggest_layer_range(&prof.certainty_per_block());
    for ((t, row), mm) in prof.ts.iter().zip(&prof.shares).zip(&prof.mean_max) {
        let cells: Vec<String> = row.iter().zip(mm).map(|(s, m)| format!("{:4.1} % ({m:.2})", 100.0 * s)).collect();
        println!("t = {t:.1}: share > 0.95 (mean max prob) per block: {}", cells.join("  "));
    }
    println!("suggested I-ERG blocks: [{l_min}, {l_max}) of {}", model.depth());
    // ANCHOR_END: certainty

    // ANCHOR: plot
    let ymax = (120.0 * prof.mean_max.iter().chain(&prof.shares).flatten().copied().fold(0.0, f64::max)).min(100.0);
    erg::png_and_svg!(out.join("certainty"), (560, 400), |root| {
        root.fill(&WHITE)?;
        let depth = model.depth();
        let mut chart = ChartBuilder::on(&root)
            .caption("attention certainty per block (mean largest probability)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5..depth as f64 - 0.5, 0.0..ymax)?;
        chart.configure_mesh().x_desc("block").y_desc("%").x_labels(depth).x_label_formatter(&|x| format!("{x:.0}")).draw()?;
        // Solid: mean largest probability; dashed: share of (query, head) pairs above 0.95.
        chart.draw_series(std::iter::once(Rectangle::new([(l_min as f64 - 0.5, 0.0), (l_max as f64 - 0.5, ymax)], RGBColor(255, 230, 180).filled())))?;
        for (i, ((t, row), mm)) in prof.ts.iter().zip(&prof.shares).zip(&prof.mean_max).enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = mm.iter().enumerate().map(|(l, s)| (l as f64, 100.0 * s)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(format!("t = {t}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            let above: Vec<(f64, f64)> = row.iter().enumerate().map(|(l, s)| (l as f64, 100.0 * s)).collect();
            chart.draw_series(DashedLineSeries::new(above, 4, 3, color.stroke_width(1)))?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
        root.present()?;
    });
    // ANCHOR_END: plot

    if fig8 {
        // ANCHOR: fig8
        // Every block range [l_min, l_max) for I-ERG (w = 3, τ = 0.01, κ = 0.3), evaluated with
        // the metrics machinery at a small sample count; FID and consistency per range.
        let bench = Bench::from_paths(&BenchPaths::default(), &device)?;
        let cfg = EvalConfig { samples_per_class: if quick { 1 } else { 4 }, num_steps: if quick { 4 } else { 20 }, ..Default::default() };
        let depth = model.depth();
        let mut grid = vec![vec![f64::NAN; depth + 1]; depth];
        for a in 0..depth {
            for b in a + 1..=depth {
                let g = preset("ierg", 3.0, depth)?.with_blocks(a, b)?.with_rectifier(Rectifier::temperature(0.01))?;
                let r = bench.evaluate(&g, &cfg, &device, |_, _| {})?;
                println!("[{a}, {b}): FID {:.2}, consistency {:.1}", r.metrics["fid"], r.metrics["consistency"]);
                grid[a][b] = r.metrics["fid"];
            }
        }
        let (lo, hi) = grid.iter().flatten().filter(|v| v.is_finite()).fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        erg::png_and_svg!(out.join("layer_ranges"), (480, 440), |root| {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption("I-ERG FID by block range (lower is better)", ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(34)
                .y_label_area_size(40)
                .build_cartesian_2d(-0.5..depth as f64 - 0.5, 0.5..depth as f64 + 0.5)?;
            chart.configure_mesh().x_desc("l_min").y_desc("l_max").disable_mesh().draw()?;
            for (a, row) in grid.iter().enumerate() {
                for (b, v) in row.iter().enumerate().filter(|(_, v)| v.is_finite()) {
                    let shade = (255.0 * (1.0 - (v - lo) / (hi - lo).max(1e-9))) as u8;
                    let (x, y) = (a as f64, b as f64);
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                        RGBColor(255 - shade / 2, 255 - shade / 3, 255).filled(),
                    )))?;
                    chart.draw_series(std::iter::once(Text::new(format!("{v:.0}"), (x - 0.2, y + 0.1), ("sans-serif", 14))))?;
                }
            }
            root.present()?;
        });
        // ANCHOR_END: fig8
    }
    println!("→ {}", out.display());
    Ok(())
}
