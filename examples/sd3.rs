//! Stable Diffusion 3 / 3.5 from prompt to image with every guidance method of the crate, side by
//! side at the same seeds: CFG, C-ERG (τ_c in CLIP-L, CLIP-G and T5), I-ERG (τ in the joint
//! blocks), ERG, ERG + APG, PAG, SEG, SLG, ...
//!
//! ```text
//! # no weights: the tiny random-weight pipeline of the tests (diffusers' own classes), 128²
//! cargo run --release --example sd3
//! # SD3-medium on a GPU (diffusers folder from the Hub; gated: export HF_TOKEN=...)
//! cargo run --release --features cuda --example sd3 -- --weights hf://stabilityai/stable-diffusion-3-medium-diffusers \
//!     --prompt "a photo of a red fox in the snow" --compare cfg,cerg,ierg,erg,erg+apg,pag,slg --steps 28 --guidance-scale 5
//! # a single file (say which model it is); SD3.5 files take their text encoders from a folder
//! cargo run --release --features cuda --example sd3 -- --weights sd3_medium_incl_clips_t5xxlfp16.safetensors --model sd3-medium
//! cargo run --release --features cuda --example sd3 -- --weights sd3.5_large.safetensors --model sd3.5-large --text-encoders text_encoders/
//! ```
//! Writes `sd3_<method>.png` (rows = prompts, columns = seeds), `sd3_comparison.png`,
//! `sd3_summary.md` and `sd3_summary.json` (settings, NFE and seconds per step) into `--out`.
mod common;
use std::path::PathBuf;
use std::time::Instant;

// ANCHOR: setup
use candle_core::DType;
use clap::Parser;
use erg::guidance::{preset_with_text, Guidance, Models, TextErg};
use erg::imaging::{grid, labelled_comparison, save_png, to_rgb8, Panel};
use erg::models::sd3::{Sd3, Sd3Options, Sd3Spec, TINY_SD3};
use erg::models::Denoiser;
use erg::sample::{sample, SampleConfig};
// ANCHOR_END: setup

#[derive(Parser, Debug)]
#[command(about = "Sample SD3 / SD3.5 with CFG, C-ERG, I-ERG, ERG and the other guidance methods, side by side.")]
struct Args {
    /// Weights: a diffusers folder, an SD3 single .safetensors file, hf://org/name (diffusers
    /// repository) or hf://org/name/file.safetensors. Default: the tiny random-weight pipeline.
    #[arg(long)]
    weights: Option<String>,
    /// Which model a single file holds: sd3-medium, sd3.5-large, sd3.5-large-turbo, sd3.5-medium.
    #[arg(long)]
    model: Option<String>,
    /// SD3.5's text encoders: a folder (or hf://org/name/text_encoders) with clip_l, clip_g and
    /// t5xxl_fp16 .safetensors.
    #[arg(long)]
    text_encoders: Option<String>,
    /// Run without T5 (its tokens are zeros, as diffusers without text_encoder_3).
    #[arg(long)]
    no_t5: bool,
    /// A prompt (repeat for several).
    #[arg(long, default_values_t = vec!["a red apple on a wooden table, studio light".to_string()])]
    prompt: Vec<String>,
    /// Comma-separated methods side by side.
    #[arg(long, value_delimiter = ',', default_value = "cfg,cerg,ierg,erg,erg+apg,pag,slg")]
    compare: Vec<String>,
    /// CFG scale w (the ERG paper: 5).
    #[arg(long, value_parser = common::finite, default_value_t = 5.0)]
    guidance_scale: f64,
    /// Euler steps (default: the model's; 28 for SD3-medium).
    #[arg(long, value_parser = common::count)]
    steps: Option<usize>,
    /// Seeds (columns) per prompt.
    #[arg(long, value_parser = common::count, default_value_t = 2)]
    seeds: usize,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image height and width in pixels (default: 1024, or 128 for the tiny pipeline).
    #[arg(long, value_parser = common::count)]
    size: Option<usize>,
    /// T5 tokens (diffusers' max_sequence_length; default 256, or 16 for the tiny pipeline).
    #[arg(long, value_parser = common::count)]
    max_sequence_length: Option<usize>,
    /// Weights dtype: f32, f16, bf16 (default: f16 on CUDA, f32 on CPU).
    #[arg(long)]
    dtype: Option<String>,
    /// I-ERG attention temperature τ (Table 7, SD3: 0.01).
    #[arg(long, value_parser = common::finite)]
    tau: Option<f64>,
    /// C-ERG temperature τ_c (Table 7, SD3: 0.1).
    #[arg(long, value_parser = common::finite)]
    tau_c: Option<f64>,
    /// I-ERG kickoff κ (Table 7, SD3: 0.2).
    #[arg(long, value_parser = common::finite)]
    kappa: Option<f64>,
    /// Output folder.
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

// ANCHOR: method
/// A preset with Table 7's SD3 settings (scaled to the model), with this run's τ, τ_c and κ.
fn method(name: &str, a: &Args, sd3: &Sd3) -> anyhow::Result<Guidance> {
    let erg = TextErg::sd3(sd3.depth(), sd3.text().depths());
    Ok(preset_with_text(name, a.guidance_scale, sd3.depth(), Some(erg))?.with_erg_overrides(a.tau, a.tau_c, a.kappa)?)
}
// ANCHOR_END: method

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let device = erg::device::best();
    common::output_dir(&a.out)?;
    let tiny = a.weights.is_none();
    let dtype = match a.dtype.as_deref() {
        None if device.is_cuda() => DType::F16,
        None | Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some("bf16") => DType::BF16,
        Some(o) => anyhow::bail!("--dtype {o:?}: f32, f16 or bf16"),
    };
    let size = a.size.unwrap_or(if tiny { 128 } else { 1024 });
    // ANCHOR: load
    let opts = Sd3Options {
        spec: a.model.as_deref().map(Sd3Spec::preset).transpose()?,
        dtype,
        with_t5: !a.no_t5,
        image_size: (size, size),
        max_sequence_length: a.max_sequence_length.unwrap_or(if tiny { 16 } else { 256 }),
        text_encoders: a.text_encoders.clone(),
        tokenizers: None,
    };
    let source = a.weights.clone().unwrap_or_else(|| TINY_SD3.to_string());
    if !tiny && !device.is_cuda() {
        eprintln!("warning: SD3 on the CPU takes minutes per step at 1024²; build with --features cuda for a GPU (or try --size 512 --steps 4)");
    }
    let t0 = Instant::now();
    let sd3 = Sd3::load(&source, &opts, &device)?;
    // ANCHOR_END: load
    let methods: Vec<Guidance> = a.compare.iter().map(|n| method(n, &a, &sd3)).collect::<anyhow::Result<_>>()?;
    for g in &methods {
        erg::guidance::Guider::new(g, Models::main(&sd3), 0).map_err(|e| anyhow::anyhow!("{}: {e}", g.name))?;
    }
    let steps = a.steps.unwrap_or(sd3.spec().num_steps);
    let stems = erg::eval::report::file_stems(&a.compare);
    let prompts: Vec<&str> = a.prompt.iter().map(String::as_str).collect();
    eprintln!(
        "{} ({}; loaded in {:.1} s), {}×{size}, {} prompts × {} seeds, {steps} steps, {:?}, {}",
        if tiny { "tiny random-weight SD3 pipeline" } else { &source },
        sd3.spec().name,
        t0.elapsed().as_secs_f64(),
        size,
        prompts.len(),
        a.seeds,
        dtype,
        erg::device::describe(&device)
    );

