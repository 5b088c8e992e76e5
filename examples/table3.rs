//! The analogues of the ERG paper's Table 3 (class-conditional: none, CFG, PAG, SAG, SEG,
//! AutoGuidance, APG, CADS, I-ERG, ERG+APG, ERG+CADS) and Table 2 (unconditional: none, PAG,
//! SAG, SEG, AutoGuidance, I-ERG) on the shipped emoji DiT.
//!
//! ```text
//! cargo run --release --example table3                               # Table 3 → results/table3.md
//! cargo run --release --example table3 -- --table 2                  # Table 2 → results/table2.md
//! cargo run --release --example table3 -- --samples-per-class 10 --seeds 0   # a quick look
//! cargo run --release --example table3 -- --samples-per-class 200    # larger runs suit a GPU
//! cargo run --release --example table3 -- --shard 0/2   # and --shard 1/2 elsewhere; copy shards/ together, rerun
//! ```
//! Every method is sampled at each of `--seeds` (default 0, 1, 2: independent sample sets) and
//! reported as mean ± standard deviation, with the methods whose difference from CFG (Table 2:
//! the unguided model) exceeds the spread named under the table. Settings: `--selected`, else the
//! checkpoint card's own mean-rank selection (made by `sweep` on other seeds), else the presets
//! (`--paper-defaults` forces them). Every run is appended to `<out>/results.jsonl`; a rerun
//! skips the runs already there, so an interrupted table resumes. Features and consistency come from the shipped classifier
//! (`data/checkpoints/emoji-classifier.safetensors`); FID here is the Fréchet distance of its
//! features, not Inception's, and with a few hundred samples it is biased upwards: compare methods
//! within one table, not with the paper's numbers.
mod common;

use std::path::PathBuf;

use clap::Parser;
use erg::eval::report::{evaluate_variants, write_table, TableLayout};
use erg::eval::seeds::{evaluate_over_seeds, markdown_table_over_seeds, table_with_separations};
use erg::eval::{Bench, EvalConfig, ResultsFile};
use erg::guidance::{preset, Guidance};
use erg::models::Denoiser;

