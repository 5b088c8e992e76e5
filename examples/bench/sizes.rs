//! The size table of `bench --config`: for each DiT configuration, a training step (rectified
//! flow, AdamW, EMA) and a CFG sampling step (one forward of 2 × batch rows) in candle, and the
//! same two steps in PyTorch eager (`benches/reference/dit_reference.py --serve`, one process per
//! size that keeps its model), interleaved candle / PyTorch / candle / PyTorch over rounds so
//! that a drifting machine load falls on both; medians per column, the first two rounds discarded
//! (warm-up: thread pools, allocator growth, PyTorch's lazy initialisation).
//! Also I-ERG's sampling step over CFG's (same model, same rounds).
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use candle_core::{Device, Tensor};
use erg::data::Dataset;
use erg::guidance::{preset, Guider, Models};
use erg::models::dit::DitConfig;
use erg::train::{ClassConditional, TrainConfig, TrainState};

/// One row of the table: a configuration and its batch.
#[derive(Debug, Clone)]
pub struct SizeSpec {
    /// As given: `shipped`, a preset name (`emoji-base`, `DiT-S/2`, `DiT-XL/2`, …) or a card JSON,
    /// optionally with `@batch`.
    pub name: String,
    pub config: DitConfig,
    pub batch: usize,
}

impl SizeSpec {
    /// Parses `NAME[@BATCH]`; `shipped` is the card next to `shipped_weights`.
    pub fn parse(s: &str, default_batch: usize, shipped_weights: &std::path::Path) -> anyhow::Result<Self> {
        let (name, batch) = match s.split_once('@') {
            Some((n, b)) => (n, b.parse::<usize>().map_err(|_| anyhow::anyhow!("--config {s:?}: the batch after '@' must be a whole number"))?),
            None => (s, default_batch),
        };
        anyhow::ensure!(batch > 0, "--config {s:?}: the batch must be at least 1");
        let config = if name == "shipped" {
            erg::checkpoint::load_card::<erg::checkpoint::ModelCard<DitConfig>>(shipped_weights)?.config
        } else if name.ends_with(".json") {
            let text = std::fs::read_to_string(name).map_err(|e| anyhow::anyhow!("--config {name}: {e}"))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--config {name}: {e}"))?;
            serde_json::from_value(v.get("config").cloned().unwrap_or(v)).map_err(|e| anyhow::anyhow!("--config {name}: not a DiT config or card: {e}"))?
        } else {
            DitConfig::preset(name)?
        };
        config.validate()?;
        Ok(Self { name: s.to_string(), config, batch })
    }
}

/// Medians of one row, seconds per step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SizeRow {
    pub name: String,
    pub depth: usize,
    pub hidden_size: usize,
    pub tokens: usize,
    pub params_m: f64,
    pub batch: usize,
    pub train_s: f64,
    pub torch_train_s: Option<f64>,
    pub sample_s: f64,
    pub torch_sample_s: Option<f64>,
    pub ierg_over_cfg: f64,
    /// Forward GFLOP/s of candle's CFG step.
    pub sample_gflops: f64,
    /// candle's matmul GFLOP/s at the model's MLP shape (2B·N × D) @ (D × 4D): the ceiling the
    /// forward's rate is compared with.
    pub matmul_gflops: f64,
    /// PyTorch's at the same shape (its BLAS), interleaved with candle's.
    pub torch_matmul_gflops: Option<f64>,
}

/// The PyTorch reference as a server (see `dit_reference.py --serve`).
struct TorchServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub info: serde_json::Value,
}

impl TorchServer {
    fn start(python: &str, cfg: &DitConfig, batch: usize, device: &Device) -> Result<Self, String> {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference/dit_reference.py");
        let dev = if device.is_cuda() { "cuda" } else { "cpu" };
        let mut child = Command::new(python)
            .arg(&script)
            .args(["--serve", "--config", &serde_json::to_string(cfg).unwrap(), "--batch", &batch.to_string(), "--device", dev])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{python}: {e}"))?;
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            return Err(format!("PyTorch reference not run: {}", err.lines().last().unwrap_or("no output")));
        }
        let info = serde_json::from_str(line.trim()).map_err(|e| format!("reference output {line:?}: {e}"))?;
        Ok(Self { child, stdin, stdout, info })
    }

    fn time(&mut self, what: &str) -> Result<f64, String> {
        writeln!(self.stdin, "{what}").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        line.trim().parse().map_err(|_| format!("PyTorch reference answered {line:?} to {what}"))
    }
}

