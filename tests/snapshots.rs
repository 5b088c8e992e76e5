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
    assert_eq!((p.shares.len(), p.shares[0].len()), (2, 6));
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
    let rect = TextRectification { tau: 0.01, l_min: 0, l_max: 2 };
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
