//! Text-to-image sampling from the shipped emoji MMDiT (conditioned on all-MiniLM-L6-v2), with
//! any guidance method, and methods side by side at the same seeds.
//!
//! ```text
//! cargo run --release --example t2i -- --prompt "red apple" --guidance erg
//! cargo run --release --example t2i -- --prompt "red apple" --prompt "rocket" --prompt "dog face" --compare none,cfg,cerg,ierg,erg
//! ```
//! Settings: the checkpoint card's own mean-rank selection for the methods it holds (`table1
//! --sweep`, then `export --selection`), else the presets (Table 7's text-to-image settings scaled
//! to the depth); `--paper-defaults`, `--guidance-scale`, `--tau`, `--tau-c` or `--kappa` force
//! the presets (with those values). The summary says which each method used.
//!
//! Needs the text encoder in the hf-hub cache (offline: the `setup_minilm` example; `.ci/run` does
//! it). Writes `t2i_<method>.png` (rows = prompts, columns = seeds), `t2i_comparison.png` and
//! `t2i_summary.md` into `--out`.
mod common;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

// ANCHOR: setup
use clap::Parser;
use erg::guidance::{preset_for, Guidance, Models};
use erg::imaging::{grid, labelled_comparison, save_png, to_rgb8, Panel};
use erg::models::mmdit::{t2i::SHIPPED_EMOJI_MMDIT, TextToImage};
use erg::models::Denoiser;
use erg::sample::{sample, SampleConfig};
// ANCHOR_END: setup

