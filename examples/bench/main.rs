//! Speed of the crate on this machine, measured side by side in one run:
//! - per-step sampling time of every guidance method relative to CFG (methods interleaved over
//!   rounds, median per method), with its NFE per step;
//! - forward GFLOP/s of the model against the machine's matmul GFLOP/s at the model's shapes;
//! - training step time and effective GFLOP/s (≈ 3 × forward FLOPs), with the crate's fused
//!   kernels and with candle's differentiable compositions (before/after, same run);
//! - when PyTorch is importable by `--python` (default `python3`), the same DiT in PyTorch
//!   (`benches/reference/dit_reference.py`, eager and `torch.compile`) and the candle/PyTorch ratios;
//! - peak resident memory of the process.
//!
//!
//! `--config` instead measures a table of sizes (see `sizes.rs`): training and CFG sampling
//! steps of DiTs of any size with random weights, candle and PyTorch eager interleaved.
//!
//! ```text
//! cargo run --release --example bench                  # → results/bench.md (about 5 minutes)
//! cargo run --release --example bench -- --quick       # a minute or two
//! cargo run --release --example bench -- --python /work/torchenv/bin/python
//! cargo run --release --example bench -- --config shipped,emoji-base,DiT-S/4,DiT-S/2@16 --report
//! cargo run --release --example bench -- --config shipped,DiT-S/4 --busy 1 --report   # one core taken
//! ```
#[path = "../common/mod.rs"]
mod common;
mod sizes;
use std::time::Instant;

use candle_core::Tensor;
use clap::Parser;
use erg::guidance::{preset, Guider, Models};
use erg::models::Denoiser;

/// Times sampling (per method) and training steps of the shipped emoji DiT, with the fused and
/// the candle kernels and, when PyTorch is installed, the PyTorch reference, side by side per
/// round; writes `<out>/bench.md` and `<out>/bench.json`.
#[derive(Parser, Debug)]
struct Args {
    /// Images per sampling batch.
    #[arg(long, value_parser = common::count, default_value_t = 64)]
    batch: usize,
    /// Rounds over all methods (median taken).
    #[arg(long, value_parser = common::count, default_value_t = 5)]
    rounds: usize,
    /// Sampling steps timed per method and round.
    #[arg(long, value_parser = common::count, default_value_t = 4)]
    steps: usize,
    /// Methods.
    #[arg(long, default_value = "none,cfg,ierg,apg,cads,pag,seg,sag,slg,autoguidance,cfg+seg,cfg+pag,erg+apg,erg+cads", value_delimiter = ',')]
    methods: Vec<String>,
    /// Training steps timed.
    #[arg(long, value_parser = common::count_u64, default_value_t = 5)]
    train_steps: u64,
    /// The model timed (weights with their JSON card).
    #[arg(long, default_value = erg::checkpoint::SHIPPED_EMOJI_DIT)]
    checkpoint: std::path::PathBuf,
    /// The weak model of AutoGuidance.
    #[arg(long, default_value = erg::checkpoint::SHIPPED_EMOJI_WEAK)]
    weak_checkpoint: std::path::PathBuf,
    /// Output folder.
    #[arg(long, default_value = "results")]
    out: std::path::PathBuf,
    /// Fewer rounds, steps and methods (a minute or two).
    #[arg(long)]
    quick: bool,
    /// Python interpreter with PyTorch for the reference timings ("none" to skip).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Size table instead of the per-method run: comma-separated `NAME[@BATCH]`, NAME being
    /// `shipped` (the --checkpoint's card), a DiT preset (emoji-tiny, emoji-base, DiT-S/4, DiT-S/2,
    /// DiT-B/2, DiT-XL/2, …) or a model card / config JSON; BATCH defaults to --batch.
    #[arg(long, value_delimiter = ',')]
    config: Vec<String>,
    /// With --config: also write `<out>/bench-sizes.md` (table, machine, load) and `.json`.
    #[arg(long)]
    report: bool,
    /// With --config: keep this many cores busy with competing processes while measuring.
    #[arg(long, default_value_t = 0)]
    busy: usize,
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// Runs the PyTorch reference (same card, batch); `None` with the reason when it cannot.
fn torch_reference(python: &str, card: &std::path::Path, batch: usize, reps: usize) -> Result<serde_json::Value, String> {
    if python == "none" {
        return Err("skipped (--python none)".into());
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference/dit_reference.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--card", &card.display().to_string(), "--batch", &batch.to_string(), "--reps", &reps.to_string()])
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("PyTorch reference not run: {}", err.lines().last().unwrap_or("failed")));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("reference output: {e}"))
}

