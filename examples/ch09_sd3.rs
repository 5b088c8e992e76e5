//! Chapter 9 of the book: ERG on Stable Diffusion 3's MMDiT. Without weights it runs the same code
//! on a tiny random MMDiT; with `--weights` (an SD3-medium `.safetensors`, keys under
//! `model.diffusion_model.`, e.g. `hf://stabilityai/stable-diffusion-3-medium/sd3_medium.safetensors`
//! with access granted) it evaluates one guided step of the real model on random latents and
//! random text features (the text encoders are the text-to-image chapter's business).
//!
//! ```text
//! cargo run --release --example ch09_sd3
//! cargo run --release --example ch09_sd3 -- --weights /path/to/sd3_medium.safetensors
//! ```
use candle_core::{DType, Tensor};
use erg::attention::{scale_block_range, AttentionPlan, ForwardPlan, NoProbe, Rectifier};
use erg::models::mmdit::{Mmdit, MmditConfig};

/// Chapter 9 of the book: ERG on Stable Diffusion 3's MMDiT. Without weights it runs the same
/// code on a tiny random MMDiT; with `--weights` (an SD3-medium `.safetensors`, keys under
/// `model.diffusion_model.`, e.g.
/// `hf://stabilityai/stable-diffusion-3-medium/sd3_medium.safetensors` with access granted) it
/// evaluates one guided step of the real model on random latents and random text features (the
/// text encoders are the text-to-image chapter's business).
#[derive(clap::Parser, Debug)]
struct Args {
    /// SD3-medium weights (a `.safetensors` path or hf://org/name/file); without them a tiny random MMDiT runs the same code.
    #[arg(long)]
    weights: Option<String>,
}

fn main() -> anyhow::Result<()> {
    <Args as clap::Parser>::parse(); // --help, and unknown flags are errors
                                     // ANCHOR: model
    let weights = std::env::args().skip_while(|a| a != "--weights").nth(1); // SD3 weights, if any
    let device = erg::device::best();
    let (cfg, model) = match &weights {
        Some(w) => {
            let cfg = MmditConfig::sd3_medium();
            let path = w.parse::<erg::hub::WeightSource>()?.resolve()?;
            let m = Mmdit::load(&cfg, &path, "model.diffusion_model", &device)?;
            (cfg, m)
        }
        None => {
            // The same architecture at a toy size, random weights (the output means nothing; the
            // plumbing — joint attention, rectifier plan, time convention — is what runs).
            let cfg = MmditConfig { depth: 4, ..MmditConfig::test_tiny() };
            let map = erg::nn::SeededVarMap::new(0);
            let m = Mmdit::new(&cfg, erg::nn::seeded_varbuilder(&map, DType::F32, &device))?;
            (cfg, m)
        }
    };
    println!("MMDiT: {} joint blocks, width {}, {} heads, patch {}", cfg.depth, cfg.hidden_size(), cfg.num_heads(), cfg.patch_size);
    // ANCHOR_END: model

    // ANCHOR: guided_step
    // Table 7's SD3-medium I-ERG: τ_i = 0.01 in blocks 6–8 (of 24; scaled for other depths) when
    // t > κ = 0.2. CFG's negative is the empty prompt; here both branches share one batched
    // forward whose attention splits only in the rectified blocks.
    let (l_min, l_max) = scale_block_range(6, 8, 24, cfg.depth);
    let side = 2 * cfg.patch_size * 2; // a small latent, for the demonstration
    let (x, y, ctx) = {
        let mut r = erg::rng::stream(0, 0); // seeded noise, text features and pooled vector
        let x = erg::rng::randn(&mut r, &[1, cfg.in_channels, side, side], &device)?;
        (x, erg::rng::randn(&mut r, &[1, cfg.adm_in_channels], &device)?, erg::rng::randn(&mut r, &[1, 8, cfg.context_embed_size], &device)?)
    };
    let (y_null, ctx_null) = (y.zeros_like()?, ctx.zeros_like()?); // stand-ins for the empty prompt's features
    let t = 0.5; // > κ: the rectification is active
    let x2 = Tensor::cat(&[&x, &x], 0)?;
    let tt = Tensor::new(&[t as f32, t as f32], &device)?;
    let (y2, ctx2) = (Tensor::cat(&[&y, &y_null], 0)?, Tensor::cat(&[&ctx, &ctx_null], 0)?);
    let plan = ForwardPlan::new(vec![(1, AttentionPlan::standard()), (1, AttentionPlan::blocks(Rectifier::temperature(0.01), l_min, l_max))]);
    let v = model.velocity(&x2, &tt, &y2, &ctx2, &plan, &mut NoProbe)?; // (2, C, H, W): positive, I-ERG negative
    let (pos, neg) = (v.get(0)?, v.get(1)?);
    let w = 3.0;
    let guided = ((&pos * w)? + (&neg * (1.0 - w))?)?; // Eq. (10)
    let plain = model.velocity(&x2, &tt, &y2, &ctx2, &ForwardPlan::uniform(2, AttentionPlan::standard()), &mut NoProbe)?;
    let cfg_guided = ((plain.get(0)? * w)? + (plain.get(1)? * (1.0 - w))?)?;
    let diff = (&guided - &cfg_guided)?.abs()?.mean_all()?.to_scalar::<f32>()?;
    println!("I-ERG blocks [{l_min}, {l_max}); mean |I-ERG − CFG| of the guided velocity at t = {t}: {diff:.4}");
    // ANCHOR_END: guided_step
    Ok(())
}
