//! Speed of the crate on this machine, measured side by side in one run:
//! - per-step sampling time of every guidance method relative to CFG (methods interleaved over
//!   rounds, median per method), with its NFE per step;
//! - forward GFLOP/s of the model against the machine's matmul GFLOP/s at the model's shapes;
//! - training step time and effective GFLOP/s (≈ 3 × forward FLOPs).
//!
//! ```text
//! cargo run --release --example bench                  # → results/bench.md
//! ```
use std::time::Instant;

use candle_core::Tensor;
use clap::Parser;
use erg::guidance::{preset, Guider, Models};
use erg::models::Denoiser;

#[derive(Parser, Debug)]
struct Args {
    /// Images per sampling batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Rounds over all methods (median taken).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Sampling steps timed per method and round.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Methods.
    #[arg(long, default_value = "none,cfg,ierg,apg,cads,pag,seg,sag,slg,autoguidance,cfg+seg,cfg+pag,erg+apg,erg+cads", value_delimiter = ',')]
    methods: Vec<String>,
    /// Training steps timed.
    #[arg(long, default_value_t = 5)]
    train_steps: u64,
    #[arg(long, default_value = erg::checkpoint::SHIPPED_EMOJI_DIT)]
    checkpoint: std::path::PathBuf,
    #[arg(long, default_value = erg::checkpoint::SHIPPED_EMOJI_WEAK)]
    weak_checkpoint: std::path::PathBuf,
    #[arg(long, default_value = "results")]
    out: std::path::PathBuf,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let device = erg::device::best();
    let (model, card) = erg::checkpoint::load_dit(&a.checkpoint, &device)?;
    let (weak, _) = erg::checkpoint::load_dit(&a.weak_checkpoint, &device)?;
    let cfg = card.config.clone();
    let (c, h, w) = model.image_shape();
    let mut r = erg::rng::stream(0, 0);
    let x = erg::rng::randn(&mut r, &[a.batch, c, h, w], &device)?;
    let y = Tensor::new((0..a.batch as u32).map(|i| i % cfg.num_classes as u32).collect::<Vec<_>>().as_slice(), &device)?;
    let methods: Vec<_> = a.methods.iter().map(|m| preset(m, 3.0, model.depth())).collect::<Result<_, _>>()?;
    let mut times: Vec<Vec<f64>> = vec![vec![]; methods.len()];
    let mut nfe = vec![0.0; methods.len()];
    let models = Models { main: &model, weak: Some(&weak) };
    for round in 0..=a.rounds {
        for (i, g) in methods.iter().enumerate() {
            let mut guider = Guider::new(g, models, 0)?;
            let t0 = Instant::now();
            let mut k = 0;
            for s in 0..a.steps {
                let t = 0.1 + 0.8 * s as f64 / a.steps as f64; // both sides of κ
                let (v, n) = guider.velocity(&x, t, s, &y)?;
                v.sum_all()?.to_scalar::<f32>()?; // wait for the device
                k += n;
            }
            if round > 0 {
                times[i].push(t0.elapsed().as_secs_f64() / a.steps as f64); // round 0 warms up
            }
            nfe[i] = k as f64 / a.steps as f64;
        }
    }
    let cfg_i = a.methods.iter().position(|m| m == "cfg");
    let per_step: Vec<f64> = times.into_iter().map(median).collect();

    // Matmul ceiling at the model's MLP shape: (B·N × D) @ (D × M).
    let (gh, gw) = cfg.grid();
    let rows = a.batch * 2 * gh * gw;
    let (d, m) = (cfg.hidden_size, (cfg.mlp_ratio * cfg.hidden_size as f64) as usize);
    let lhs = erg::rng::randn(&mut r, &[rows, d], &device)?;
    let rhs = erg::rng::randn(&mut r, &[d, m], &device)?;
    lhs.matmul(&rhs)?;
    let t0 = Instant::now();
    let reps = 20;
    for _ in 0..reps {
        lhs.matmul(&rhs)?.sum_all()?.to_scalar::<f32>()?;
    }
    let matmul_gflops = 2.0 * (rows * d * m) as f64 * reps as f64 / t0.elapsed().as_secs_f64() / 1e9;
    let cfg_time = cfg_i.map(|i| per_step[i]);
    let fwd_gflops = cfg_time.map(|t| cfg.forward_flops(2 * a.batch) / t / 1e9);

    // Training step on the emoji data.
    let data = erg::data::emoji::load(erg::data::emoji::DEFAULT_DIR, h)?;
    let dir = std::env::temp_dir().join(format!("erg-bench-{}", std::process::id()));
    let mut tc = erg::train::TrainConfig::new(cfg.clone(), "emoji", a.train_steps + 1, 0);
    tc.checkpoint_every = 1_000_000;
    let rep = erg::train::train(&tc, &data, &device, &erg::train::RunPaths::new(&dir), false, None, false)?;
    let _ = std::fs::remove_dir_all(&dir);
    let train_gflops = 3.0 * cfg.forward_flops(tc.batch_size) / rep.s_per_step / 1e9;

    let mut md = format!(
        "# erg benchmark\n\nDevice: {}; model: {} blocks, D = {}, {} tokens, {:.2}M parameters; sampling batch {} ({} rounds × {} steps, median).\n\n| method | NFE / step | s / step | ratio to CFG |\n|---|---|---|---|\n",
        erg::device::describe(&device), cfg.depth, cfg.hidden_size, gh * gw, cfg.num_params() as f64 / 1e6, a.batch, a.rounds, a.steps
    );
    for (i, name) in a.methods.iter().enumerate() {
        let ratio = cfg_time.map(|c| format!("{:.3}", per_step[i] / c)).unwrap_or_else(|| "–".into());
        md.push_str(&format!("| {name} | {:.2} | {:.4} | {ratio} |\n", nfe[i], per_step[i]));
    }
    md.push_str(&format!(
        "\nMatmul ceiling ({rows}×{d} @ {d}×{m}, f32): {matmul_gflops:.1} GFLOP/s. CFG forward (batch {}): {}; fraction of the ceiling: {}.\n\nTraining step (batch {}, AdamW, EMA): {:.3} s, ≈ {train_gflops:.1} GFLOP/s effective (3 × forward FLOPs).\n",
        2 * a.batch,
        fwd_gflops.map(|g| format!("{g:.1} GFLOP/s")).unwrap_or_else(|| "–".into()),
        fwd_gflops.map(|g| format!("{:.0} %", 100.0 * g / matmul_gflops)).unwrap_or_else(|| "–".into()),
        tc.batch_size,
        rep.s_per_step,
    ));
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("bench.md"), &md)?;
    println!("{md}");
    Ok(())
}
