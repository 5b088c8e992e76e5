//! Snapshots of the book's analyses on tiny deterministic configurations (fixed inputs, CPU f32,
//! values rounded to 4 decimals): a change in behaviour shows up as a snapshot diff to review
//! (`cargo insta review`, or compare the `.snap.new` file and rename it).
mod common;

use erg::analysis::hopfield::summarize;
use erg::attention::Energy;

#[test]
fn ch01_hopfield_energy_and_entropy() {
    let patterns = vec![vec![2.0, 1.5], vec![-2.0, 1.0], vec![0.5, -2.5]];
    let settings = [
        Energy { tau: 1.0, alpha: 1.0, gamma: 1.0, steps: 3 },
        Energy { tau: 0.1, alpha: 1.0, gamma: 1.0, steps: 3 },
        Energy { tau: 1.0, alpha: 0.5, gamma: 0.5, steps: 3 },
    ];
    let s = summarize(&patterns, &[vec![1.0, 0.0], vec![0.0, 1.0]], &[0.01, 0.1, 1.0, 10.0], &[-0.5, -0.3], &settings).unwrap();
    // Properties that hold whatever the snapshot says: entropy falls with τ and is bounded by
    // ln N; with γ = 1 (CCCP) the energy never increases along the trajectory.
    assert!(s.entropy_vs_tau.windows(2).all(|w| w[1].1 <= w[0].1 + 1e-4));
    assert!(s.entropy_vs_tau.iter().all(|&(_, h)| h <= s.max_entropy + 1e-4));
    for t in &s.trajectories[..2] {
        assert!(t.energies.windows(2).all(|w| w[1] <= w[0] + 1e-3), "{}: {:?}", t.name, t.energies);
    }
    insta::assert_json_snapshot!("ch01_hopfield", s);
}

