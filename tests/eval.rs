//! Results file and mean-rank selection.
use std::collections::BTreeMap;

use erg::eval::{mean_ranks, select_best, Direction, MetricSpec, ResultsFile, RunRecord};

fn record(key: &str, fid: f64) -> RunRecord {
    RunRecord {
        key: key.into(),
        method: "cfg".into(),
        guidance: serde_json::json!({"name": "cfg"}),
        seed: 0,
        steps: 50,
        nfe_per_step: 2.0,
        samples: 10,
        wall_s: 1.0,
        metrics: BTreeMap::from([("fid".to_string(), fid)]),
        weights: BTreeMap::new(),
    }
}

#[test]
fn mean_rank_on_a_small_table() {
    let metrics = vec![
        MetricSpec { name: "fid".into(), direction: Direction::LowerIsBetter },
        MetricSpec { name: "precision".into(), direction: Direction::HigherIsBetter },
        MetricSpec { name: "recall".into(), direction: Direction::HigherIsBetter },
    ];
    // A: best FID, worst precision; B: middle everywhere; C: ties B on recall
    let values = vec![vec![10.0, 50.0, 60.0], vec![12.0, 70.0, 50.0], vec![15.0, 80.0, 50.0]];
    let r = mean_ranks(&values, &metrics);
    // fid ranks 1,2,3; precision 3,2,1; recall 1, 2.5, 2.5
    assert_eq!(r, vec![(1.0 + 3.0 + 1.0) / 3.0, (2.0 + 2.0 + 2.5) / 3.0, (3.0 + 1.0 + 2.5) / 3.0]);
    assert_eq!(select_best(&values, &metrics), Some(0));
    // a missing value ranks last
    let r = mean_ranks(&[vec![f64::NAN], vec![3.0]], &metrics[..1]);
    assert_eq!(r, vec![2.0, 1.0]);
    assert_eq!(select_best(&[], &metrics), None);
}

#[test]
fn results_file_survives_an_interrupted_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let mut f = ResultsFile::open(&path).unwrap();
    f.append(record("a", 1.0)).unwrap();
    f.append(record("b", 2.0)).unwrap();
    // a metric that does not apply (NaN, written as null) reads back as NaN
    let mut unc = record("u", 4.0);
    unc.metrics.insert("consistency".into(), f64::NAN);
    f.append(unc).unwrap();
    assert!(ResultsFile::open(&path).unwrap().records()[2].metrics["consistency"].is_nan());
    // a kill in the middle of the third write leaves a torn line
    std::fs::OpenOptions::new().append(true).open(&path).map(|mut h| std::io::Write::write_all(&mut h, b"{\"key\":\"c\",\"meth")).unwrap().unwrap();
    let mut f = ResultsFile::open(&path).unwrap();
    assert_eq!(f.records().len(), 3);
    assert!(f.contains("a") && f.contains("b") && f.contains("u") && !f.contains("c"));
    f.append(record("c", 3.0)).unwrap();
    let f = ResultsFile::open(&path).unwrap();
    assert_eq!(f.records().iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), vec!["a", "b", "u", "c"]);
    // corruption in the middle is an error, not silent loss
    let text = std::fs::read_to_string(&path).unwrap().replacen("\"b\"", "\"b", 1);
    std::fs::write(&path, text).unwrap();
    assert!(matches!(ResultsFile::open(&path).err().unwrap(), erg::Error::Corrupt { .. }));
}

