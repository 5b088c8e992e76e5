//! The analogue of the ERG paper's Table 1 (text-to-image: CFG, APG, CADS, PAG, SAG, SEG,
//! AutoGuidance, ERG, ERG + APG, ERG + CADS) and Table 5 (ERG's components: CFG, C-ERG, I-ERG,
//! ERG) on the shipped text-to-image emoji MMDiT.
//!
//! ```text
//! cargo run --release --example table1                       # Table 1 → results/table1.md
//! cargo run --release --example table1 -- --table 5          # Table 5 → results/table5.md
//! cargo run --release --example table1 -- --sweep            # mean-rank selection → results/table1_selected.md
//! # store the selection in the checkpoint's card (table1 and t2i then use it by default):
//! cargo run --release --example export -- --from <checkpoint> --selection results/selection_t2i.json --to <checkpoint>
//! ```
//! Settings: `--selected`, else the checkpoint card's own mean-rank selection where it holds one,
//! else the presets (Table 7's settings scaled to the depth); `--paper-defaults` or
//! `--guidance-scale` forces the presets.
//! Prompts: `--prompts-per-class` emoji names of each of the 9 categories
//! ([`erg::eval::PromptSet::emoji`]), `--samples-per-prompt` samples each (10 × 5 = 50 images per
//! category), one sample set per seed of `--seeds` (default 0, 1, 2; the table reports mean ±
//! std and names the differences from CFG beyond the spread). `--sweep` selects on
//! `--sweep-seeds` (default 100–102), never on the reported seeds. Reference: all training
//! images. Features and consistency come from the shipped classifier (consistency = its
//! agreement with the prompt's emoji category), or `--features`/`--feature-weights` for
//! pretrained features. Every run is appended to `<out>/results_t2i.jsonl` and reused on rerun.
mod common;

use std::path::{Path, PathBuf};

use clap::Parser;
use erg::eval::{EvalConfig, ResultsFile, TextBench};
use erg::guidance::{preset_for, Guidance};
use erg::models::mmdit::t2i::{SHIPPED_EMOJI_MMDIT, SHIPPED_EMOJI_MMDIT_WEAK};
use erg::models::Denoiser;