/// Table 3 (class-conditional) or Table 2 (unconditional) of the ERG paper on the emoji DiT:
/// every method sampled at the same seeds and scored with FID, precision, recall, density,
/// coverage and consistency into `<out>/table{2,3}.md`.
#[derive(Parser, Debug)]
struct Args {
    /// 3 (class-conditional) or 2 (unconditional).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=3))]
    table: u8,
    /// Generated images per class (per seed).
    #[arg(long, value_parser = common::count, default_value_t = 50)]
    samples_per_class: usize,
    /// Euler steps.
    #[arg(long, value_parser = common::count, default_value_t = 50)]
    steps: usize,
    /// Guidance scale w of the CFG-like terms.
    #[arg(long, value_parser = common::finite, default_value_t = 3.0)]
    guidance_scale: f64,
    /// Sampling seeds, one independent sample set each (default 0,1,2; ImageNet: 0). Keep them
    /// disjoint from the sweep's that selected the settings (100–102 by default).
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Override the method list (comma-separated preset names).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    #[command(flatten)]
    paths: common::EvalFlags,
    /// Settings selected by `sweep` (method → Guidance JSON); presets for methods not in it.
    /// Default: the selection stored in the checkpoint's card, if any.
    #[arg(long)]
    selected: Option<PathBuf>,
    /// The presets (Table 7's settings scaled to the depth, at --guidance-scale) even when the
    /// checkpoint's card holds a selection.
    #[arg(long, conflicts_with = "selected")]
    paper_defaults: bool,
    /// Also report every method at matched guidance strength: each method's term scales are
    /// multiplied by the factor at which its effective strength (erg::analysis::strength) equals
    /// CFG's at --guidance-scale, calibrated on one sample per class with a separate seed; written
    /// to `<out>/table{2,3}_matched.md`.
    #[arg(long)]
    matched_strength: bool,
    /// Run only shard i of n of every method (e.g. 0/4 on one machine, 1/4 on the next...):
    /// disjoint seed ranges whose features go to `<out>/shards/`; once a method's n shards are
    /// there (copy them together), a run with any --shard merges them into results.jsonl (equal
    /// to the unsharded run) and the table is written when every method has its record.
    #[arg(long)]
    shard: Option<erg::eval::shard::Shard>,
    /// ImageNet: a public latent model (sit-xl-2, dit-xl-2, dit-xl-2-512; tiny-sit / tiny-dit are
    /// the test models) evaluated against real images; needs --reference and features
    /// (--features inception --feature-weights ..., or --smoke-features for a pipeline check).
    #[arg(long)]
    model: Option<String>,
    /// ImageNet: the model's official checkpoint (.pt or .safetensors; path or hf://).
    #[arg(long, requires = "model")]
    weights: Option<String>,
    /// ImageNet: the VAE (diffusers folder or hf://org/name; default hf://stabilityai/sd-vae-ft-ema).
    #[arg(long, requires = "model")]
    vae: Option<String>,
    /// ImageNet: real images (a folder, any depth; features cached in <out>/reference/) or a
    /// features file (`features` (N, F) safetensors, as that cache).
    #[arg(long, requires = "model")]
    reference: Option<PathBuf>,
    /// ImageNet: at most this many reference images.
    #[arg(long, value_parser = common::count, requires = "model")]
    max_reference: Option<usize>,
    /// ImageNet: evaluate the first N classes only (default: all 1000, as the paper).
    #[arg(long, value_parser = common::count, requires = "model")]
    num_classes: Option<usize>,
    /// ImageNet: raw 8×8 pixels as features (checks the pipeline; not a metric).
    #[arg(long, requires = "model")]
    smoke_features: bool,
    /// Output folder.
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let device = erg::device::best();
    common::output_dir(&a.out)?;
    if a.model.is_some() {
        return imagenet_table(&a, &device);
    }
    let names: Vec<String> = a.methods.clone().unwrap_or_else(|| {
        let v: &[&str] = match a.table {
            2 => &["uncond", "pag-uncond", "sag-uncond", "seg-uncond", "autoguidance-uncond", "ierg-uncond"],
            _ => &["none", "cfg", "pag", "sag", "seg", "autoguidance", "apg", "cads", "ierg", "erg+apg", "erg+cads"],
        };
        v.iter().map(|s| s.to_string()).collect()
    });
    let seeds = a.seeds.clone().unwrap_or_else(|| vec![0, 1, 2]);
    let paths = a.paths.dit_paths();
    let bench = Bench::from_paths(&paths, &device)?;
    let (selected, mut source) = common::selected_settings(a.selected.as_deref(), bench.card.selection.as_ref(), a.paper_defaults, &paths.checkpoint)?;
    if a.paper_defaults {
        source.push_str(" (--paper-defaults)");
    }
    // Every method is built (and so checked) before any sampling.
    let variants: Vec<(String, Guidance)> = names
        .iter()
        .map(|n| Ok((n.clone(), selected.get(n).cloned().map_or_else(|| preset(n, a.guidance_scale, bench.model.depth()), Ok)?)))
        .collect::<anyhow::Result<_>>()?;
    for (n, g) in &variants {
        g.validate(bench.model.depth()).map_err(|e| anyhow::anyhow!("method {n}: {e}"))?;
    }
    let cfg =
        EvalConfig { samples_per_class: a.samples_per_class, num_steps: a.steps, seed: seeds[0], features: bench.scorer.features_key(), ..Default::default() };
    let mut results = ResultsFile::open(a.out.join("results.jsonl"))?;
    if let Some(shard) = a.shard {
        let mut done = true;
        for &seed in &seeds {
            let cfg = EvalConfig { seed, ..cfg.clone() };
            done &= erg::eval::report::sharded_runs(
                &variants,
                &mut results,
                &a.out.join("shards"),
                shard,
                |g| bench.key(g, &cfg),
                |_, g, on_step| bench.evaluate_shard(g, &cfg, shard, &device, on_step),
                |parts| bench.merge(parts, &cfg),
            )?;
        }
        if !done {
            return Ok(());
        }
    }
    let t0 = std::time::Instant::now();
    let stats = evaluate_over_seeds(&bench, &variants, &cfg, &seeds, &mut results, &device)?;
    let rows = evaluate_variants(&bench, &variants, &cfg, &mut results, &device)?; // the first seed's (cached)
    let mut md = format!(
        "# Table {} analogue ({})\n\n{} samples per class × {} classes, {} Euler steps, seeds {:?} (one sample set each); settings: {} (presets at guidance scale {}). Reference: all {} training images. Features: {}; consistency: the crate's classifier (held-out accuracy {:.1} %).\n\n",
        a.table,
        if a.table == 2 { "unconditional" } else { "class-conditional" },
        a.samples_per_class,
        bench.card.classes.len(),
        a.steps,
        seeds,
        source,
        a.guidance_scale,
        bench.scorer.data.len(),
        match &bench.scorer.extractor {
            Some(e) => format!("{} (FID = Fréchet distance of its features)", e.name()),
            None => "the crate's classifier (FID = Fréchet distance of its penultimate-layer features)".to_string(),
        },
        bench.scorer.classifier_card.heldout_accuracy
    );
    if seeds.len() > 1 {
        md.push_str(&table_with_separations("method", &stats, if a.table == 2 { "uncond" } else { "cfg" }));
        md.push_str(&format!("\n### Seed {} alone, with each method's settings\n\n", seeds[0]));
    }
    md.push_str(&write_table(&TableLayout { first_header: "method".into(), total_nfe_over_steps: Some(a.steps), settings: true }, &rows));
    md.push_str(&format!(
        "\nWall time of this invocation: {:.0} s (runs already in results.jsonl are reused); sampling + evaluation of the rows: {:.0} s in total over the seeds.\n",
        t0.elapsed().as_secs_f64(),
        {
            let keys: std::collections::HashSet<String> =
                seeds.iter().flat_map(|&seed| variants.iter().map(move |(_, g)| (seed, g))).map(|(seed, g)| bench.key(g, &EvalConfig { seed, ..cfg.clone() })).collect();
            results.records().iter().filter(|r| keys.contains(&r.key)).map(|r| r.wall_s).sum::<f64>()
        }
    ));
    if a.matched_strength {
        md.push_str(&matched_table(&a, &bench, &variants, &cfg, &seeds, &mut results, &device)?);
    }
    common::create_dir(&a.out)?;
    let path = a.out.join(format!("table{}.md", a.table));
    erg::checkpoint::write_atomic(&path, md.as_bytes())?;
    println!("{md}");
    eprintln!("→ {}", path.display());
    Ok(())
}