    let cfg = SampleConfig { num_steps: steps, seed: a.seed, batch_size: a.seeds };
    let (mut panels, mut rows) = (vec![], vec![]);
    let mut md = format!(
        "# SD3 samples\n\nWeights `{source}` ({}), {size}×{size}, {steps} steps (FlowMatchEuler, shift {}), seeds {}..{}, w = {}, {:?}, {}.\n\n| method | setting | NFE / step | s / step | grid |\n|---|---|---|---|---|\n",
        sd3.spec().name,
        sd3.spec().shift,
        a.seed,
        a.seed + a.seeds as u64,
        a.guidance_scale,
        dtype,
        erg::device::describe(&device)
    );
    for (g, stem) in methods.iter().zip(&stems) {
        let t0 = Instant::now();
        let bar = indicatif::ProgressBar::new((prompts.len() * steps) as u64);
        bar.set_style(indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} steps eta {eta}").unwrap().progress_chars("=> "));
        bar.set_prefix(g.name.clone());
        // ANCHOR: sample
        let mut images = vec![];
        let mut nfe = 0.0;
        for (i, p) in prompts.iter().enumerate() {
            let ids = sd3.prompt_ids(&vec![*p; a.seeds], &device)?; // (S, 77 + 77 + T) token ids
            let s = sample(Models::main(&sd3), g, &ids, &cfg, 0, &device, |d, _| bar.set_position((i * steps + d) as u64))?;
            images.push(sd3.decode(&s.images)?); // latents (S, 16, H/8, W/8) → images (S, 3, H, W)
            nfe = s.nfe_per_step;
        }
        let img = grid(&to_rgb8(&candle_core::Tensor::cat(&images, 0)?)?, a.seeds, 2, 1);
        // ANCHOR_END: sample
        bar.finish_and_clear();
        let secs_per_step = t0.elapsed().as_secs_f64() / (prompts.len() * steps) as f64;
        let file = format!("sd3_{stem}.png");
        save_png(&img, &a.out.join(&file))?;
        eprintln!("{:>10}: {secs_per_step:.3} s/step, {nfe:.2} NFE/step → {}", g.name, a.out.join(&file).display());
        md.push_str(&format!("| {} | {} | {nfe:.2} | {secs_per_step:.3} | [{file}]({file}) |\n", g.name, g.describe()));
        rows.push(serde_json::json!({"method": g.name, "guidance": g, "nfe_per_step": nfe, "seconds_per_step": secs_per_step, "grid": file}));
        panels.push(Panel { title: format!("{}, w = {}", g.name.to_uppercase(), g.guidance_scale()), image: img });
    }
    save_png(&labelled_comparison(&panels, &a.prompt, size as u32 + 2, 2, 4)?, &a.out.join("sd3_comparison.png"))?;
    common::write(a.out.join("sd3_summary.md"), md)?;
    let summary = serde_json::json!({
        "weights": source, "model": sd3.spec().name, "size": size, "steps": steps, "shift": sd3.spec().shift,
        "max_sequence_length": sd3.text().max_sequence_length, "t5": !a.no_t5, "dtype": format!("{dtype:?}"),
        "guidance_scale": a.guidance_scale, "seeds": [a.seed, a.seed + a.seeds as u64], "prompts": a.prompt,
        "device": erg::device::describe(&device), "methods": rows,
    });
    common::write(a.out.join("sd3_summary.json"), serde_json::to_string_pretty(&summary)?)?;
    eprintln!("comparison → {}", a.out.join("sd3_comparison.png").display());
    Ok(())
}