#[test]
fn an_evaluation_run_computes_every_metric() {
    use candle_core::Device;
    use erg::eval::{evaluate, reference, run_key, EvalConfig};
    use erg::features::classifier::{self, ClassifierConfig};
    use erg::guidance::{preset, Models};
    let data = erg::data::mnist::load(erg::data::mnist::DEFAULT_PATH, Some(300)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let how = classifier::ClassifierTraining {
        steps: 10,
        batch_size: 16,
        lr: 3e-3,
        cosine: false,
        weight_decay: 1e-4,
        seed: 0,
        shift: 0,
        mixup: false,
        cutout: 0,
        label_smoothing: 0.0,
        dropout: 0.0,
        progress: false,
        checkpoint_every: 0,
        resume: false,
        stop_at: None,
    };
    let cfg = ClassifierConfig::new(1, vec![4, 8], 10);
    let (clf, card) = classifier::train(&cfg, &data, &how, &Device::Cpu, &dir.path().join("c.safetensors")).unwrap();
    let mut tc = erg::train::TrainConfig::new(erg::models::dit::DitConfig::test_tiny(), "mnist", 3, 0);
    tc.batch_size = 8;
    erg::train::train(&tc, &data, &Device::Cpu, &erg::train::RunPaths::new(dir.path().join("run")), erg::train::RunOptions::new()).unwrap();
    let (model, _) = erg::models::dit::load(&dir.path().join("run/ema.safetensors"), &Device::Cpu).unwrap();
    let r = reference(&clf, &data, Some(10), &Device::Cpu).unwrap();
    assert_eq!(r.features.nrows(), 100);
    let scorer = erg::eval::Scorer::from_parts(clf, card, None, data, r);
    let cfg = EvalConfig { samples_per_class: 2, num_steps: 3, batch_size: 32, ..Default::default() };
    let rec = evaluate(Models::main(&model), &preset("cfg", 2.0, 2).unwrap(), 10, &scorer, &cfg, &Device::Cpu, |_, _| {}).unwrap();
    assert_eq!(rec.samples, 20);
    assert_eq!(rec.nfe_per_step, 2.0);
    for m in ["fid", "precision", "recall", "density", "coverage", "consistency"] {
        assert!(rec.metrics[m].is_finite(), "{m} = {}", rec.metrics[m]);
    }
    assert_eq!(rec.key, run_key(&preset("cfg", 2.0, 2).unwrap(), &cfg));
    assert_ne!(rec.key, run_key(&preset("cfg", 3.0, 2).unwrap(), &cfg));
    let unc = evaluate(Models::main(&model), &preset("uncond", 1.0, 2).unwrap(), 10, &scorer, &cfg, &Device::Cpu, |_, _| {}).unwrap();
    assert!(unc.metrics["consistency"].is_nan());
}

#[test]
fn sweep_grids_selection_and_pareto_fronts() {
    use erg::eval::sweep::{grid, pareto_front, plot_pareto, select_per_method};
    assert_eq!(grid("cfg", 6, &[2.0, 3.0]).unwrap().len(), 2);
    assert_eq!(grid("cads", 6, &[3.0]).unwrap().len(), 6);
    assert_eq!(grid("ierg", 6, &[2.0, 3.0]).unwrap().len(), 18);
    assert_eq!(grid("pag", 6, &[2.0, 3.0]).unwrap().len(), 3);
    assert_eq!(grid("cfg+pag", 6, &[2.0, 3.0]).unwrap().len(), 6);
    assert_eq!(grid("none", 6, &[2.0, 3.0]).unwrap().len(), 1);
    for g in grid("cads", 6, &[3.0]).unwrap() {
        g.validate(6).unwrap();
    }
    // Pareto front (maximise both): (1,3) and (3,1) and (2,2) are optimal, (1,1) and (2,1) are not
    let pts = [(1.0, 3.0), (1.0, 1.0), (2.0, 2.0), (3.0, 1.0), (2.0, 1.0)];
    assert_eq!(pareto_front(&pts), vec![0, 2, 3]);
    // per-method selection by mean rank
    let mk = |m: &str, key: &str, fid: f64, prec: f64| {
        let mut r = record(key, fid);
        r.method = m.into();
        r.metrics.insert("precision".into(), prec);
        r
    };
    let recs = vec![mk("cfg", "a", 10.0, 50.0), mk("cfg", "b", 8.0, 60.0), mk("pag", "c", 20.0, 40.0)];
    let metrics = vec![
        MetricSpec { name: "fid".into(), direction: Direction::LowerIsBetter },
        MetricSpec { name: "precision".into(), direction: Direction::HigherIsBetter },
    ];
    let sel = select_per_method(&recs, &metrics);
    assert_eq!(sel["cfg"].key, "b");
    assert_eq!(sel["pag"].key, "c");
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("pareto.svg");
    plot_pareto(&recs, &[("fid", "precision")], &svg).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("precision vs fid"));
    let png = dir.path().join("pareto.png");
    plot_pareto(&recs, &[("fid", "precision"), ("recall", "precision")], &png).unwrap();
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (960 + 180, 440));
}