#[test]
fn figures_display_in_evcxr_as_png() {
    use base64::Engine;
    let img = image::RgbImage::from_pixel(3, 2, image::Rgb([10, 200, 30]));
    let fig = erg::imaging::Figure::from_rgb(&img).unwrap();
    let text = fig.evcxr_content();
    let body = text.strip_prefix("EVCXR_BEGIN_CONTENT image/png\n").unwrap().strip_suffix("\nEVCXR_END_CONTENT").unwrap();
    let png = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    assert_eq!(image::load_from_memory(&png).unwrap().to_rgb8(), img);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.png");
    std::fs::write(&path, &fig.png).unwrap();
    assert_eq!(erg::imaging::Figure::open(&path).unwrap(), fig);
    std::fs::write(&path, b"GIF89a").unwrap();
    assert!(matches!(erg::imaging::Figure::open(&path), Err(erg::Error::Corrupt { .. })));
    assert!(erg::imaging::Figure::open(dir.path().join("missing.png")).unwrap_err().to_string().contains("run the example"));
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

#[test]
fn ch06_decomposition_on_the_shipped_model() {
    use candle_core::{Device, Tensor};
    use erg::analysis::decomposition::{along_sampling, suggest_kappa};
    use erg::guidance::{preset, Models};
    let (model, _) = erg::models::dit::load(std::path::Path::new(erg::checkpoint::SHIPPED_EMOJI_DIT), &Device::Cpu).unwrap();
    let labels = Tensor::new(&[0u32, 5], &Device::Cpu).unwrap();
    let mut out = Vec::new();
    for name in ["cfg", "ierg"] {
        let pts = along_sampling(Models::main(&model), &preset(name, 3.0, 6).unwrap(), &labels, 8, 0).unwrap();
        out.push((name, pts.iter().map(|p| (round4(p.t), round4(p.parallel), round4(p.orthogonal))).collect::<Vec<_>>()));
    }
    // Before κ = 0.3 I-ERG is CFG: identical decompositions at t = 0, 0.125, 0.25.
    assert_eq!(out[0].1[..3], out[1].1[..3]);
    // After κ the rectified negative differs: a larger orthogonal part.
    assert!(out[1].1[4].2 > out[0].1[4].2);
    let cfg_pts = along_sampling(Models::main(&model), &preset("cfg", 3.0, 6).unwrap(), &labels, 8, 0).unwrap();
    insta::assert_json_snapshot!("ch06_decomposition", (out, suggest_kappa(&cfg_pts, 0.9)));
}

#[test]
fn ch07_attention_certainty_on_the_shipped_model() {
    use candle_core::Device;
    use erg::analysis::certainty::{noise_like, profile, suggest_layer_range};
    let (model, _) = erg::models::dit::load(std::path::Path::new(erg::checkpoint::SHIPPED_EMOJI_DIT), &Device::Cpu).unwrap();
    let data = erg::data::emoji::load(erg::data::emoji::DEFAULT_DIR, 32).unwrap();
    let (x1, labels) = data.per_class(1).unwrap();
    let labels = candle_core::Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
    let p = profile(&model, &x1, &labels, &noise_like(&x1, 0).unwrap(), &[0.3, 0.9], 0.95).unwrap();
    assert_eq!((p.shares.len(), p.shares[0].len()), (2, erg::models::Denoiser::depth(&model)));
    assert!(p.mean_max.iter().flatten().all(|m| (1.0 / 64.0..=1.0).contains(m)), "a max probability over 64 keys is ≥ 1/64");
    let rounded: Vec<Vec<(f64, f64)>> =
        p.shares.iter().zip(&p.mean_max).map(|(s, m)| s.iter().zip(m).map(|(a, b)| (round4(*a), round4(*b))).collect()).collect();
    insta::assert_json_snapshot!("ch07_certainty", (rounded, suggest_layer_range(&p.certainty_per_block())));
}

#[test]
fn layer_range_suggestion_finds_the_middle_regime() {
    use erg::analysis::certainty::suggest_layer_range;
    // Three regimes as in the paper's Fig. 7: certain, uncertain middle, certain again.
    assert_eq!(suggest_layer_range(&[0.3, 0.28, 0.05, 0.04, 0.06, 0.05, 0.3, 0.4]), (2, 6));
    // Prefer an interior run to a longer one touching the end.
    assert_eq!(suggest_layer_range(&[0.5, 0.1, 0.5, 0.1, 0.1, 0.1]), (1, 2));
    // Flat: the middle third.
    assert_eq!(suggest_layer_range(&[0.2; 6]), (2, 4));
}

#[test]
fn ch05_velocity_variance_on_a_tiny_text_model() {
    use erg::analysis::variance::initial_velocity_variance;
    use erg::text::TextRectification;
    let m = common::t2i_model(70);
    let prompts = common::t2i_prompts();
    let rect = TextRectification::new(0.01, 0, 2);
    // 6 noises: with 5, a median sat at 0.52505, where summation order flips the 4th decimal.
    let vv = initial_velocity_variance(&m, &prompts, &rect, 6, 0).unwrap();
    assert_eq!(vv.marginal_null.len(), 3 * 8 * 8);
    assert_eq!(vv.conditional_rectified.len(), 2 * 3 * 8 * 8);
    assert!(vv.marginal_null.iter().chain(&vv.conditional_null).all(|v| v.is_finite() && *v >= 0.0));
    // τ_c = 1 makes the rectified prompt the prompt itself: no conditional variance at all
    let same = initial_velocity_variance(&m, &prompts, &TextRectification { tau: 1.0, ..rect }, 6, 0).unwrap();
    assert!(same.conditional_rectified.iter().all(|v| *v < 1e-10));
    assert!(initial_velocity_variance(&m, &prompts, &rect, 1, 0).is_err());
    insta::assert_json_snapshot!("ch05_velocity_variance", vv.summary(4));
}

/// Every metric of a record rounded to 2 decimals (FID of 9 samples is in the tens to hundreds).
fn rounded_metrics(r: &erg::eval::RunRecord) -> std::collections::BTreeMap<String, Option<f64>> {
    r.metrics.iter().map(|(k, v)| (k.clone(), v.is_finite().then(|| (v * 100.0).round() / 100.0))).collect()
}

fn metrics_close(a: &erg::eval::RunRecord, b: &erg::eval::RunRecord, tol: f64) -> bool {
    a.metrics.iter().all(|(k, x)| {
        let y = b.metrics[k];
        (x.is_nan() && y.is_nan()) || (x - y).abs() <= tol * (1.0 + x.abs())
    })
}

/// The shipped bench with a tiny evaluation: 1 sample per class, 3 Euler steps.
fn tiny_bench() -> (erg::eval::Bench, erg::eval::EvalConfig) {
    let bench = erg::eval::Bench::from_paths(&erg::eval::BenchPaths::default(), &candle_core::Device::Cpu).unwrap();
    (bench, erg::eval::EvalConfig { samples_per_class: 1, num_steps: 3, ..Default::default() })
}

#[test]
fn ch04_rectifiers_table6_and_seg_sigma() {
    use erg::attention::Rectifier;
    use erg::eval::report::evaluate_variants;
    use erg::guidance::preset;
    let dev = candle_core::Device::Cpu;
    let (bench, cfg) = tiny_bench();
    let dir = tempfile::tempdir().unwrap();
    let mut results = erg::eval::ResultsFile::open(dir.path().join("r.jsonl")).unwrap();
    let with = |name: &str, r: Rectifier| (name.to_string(), preset("ierg", 3.0, 6).unwrap().named(format!("ierg-{name}")).with_rectifier(r).unwrap());
    let variants = vec![
        with("seg-inf", Rectifier::SmoothedQueries { sigma: f64::INFINITY }),
        with("pag", Rectifier::Identity),
        with("tau-0.2", Rectifier::temperature(0.2)),
        with("seg-0.5", Rectifier::SmoothedQueries { sigma: 0.5 }),
        with("seg-8", Rectifier::SmoothedQueries { sigma: 8.0 }),
        with("seg-0", Rectifier::SmoothedQueries { sigma: 1e-6 }),
        with("tau-1", Rectifier::temperature(1.0)),
    ];
    let rows = evaluate_variants(&bench, &variants, &cfg, &mut results, &dev).unwrap();
    // Properties whatever the snapshot says: σ → 0 leaves the queries unchanged and τ = 1 is
    // standard attention, so both negatives are the positive itself after κ (the same samples);
    // σ = 8 on a 8 × 8 grid (kernel 9 = W + 1) is a real blur, unlike σ → 0.
    assert!(metrics_close(&rows[5].1, &rows[6].1, 1e-4), "{:?} vs {:?}", rows[5].1.metrics, rows[6].1.metrics);
    assert!(!metrics_close(&rows[4].1, &rows[5].1, 1e-4));
    let summary: Vec<_> = rows.iter().map(|(label, r)| (label.clone(), rounded_metrics(r))).collect();
    insta::assert_json_snapshot!("ch04_rectifiers", summary);
}

#[test]
fn ch08_kappa_energy_steps_and_components() {
    use erg::attention::Energy;
    use erg::eval::report::evaluate_variants;
    use erg::guidance::preset;
    let dev = candle_core::Device::Cpu;
    let (bench, cfg) = tiny_bench();
    let dir = tempfile::tempdir().unwrap();
    let mut results = erg::eval::ResultsFile::open(dir.path().join("r.jsonl")).unwrap();
    let ierg = |kappa: f64, e: Energy| preset("ierg", 3.0, 6).unwrap().with_kappa(kappa).unwrap().with_energy(e).unwrap();
    let variants = vec![
        ("CFG".to_string(), preset("cfg", 3.0, 6).unwrap()),
        ("kappa=0".to_string(), ierg(0.0, Energy::temperature(0.5))),
        ("kappa=0.3".to_string(), ierg(0.3, Energy::temperature(0.5))),
        ("kappa=1".to_string(), ierg(1.0, Energy::temperature(0.5))),
        ("K=1,gamma=1".to_string(), ierg(0.3, Energy { tau: 0.5, alpha: 1.0, gamma: 1.0, steps: 1 })),
        ("K=10,gamma=0.1".to_string(), ierg(0.3, Energy { tau: 0.5, alpha: 1.0, gamma: 0.1, steps: 10 })),
        ("alpha=0.9".to_string(), ierg(0.3, Energy { tau: 0.5, alpha: 0.9, gamma: 1.0, steps: 1 })),
    ];
    let rows = evaluate_variants(&bench, &variants, &cfg, &mut results, &dev).unwrap();
    // κ = 1: the rectified negative never applies, I-ERG is CFG; one step with γ = 1 at τ is the
    // temperature alone (the κ = 0.3 row); α and K change the result.
    assert!(metrics_close(&rows[3].1, &rows[0].1, 1e-6));
    assert!(metrics_close(&rows[4].1, &rows[2].1, 1e-6));
    assert!(!metrics_close(&rows[5].1, &rows[2].1, 1e-4) && !metrics_close(&rows[6].1, &rows[2].1, 1e-4));
    assert_eq!(rows[2].1.nfe_per_step, 2.0);
    let summary: Vec<_> = rows.iter().map(|(label, r)| (label.clone(), rounded_metrics(r))).collect();
    insta::assert_json_snapshot!("ch08_ablations", summary);
}

#[test]
fn ch08_tau_c_sweep_on_a_tiny_text_model() {
    use candle_core::{DType, Device, Tensor};
    use erg::eval::{evaluate_conditions, Conditions, EvalConfig, Scorer};
    use erg::features::classifier::{ClassifierCard, ClassifierConfig, SmallCnn};
    use erg::guidance::{preset_for, Models};
    use erg::models::Denoiser;
    let dev = Device::Cpu;
    let m = common::t2i_model(80);
    // a scorer for 8 × 8 RGB images: an untrained 2-class CNN on random reference images
    let ccfg = ClassifierConfig::new(3, vec![4, 8], 2);
    let map = erg::nn::SeededVarMap::new(3);
    let cnn = SmallCnn::new(&ccfg, erg::nn::seeded_varbuilder(&map, DType::F32, &dev)).unwrap();
    let images = erg::rng::randn(&mut erg::rng::stream(3, 0), &[24, 3, 8, 8], &dev).unwrap().clamp(-1.0, 1.0).unwrap();
    let data = erg::data::Dataset { images, labels: (0..24).map(|i| i % 2).collect(), classes: vec!["a".into(), "b".into()], captions: None };
    let reference = erg::eval::reference(&cnn, &data, None, &dev).unwrap();
    let card = ClassifierCard::untrained(ccfg, data.classes.clone());
    let scorer = Scorer::from_parts(cnn, card, None, data, reference);
    // 2 prompts × 4 seeds
    let ids = common::t2i_prompts().repeat((4, 1)).unwrap(); // (8, 6)
    let classes = Tensor::new(&[0u32, 1, 0, 1, 0, 1, 0, 1], &dev).unwrap();
    let cfg = EvalConfig { num_steps: 3, k_pr: 2, k_dc: 2, ..Default::default() };
    let (depth, layers) = (m.depth(), m.text_layers());
    let run = |g: erg::guidance::Guidance| {
        let request = Conditions { conditions: &ids, classes: &classes, key: g.name.clone() };
        evaluate_conditions(Models::main(&m), &g, &request, &scorer, &cfg, &dev, |_, _| {}).unwrap()
    };
    // the samples themselves (as the evaluation draws them), to measure the guidance's effect
    let images = |g: &erg::guidance::Guidance| {
        let scfg = erg::sample::SampleConfig { num_steps: cfg.num_steps, seed: cfg.seed, batch_size: cfg.batch_size };
        erg::sample::sample(Models::main(&m), g, &ids, &scfg, 0, &dev, |_, _| {}).unwrap().images
    };
    let none_g = preset_for("none", 3.0, depth, layers).unwrap();
    let (none, none_images) = (run(none_g.clone()), images(&none_g));
    let taus = [0.01, 0.1, 1.0, 10.0];
    let mut summary = Vec::new();
    for &t in &taus {
        let g = preset_for("cerg", 3.0, depth, layers).unwrap().with_tau_c(t).unwrap();
        let r = run(g.clone());
        let diff = (images(&g) - &none_images).unwrap().abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        // τ_c = 1 encodes the prompt itself: the negative is the positive, C-ERG is no guidance.
        if t == 1.0 {
            assert!(metrics_close(&r, &none, 1e-5) && diff < 1e-6, "{:?} vs {:?}, {diff}", r.metrics, none.metrics);
        } else {
            assert!(diff > 1e-4, "τ_c = {t} changes the samples ({diff})");
        }
        summary.push((t, round4(diff), rounded_metrics(&r)));
    }
    insta::assert_json_snapshot!("ch08_tau_c", summary);
}

#[test]
fn comparison_titles_never_overflow_into_the_next_panel() {
    use erg::imaging::{labelled_comparison, Panel};
    let tile = image::RgbImage::from_pixel(40, 40, image::Rgb([200, 200, 200]));
    let long = "IERG-INTERVAL, w = 3, τ = 0.01, κ = 0.3, blocks [2, 4)".to_string();
    let panels = vec![Panel { title: long.clone(), image: tile.clone() }, Panel { title: long, image: tile }];
    let img = labelled_comparison(&panels, &[], 40, 0, 2).unwrap();
    // label_w = 0, gap = 16, panel width 40: panel 1 starts at x = 16 + 56 = 72; its title at 76
    let ink = (68..76).any(|x| (0..30).any(|y| img.get_pixel(x, y).0 != [255, 255, 255]));
    assert!(!ink, "panel 0's title ran into panel 1's");
    let any_title = (16..60).any(|x| (0..30).any(|y| img.get_pixel(x, y).0 != [255, 255, 255]));
    assert!(any_title, "the title is drawn");
}
