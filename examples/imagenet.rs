//! Class-conditional ImageNet sampling with the public transformers (SiT-XL/2, DiT-XL/2) and every
//! guidance method of the crate, side by side at the same seeds, decoded by the SD VAE.
//!
//! ```text
//! # no weights: the tiny random-weight SiT and SD VAE of the parity tests (official code), 16²
//! cargo run --release --example imagenet
//! # SiT-XL/2 (SiT-XL-2-256x256.pt from willisma/SiT's download links), on a GPU
//! cargo run --release --features cuda --example imagenet -- --model sit-xl-2 --weights SiT-XL-2-256x256.pt \
//!     --classes 88,207,360,387,974,979 --compare none,cfg,ierg,erg+apg,seg,pag --steps 50
//! # DiT-XL/2 (DiT-XL-2-256x256.pt from facebookresearch/DiT): ε-prediction, sampled as DDIM (η = 0)
//! cargo run --release --features cuda --example imagenet -- --model dit-xl-2 --weights DiT-XL-2-256x256.pt
//! ```
//! The VAE is `stabilityai/sd-vae-ft-ema` through hf-hub unless `--vae <diffusers vae folder>`.
//! Writes `imagenet_<method>.png` (rows = classes, columns = seeds), `imagenet_comparison.png`
//! and `imagenet_summary.{md,json}` (settings, NFE and seconds per step) into `--out`.
mod common;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Tensor};
use clap::Parser;
use erg::guidance::{preset, Guidance, Models};
use erg::imaging::{grid, labelled_comparison, save_png, to_rgb8, Panel};
use erg::models::imagenet::PretrainedDit;
use erg::models::vae::Vae;
use erg::models::Denoiser;
use erg::sample::{sample, SampleConfig};