#[test]
fn text_grid_sweeps_every_guided_methods_strength_and_its_own_parameters() {
    use erg::eval::sweep::text_grid;
    let (depth, layers) = (12, 6);
    let count = |methods: &[&str]| methods.iter().map(|m| text_grid(m, depth, layers).unwrap().len()).sum::<usize>();
    let table1 = ["none", "cfg", "apg", "cads", "pag", "sag", "cfg+seg", "autoguidance", "erg", "erg+apg", "erg+cads"];
    assert_eq!(count(&table1), 35, "the count the doc and the sweep's time estimate rest on");
    assert_eq!(count(&["cfg", "cerg", "ierg", "erg"]), 20);
    for m in table1.iter().chain(&["cerg", "ierg"]) {
        let grid = text_grid(m, depth, layers).unwrap();
        let json: Vec<String> = grid.iter().map(|g| serde_json::to_string(g).unwrap()).collect();
        assert_eq!(json.iter().collect::<std::collections::BTreeSet<_>>().len(), json.len(), "{m}: settings repeat");
        for g in &grid {
            g.validate(depth).unwrap();
        }
        // every method whose first term is CFG-like is swept at w = 2 and 3; PAG and SAG have no
        // such term (their only term's scale is the perturbation scale)
        let scales: std::collections::BTreeSet<String> = grid.iter().map(|g| g.guidance_scale().to_string()).collect();
        let expected: &[&str] = match *m {
            "none" => &["1"],
            "pag" => &["1.5", "2"],
            "sag" => &["1.25", "1.75"],
            _ => &["2", "3"],
        };
        assert_eq!(scales.iter().map(String::as_str).collect::<Vec<_>>(), expected, "{m}");
    }
    assert!(text_grid("no-such-method", depth, layers).is_err());
}

#[test]
fn variant_tables_and_metric_plots() {
    use erg::eval::report::{markdown_table, plot_metric_curves};
    let mut a = record("a", 12.345);
    a.metrics.insert("consistency".into(), f64::NAN);
    let b = record("b", 7.0);
    let rows = vec![("τ = 0.1".to_string(), a), ("τ = 0.5".to_string(), b)];
    let md = markdown_table("temperature", &rows);
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("| temperature | FID ↓ | precision ↑"));
    assert_eq!(lines[2], "| τ = 0.1 | 12.35 | – | – | – | – | – | 2.00 |", "missing metrics print as –");
    let dir = tempfile::tempdir().unwrap();
    plot_metric_curves(&dir.path().join("m"), "τ", &[0.1, 0.5], &rows, None).unwrap();
    assert!(dir.path().join("m.png").exists() && dir.path().join("m.svg").exists());
    assert!(plot_metric_curves(&dir.path().join("m"), "τ", &[0.1], &rows, None).is_err(), "one value per run");
}

/// Issue 19 item 1: a results file shared by two models never serves one model's rows for the
/// other; the weak model counts only for methods that run it.
#[test]
fn cached_runs_are_keyed_by_the_weights_that_produced_them() {
    use candle_core::Device;
    use erg::checkpoint::{SHIPPED_EMOJI_CLASSIFIER, SHIPPED_EMOJI_DIT, SHIPPED_EMOJI_WEAK};
    use erg::eval::{report::evaluate_variants, Bench, EvalConfig};
    use erg::guidance::preset;
    let dev = Device::Cpu;
    let (main, weak, classifier) =
        (std::path::Path::new(SHIPPED_EMOJI_DIT), std::path::Path::new(SHIPPED_EMOJI_WEAK), std::path::Path::new(SHIPPED_EMOJI_CLASSIFIER));
    let a = Bench::load(main, weak, classifier, &dev).unwrap();
    let b = Bench::load(weak, weak, classifier, &dev).unwrap(); // another main model
    let c = Bench::load(main, main, classifier, &dev).unwrap(); // another weak model
    assert_eq!(a.weights["main"], erg::checkpoint::file_sha256(main).unwrap());
    assert_eq!(a.weights.len(), 3);
    let cfg = EvalConfig { samples_per_class: 1, num_steps: 2, ..Default::default() };
    let (cfg_method, auto) = (preset("cfg", 2.0, 6).unwrap(), preset("autoguidance", 2.0, 6).unwrap());
    assert_ne!(a.key(&cfg_method, &cfg), b.key(&cfg_method, &cfg));
    assert_eq!(a.key(&cfg_method, &cfg), c.key(&cfg_method, &cfg), "CFG does not run the weak model");
    assert_ne!(a.key(&auto, &cfg), c.key(&auto, &cfg));
    let dir = tempfile::tempdir().unwrap();
    let mut results = ResultsFile::open(dir.path().join("r.jsonl")).unwrap();
    let variants = vec![("CFG".to_string(), cfg_method)];
    let ra = evaluate_variants(&a, &variants, &cfg, &mut results, &dev).unwrap();
    let rb = evaluate_variants(&b, &variants, &cfg, &mut results, &dev).unwrap();
    assert_eq!(results.records().len(), 2, "the second model's run is not served from the first's");
    assert_ne!(ra[0].1.metrics["fid"], rb[0].1.metrics["fid"]);
    assert_eq!(rb[0].1.weights["main"], b.weights["main"]);
    assert!(!ra[0].1.weights.contains_key("weak"));
    // the same model again reuses its row
    evaluate_variants(&a, &variants, &cfg, &mut results, &dev).unwrap();
    assert_eq!(results.records().len(), 2);
}