/// Table 1 (text-to-image methods) or Table 5 (ERG's components) of the ERG paper on the
/// text-to-image emoji MMDiT: every method at the same prompts and seeds, scored with FID,
/// precision, recall, density, coverage and consistency into `<out>/table{1,5}.md`.
#[derive(Parser, Debug)]
struct Args {
    /// 1 (methods) or 5 (ERG's components).
    #[arg(long, default_value_t = 1, value_parser = table_number)]
    table: u8,
    /// Prompts per emoji category.
    #[arg(long, value_parser = common::count, default_value_t = 10)]
    prompts_per_class: usize,
    /// Seeds per prompt.
    #[arg(long, value_parser = common::count, default_value_t = 5)]
    samples_per_prompt: usize,
    /// Euler steps.
    #[arg(long, value_parser = common::count, default_value_t = 25)]
    steps: usize,
    /// Guidance scale w of the CFG-like terms of the presets (default 3); giving it implies the
    /// presets, as --paper-defaults does.
    #[arg(long, value_parser = common::finite)]
    guidance_scale: Option<f64>,
    /// Sampling seeds of the reported table, one independent sample set each (mean ± std).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
    /// Evaluate a compact grid per method (`erg::eval::sweep::text_grid`) on --sweep-seeds and
    /// report each method at its setting of lowest mean rank over the six metrics (the paper's
    /// selection) on --seeds.
    #[arg(long)]
    sweep: bool,
    /// Seeds of the selection (--sweep), disjoint from --seeds so that no setting is selected on
    /// the samples it is reported on.
    #[arg(long, value_delimiter = ',', default_value = "100,101,102")]
    sweep_seeds: Vec<u64>,
    /// Override the method list (comma-separated preset names).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Settings selected by `--sweep` (`selected_t2i.json`: method → Guidance JSON); presets for
    /// methods not in it. Default: the selection stored in the checkpoint's card, if any.
    #[arg(long, conflicts_with = "sweep")]
    selected: Option<PathBuf>,
    /// The presets (Table 7's settings scaled to the depth, at --guidance-scale) even when the
    /// checkpoint's card holds a selection.
    #[arg(long, conflicts_with_all = ["selected", "sweep"])]
    paper_defaults: bool,
    /// Ablation: CADS's noise on the negative branches' conditions too (`Cads::on_negatives`; the
    /// CADS and ERG papers noise the positive only). Every method with CADS is then reported as
    /// `<name>-on-negatives`, at its settings otherwise unchanged.
    #[arg(long, conflicts_with = "sweep")]
    cads_on_negatives: bool,
    /// The text-to-image model (default: the shipped emoji MMDiT), its weak checkpoint, the
    /// classifier and optional pretrained features.
    #[command(flatten)]
    paths: common::EvalFlags,
    /// Output folder.
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

/// `--table`: 1 or 5.
fn table_number(s: &str) -> Result<u8, String> {
    match s {
        "1" => Ok(1),
        "5" => Ok(5),
        _ => Err("there are Tables 1 and 5 of the text-to-image model (Tables 2 and 3: the table3 example)".into()),
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let device = erg::device::best();
    common::output_dir(&a.out)?;
    // ANCHOR: setup
    let paths = a.paths.paths(Path::new(SHIPPED_EMOJI_MMDIT), Path::new(SHIPPED_EMOJI_MMDIT_WEAK));
    let bench = TextBench::from_paths(&paths, a.prompts_per_class, a.samples_per_prompt, &device)?;
    // ANCHOR_END: setup
    let names: Vec<String> = a.methods.clone().unwrap_or_else(|| {
        let v: &[&str] = match a.table {
            5 => &["cfg", "cerg", "ierg", "erg"],
            _ => &["none", "cfg", "apg", "cads", "pag", "sag", "cfg+seg", "autoguidance", "erg", "erg+apg", "erg+cads"],
        };
        v.iter().map(|s| s.to_string()).collect()
    });
    // ANCHOR: evaluate
    if a.sweep && a.sweep_seeds.iter().any(|s| a.seeds.contains(s)) {
        anyhow::bail!("--sweep-seeds {:?} overlap --seeds {:?}: the selection would be made on the reported samples", a.sweep_seeds, a.seeds);
    }
    let guidance_scale = a.guidance_scale.unwrap_or(3.0);
    let (selected, source) =
        common::selected_settings(a.selected.as_deref(), bench.card.selection.as_ref(), a.paper_defaults || a.guidance_scale.is_some(), &paths.checkpoint)?;
    let cfg = EvalConfig { num_steps: a.steps, seed: a.seeds[0], features: bench.scorer.features_key(), batch_size: 96, ..Default::default() };
    let mut results = ResultsFile::open(a.out.join("results_t2i.jsonl"))?;
    let (depth, text_layers) = (bench.model.depth(), bench.model.text_layers());
    let t0 = std::time::Instant::now();
    let variants: Vec<(String, Guidance)> = if a.sweep {
        let layers = text_layers.unwrap_or(0);
        let mut grid = vec![];
        for n in &names {
            grid.extend(erg::eval::sweep::text_grid(n, depth, layers)?.into_iter().map(|g| (n.clone(), g)));
        }
        let per_seed: Vec<Vec<erg::eval::RunRecord>> = a
            .sweep_seeds
            .iter()
            .map(|&seed| Ok(bench.evaluate_variants(&grid, &EvalConfig { seed, ..cfg.clone() }, &mut results, &device)?.into_iter().map(|(_, r)| r).collect()))
            .collect::<anyhow::Result<_>>()?;
        let means = erg::eval::sweep::mean_over_seeds(&per_seed)?;
        let best = erg::eval::sweep::select_per_method(&means, &erg::eval::MetricSpec::paper_defaults());
        let chosen: std::collections::BTreeMap<&String, serde_json::Value> = best.iter().map(|(m, r)| (m, r.guidance.clone())).collect();
        // selected_t2i.json: method → Guidance (--selected); selection_t2i.json: the same with its
        // provenance, for the card (`export --from <checkpoint> --selection`).
        let images_per_class = EvalConfig { samples_per_class: a.prompts_per_class * a.samples_per_prompt, ..cfg.clone() };
        let provenance = erg::eval::sweep::selection(&means, &erg::eval::MetricSpec::paper_defaults(), &a.sweep_seeds, &images_per_class);
        common::create_dir(&a.out)?;
        common::write(a.out.join("selected_t2i.json"), serde_json::to_string_pretty(&chosen)?)?;
        common::write(a.out.join("selection_t2i.json"), serde_json::to_string_pretty(&provenance)?)?;
        eprintln!(
            "{} settings × {} seeds evaluated; selections → {} (for the card: {})",
            grid.len(),
            a.sweep_seeds.len(),
            a.out.join("selected_t2i.json").display(),
            a.out.join("selection_t2i.json").display()
        );
        names.iter().filter_map(|n| best.get(n).map(|r| serde_json::from_value(r.guidance.clone()).map(|g| (n.clone(), g)))).collect::<Result<_, _>>()?
    } else {
        names
            .iter()
            .map(|n| Ok((n.clone(), selected.get(n).cloned().map_or_else(|| preset_for(n, guidance_scale, depth, text_layers), Ok)?)))
            .collect::<anyhow::Result<_>>()?
    };
    let variants = if a.cads_on_negatives { cads_on_negatives(variants)? } else { variants };
    // Every method is checked against the model before any sampling (a --selected file may be another model's).
    for (n, g) in &variants {
        g.validate(depth).map_err(|e| anyhow::anyhow!("method {n}: {e}"))?;
    }
    let stats = erg::eval::seeds::over_seeds(&names_of(&variants), &a.seeds, |seed| {
        Ok(bench.evaluate_variants(&variants, &EvalConfig { seed, ..cfg.clone() }, &mut results, &device)?.into_iter().map(|(_, r)| r).collect())
    })?;
    let rows = bench.evaluate_variants(&variants, &cfg, &mut results, &device)?; // the first seed's (cached)
                                                                                 // ANCHOR_END: evaluate
    let mut md = format!(
        "# Table {} analogue (text-to-image{})\n\nModel `{}` (step {}). {} prompts ({} emoji names per category × {} categories) × {} samples = {} images per sample set, {} Euler steps, seeds {:?} (one sample set each); {}. Reference: all {} training images. Features: {}; consistency: the classifier's agreement with the prompt's category (held-out accuracy {:.1} %).\n\n",
        a.table,
        if a.table == 5 { ", ERG's components" } else { "" },
        paths.checkpoint.display(),
        bench.card.step,
        bench.prompts.prompts.len(),
        a.prompts_per_class,
        bench.scorer.data.classes.len(),
        a.samples_per_prompt,
        bench.prompts.prompts.len() * a.samples_per_prompt,
        a.steps,
        a.seeds,
        if a.sweep {
            format!("settings: each method at its setting of lowest mean rank in a compact grid (`erg::eval::sweep::text_grid`), metrics averaged over seeds {:?}", a.sweep_seeds)
        } else {
            format!(
                "settings: {source}{}; presets at guidance scale w = {guidance_scale}, text-to-image ERG of Table 7 scaled to {depth} blocks",
                if a.paper_defaults { " (--paper-defaults)" } else { "" }
            )
        },
        bench.scorer.data.len(),
        bench.scorer.extractor().name(),
        bench.scorer.classifier_card.heldout_accuracy
    );
    if a.seeds.len() > 1 {
        md.push_str(&erg::eval::seeds::table_with_separations("method", &stats, "cfg"));
        md.push_str(&format!("\n### Seed {} alone, with each method's settings\n\n", a.seeds[0]));
    }
    let layout = erg::eval::report::TableLayout { first_header: "method".into(), total_nfe_over_steps: None, settings: true };
    md.push_str(&erg::eval::report::write_table(&layout, &rows));
    md.push_str(&format!("\nWall time of this invocation: {:.0} s (runs already in results_t2i.jsonl are reused).\n", t0.elapsed().as_secs_f64(),));
    common::create_dir(&a.out)?;
    let path = a.out.join(format!("table{}{}.md", a.table, if a.sweep { "_selected" } else { "" }));
    common::write(&path, &md)?;
    println!("{md}");
    eprintln!("→ {}", path.display());
    Ok(())
}

/// `--cads-on-negatives`: every method with CADS renamed `<name>-on-negatives`, its CADS noise on
/// every branch; the others unchanged. Errors: no method has CADS.
fn cads_on_negatives(variants: Vec<(String, Guidance)>) -> anyhow::Result<Vec<(String, Guidance)>> {
    anyhow::ensure!(variants.iter().any(|(_, g)| g.cads.is_some()), "--cads-on-negatives: none of the methods uses CADS (try --methods cads,erg+cads)");
    variants
        .into_iter()
        .map(|(n, g)| {
            if g.cads.is_none() {
                return Ok((n, g));
            }
            let name = format!("{n}-on-negatives");
            Ok((name.clone(), Guidance { name, ..g.with_cads_on_negatives()? }))
        })
        .collect()
}

fn names_of(variants: &[(String, Guidance)]) -> Vec<String> {
    variants.iter().map(|(n, _)| n.clone()).collect()
}