/// Table 3 on a public ImageNet model: latents decoded by the VAE, features of the decoded
/// images against the reference's, every method at the same seeds (`--shard` splits it).
fn imagenet_table(a: &Args, device: &candle_core::Device) -> anyhow::Result<()> {
    use erg::eval::imagenet::{reference_features, LatentScorer};
    use erg::eval::report::cached_runs;
    use erg::models::imagenet::{preset as model_preset, tiny_files, PretrainedDit};
    let name = a.model.clone().expect("checked");
    let seed = match a.seeds.as_deref() {
        None => 0,
        Some([s]) => *s,
        Some(s) => anyhow::bail!("--seeds {s:?}: the ImageNet table runs one seed per invocation (its runs are cached in results.jsonl; run once per seed)"),
    };
    let (cfg_model, param) = model_preset(&name)?;
    let (tiny_w, tiny_vae) = tiny_files(param);
    let tiny = name.starts_with("tiny");
    let weights = match &a.weights {
        Some(w) => w.parse::<erg::hub::WeightSource>()?.resolve()?,
        None if tiny => tiny_w,
        None => anyhow::bail!("--model {name} needs --weights (the official checkpoint)"),
    };
    let reference_src = a.reference.clone().ok_or_else(|| anyhow::anyhow!("--model needs --reference <folder of real images or features file>"))?;
    let vae_src = a.vae.clone().unwrap_or_else(|| if tiny { tiny_vae.display().to_string() } else { "hf://stabilityai/sd-vae-ft-ema".into() });
    // every input is checked before any sampling
    let model = PretrainedDit::load(&cfg_model, param, &weights, device)?;
    let (vae, vae_file) = erg::models::vae::Vae::load_diffusers(&vae_src, candle_core::DType::F32, device)?;
    let (extractor, features_key): (Box<dyn erg::features::FeatureExtractor>, String) = match (&a.paths.features, &a.paths.feature_weights, a.smoke_features) {
        (Some(f), Some(w), false) => (erg::features::load(f, w, device)?, format!("{f}:{}", erg::eval::run::feature_weights_hash(w)?)),
        (None, None, true) => (Box::new(erg::features::PixelFeatures { side: 8 }), "pixels-8".into()),
        _ => anyhow::bail!("ImageNet evaluation needs --features inception --feature-weights <weights> (or --smoke-features, not a metric)"),
    };
    let image_size = model.image_shape().1 * vae.config().downsample();
    let reference = reference_features(extractor.as_ref(), &features_key, &reference_src, image_size, a.max_reference, &a.out.join("reference"), device)?;
    let scorer = LatentScorer { vae, extractor, reference, decode_batch: 16 };
    let names: Vec<String> = a
        .methods
        .clone()
        .unwrap_or_else(|| ["none", "cfg", "pag", "sag", "seg", "apg", "cads", "ierg", "erg+apg", "erg+cads"].iter().map(|s| s.to_string()).collect());
    let variants: Vec<(String, Guidance)> =
        names.iter().map(|n| Ok((n.clone(), preset(n, a.guidance_scale, model.depth())?))).collect::<anyhow::Result<_>>()?;
    for (n, g) in &variants {
        erg::guidance::Guider::new(g, erg::guidance::Models::main(&model), 0).map_err(|e| anyhow::anyhow!("method {n}: {e}"))?;
    }
    let classes = a.num_classes.unwrap_or(cfg_model.num_classes).min(cfg_model.num_classes);
    let hashes = erg::eval::run::weight_hashes(&[("main", weights.as_path()), ("vae", vae_file.as_path())])?;
    let cfg = EvalConfig { samples_per_class: a.samples_per_class, num_steps: a.steps, seed, features: Some(features_key.clone()), ..Default::default() }
        .with_weights(&hashes);
    let labels = erg::sample::class_grid_labels(classes, a.samples_per_class, device)?;
    let request = |g: &Guidance| erg::eval::Conditions { conditions: &labels, classes: &labels, key: erg::eval::run_key(g, &cfg) };
    let mut results = ResultsFile::open(a.out.join("results.jsonl"))?;
    if let Some(shard) = a.shard {
        let done = erg::eval::report::sharded_runs(
            &variants,
            &mut results,
            &a.out.join("shards"),
            shard,
            |g| request(g).key,
            |_, g, on_step| erg::eval::shard::evaluate_shard(erg::guidance::Models::main(&model), g, &request(g), &scorer, &cfg, shard, device, on_step),
            |parts| erg::eval::shard::merge(parts, &scorer, &cfg),
        )?;
        if !done {
            return Ok(());
        }
    }
    let rows = cached_runs(
        &variants,
        &mut results,
        |g| request(g).key,
        |_, g, on_step| erg::eval::evaluate_conditions(erg::guidance::Models::main(&model), g, &request(g), &scorer, &cfg, device, on_step),
    )?;
    let mut md = format!(
        "# Table 3 on ImageNet ({name})\n\n`{}` ({param:?}), VAE `{vae_src}`, {} samples per class × {classes} classes, {} steps, seed {}, w = {}. Reference: {} ({} images). Features: {features_key}. No ImageNet classifier: consistency is empty.\n\n",
        weights.display(),
        a.samples_per_class,
        a.steps,
        seed,
        a.guidance_scale,
        reference_src.display(),
        scorer.reference.features.nrows()
    );
    md.push_str(&write_table(&TableLayout { first_header: "method".into(), total_nfe_over_steps: Some(a.steps), settings: true }, &rows));
    let path = a.out.join("table3_imagenet.md");
    erg::checkpoint::write_atomic(&path, md.as_bytes())?;
    println!("{md}");
    eprintln!("→ {}", path.display());
    Ok(())
}

