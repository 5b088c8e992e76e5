//! Chapter 5 of the book: the shipped text-to-image emoji MMDiT with CFG, C-ERG and ERG at the
//! same seeds, then the variance of the first velocity v(ε, φ, t = 0) for CFG's negative (the
//! empty prompt φ_∅) and C-ERG's (the prompt encoded with τ_c, φ_c^τ), marginal (Eq. 13) and
//! conditional (Eq. 14) (ERG Appendix B.1, Fig. 5).
//!
//! ```text
//! cargo run --release --example ch05_velocity_variance   # → results/ch05/{samples.png, velocity_variance.{png,svg}}
//! cargo run --release --example ch05_velocity_variance -- --quick
//! ```
use std::path::Path;

use erg::analysis::variance::{histogram, initial_velocity_variance, VelocityVariance};
use erg::eval::PromptSet;
use erg::guidance::{preset_for, Models, TextErg};
use erg::imaging::{grid, labelled_comparison, save_png, to_rgb8, Panel};
use erg::models::mmdit::{t2i::SHIPPED_EMOJI_MMDIT, TextToImage};
use erg::models::Denoiser;
use erg::sample::{sample, SampleConfig};
use plotters::prelude::*;

/// Chapter 5 of the book: the shipped text-to-image emoji MMDiT with CFG, C-ERG and ERG at
/// the same seeds, then the variance of the first velocity v(ε, φ, t = 0) for CFG's negative (the
/// empty prompt φ_∅) and C-ERG's (the prompt encoded with τ_c, φ_c^τ), marginal (Eq. 13) and
/// conditional (Eq. 14) (ERG Appendix B.1, Fig. 5).
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
    let out = Path::new("results/ch05");
    std::fs::create_dir_all(out)?;
    erg::imaging::register_font();
    let device = erg::device::best();
    let (model, _) = TextToImage::load_with_hub_encoder(Path::new(SHIPPED_EMOJI_MMDIT), &device)?;
    // ANCHOR_END: setup

    // ANCHOR: samples
    // Three prompts × 6 seeds with CFG, C-ERG and ERG (Table 7 text-to-image defaults), w = 3.
    let show = ["red apple", "rocket", "dog face"];
    let seeds: usize = if quick { 2 } else { 6 };
    let steps: usize = if quick { 10 } else { 50 };
    let mut panels = vec![];
    for name in ["cfg", "cerg", "erg"] {
        let g = preset_for(name, 3.0, model.depth(), model.text_layers())?;
        let mut rows = vec![];
        for p in show {
            let ids = model.prompt_ids(&vec![p; seeds], &device)?; // (seeds, L), the same seeds for every prompt
            let cfg = SampleConfig { num_steps: steps, seed: 0, batch_size: seeds };
            rows.push(sample(Models::main(&model), &g, &ids, &cfg, 0, &device, |_, _| {})?.images);
        }
        let images = candle_core::Tensor::cat(&rows, 0)?;
        panels.push(Panel { title: format!("{}, w = 3", name.to_uppercase()), image: grid(&to_rgb8(&images)?, seeds, 2, 2) });
    }
    let labels: Vec<String> = show.iter().map(|s| s.to_string()).collect();
    save_png(&labelled_comparison(&panels, &labels, 66, 2, 3)?, &out.join("samples.png"))?;
    // ANCHOR_END: samples

    // ANCHOR: prompts
    // D_c: 3 emoji names of each of the 9 categories; N = 20 noises as in the paper.
    let meta = erg::data::emoji::load_meta(erg::data::emoji::DEFAULT_DIR)?;
    let prompts = PromptSet::emoji(&meta, if quick { 1 } else { 3 })?;
    let ids = model.prompt_ids(&prompts.prompts.iter().map(String::as_str).collect::<Vec<_>>(), &device)?; // (P, L)
    let num_noises: usize = if quick { 6 } else { 20 };
    // C-ERG of Table 7: τ_c = 0.01 in every layer of the text encoder.
    let rect = TextErg::defaults(model.depth(), model.text_layers().unwrap_or(0)).text;
    // ANCHOR_END: prompts

    // ANCHOR: variance
    let vv = initial_velocity_variance(&model, &ids, &rect, num_noises, 0)?;
    let s = vv.summary(4);
    println!("{} prompts × {num_noises} noises, τ_c = {}", prompts.prompts.len(), rect.tau);
    println!("{:>24} {:>10} {:>10} {:>10} {:>10}", "", "mean", "p10", "median", "p90");
    for (name, q) in [
        ("marginal, CFG (φ_∅)", &s.marginal_null),
        ("marginal, C-ERG (φ_c^τ)", &s.marginal_rectified),
        ("conditional, CFG", &s.conditional_null),
        ("conditional, C-ERG", &s.conditional_rectified),
    ] {
        println!("{name:>24} {:>10.4} {:>10.4} {:>10.4} {:>10.4}", q.mean, q.p10, q.median, q.p90);
    }
    std::fs::write(out.join("summary.json"), serde_json::to_string_pretty(&s)?)?;
    // ANCHOR_END: variance

    // ANCHOR: plot
    plot(&vv, out)?;
    println!("→ {}", out.join("velocity_variance.{png,svg}").display());
    // ANCHOR_END: plot
    Ok(())
}

// ANCHOR: helpers
/// Two histograms (marginal, conditional) of log10 variance, CFG against C-ERG.
fn plot(vv: &VelocityVariance, out: &Path) -> anyhow::Result<()> {
    let log = |v: &[f64]| v.iter().map(|x| x.max(1e-8).log10()).collect::<Vec<_>>();
    let panels = [
        ("marginal variance (Eq. 13)", log(&vv.marginal_null), log(&vv.marginal_rectified)),
        ("conditional variance (Eq. 14)", log(&vv.conditional_null), log(&vv.conditional_rectified)),
    ];
    let bins = 40;
    erg::png_and_svg!(out.join("velocity_variance"), (900, 380), |root| {
        root.fill(&WHITE)?;
        for (area, (title, cfg, cerg)) in root.split_evenly((1, 2)).iter().zip(&panels) {
            let all: Vec<f64> = cfg.iter().chain(cerg).copied().collect();
            let (lo, hi) = (all.iter().copied().fold(f64::INFINITY, f64::min), all.iter().copied().fold(f64::NEG_INFINITY, f64::max) + 1e-9);
            let share = |v: &[f64]| histogram(v, lo, hi, bins).into_iter().map(|c| c as f64 / v.len() as f64).collect::<Vec<_>>();
            let (hc, he) = (share(cfg), share(cerg));
            let ymax = hc.iter().chain(&he).copied().fold(0.0, f64::max) * 1.1;
            let mut chart = ChartBuilder::on(area)
                .caption(*title, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(34)
                .y_label_area_size(46)
                .build_cartesian_2d(lo..hi, 0.0..ymax)?;
            chart.configure_mesh().x_desc("log10 variance").y_desc("share of positions").draw()?;
            let width = (hi - lo) / bins as f64;
            for (i, (name, h)) in [("CFG (empty prompt)", &hc), ("C-ERG (τ_c)", &he)].into_iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(h.iter().enumerate().map(|(b, &y)| {
                        let x0 = lo + b as f64 * width;
                        Rectangle::new([(x0, 0.0), (x0 + width, y)], color.mix(0.45).filled())
                    }))?
                    .label(name)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.mix(0.45).filled()));
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
        }
        root.present()?;
    });
    Ok(())
}
// ANCHOR_END: helpers