impl Drop for TorchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rounds run before the timed ones.
pub const WARMUP: usize = 2;

/// The median (upper middle for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Random images of the model's shape (in [−1, 1]) and uniform labels: the data of a timed
/// training step (speed does not depend on the pixels).
fn synthetic_data(cfg: &DitConfig, n: usize) -> anyhow::Result<Dataset> {
    let mut r = erg::rng::stream(1, 0);
    let images = erg::rng::randn(&mut r, &[n, cfg.in_channels, cfg.input_size.0, cfg.input_size.1], &Device::Cpu)?.clamp(-1f32, 1f32)?;
    let labels = (0..n as u32).map(|i| i % cfg.num_classes as u32).collect();
    Ok(Dataset { images, labels, classes: (0..cfg.num_classes).map(|i| format!("class {i}")).collect(), captions: None })
}

fn sync(t: &Tensor) -> anyhow::Result<()> {
    t.sum_all()?.to_scalar::<f32>()?;
    Ok(())
}

/// Measures one row: [`WARMUP`] + `rounds` rounds of candle train, PyTorch train, candle CFG,
/// PyTorch sample, candle I-ERG (the warm-up rounds discarded).
pub fn measure(spec: &SizeSpec, rounds: usize, python: &str, device: &Device) -> anyhow::Result<(SizeRow, Option<serde_json::Value>, Option<String>)> {
    let cfg = &spec.config;
    let data = synthetic_data(cfg, spec.batch.max(64))?;
    let mut tc = TrainConfig::new(cfg.clone(), "synthetic", 1_000_000, 0);
    tc.batch_size = spec.batch;
    let mut state = TrainState::new(&ClassConditional, &tc, device)?;
    let mut torch = if python == "none" { Err("skipped (--python none)".to_string()) } else { TorchServer::start(python, cfg, spec.batch, device) };
    let mut r = erg::rng::stream(2, 0);
    let (c, h, w) = (cfg.in_channels, cfg.input_size.0, cfg.input_size.1);
    let x = erg::rng::randn(&mut r, &[spec.batch, c, h, w], device)?;
    let y = Tensor::new((0..spec.batch as u32).map(|i| i % cfg.num_classes as u32).collect::<Vec<_>>().as_slice(), device)?;
    let cfg_g = preset("cfg", 3.0, cfg.depth)?;
    let ierg_g = preset("ierg", 3.0, cfg.depth)?;
    let mut cols: [Vec<f64>; 5] = Default::default();
    let bar = indicatif::ProgressBar::new((rounds + WARMUP) as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:20}] {pos}/{len} rounds").unwrap().progress_chars("=> "));
    bar.set_message(spec.name.clone());
    for round in 0..rounds + WARMUP {
        let mut row = [f64::NAN; 5];
        let t0 = Instant::now();
        state.step(&tc, &data, round as u64, device)?;
        row[0] = t0.elapsed().as_secs_f64();
        if let Ok(t) = torch.as_mut() {
            match t.time("train") {
                Ok(s) => row[1] = s,
                Err(e) => torch = Err(e),
            }
        }
        // t = 0.75 is after I-ERG's kickoff (κ ≤ 0.4 in its presets), so its rectified branch runs.
        for (k, g) in [(2, &cfg_g), (4, &ierg_g)] {
            let models = Models { main: &state.model, weak: None };
            let mut guider = Guider::new(g, models, 0)?;
            let t0 = Instant::now();
            let (v, _) = guider.velocity(&x, 0.75, 0, &y)?;
            sync(&v)?;
            row[k] = t0.elapsed().as_secs_f64();
            if k == 2 {
                if let Ok(t) = torch.as_mut() {
                    match t.time("sample") {
                        Ok(s) => row[3] = s,
                        Err(e) => torch = Err(e),
                    }
                }
            }
        }
        if round >= WARMUP {
            for (col, v) in cols.iter_mut().zip(row) {
                col.push(v);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // The matmul ceiling at the MLP's shape (fc1), as the default bench measures it.
    let (gh, gw) = cfg.grid();
    let (rows, d, m) = (2 * spec.batch * gh * gw, cfg.hidden_size, (cfg.mlp_ratio * cfg.hidden_size as f64) as usize);
    let lhs = erg::rng::randn(&mut r, &[rows, d], device)?;
    let rhs = erg::rng::randn(&mut r, &[d, m], device)?;
    sync(&lhs.matmul(&rhs)?)?;
    // Ten products per side, candle and PyTorch alternating over 5 rounds; medians.
    let flops = 2.0 * (rows * d * m) as f64 * 10.0;
    let (mut ours, mut theirs) = (vec![], vec![]);
    for _ in 0..5 {
        let t0 = Instant::now();
        for _ in 0..10 {
            sync(&lhs.matmul(&rhs)?)?;
        }
        ours.push(flops / t0.elapsed().as_secs_f64() / 1e9);
        if let Ok(t) = torch.as_mut() {
            if let Ok(s) = t.time("matmul10") {
                theirs.push(flops / s / 1e9);
            }
        }
    }
    let matmul_gflops = median(ours);
    let torch_matmul_gflops = (theirs.len() == 5).then(|| median(theirs));
    let opt_median = |v: &Vec<f64>| if v.iter().all(|x| x.is_finite()) { Some(median(v.clone())) } else { None };
    let sample_s = median(cols[2].clone());
    let row = SizeRow {
        name: spec.name.clone(),
        depth: cfg.depth,
        hidden_size: cfg.hidden_size,
        tokens: gh * gw,
        params_m: cfg.num_params() as f64 / 1e6,
        batch: spec.batch,
        train_s: median(cols[0].clone()),
        torch_train_s: opt_median(&cols[1]),
        sample_s,
        torch_sample_s: opt_median(&cols[3]),
        ierg_over_cfg: median(cols[4].iter().zip(&cols[2]).map(|(e, c)| e / c).collect()),
        sample_gflops: cfg.forward_flops(2 * spec.batch) / sample_s / 1e9,
        matmul_gflops,
        torch_matmul_gflops,
    };
    let (info, err) = match torch {
        Ok(t) => (Some(t.info.clone()), None),
        Err(e) => (None, Some(e)),
    };
    Ok((row, info, err))
}

/// The machine in one line: CPU model and logical cores (or the GPU), and the 1-minute load.
pub fn machine(device: &Device) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpu}, {cores} logical cores; candle on {}", erg::device::describe(device))
}