/// Issue 19: method names (user JSON) never escape the output folder nor overwrite each other.
#[test]
fn method_names_become_safe_unique_file_stems() {
    let stems = erg::eval::report::file_stems(&["cfg", "../../x", "cfg", "erg+apg", "", "a b/c", ".hidden"]);
    assert_eq!(stems, ["cfg", "_.._x", "cfg-2", "erg+apg", "method", "a_b_c", "hidden"]);
    for s in &stems {
        assert!(!s.contains('/') && !s.starts_with('.'));
    }
}

#[test]
fn statistics_over_seeds() {
    use erg::eval::seeds::{markdown_table_over_seeds, separations, SeedStats};
    let mk = |fid: f64, cons: f64| {
        let mut r = record("k", fid);
        r.metrics.insert("consistency".into(), cons);
        r
    };
    let (a1, a2, a3) = (mk(10.0, 50.0), mk(12.0, 52.0), mk(14.0, f64::NAN));
    let a = SeedStats::of("a", &[&a1, &a2, &a3]).unwrap();
    assert_eq!(a.seeds, 3);
    assert_eq!(a.metrics["fid"], (12.0, 2.0), "mean 12, sample std 2");
    assert!(!a.metrics.contains_key("consistency"), "NaN at one seed: left out");
    let (b1, b2) = (mk(20.0, 0.0), mk(20.0, 0.0));
    let b = SeedStats::of("b", &[&b1, &b2]).unwrap();
    assert_eq!(b.separated_from(&a, "fid"), Some(true)); // |20 − 12| > 2 + 0
    let (c1, c2) = (mk(13.0, 0.0), mk(15.0, 0.0));
    let c = SeedStats::of("c", &[&c1, &c2]).unwrap();
    assert_eq!(c.separated_from(&a, "fid"), Some(false)); // |14 − 12| < 2 + 1.41
    let md = markdown_table_over_seeds("method", &[a.clone(), b.clone()]);
    assert!(md.contains("| a | 12.00 ± 2.00 |"), "{md}");
    let text = separations(&a, &[a.clone(), b, c.clone()]);
    assert!(text.contains("FID ↓: `b` differs from `a` beyond the spread"), "{text}");
    assert!(text.contains("precision ↑: no method differs from `a`") || !text.contains("precision"), "{text}");
    let md = erg::eval::seeds::table_with_separations("method", &[a.clone(), c.clone()], "c");
    assert!(md.starts_with("| method (mean ± std over 3 seeds)") && md.contains("Differences from `c`"), "{md}");
    assert!(SeedStats::of("none", &[]).is_err());
}