#[derive(Parser, Debug)]
#[command(about = "Sample the text-to-image emoji MMDiT with CFG, C-ERG, I-ERG, ERG and the other methods.")]
struct Args {
    /// A prompt (repeat for several).
    #[arg(long, default_values_t = vec!["red apple".to_string()])]
    prompt: Vec<String>,
    /// The method when not comparing.
    #[arg(long, default_value = "erg")]
    guidance: String,
    /// Comma-separated methods side by side (none, uncond, cfg, apg, cads, pag, seg, sag, slg,
    /// autoguidance, cerg, ierg, erg, erg+apg, erg+cads, cfg+pag, ...); overrides --guidance.
    #[arg(long, value_delimiter = ',')]
    compare: Vec<String>,
    /// Guidance scale w of the presets (default 3); giving it implies the presets.
    #[arg(long, value_parser = common::finite)]
    guidance_scale: Option<f64>,
    /// Use the presets (Table 7's text-to-image settings scaled to the depth) even when the
    /// checkpoint's card holds its own mean-rank selection.
    #[arg(long)]
    paper_defaults: bool,
    /// C-ERG text-encoder temperature τ_c (Table 7: 0.01), for cerg/erg.
    #[arg(long, value_parser = common::finite)]
    tau_c: Option<f64>,
    /// I-ERG attention temperature τ (Table 7: 0.01), for ierg/erg.
    #[arg(long, value_parser = common::finite)]
    tau: Option<f64>,
    /// I-ERG kickoff κ (Table 7, text-to-image: 0.4).
    #[arg(long, value_parser = common::finite)]
    kappa: Option<f64>,
    /// Images (seeds) per prompt.
    #[arg(long, value_parser = common::count, default_value_t = 8)]
    samples: usize,
    /// Euler steps.
    #[arg(long, value_parser = common::count, default_value_t = 50)]
    steps: usize,
    /// Base seed (the same seeds for every prompt and method).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Model weights (safetensors with its JSON card).
    #[arg(long, default_value = SHIPPED_EMOJI_MMDIT)]
    checkpoint: PathBuf,
    /// AutoGuidance's weak model (the early checkpoint of the same run).
    #[arg(long, default_value = erg::models::mmdit::t2i::SHIPPED_EMOJI_MMDIT_WEAK)]
    weak_checkpoint: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

// ANCHOR: method
/// The card's selection for `name` when given and it holds the method, else a preset for the
/// text-to-image model with this run's w, τ_c, τ and κ where they apply; with where it came from.
fn method(name: &str, a: &Args, model: &TextToImage, selection: Option<&BTreeMap<String, Guidance>>) -> anyhow::Result<(Guidance, &'static str)> {
    if let Some(g) = selection.and_then(|s| s.get(name)) {
        return Ok((g.clone(), "the card's selection"));
    }
    let g = preset_for(name, a.guidance_scale.unwrap_or(3.0), model.depth(), model.text_layers())?.with_erg_overrides(a.tau, a.tau_c, a.kappa)?;
    Ok((g, "preset"))
}
// ANCHOR_END: method

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let device = erg::device::best();
    common::output_dir(&a.out)?;
    // ANCHOR: load
    let (model, card) = TextToImage::load_with_hub_encoder(&a.checkpoint, &device)?;
    let names = if a.compare.is_empty() { vec![a.guidance.clone()] } else { a.compare.clone() };
    let presets_forced = a.paper_defaults || a.guidance_scale.is_some() || a.tau.is_some() || a.tau_c.is_some() || a.kappa.is_some();
    let selection = card
        .selection
        .as_ref()
        .filter(|_| !presets_forced)
        .map(erg::guidance::from_selection)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.checkpoint.display()))?;
    let (methods, sources): (Vec<Guidance>, Vec<&str>) =
        names.iter().map(|n| method(n, &a, &model, selection.as_ref())).collect::<anyhow::Result<Vec<_>>>()?.into_iter().unzip();
    let weak = if methods.iter().any(|g| g.needs_weak_model()) { Some(TextToImage::load_with_hub_encoder(&a.weak_checkpoint, &device)?.0) } else { None };
    let prompts: Vec<&str> = a.prompt.iter().map(String::as_str).collect();
    // ANCHOR_END: load
    for g in &methods {
        g.validate(model.depth()).map_err(|e| anyhow::anyhow!("{}: {e}", g.name))?;
    }
    let stems = erg::eval::report::file_stems(&names);
    eprintln!(
        "{} (step {}), {} prompts × {} seeds, {} steps, {}",
        a.checkpoint.display(),
        card.step,
        prompts.len(),
        a.samples,
        a.steps,
        erg::device::describe(&device)
    );

    let cfg = SampleConfig { num_steps: a.steps, seed: a.seed, batch_size: a.samples };
    let mut panels = vec![];
    let mut md = format!(
        "# Text-to-image samples\n\nCheckpoint `{}` (step {}), {} Euler steps, seeds {}..{}.\n\n| method | source | setting | NFE / step | wall time (s) | grid |\n|---|---|---|---|---|---|\n",
        a.checkpoint.display(),
        card.step,
        a.steps,
        a.seed,
        a.seed + a.samples as u64,
    );
    for ((g, stem), source) in methods.iter().zip(&stems).zip(&sources) {
        let t0 = Instant::now();
        let bar = indicatif::ProgressBar::new((prompts.len() * a.steps) as u64);
        bar.set_style(indicatif::ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} steps eta {eta}").unwrap().progress_chars("=> "));
        bar.set_prefix(g.name.clone());
        // ANCHOR: sample
        let mut images = vec![];
        let mut nfe = 0.0;
        for (i, p) in prompts.iter().enumerate() {
            // the same seeds (first_index 0) for every prompt and every method
            let ids = model.prompt_ids(&vec![*p; a.samples], &device)?; // (S, L) token ids
            let s = sample(Models { main: &model, weak: weak.as_ref() }, g, &ids, &cfg, 0, &device, |d, _| bar.set_position((i * a.steps + d) as u64))?;
            images.push(s.images); // (S, 3, 32, 32)
            nfe = s.nfe_per_step;
        }
        let img = grid(&to_rgb8(&candle_core::Tensor::cat(&images, 0)?)?, a.samples, 2, 2);
        // ANCHOR_END: sample
        bar.finish_and_clear();
        let file = format!("t2i_{stem}.png");
        save_png(&img, &a.out.join(&file))?;
        let wall = t0.elapsed().as_secs_f64();
        eprintln!("{:>10}: {wall:.1} s, {nfe:.2} NFE/step → {}", g.name, a.out.join(&file).display());
        md.push_str(&format!("| {} | {source} | {} | {nfe:.2} | {wall:.1} | [{file}]({file}) |\n", g.name, g.describe()));
        let nag = g.nag.map(|n| format!(", NAG φ = {}", n.nag.scale)).unwrap_or_default();
        panels.push(Panel { title: format!("{}, w = {}{nag}", g.name.to_uppercase(), g.guidance_scale()), image: img });
    }
    let row = card.config.image_size.0 as u32 * 2 + 2;
    let labels: Vec<String> = a.prompt.clone();
    save_png(&labelled_comparison(&panels, &labels, row, 2, 3)?, &a.out.join("t2i_comparison.png"))?;
    common::write(a.out.join("t2i_summary.md"), md)?;
    eprintln!("comparison → {}", a.out.join("t2i_comparison.png").display());
    Ok(())
}