/// The 1-, 5- and 15-minute load averages (Linux), for the report.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_else(|_| "unknown".into())
}

/// The markdown table of `rows`.
pub fn table(rows: &[SizeRow]) -> String {
    let ratio = |a: f64, b: Option<f64>| b.map(|b| format!("{:.2}", a / b)).unwrap_or_else(|| "–".into());
    let secs = |b: Option<f64>| b.map(|b| format!("{b:.4}")).unwrap_or_else(|| "–".into());
    let mut md = String::from(
        "| config | blocks × D | tokens | params | batch | candle train s | PyTorch train s | ratio | candle CFG step s | PyTorch s | ratio | I-ERG / CFG | CFG GFLOP/s (% of matmul) | matmul GFLOP/s: candle / PyTorch |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} × {} | {} | {:.1} M | {} | {:.4} | {} | {} | {:.4} | {} | {} | {:.3} | {:.0} ({:.0} %) | {:.0} / {} |\n",
            r.name,
            r.depth,
            r.hidden_size,
            r.tokens,
            r.params_m,
            r.batch,
            r.train_s,
            secs(r.torch_train_s),
            ratio(r.train_s, r.torch_train_s),
            r.sample_s,
            secs(r.torch_sample_s),
            ratio(r.sample_s, r.torch_sample_s),
            r.ierg_over_cfg,
            r.sample_gflops,
            100.0 * r.sample_gflops / r.matmul_gflops,
            r.matmul_gflops,
            r.torch_matmul_gflops.map(|g| format!("{g:.0}")).unwrap_or_else(|| "–".into())
        ));
    }
    md
}

/// A process that keeps one core busy (a shell spinning), killed on drop: `bench --busy 1`
/// measures the table with a competitor, as on a shared machine.
pub struct Competitor(Vec<Child>);

impl Competitor {
    pub fn start(n: usize) -> anyhow::Result<Self> {
        let children = (0..n).map(|_| Command::new("sh").args(["-c", "while :; do :; done"]).spawn()).collect::<Result<_, _>>()?;
        Ok(Self(children))
    }
}

impl Drop for Competitor {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