#[derive(Parser, Debug)]
#[command(about = "Sample SiT-XL/2 or DiT-XL/2 on ImageNet classes with CFG, I-ERG, ERG + APG, SEG, PAG and the rest, side by side.")]
struct Args {
    /// sit-xl-2, dit-xl-2 (256²), dit-xl-2-512; tiny-sit / tiny-dit are the test models (default without --weights).
    #[arg(long)]
    model: Option<String>,
    /// Official checkpoint (.pt or .safetensors; a path or hf://org/name/file).
    #[arg(long)]
    weights: Option<String>,
    /// SD VAE: a diffusers `vae` folder (config.json + diffusion_pytorch_model.safetensors), or
    /// hf://org/name (default hf://stabilityai/sd-vae-ft-ema).
    #[arg(long)]
    vae: Option<String>,
    /// ImageNet class indices (rows).
    #[arg(long, value_delimiter = ',', default_value = "88,207,360,387,974,979")]
    classes: Vec<usize>,
    /// Comma-separated methods side by side.
    #[arg(long, value_delimiter = ',', default_value = "none,cfg,ierg,erg+apg,seg,pag")]
    compare: Vec<String>,
    /// Guidance scale w (DiT/SiT's sampling scripts: 4).
    #[arg(long, value_parser = common::finite, default_value_t = 4.0)]
    guidance_scale: f64,
    /// Sampling steps (DiT: DDIM steps on the respaced DDPM grid).
    #[arg(long, value_parser = common::count, default_value_t = 50)]
    steps: usize,
    /// Seeds (columns) per class.
    #[arg(long, value_parser = common::count, default_value_t = 4)]
    seeds: usize,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Weights dtype on a GPU: f32, f16, bf16 (CPU: f32).
    #[arg(long)]
    dtype: Option<String>,
    /// Output folder.
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let device = erg::device::best();
    common::output_dir(&a.out)?;
    let name = a.model.clone().unwrap_or_else(|| if a.weights.is_some() { "sit-xl-2".into() } else { "tiny-sit".into() });
    let (cfg, param) = erg::models::imagenet::preset(&name)?;
    let (tiny_weights, tiny_vae) = erg::models::imagenet::tiny_files(param);
    let tiny = name.starts_with("tiny");
    let dtype = match a.dtype.as_deref() {
        None | Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some("bf16") => DType::BF16,
        Some(o) => anyhow::bail!("--dtype {o:?}: f32, f16 or bf16"),
    };
    let weights = match &a.weights {
        Some(w) => w.parse::<erg::hub::WeightSource>()?.resolve()?,
        None if tiny => tiny_weights,
        None => anyhow::bail!("--model {name} needs --weights (the official checkpoint)"),
    };
    let classes: Vec<usize> = if tiny && a.classes == [88, 207, 360, 387, 974, 979] { vec![1, 3, 5, 7] } else { a.classes.clone() };
    if let Some(c) = classes.iter().find(|&&c| c >= cfg.num_classes) {
        anyhow::bail!("--classes: {c} is not a class of this model (0..{})", cfg.num_classes);
    }
    if !tiny && !device.is_cuda() {
        eprintln!("warning: the XL/2 models on the CPU take seconds per step and image; build with --features cuda for a GPU");
    }
    let t0 = Instant::now();
    let model = PretrainedDit::load(&cfg, param, &weights, &device)?;
    let vae_src = a.vae.clone().unwrap_or_else(|| if tiny { tiny_vae.display().to_string() } else { "hf://stabilityai/sd-vae-ft-ema".into() });
    let (vae, _) = Vae::load_diffusers(&vae_src, dtype, &device)?;
    let methods: Vec<Guidance> = a.compare.iter().map(|n| preset(n, a.guidance_scale, model.depth())).collect::<erg::Result<_>>()?;
    for g in &methods {
        erg::guidance::Guider::new(g, Models::main(&model), 0).map_err(|e| anyhow::anyhow!("{}: {e}", g.name))?;
    }
    let labels: Vec<String> =
        classes.iter().map(|&c| if tiny { format!("class {c} (tiny)") } else { format!("{c} {}", erg::data::imagenet::class_name(c)) }).collect();
    eprintln!(
        "{name} from {} (loaded in {:.1} s; {:?}), VAE {vae_src}, {} classes × {} seeds, {} steps, {}",
        weights.display(),
        t0.elapsed().as_secs_f64(),
        param,
        classes.len(),
        a.seeds,
        a.steps,
        erg::device::describe(&device)
    );
    let stems = erg::eval::report::file_stems(&a.compare);
    let scfg = SampleConfig { num_steps: a.steps, seed: a.seed, batch_size: a.seeds };
    let (mut panels, mut rows) = (vec![], vec![]);
    let mut md = format!(
        "# ImageNet samples\n\n`{name}` ({:?}) from `{}`, VAE `{vae_src}`, {} steps, seeds {}..{}, w = {}, {}.\n\n| method | setting | NFE / step | s / step | grid |\n|---|---|---|---|---|\n",
        param,
        weights.display(),
        a.steps,
        a.seed,
        a.seed + a.seeds as u64,
        a.guidance_scale,
        erg::device::describe(&device)
    );
    for (g, stem) in methods.iter().zip(&stems) {
        let t0 = Instant::now();
        let bar = indicatif::ProgressBar::new((classes.len() * a.steps) as u64);
        bar.set_style(indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} steps eta {eta}").unwrap().progress_chars("=> "));
        bar.set_prefix(g.name.clone());
        let mut images = vec![];
        let mut nfe = 0.0;
        for (i, &c) in classes.iter().enumerate() {
            let y = Tensor::full(c as u32, a.seeds, &device)?; // (S,) labels, the same seeds for every class and method
            let s = sample(Models::main(&model), g, &y, &scfg, 0, &device, |d, _| bar.set_position((i * a.steps + d) as u64))?;
            images.push(vae.decode(&s.images)?.clamp(-1.0, 1.0)?); // latents (S, 4, h, w) → images (S, 3, 8h, 8w)
            nfe = s.nfe_per_step;
        }
        let img = grid(&to_rgb8(&Tensor::cat(&images, 0)?)?, a.seeds, 2, if tiny { 4 } else { 1 });
        bar.finish_and_clear();
        let secs = t0.elapsed().as_secs_f64() / (classes.len() * a.steps) as f64;
        let file = format!("imagenet_{stem}.png");
        save_png(&img, &a.out.join(&file))?;
        eprintln!("{:>10}: {secs:.3} s/step, {nfe:.2} NFE/step → {}", g.name, a.out.join(&file).display());
        md.push_str(&format!("| {} | {} | {nfe:.2} | {secs:.3} | [{file}]({file}) |\n", g.name, g.describe()));
        rows.push(serde_json::json!({"method": g.name, "guidance": g, "nfe_per_step": nfe, "seconds_per_step": secs, "grid": file}));
        panels.push(Panel { title: format!("{}, w = {}", g.name.to_uppercase(), g.guidance_scale()), image: img });
    }
    let row_h = (panels[0].image.height() - 2) / classes.len() as u32;
    save_png(&labelled_comparison(&panels, &labels, row_h, 2, 3)?, &a.out.join("imagenet_comparison.png"))?;
    common::write(a.out.join("imagenet_summary.md"), md)?;
    let summary = serde_json::json!({
        "model": name, "parametrisation": param, "weights": weights, "vae": vae_src, "classes": classes, "labels": labels,
        "steps": a.steps, "guidance_scale": a.guidance_scale, "seeds": [a.seed, a.seed + a.seeds as u64],
        "device": erg::device::describe(&device), "methods": rows,
    });
    common::write(a.out.join("imagenet_summary.json"), serde_json::to_string_pretty(&summary)?)?;
    eprintln!("comparison → {}", a.out.join("imagenet_comparison.png").display());
    Ok(())
}