/// An evaluation split in shards (`--shard i/n`) and merged gives the unsharded record.
#[test]
fn sharded_evaluation_merges_to_the_unsharded_record() {
    use erg::eval::shard::{Shard, ShardPart};
    use erg::eval::{Bench, BenchPaths, EvalConfig};
    let dev = candle_core::Device::Cpu;
    let bench = Bench::from_paths(&BenchPaths::default(), &dev).unwrap();
    let cfg = EvalConfig { samples_per_class: 3, num_steps: 3, batch_size: 64, ..Default::default() };
    for name in ["cfg", "uncond"] {
        let g = erg::guidance::preset(name, 3.0, 6).unwrap();
        let whole = bench.evaluate(&g, &cfg, &dev, |_, _| {}).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for i in [1, 0, 2] {
            let part = bench.evaluate_shard(&g, &cfg, Shard { index: i, count: 3 }, &dev, |_, _| {}).unwrap();
            part.save(dir.path()).unwrap();
        }
        let parts = ShardPart::find(dir.path(), &whole.key).unwrap();
        assert_eq!(parts.len(), 3);
        let merged = bench.merge(&parts, &cfg).unwrap();
        assert_eq!((merged.key.as_str(), merged.samples, merged.nfe_per_step), (whole.key.as_str(), whole.samples, whole.nfe_per_step));
        for (m, v) in &whole.metrics {
            let w = merged.metrics[m];
            assert!((v.is_nan() && w.is_nan()) || (v - w).abs() <= 1e-3 * v.abs().max(1.0), "{name} {m}: sharded {w} vs whole {v}");
        }
        // a missing shard is refused, naming what is there
        let err = bench.merge(&parts[..2], &cfg).unwrap_err().to_string();
        assert!(err.contains("incomplete"), "{err}");
    }
    assert!("3/3".parse::<Shard>().is_err() && "a/2".parse::<Shard>().is_err());
    assert_eq!("1/4".parse::<Shard>().unwrap().rows(27), (6, 13));
}