use sizes::median;

/// `--config`: the interleaved size table.
fn size_table(a: &Args) -> anyhow::Result<()> {
    let specs: Vec<sizes::SizeSpec> = a.config.iter().map(|s| sizes::SizeSpec::parse(s, a.batch, &a.checkpoint)).collect::<anyhow::Result<_>>()?;
    if a.report {
        common::output_dir(&a.out)?;
    }
    let device = erg::device::best();
    let load_before = sizes::load_average();
    let _competitor = sizes::Competitor::start(a.busy)?;
    let mut rows = vec![];
    let mut torch_info = None;
    let mut torch_err = None;
    for spec in &specs {
        let (row, info, err) = sizes::measure(spec, a.rounds, &a.python, &device)?;
        eprintln!("{}", sizes::table(std::slice::from_ref(&row)).lines().last().unwrap_or(""));
        rows.push(row);
        torch_info = torch_info.or(info);
        torch_err = torch_err.or(err);
    }
    let load_after = sizes::load_average();
    let torch = match (&torch_info, &torch_err) {
        (Some(i), _) => format!("PyTorch {} eager ({} threads, {})", i["torch"].as_str().unwrap_or("?"), i["threads"], i["device"].as_str().unwrap_or("?")),
        (None, Some(e)) => format!("no PyTorch reference ({e})"),
        (None, None) => "no PyTorch reference".into(),
    };
    let md = format!(
        "# erg size table\n\nMachine: {}; {}{}. Load average (1, 5, 15 min) {} before, {} after. Each row: {} rounds after {} warm-up rounds, candle and PyTorch interleaved per round (train, train, sample, sample), medians; random weights, f32. Training step: batch B, rectified-flow loss, AdamW, EMA. CFG step: one forward of 2 × B rows.\n\n{}",
        sizes::machine(&device),
        torch,
        if a.busy > 0 { format!("; {} competing busy process(es)", a.busy) } else { String::new() },
        load_before,
        load_after,
        a.rounds,
        sizes::WARMUP,
        sizes::table(&rows)
    );
    println!("{md}");
    if a.report {
        common::write(a.out.join("bench-sizes.md"), &md)?;
        let json = serde_json::json!({ "machine": sizes::machine(&device), "torch": torch_info, "busy": a.busy, "load_before": load_before, "load_after": load_after, "rounds": a.rounds, "rows": rows });
        common::write(a.out.join("bench-sizes.json"), serde_json::to_vec_pretty(&json)?)?;
        eprintln!("wrote {}", a.out.join("bench-sizes.md").display());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut a = Args::parse();
    if !a.config.is_empty() {
        return size_table(&a);
    }
    if a.quick {
        a.rounds = a.rounds.min(2);
        a.steps = a.steps.min(2);
        a.train_steps = a.train_steps.min(3);
        if a.methods.len() > 6 {
            a.methods = ["none", "cfg", "ierg", "pag", "seg", "cfg+seg"].iter().map(|s| s.to_string()).collect();
        }
    }
    let device = erg::device::best();
    let (model, card) = erg::models::dit::load(&a.checkpoint, &device)?;
    let (weak, _) = erg::models::dit::load(&a.weak_checkpoint, &device)?;
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

    // Kernels at the model's sampling shapes: candle's fused (no backward), the crate's fused
    // (with backward), candle's differentiable composition.
    let time_it = |f: &dyn Fn() -> anyhow::Result<Tensor>| -> anyhow::Result<f64> {
        f()?;
        let t0 = Instant::now();
        for _ in 0..10 {
            f()?;
        }
        Ok(t0.elapsed().as_secs_f64() / 10.0 * 1e3)
    };
    let tokens = erg::rng::randn(&mut r, &[2 * a.batch, gh * gw, d], &device)?;
    let logits = erg::rng::randn(&mut r, &[2 * a.batch, cfg.num_heads, gh * gw, gh * gw], &device)?;
    let hidden = erg::rng::randn(&mut r, &[2 * a.batch, gh * gw, m], &device)?;
    let (ones, zeros) = (Tensor::ones(d, tokens.dtype(), &device)?, Tensor::zeros(d, tokens.dtype(), &device)?);
    let kernel_rows = [
        (
            "softmax (last dim)",
            time_it(&|| Ok(candle_nn::ops::softmax_last_dim(&logits)?))?,
            time_it(&|| Ok(erg_kernels::softmax_last_dim(&logits, erg::nn::Kernels::Fused)?))?,
            time_it(&|| Ok(candle_nn::ops::softmax(&logits, candle_core::D::Minus1)?))?,
        ),
        (
            "layer norm (no affine)",
            time_it(&|| Ok(candle_nn::ops::layer_norm(&tokens, &ones, &zeros, 1e-6)?))?,
            time_it(&|| Ok(erg_kernels::layer_norm_no_affine(&tokens, 1e-6, erg::nn::Kernels::Fused)?))?,
            time_it(&|| {
                let xc = tokens.broadcast_sub(&tokens.mean_keepdim(candle_core::D::Minus1)?)?;
                Ok(xc.broadcast_div(&(xc.sqr()?.mean_keepdim(candle_core::D::Minus1)? + 1e-6)?.sqrt()?)?)
            })?,
        ),
        ("GELU (erf)", f64::NAN, time_it(&|| Ok(erg_kernels::gelu_erf(&hidden, erg::nn::Kernels::Fused)?))?, time_it(&|| Ok(hidden.gelu_erf()?))?),
    ];

    // Training step on the emoji data, with the fused kernels and with candle's compositions:
    // median of the per-step times the run logs (loss.csv), after 2 warm-up steps (as the PyTorch
    // reference: warm-up 2, then the median), so the run's setup and final checkpoint are not counted.
    let data = erg::data::emoji::load(erg::data::emoji::DEFAULT_DIR, h)?;
    let mut tc = erg::train::TrainConfig::new(cfg.clone(), "emoji", a.train_steps + 2, 0);
    tc.checkpoint_every = 1_000_000;
    tc.batch_size = a.batch;
    let train_step = |fused: bool| -> anyhow::Result<f64> {
        let tc = erg::train::TrainConfig { kernels: if fused { erg::nn::Kernels::Fused } else { erg::nn::Kernels::Candle }, ..tc.clone() };
        let dir = std::env::temp_dir().join(format!("erg-bench-{}-{fused}", std::process::id()));
        let paths = erg::train::RunPaths::new(&dir);
        erg::train::train(&tc, &data, &device, &paths, erg::train::RunOptions::new())?;
        let log = common::read_to_string(paths.loss())?;
        let elapsed: Vec<f64> = log.lines().skip(1).filter_map(|l| l.split(',').nth(3)?.parse().ok()).collect();
        let _ = std::fs::remove_dir_all(&dir);
        anyhow::ensure!(elapsed.len() as u64 == tc.steps, "loss.csv has {} rows for {} steps", elapsed.len(), tc.steps);
        Ok(median(elapsed.windows(2).skip(1).map(|w| w[1] - w[0]).collect()))
    };
    let unfused_s = train_step(false)?;
    let fused_s = train_step(true)?;
    let train_gflops = 3.0 * cfg.forward_flops(tc.batch_size) / fused_s / 1e9;
    let torch = torch_reference(&a.python, &a.checkpoint.with_extension("json"), a.batch, if a.quick { 2 } else { 5 });

    let mut md = format!(
        "# erg benchmark\n\nDevice: {}; model: {} blocks, D = {}, {} tokens, {:.2}M parameters; sampling batch {} ({} rounds × {} steps, median).\n\n| method | NFE / step | s / step | ratio to CFG |\n|---|---|---|---|\n",
        erg::device::describe(&device), cfg.depth, cfg.hidden_size, gh * gw, cfg.num_params() as f64 / 1e6, a.batch, a.rounds, a.steps
    );
    for (i, name) in a.methods.iter().enumerate() {
        let ratio = cfg_time.map(|c| format!("{:.3}", per_step[i] / c)).unwrap_or_else(|| "–".into());
        md.push_str(&format!("| {name} | {:.2} | {:.4} | {ratio} |\n", nfe[i], per_step[i]));
    }
    md.push_str(&format!(
        "\nMatmul ceiling ({rows}×{d} @ {d}×{m}, f32): {matmul_gflops:.1} GFLOP/s. CFG forward (batch {}): {}; fraction of the ceiling: {}.\n\nTraining step (batch {}, AdamW, EMA; median of {} steps after 2 warm-up steps): {fused_s:.3} s with the fused kernels, {unfused_s:.3} s with candle's compositions (ratio {:.2}); ≈ {train_gflops:.1} GFLOP/s effective (3 × forward FLOPs).\n",
        2 * a.batch,
        fwd_gflops.map(|g| format!("{g:.1} GFLOP/s")).unwrap_or_else(|| "–".into()),
        fwd_gflops.map(|g| format!("{:.0} %", 100.0 * g / matmul_gflops)).unwrap_or_else(|| "–".into()),
        tc.batch_size,
        a.train_steps,
        fused_s / unfused_s,
    ));
    md.push_str(&format!(
        "\nKernels at the sampling shapes (batch {}), ms per call: candle-nn fused (no backward) / erg fused (with backward) / candle composition:\n\n| kernel | candle fused | erg fused | candle composition |\n|---|---|---|---|\n",
        2 * a.batch
    ));
    for (k, c, e, comp) in kernel_rows {
        let c = if c.is_nan() { "–".to_string() } else { format!("{c:.2}") };
        md.push_str(&format!("| {k} | {c} | {e:.2} | {comp:.2} |\n"));
    }
    match &torch {
        Ok(t) => {
            let f = |k: &str| t.get(k).and_then(|v| v.as_f64());
            md.push_str(&format!("\nPyTorch {} ({} threads), same DiT and batch (`benches/reference/dit_reference.py`):\n\n| | candle (erg) s | PyTorch eager s | candle / eager | torch.compile s | candle / compile |\n|---|---|---|---|---|---|\n", t["torch"].as_str().unwrap_or("?"), t["threads"]));
            for (what, ours, key) in
                [("training step", fused_s, "train_step_s"), ("sampling step (CFG, 2 × batch rows)", cfg_time.unwrap_or(f64::NAN), "sample_step_s")]
            {
                let e = f(&format!("eager_{key}")).unwrap_or(f64::NAN);
                let c = f(&format!("compile_{key}"));
                md.push_str(&format!(
                    "| {what} | {ours:.3} | {e:.3} | {:.2} | {} | {} |\n",
                    ours / e,
                    c.map(|c| format!("{c:.3}")).unwrap_or("–".into()),
                    c.map(|c| format!("{:.2}", ours / c)).unwrap_or("–".into())
                ));
            }
            if let Some(err) = t.get("compile_error") {
                md.push_str(&format!("\ntorch.compile failed: {err}\n"));
            }
        }
        Err(e) => md.push_str(&format!("\nPyTorch reference: {e}\n")),
    }
    if let Some(p) = peak_rss_mib() {
        md.push_str(&format!("\nPeak resident memory of the benchmark process: {p:.0} MiB.\n"));
    }
    common::create_dir(&a.out)?;
    common::write(a.out.join("bench.md"), &md)?;
    println!("{md}");
    Ok(())
}