/// The table at matched strength: CFG's strength at w (Table 3) or the first method's (Table 2,
/// unconditional) is the target; every other method with guidance terms is rescaled to it.
fn matched_table(
    a: &Args,
    bench: &Bench,
    variants: &[(String, Guidance)],
    cfg: &EvalConfig,
    seeds: &[u64],
    results: &mut ResultsFile,
    device: &candle_core::Device,
) -> anyhow::Result<String> {
    use erg::analysis::strength::{guidance_strength, match_strength};
    let depth = bench.model.depth();
    // calibration: one sample per class, 25 steps at most, a seed apart from the reported runs
    let labels = erg::sample::class_grid_labels(bench.card.classes.len(), 1, device)?;
    let (steps, seed) = (a.steps.min(25), seeds[0] + 1_000_003);
    let reference =
        if a.table == 2 { variants.iter().find(|(_, g)| !g.terms.is_empty()).map(|(_, g)| g.clone()) } else { Some(preset("cfg", a.guidance_scale, depth)?) };
    let reference = reference.ok_or_else(|| anyhow::anyhow!("no guided method to match"))?;
    let target = guidance_strength(bench.models(), &reference, &labels, steps, seed)?;
    let mut matched = Vec::new();
    let mut lines = String::new();
    for (n, g) in variants.iter().filter(|(_, g)| !g.terms.is_empty()) {
        let m = match_strength(bench.models(), g, target, 8.0, &labels, steps, seed, 14)?;
        eprintln!("{n:>28}: strength {:.4} → factor {:.3} (w = {:.2})", m.target, m.factor, m.guidance_scale);
        lines.push_str(&format!("| {n} | {:.3} | {:.2} |\n", m.factor, m.guidance_scale));
        matched.push((format!("{n} (matched)"), g.clone().scaled(m.factor).named(format!("{n}-matched"))));
    }
    let stats = evaluate_over_seeds(bench, &matched, cfg, seeds, results, device)?;
    let rows = evaluate_variants(bench, &matched, cfg, results, device)?;
    let mut md = format!(
        "\n## At matched strength\n\nEach method's term scales × λ so that its effective strength (mean RMS of v_guided − v_pos along its own sampling, erg::analysis::strength) equals {}'s, {target:.4}, calibrated on one sample per class over {steps} steps with seed {seed}.\n\n| method | λ | w after matching |\n|---|---|---|\n{lines}\n",
        reference.name
    );
    if seeds.len() > 1 {
        md.push_str(&markdown_table_over_seeds("method", &stats));
        md.push_str(&format!("\n### Seed {} alone\n\n", seeds[0]));
    }
    md.push_str(&write_table(&TableLayout { first_header: "method".into(), total_nfe_over_steps: Some(a.steps), settings: true }, &rows));
    common::write(a.out.join(format!("table{}_matched.md", a.table)), &md)?;
    Ok(md)
}