#[test]
fn selection_ranks_means_over_seeds_and_binds_to_the_card() {
    use erg::eval::sweep::{mean_over_seeds, selection};
    let mk = |key: &str, seed: u64, fid: f64, prec: f64| {
        let mut r = record(key, fid);
        r.seed = seed;
        r.guidance = serde_json::json!({ "name": "cfg", "key": key });
        r.metrics.insert("precision".into(), prec);
        r
    };
    // Setting a wins at seed 0 only; b wins on the means (FID 9 vs 11, precision 60 vs 55).
    let seed0 = vec![mk("a", 0, 7.0, 70.0), mk("b", 0, 10.0, 50.0)];
    let seed1 = vec![mk("a", 1, 15.0, 40.0), mk("b", 1, 8.0, 70.0)];
    let means = mean_over_seeds(&[seed0.clone(), seed1]).unwrap();
    assert_eq!(means[0].metrics["fid"], 11.0);
    assert_eq!(means[1].metrics["precision"], 60.0);
    assert!(means[1].key.contains("mean over seeds 0,1"));
    assert!(mean_over_seeds(&[]).is_err());
    assert!(mean_over_seeds(&[seed0.clone(), vec![seed0[0].clone()]]).is_err());
    let metrics = vec![
        MetricSpec { name: "fid".into(), direction: Direction::LowerIsBetter },
        MetricSpec { name: "precision".into(), direction: Direction::HigherIsBetter },
    ];
    let cfg = erg::eval::EvalConfig { samples_per_class: 10, num_steps: 25, ..Default::default() };
    let sel = selection(&means, &metrics, &[0, 1], &cfg);
    assert_eq!(sel.methods["cfg"]["key"], "b");
    // Its methods must be Guidance values to be used (these test records are not).
    assert!(erg::guidance::from_selection(&sel).unwrap_err().to_string().contains("cfg"));
    let real = erg::checkpoint::GuidanceSelection {
        methods: [("cfg".to_string(), serde_json::to_value(erg::guidance::preset("cfg", 4.5, 6).unwrap()).unwrap())].into(),
        ..sel.clone()
    };
    assert_eq!(erg::guidance::from_selection(&real).unwrap()["cfg"].guidance_scale(), 4.5);
    assert_eq!((sel.seeds.clone(), sel.samples_per_class, sel.num_steps), (vec![0, 1], 10, 25));
    assert!(sel.rule.contains("fid↓") && sel.rule.contains("precision↑"));
    // On seed 0 alone, a would have been chosen: the means matter.
    assert_eq!(selection(&seed0, &metrics, &[0], &cfg).methods["cfg"]["key"], "a");

    // A card with a selection round-trips through a checkpoint; one without keeps its old JSON.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let tensors =
        std::collections::HashMap::from([("w".to_string(), candle_core::Tensor::ones(3, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap())]);
    let mut card = erg::checkpoint::ModelCard {
        model: "dit".into(),
        config: serde_json::json!({}),
        step: 1,
        classes: vec![],
        dataset: "emoji".into(),
        ema: true,
        selection: None,
    };
    erg::checkpoint::save_checkpoint(&tensors, &card, &path, candle_core::DType::F32).unwrap();
    assert!(!std::fs::read_to_string(dir.path().join("m.json")).unwrap().contains("selection"));
    card.selection = Some(sel.clone());
    erg::checkpoint::save_checkpoint(&tensors, &card, &path, candle_core::DType::F32).unwrap();
    let (_, back): (_, erg::checkpoint::ModelCard<serde_json::Value>) = erg::checkpoint::load_checkpoint(&path, &candle_core::Device::Cpu).unwrap();
    assert_eq!(back.selection, Some(sel));
}

#[test]
fn selections_of_separate_sweeps_merge_into_the_selection_of_one() {
    use erg::eval::sweep::selection;
    let mk = |method: &str, key: &str, fid: f64, prec: f64| {
        let mut r = record(key, fid);
        r.method = method.into();
        r.guidance = serde_json::json!({ "name": method, "key": key });
        r.metrics.insert("precision".into(), prec);
        r
    };
    // Ranked across all four runs, both of cfg's settings lose to both of apg's on every metric;
    // ranked within cfg, b wins.
    let cfg_runs = vec![mk("cfg", "a", 20.0, 30.0), mk("cfg", "b", 15.0, 35.0)];
    let apg_runs = vec![mk("apg", "c", 9.0, 60.0), mk("apg", "d", 5.0, 70.0)];
    let metrics = vec![
        MetricSpec { name: "fid".into(), direction: Direction::LowerIsBetter },
        MetricSpec { name: "precision".into(), direction: Direction::HigherIsBetter },
    ];
    let cfg = erg::eval::EvalConfig { samples_per_class: 10, num_steps: 25, ..Default::default() };
    let all = selection(&[cfg_runs.clone(), apg_runs.clone()].concat(), &metrics, &[100, 101], &cfg);
    let first = selection(&cfg_runs, &metrics, &[100, 101], &cfg);
    let later = selection(&apg_runs, &metrics, &[100, 101], &cfg);
    assert_eq!(first.clone().merged(later.clone()).unwrap(), all);
    assert_eq!((all.methods["cfg"]["key"].as_str(), all.methods["apg"]["key"].as_str()), (Some("b"), Some("d")));
    // A method in both takes the later setting.
    let resweep = selection(&[mk("cfg", "e", 1.0, 99.0)], &metrics, &[100, 101], &cfg);
    assert_eq!(all.clone().merged(resweep).unwrap().methods["cfg"]["key"], "e");
    // Selections made differently are not one selection.
    let other_seeds = selection(&apg_runs, &metrics, &[0, 1], &cfg);
    let err = first.clone().merged(other_seeds).unwrap_err().to_string();
    assert!(err.contains("seeds") && err.contains("[100, 101]") && err.contains("[0, 1]"), "{err}");
    let other_steps = selection(&apg_runs, &metrics, &[100, 101], &erg::eval::EvalConfig { num_steps: 50, ..cfg.clone() });
    assert!(first.clone().merged(other_steps).unwrap_err().to_string().contains("num_steps"));
    let other_count = selection(&apg_runs, &metrics, &[100, 101], &erg::eval::EvalConfig { samples_per_class: 50, ..cfg.clone() });
    assert!(first.clone().merged(other_count).unwrap_err().to_string().contains("samples per class"));
    let other_rule = selection(&apg_runs, &metrics[..1], &[100, 101], &cfg);
    assert!(first.clone().merged(other_rule).unwrap_err().to_string().contains("rules"));
    let other_features = erg::checkpoint::GuidanceSelection { features: "inception".into(), ..later };
    assert!(first.merged(other_features).unwrap_err().to_string().contains("features"));
}
