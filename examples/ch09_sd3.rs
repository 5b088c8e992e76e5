//! Chapter 9 of the book: ERG on Stable Diffusion 3, from prompt to image. Without weights it
//! runs the whole pipeline — CLIP-L, CLIP-G and T5 with C-ERG, the MMDiT with I-ERG, the shifted
//! flow-matching grid, the VAE — on the tiny random-weight pipeline the parity tests compare with
//! diffusers; with `--weights` (a diffusers folder, an SD3 single file with `--model`, or
//! `hf://stabilityai/stable-diffusion-3-medium-diffusers` with `HF_TOKEN`) the same code runs SD3.
//!
//! ```text
//! cargo run --release --example ch09_sd3                 # → results/ch09_sd3.png
//! cargo run --release --features cuda --example ch09_sd3 -- --weights hf://stabilityai/stable-diffusion-3-medium-diffusers
//! ```
use candle_core::Tensor;
use erg::guidance::{preset_with_text, Models, TextErg};
use erg::imaging::{grid, labelled_comparison, save_png, to_rgb8, Panel};
use erg::models::sd3::{Sd3, Sd3Options, TINY_SD3};
use erg::models::{Condition, Denoiser};
use erg::sample::{sample, SampleConfig};

/// Chapter 9 of the book: ERG on Stable Diffusion 3, from prompt to image (the tiny random-weight
/// pipeline without `--weights`).
#[derive(clap::Parser, Debug)]
struct Args {
    /// SD3 weights: a diffusers folder or hf://org/name (e.g. hf://stabilityai/stable-diffusion-3-medium-diffusers).
    #[arg(long)]
    weights: Option<String>,
    /// Fewer steps (the CI check).
    #[arg(long)]
    quick: bool,
}

fn main() -> anyhow::Result<()> {
    <Args as clap::Parser>::parse(); // --help, and unknown flags are errors
                                     // ANCHOR: load
    let weights: Option<String> = std::env::args().skip_while(|a| a != "--weights").nth(1); // SD3 weights, if any
    let quick: bool = std::env::args().any(|a| a == "--quick") || std::env::var("ERG_QUICK").is_ok();
    let device = erg::device::best();
    let tiny: bool = weights.is_none();
    let size: usize = if tiny { 128 } else { 1024 };
    let opts = Sd3Options { image_size: (size, size), max_sequence_length: if tiny { 16 } else { 256 }, ..Default::default() };
    let sd3 = Sd3::load(weights.as_deref().unwrap_or(TINY_SD3), &opts, &device)?;
    println!(
        "{}: MMDiT {} blocks × {} wide, CLIP-L/CLIP-G/T5 layers {:?}, latents {:?}",
        if tiny { "tiny random-weight SD3" } else { "SD3" },
        sd3.depth(),
        sd3.spec().mmdit.hidden_size(),
        sd3.text().depths(),
        sd3.image_shape()
    );
    // ANCHOR_END: load

    // ANCHOR: conditioning
    // One prompt → packed token ids [CLIP-L 77 ‖ CLIP-G 77 ‖ T5 T] → context (77 + T tokens) and pooled y.
    let ids: Tensor = sd3.prompt_ids(&["a red apple on a wooden table"], &device)?; // (1, 77 + 77 + T)
    let (context, pooled) = sd3.text().encode(&ids, None)?; // (1, 77 + T, W), (1, 2048)
    println!("token ids {:?} → context {:?}, pooled {:?}", ids.dims(), context.dims(), pooled.dims());
    // Table 7's SD3 row, scaled to this model: I-ERG τ = 0.01 in blocks [6, 8) of 24 after κ = 0.2;
    // C-ERG τ_c = 0.1 in CLIP-L layers [1, 10) of 12, CLIP-G [1, 31) of 32, T5 [1, 22) of 24.
    let erg_settings: TextErg = TextErg::sd3(sd3.depth(), sd3.text().depths());
    println!(
        "I-ERG blocks [{}, {}) after kappa {}; C-ERG per-encoder layers {:?}",
        erg_settings.ierg.l_min,
        erg_settings.ierg.l_max,
        erg_settings.ierg.kappa,
        erg_settings.text.encoder_layers.unwrap()
    );
    let plain: Tensor = sd3.embed_request(&ids, Condition::Given)?; // (1, 77 + T + 1, W)
    let rectified: Tensor = sd3.embed_request(&ids, Condition::Rectified(erg_settings.text))?; // C-ERG's φ_c^τ
    let change: f32 = (&rectified - &plain)?.abs()?.mean_all()?.to_scalar::<f32>()?;
    println!("mean |C-ERG − plain| of the packed text embedding: {change:.4}");
    // ANCHOR_END: conditioning

    // ANCHOR: sample
    // The same seeds for CFG, C-ERG, I-ERG and ERG; latents decoded by the VAE.
    let num_steps: usize = if quick { 8 } else { 28 };
    let seeds: usize = 2;
    let prompts: Vec<String> = vec!["a red apple on a wooden table".to_string(), "a cat".to_string()];
    let mut panels: Vec<Panel> = vec![];
    for name in ["cfg", "cerg", "ierg", "erg"] {
        let g = preset_with_text(name, 5.0, sd3.depth(), Some(erg_settings))?;
        let mut images: Vec<Tensor> = vec![];
        for p in &prompts {
            let ids = sd3.prompt_ids(&vec![p.as_str(); seeds], &device)?;
            let s = sample(Models::main(&sd3), &g, &ids, &SampleConfig { num_steps, seed: 0, batch_size: seeds }, 0, &device, |_, _| {})?;
            images.push(sd3.decode(&s.images)?); // (S, 3, H, W) in [−1, 1]
        }
        let img = grid(&to_rgb8(&Tensor::cat(&images, 0)?)?, seeds, 2, 1);
        panels.push(Panel { title: format!("{}, w = 5", name.to_uppercase()), image: img });
    }
    std::fs::create_dir_all("results")?;
    save_png(&labelled_comparison(&panels, &prompts, size as u32 + 2, 2, 4)?, std::path::Path::new("results/ch09_sd3.png"))?;
    println!("{num_steps} steps on the shifted grid t = {:?} → results/ch09_sd3.png", sd3.schedule(4));
    // ANCHOR_END: sample
    Ok(())
}
