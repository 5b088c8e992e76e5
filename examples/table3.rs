//! The analogues of the ERG paper's Table 3 (class-conditional: none, CFG, PAG, SAG, SEG,
//! AutoGuidance, APG, CADS, I-ERG, ERG+APG, ERG+CADS) and Table 2 (unconditional: none, PAG,
//! SAG, SEG, AutoGuidance, I-ERG) on the shipped emoji DiT.
//!
//! ```text
//! cargo run --release --example table3                               # Table 3 → results/table3.md
//! cargo run --release --example table3 -- --table 2                  # Table 2 → results/table2.md
//! cargo run --release --example table3 -- --samples-per-class 200    # larger runs suit a GPU
//! ```
//! Every run is appended to `<out>/results.jsonl`; a rerun skips the runs already there, so an
//! interrupted table resumes. Features and consistency come from the shipped classifier
//! (`data/checkpoints/emoji-classifier.safetensors`); FID here is the Fréchet distance of its
//! features, not Inception's, and with a few hundred samples it is biased upwards: compare methods
//! within one table, not with the paper's numbers.
use std::path::PathBuf;

use clap::Parser;
use erg::eval::{run_key, Bench, BenchPaths, EvalConfig, ResultsFile};
use erg::guidance::preset;
use erg::models::Denoiser;

#[derive(Parser, Debug)]
struct Args {
    /// 3 (class-conditional) or 2 (unconditional).
    #[arg(long, default_value_t = 3)]
    table: u8,
    /// Generated images per class.
    #[arg(long, default_value_t = 25)]
    samples_per_class: usize,
    /// Euler steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Guidance scale w of the CFG-like terms.
    #[arg(long, default_value_t = 3.0)]
    guidance_scale: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Override the method list (comma-separated preset names).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    #[command(flatten)]
    paths: BenchPaths,
    /// Settings selected by `sweep` (method → Guidance JSON); presets for methods not in it.
    #[arg(long)]
    selected: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let device = erg::device::best();
    let bench = Bench::from_paths(&a.paths, &device)?;
    let names: Vec<String> = a.methods.clone().unwrap_or_else(|| {
        let v: &[&str] = match a.table {
            2 => &["uncond", "pag-uncond", "sag-uncond", "seg-uncond", "autoguidance-uncond", "ierg-uncond"],
            _ => &["none", "cfg", "pag", "sag", "seg", "autoguidance", "apg", "cads", "ierg", "erg+apg", "erg+cads"],
        };
        v.iter().map(|s| s.to_string()).collect()
    });
    let selected: std::collections::BTreeMap<String, erg::guidance::Guidance> = match &a.selected {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(p)?)?,
        None => Default::default(),
    };
    let cfg =
        EvalConfig { samples_per_class: a.samples_per_class, num_steps: a.steps, seed: a.seed, features: bench.scorer.features_key(), ..Default::default() };
    let mut results = ResultsFile::open(a.out.join("results.jsonl"))?;
    let t0 = std::time::Instant::now();
    let mut rows = Vec::new();
    for name in &names {
        let g = match selected.get(name) {
            Some(g) => g.clone(),
            None => preset(name, a.guidance_scale, bench.model.depth())?,
        };
        let key = run_key(&g, &cfg);
        if !results.contains(&key) {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(indicatif::ProgressStyle::with_template("{prefix:>20} [{bar:30}] {pos}/{len} steps eta {eta}").unwrap().progress_chars("=> "));
            bar.set_prefix(name.clone());
            let rec = bench.evaluate(&g, &cfg, &device, |d, t| {
                bar.set_length(t as u64);
                bar.set_position(d as u64);
            })?;
            bar.finish_and_clear();
            eprintln!("{name:>20}: FID {:.2}, {:.0} s", rec.metrics["fid"], rec.wall_s);
            results.append(rec)?;
        } else {
            eprintln!("{name:>20}: already in results.jsonl, skipped");
        }
        rows.push(results.records().iter().find(|r| r.key == key).cloned().expect("just appended"));
    }
    let fmt = |v: f64| {
        if v.is_nan() {
            "–".to_string()
        } else {
            format!("{v:.2}")
        }
    };
    let mut md = format!(
        "# Table {} analogue ({})\n\n{} samples per class × {} classes, {} Euler steps, seed {}; settings: {} (presets at guidance scale {}). Reference: all {} training images. Features: {}; consistency: the crate's classifier (held-out accuracy {:.1} %).\n\n| method | FID ↓ | precision ↑ | recall ↑ | density ↑ | coverage ↑ | consistency ↑ | NFE | setting |\n|---|---|---|---|---|---|---|---|---|\n",
        a.table,
        if a.table == 2 { "unconditional" } else { "class-conditional" },
        a.samples_per_class,
        bench.card.classes.len(),
        a.steps,
        a.seed,
        if selected.is_empty() { "presets, see erg::guidance::presets" } else { "selected by mean rank in `sweep` where available, presets otherwise" },
        a.guidance_scale,
        bench.scorer.data.len(),
        match &bench.scorer.extractor {
            Some(e) => format!("{} (FID = Fréchet distance of its features)", e.name()),
            None => "the crate's classifier (FID = Fréchet distance of its penultimate-layer features)".to_string(),
        },
        bench.scorer.classifier_card.heldout_accuracy
    );
    for r in &rows {
        let m = &r.metrics;
        let setting = serde_json::from_value::<erg::guidance::Guidance>(r.guidance.clone()).map(|g| g.describe()).unwrap_or_default();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {setting} |\n",
            r.method,
            fmt(m["fid"]),
            fmt(m["precision"]),
            fmt(m["recall"]),
            fmt(m["density"]),
            fmt(m["coverage"]),
            fmt(m["consistency"]),
            r.nfe_per_step * a.steps as f64
        ));
    }
    md.push_str(&format!(
        "\nWall time of this invocation: {:.0} s (runs already in results.jsonl are reused); sampling + evaluation of the rows: {:.0} s in total.\n",
        t0.elapsed().as_secs_f64(),
        rows.iter().map(|r| r.wall_s).sum::<f64>()
    ));
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join(format!("table{}.md", a.table));
    std::fs::write(&path, &md)?;
    println!("{md}");
    eprintln!("→ {}", path.display());
    Ok(())
}
