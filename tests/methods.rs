//! The baselines and combinations of the ERG paper as compositions: formulas on hand-computed
//! cases, identities between methods, NFE per step, and invalid configurations.
mod common;
use candle_core::{Device, Tensor};
use common::{max_abs_diff, random_dit};
use erg::attention::{attention, smooth, AttentionPlan, ForwardPlan, Rectifier};
use erg::guidance::{guided_velocity, preset, Apg, Cads, Combiner, Guidance, Guider, Models, Sag, Window, PRESET_NAMES};
use erg::models::{dit::DitConfig, Denoiser};
use erg::nn::Ops;

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

fn setup() -> (erg::models::dit::Dit, erg::models::dit::Dit, Tensor, Tensor) {
    let (m, _) = random_dit(&DitConfig::test_tiny(), 21);
    let (weak, _) = random_dit(&DitConfig::test_tiny(), 22);
    let mut r = erg::rng::stream(21, 0);
    let x = erg::rng::randn(&mut r, &[2, 1, 28, 28], &Device::Cpu).unwrap();
    (m, weak, x, Tensor::new(&[2u32, 7], &Device::Cpu).unwrap())
}

#[test]
fn apg_update_on_a_hand_computed_case() {
    // x_pos = (1, 0), x_neg = (0, -1): d = (1, 1); parallel to x_pos (1, 0), orthogonal (0, 1).
    let (p, n) = (t(&[1.0, 0.0], &[1, 2]), t(&[0.0, -1.0], &[1, 2]));
    let apg = Apg { momentum: 0.0, norm_threshold: f64::INFINITY, eta: 0.0 };
    let u = apg.update(&p, &n, &mut None).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(u, vec![vec![0.0, 1.0]]);
    let with_eta = Apg { eta: 0.5, ..apg }.update(&p, &n, &mut None).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(with_eta, vec![vec![0.5, 1.0]]);
    // rescaling: ‖d‖ = √2 > r = 1 ⇒ d/√2, orthogonal part 1/√2
    let clipped = Apg { norm_threshold: 1.0, ..apg }.update(&p, &n, &mut None).unwrap().to_vec2::<f32>().unwrap();
    assert!((clipped[0][1] - 0.5f32.sqrt()).abs() < 1e-6);
    // momentum: second step uses d + β·d_prev = (1,1) − 0.5·(1,1) = (0.5, 0.5)
    let mut buf = None;
    let m = Apg { momentum: -0.5, ..apg };
    m.update(&p, &n, &mut buf).unwrap();
    let second = m.update(&p, &n, &mut buf).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(second, vec![vec![0.0, 0.5]]);
    assert!(Apg { norm_threshold: 0.0, ..apg }.validate().is_err());
}

#[test]
fn apg_without_momentum_clipping_or_projection_is_cfg() {
    let (m, _, x, y) = setup();
    let apg = Guidance { combiner: Combiner::Apg(Apg { momentum: 0.0, norm_threshold: f64::INFINITY, eta: 1.0 }), ..Guidance::cfg(4.0) };
    for time in [0.0, 0.5, 0.9] {
        let (a, _) = guided_velocity(&m, &apg, &x, time, &y).unwrap();
        let (c, _) = guided_velocity(&m, &Guidance::cfg(4.0), &x, time, &y).unwrap();
        assert!(max_abs_diff(&a, &c) < 1e-3, "t = {time}: {}", max_abs_diff(&a, &c));
    }
    // the paper's APG (η = 0, r = 5, β = −0.5) is not CFG
    let (a, _) = guided_velocity(&m, &preset("apg", 4.0, 2).unwrap(), &x, 0.5, &y).unwrap();
    let (c, _) = guided_velocity(&m, &Guidance::cfg(4.0), &x, 0.5, &y).unwrap();
    assert!(max_abs_diff(&a, &c) > 1e-3);
}

#[test]
fn cads_schedule_and_noise() {
    let c = Cads::default(); // τ1 = 0.6, τ2 = 0.9 on σ = 1 − t
    assert_eq!(c.gamma(0.5), 1.0); // σ = 0.5 ≤ τ1
    assert_eq!(c.gamma(0.05), 0.0); // σ = 0.95 ≥ τ2
    assert!((c.gamma(0.25) - 0.5).abs() < 1e-12); // σ = 0.75, halfway
    assert!(c.gamma(0.2) < c.gamma(0.3), "γ grows as noise decreases");
    let y = t(&[1.0, 2.0, 3.0, 4.0], &[1, 4]);
    let n = t(&[1.0, -1.0, 1.0, -1.0], &[1, 4]);
    assert_eq!(max_abs_diff(&c.apply(&y, 0.5, &n).unwrap(), &y), 0.0, "γ = 1 leaves the condition unchanged");
    // ψ = 0, γ = 0.5: √0.5·y + 0.25·√0.5·n
    let raw = Cads { psi: 0.0, ..c }.apply(&y, 0.25, &n).unwrap().to_vec2::<f32>().unwrap();
    let h = 0.5f32.sqrt();
    assert!((raw[0][0] - (h + 0.25 * h)).abs() < 1e-6 && (raw[0][1] - (2.0 * h - 0.25 * h)).abs() < 1e-6);
    // ψ = 1: rescaled to y's mean and std
    let r = c.apply(&y, 0.25, &n).unwrap();
    assert!((r.mean_all().unwrap().to_scalar::<f32>().unwrap() - 2.5).abs() < 1e-5);
    assert!(Cads { tau1: 0.9, tau2: 0.6, ..c }.validate().is_err());
}

/// Issue 19 item 10: CADS rescales with each sample's statistics over its whole condition (all
/// tokens and channels of a text condition), not per token.
#[test]
fn cads_rescale_statistics_are_per_sample_over_the_whole_condition() {
    let mut r = erg::rng::stream(10, 10);
    // two samples of 3 tokens × 4 channels, tokens with very different scales
    let y = (erg::rng::randn(&mut r, &[2, 3, 4], &Device::Cpu).unwrap()
        * Tensor::new(&[[[1f32], [5.0], [0.2]]], &Device::Cpu).unwrap().broadcast_as((2, 3, 4)).unwrap())
    .unwrap();
    let n = erg::rng::randn(&mut r, &[2, 3, 4], &Device::Cpu).unwrap();
    let c = Cads { psi: 1.0, ..Default::default() };
    let out = c.apply(&y, 0.2, &n).unwrap(); // σ = 0.8: γ = 1/3
    let stats = |x: &Tensor, b: usize| {
        let v: Vec<f64> = x.get(b).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f64::from).collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (m, (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
    };
    for b in 0..2 {
        let ((my, sy), (mo, so)) = (stats(&y, b), stats(&out, b));
        assert!((my - mo).abs() < 1e-5 && (sy - so).abs() < 1e-5, "sample {b}: ({my}, {sy}) vs ({mo}, {so})");
    }
    // per-token statistics are not forced to y's (they would be under a per-row rescale)
    let tok = |x: &Tensor| x.get(0).unwrap().get(1).unwrap().to_vec1::<f32>().unwrap();
    let (ty, to) = (tok(&y), tok(&out));
    let std = |v: &[f32]| {
        let m = v.iter().sum::<f32>() / v.len() as f32;
        (v.iter().map(|a| (a - m).powi(2)).sum::<f32>() / v.len() as f32).sqrt()
    };
    assert!((std(&ty) - std(&to)).abs() > 1e-3, "token 1 keeps its own scale only by chance");
}

/// `Cads::on_negatives` (an ablation): the negatives' conditions take the positive's noise, so a
/// negative with the positive's condition and attention is the positive itself (its term vanishes,
/// one prediction a step), and CFG's null condition is noised too. Off, the JSON (and so every
/// result key) is what it was before the option existed.
#[test]
fn cads_on_negatives_noises_every_branch_with_the_positives_noise() {
    let (m, _, x, y) = setup();
    let cads = Cads { tau1: 0.6, tau2: 0.9, noise_scale: 1.0, psi: 1.0, on_negatives: false };
    let mut same = Guidance { cads: Some(cads), ..Guidance::cfg(3.0) };
    same.terms[0].negative.condition = erg::guidance::Condition::Given;
    let step = |g: &Guidance, time: f64| {
        let (v, pos, nfe) = Guider::new(g, Models::main(&m), 7).unwrap().velocity_and_positive(&x, time, 0, &y).unwrap();
        (v, pos.unwrap(), nfe)
    };
    // positive only: the clean-condition negative differs from the noised positive at σ = 0.8
    let (v, pos, nfe) = step(&same, 0.2);
    assert_eq!(nfe, 2);
    assert!(max_abs_diff(&v, &pos) > 1e-4, "the noised positive should differ from the clean negative");
    // on every branch: the negative is the positive, the term contributes nothing
    let both = same.clone().with_cads_on_negatives().unwrap();
    let (v, pos_both, nfe) = step(&both, 0.2);
    assert_eq!(nfe, 1);
    assert_eq!(max_abs_diff(&v, &pos_both), 0.0);
    assert_eq!(max_abs_diff(&pos, &pos_both), 0.0, "the positive is noised as before");
    // CFG's null condition is noised too at σ = 0.8, untouched where γ = 1 (σ = 0.5)
    let cfg = Guidance { cads: Some(cads), ..Guidance::cfg(3.0) };
    let cfg_both = cfg.clone().with_cads_on_negatives().unwrap();
    assert!(max_abs_diff(&step(&cfg, 0.2).0, &step(&cfg_both, 0.2).0) > 1e-4);
    assert_eq!(max_abs_diff(&step(&cfg, 0.5).0, &step(&cfg_both, 0.5).0), 0.0);
    // the weak model's negative (AutoGuidance) takes the noise too
    let (_, weak, ..) = setup();
    let ag = Guidance { cads: Some(cads), ..preset("autoguidance", 3.0, m.depth()).unwrap() };
    let weak_step = |g: &Guidance| Guider::new(g, Models { main: &m, weak: Some(&weak) }, 7).unwrap().velocity(&x, 0.2, 0, &y).unwrap().0;
    assert!(max_abs_diff(&weak_step(&ag), &weak_step(&ag.clone().with_cads_on_negatives().unwrap())) > 1e-4);
    // stable keys and a described setting
    assert!(!serde_json::to_string(&cfg).unwrap().contains("on_negatives"));
    assert!(serde_json::to_string(&cfg_both).unwrap().contains("\"on_negatives\":true"));
    assert!(cfg_both.describe().contains("on every branch") && !cfg.describe().contains("on every branch"));
}

#[test]
fn seg_blur_regimes() {
    // σ → 0 leaves queries unchanged
    let id = smooth::blur_matrix(5, smooth::seg_kernel_size(1e-4, 5), 1e-4);
    for i in 0..5 {
        for j in 0..5 {
            assert_eq!(id[i * 5 + j], if i == j { 1.0 } else { 0.0 });
        }
    }
    // σ = 0.5: kernel 3, weights (e^-2, 1, e^-2)/z, reflect padding at the edges (index −1 → 1)
    let m = smooth::blur_matrix(5, smooth::seg_kernel_size(0.5, 5), 0.5);
    let (a, z) = ((-2.0f64).exp(), 1.0 + 2.0 * (-2.0f64).exp());
    assert!((m[0] - 1.0 / z).abs() < 1e-12 && (m[1] - 2.0 * a / z).abs() < 1e-12);
    assert!((m[2 * 5 + 1] - a / z).abs() < 1e-12 && (m[2 * 5 + 2] - 1.0 / z).abs() < 1e-12);
    // a huge finite σ: kernel clipped to the grid, rows still sum to 1
    let big = smooth::blur_matrix(4, smooth::seg_kernel_size(50.0, 4), 50.0);
    for i in 0..4 {
        assert!((big[i * 4..i * 4 + 4].iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
    // σ = ∞: every query is the mean query, on a non-square grid, extra (text) tokens untouched
    let mut r = erg::rng::stream(5, 5);
    let q = erg::rng::randn(&mut r, &[1, 2, 2 * 3 + 2, 4], &Device::Cpu).unwrap();
    let s = smooth::smooth_queries(&q, (2, 3), f64::INFINITY).unwrap();
    let mean = q.narrow(2, 0, 6).unwrap().mean_keepdim(2).unwrap().broadcast_as((1, 2, 6, 4)).unwrap();
    assert!(max_abs_diff(&s.narrow(2, 0, 6).unwrap(), &mean) < 1e-6);
    assert_eq!(max_abs_diff(&s.narrow(2, 6, 2).unwrap(), &q.narrow(2, 6, 2).unwrap()), 0.0);
    // the reference treats σ > 9999 as infinite
    let s = smooth::smooth_queries(&q, (2, 3), 1e5).unwrap();
    assert!(max_abs_diff(&s.narrow(2, 0, 6).unwrap(), &mean) < 1e-6);
    // σ → 0 through the attention function equals standard attention
    let q = erg::rng::randn(&mut r, &[2, 3, 12, 5], &Device::Cpu).unwrap();
    let k = q.clone();
    let a = attention(&q, &k, &k, &Rectifier::SmoothedQueries { sigma: 1e-6 }, Ops::infer(), Some((3, 4))).unwrap();
    let b = attention(&q, &k, &k, &Rectifier::Standard, Ops::infer(), None).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-6);
    assert!(Rectifier::SmoothedQueries { sigma: -1.0 }.validate().is_err());
}

/// SEG-SDXL's `gaussian_blur_2d` written out directly (issue 19 item 9): kernel
/// k = ⌈6σ⌉ + 1 − ⌈6σ⌉ mod 2, capped at W − (W mod 2 − 1) with W the grid's last dimension, taps
/// exp(−½ (x/σ)²) at x = −(k−1)/2 … (k−1)/2 normalised, one 2-D kernel k × k, reflect padding of
/// k // 2 on every side, then a valid convolution. Values are computed here from that rule alone.
fn seg_reference_blur(img: &[f64], rows: usize, cols: usize, sigma: f64) -> Vec<f64> {
    let c = (6.0 * sigma).ceil() as i64;
    let k = (c + 1 - c % 2).min(cols as i64 - (cols as i64 % 2 - 1));
    let half = (k - 1) as f64 * 0.5;
    let pdf: Vec<f64> = (0..k).map(|i| (-0.5 * ((-half + i as f64) / sigma).powi(2)).exp()).collect();
    let z: f64 = pdf.iter().sum();
    let taps: Vec<f64> = pdf.iter().map(|p| p / z).collect();
    let pad = k / 2;
    // torch's reflect for one axis (pad < n is all PyTorch allows; repeated mirroring beyond)
    let refl = |j: i64, n: usize| -> usize {
        let n = n as i64;
        let mut j = j;
        while j < 0 || j >= n {
            j = if j < 0 { -j } else { 2 * (n - 1) - j };
        }
        j as usize
    };
    let mut out = vec![0.0; rows * cols];
    for y in 0..rows {
        for x in 0..cols {
            let mut acc = 0.0;
            for (a, ta) in taps.iter().enumerate() {
                for (b, tb) in taps.iter().enumerate() {
                    let yy = refl(y as i64 + a as i64 - pad, rows);
                    let xx = refl(x as i64 + b as i64 - pad, cols);
                    acc += ta * tb * img[yy * cols + xx];
                }
            }
            out[y * cols + x] = acc;
        }
    }
    out
}

#[test]
fn seg_kernel_follows_the_reference_rule_on_even_odd_and_non_square_grids() {
    // even W: the cap is W + 1 (not W − 1); odd W: W
    assert_eq!(smooth::seg_kernel_size(3.0, 16), 17);
    assert_eq!(smooth::seg_kernel_size(3.0, 15), 15);
    assert_eq!(smooth::seg_kernel_size(1.0, 16), 7);
    assert_eq!(smooth::seg_kernel_size(0.5, 8), 3);
    assert_eq!(smooth::seg_kernel_size(2.0, 8), 9);
    let mut r = erg::rng::stream(9, 9);
    for &(rows, cols, sigma) in &[(8usize, 8usize, 2.0f64), (8, 8, 10.0), (7, 7, 1.3), (7, 7, 10.0), (4, 6, 1.0), (6, 4, 3.0), (3, 8, 2.0), (5, 3, 0.8)] {
        let d = 2;
        let q = erg::rng::randn(&mut r, &[1, 1, rows * cols, d], &Device::Cpu).unwrap();
        let got = smooth::smooth_queries(&q, (rows, cols), sigma).unwrap().squeeze(0).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        let qv = q.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        for c in 0..d {
            let img: Vec<f64> = qv.iter().map(|row| row[c] as f64).collect();
            let want = seg_reference_blur(&img, rows, cols, sigma);
            for (n, w) in want.iter().enumerate() {
                assert!((got[n][c] as f64 - w).abs() < 1e-5, "grid {rows}×{cols}, σ = {sigma}, token {n}: {} vs {w}", got[n][c]);
            }
        }
    }
}

#[test]
fn pag_is_identity_attention_in_the_perturbed_blocks_only() {
    let mut r = erg::rng::stream(6, 6);
    let q = erg::rng::randn(&mut r, &[2, 2, 6, 4], &Device::Cpu).unwrap();
    let v = erg::rng::randn(&mut r, &[2, 2, 6, 4], &Device::Cpu).unwrap();
    let plan = ForwardPlan::uniform(2, AttentionPlan::blocks(Rectifier::Identity, 1, 2));
    assert_eq!(max_abs_diff(&plan.attend(1, &q, &q, &v, None, &mut erg::attention::NoProbe).unwrap(), &v), 0.0);
    let std = attention(&q, &q, &v, &Rectifier::Standard, Ops::infer(), None).unwrap();
    assert_eq!(max_abs_diff(&plan.attend(0, &q, &q, &v, None, &mut erg::attention::NoProbe).unwrap(), &std), 0.0);
}

#[test]
fn slg_skips_blocks_for_its_rows_only() {
    let (m, _, x, y) = setup();
    let tt = Tensor::new(&[0.5f32, 0.5], &Device::Cpu).unwrap();
    let all = m.forward(&x, &tt, &y, &ForwardPlan::uniform(2, AttentionPlan::blocks(Rectifier::SkipBlock, 0, 2))).unwrap();
    let none = m.forward(&x, &tt, &y, &ForwardPlan::uniform(2, AttentionPlan::standard())).unwrap();
    assert!(max_abs_diff(&all, &none) > 1e-3);
    let xx = Tensor::cat(&[&x, &x], 0).unwrap();
    let t4 = Tensor::new(&[0.5f32; 4], &Device::Cpu).unwrap();
    let yy = Tensor::cat(&[&y, &y], 0).unwrap();
    let mixed =
        m.forward(&xx, &t4, &yy, &ForwardPlan::new(vec![(2, AttentionPlan::standard()), (2, AttentionPlan::blocks(Rectifier::SkipBlock, 0, 2))])).unwrap();
    assert!(max_abs_diff(&mixed.narrow(0, 0, 2).unwrap(), &none) < 1e-5);
    assert!(max_abs_diff(&mixed.narrow(0, 2, 2).unwrap(), &all) < 1e-5);
}

#[test]
fn sag_mask_and_degradation() {
    // attention received: token 0 gets 1.5, token 1 gets 0.5 ⇒ mask (1, 0)
    let a = t(&[0.9, 0.1, 0.6, 0.4], &[1, 2, 2]);
    assert_eq!(Sag::mask(&a).unwrap().to_vec2::<f32>().unwrap(), vec![vec![1.0, 0.0]]);
    // a constant image is unchanged by the blur; at t the degraded input re-noises x̂₁ with ε̂
    let sag = Sag { block: 0, blur_sigma: 1.0 };
    let x1 = Tensor::full(0.3f32, (1, 1, 4, 4), &Device::Cpu).unwrap();
    assert!(max_abs_diff(&sag.blur(&x1).unwrap(), &x1) < 1e-6);
    let eps = Tensor::full(-1.0f32, (1, 1, 4, 4), &Device::Cpu).unwrap();
    let tt = Tensor::new(&[0.4f32], &Device::Cpu).unwrap();
    let x_t = erg::flow::interpolate(&x1, &eps, &tt).unwrap();
    let v = erg::flow::velocity_target(&x1, &eps).unwrap();
    let mask = t(&[1.0, 0.0, 0.0, 1.0], &[1, 4]);
    let d = sag.degrade(&x_t, &v, 0.4, &mask, (2, 2)).unwrap();
    assert!(max_abs_diff(&d, &x_t) < 1e-5);
    assert!(sag.validate(1).is_ok() && Sag { block: 3, ..sag }.validate(2).is_err());
}

#[test]
fn nfe_per_step_of_every_method() {
    let (m, weak, x, y) = setup();
    let expected = [
        ("none", 1),
        ("uncond", 1),
        ("cfg", 2),
        ("apg", 2),
        ("cads", 2),
        ("pag", 2),
        ("seg", 2),
        ("sag", 2),
        ("slg", 3),
        ("autoguidance", 2),
        ("ierg", 2),
        ("erg", 2),
        ("erg+apg", 2),
        ("erg+cads", 2),
        ("cfg+pag", 3),
        ("cfg+seg", 3),
        ("cfg+sag", 3),
        ("pag-uncond", 2),
        ("seg-uncond", 2),
        ("sag-uncond", 2),
        ("autoguidance-uncond", 2),
        ("ierg-uncond", 2),
        ("cfg-zero-star", 0), // step 0 is zero-initialised: no evaluation
        ("ierg-zero-star", 0),
        ("cfg-interval", 2), // t = 0.5 is inside the interval
        ("ierg-interval", 2),
        ("tcfg", 2),
        ("ierg-tcfg", 2),
    ];
    // every preset but `cerg`, `nag` and `cfg+nag` (they need a text encoder: tests/t2i.rs)
    assert_eq!(expected.len(), PRESET_NAMES.len() - 3);
    for (name, nfe) in expected {
        let g = preset(name, 3.0, 2).unwrap();
        let mut guider = Guider::new(&g, Models { main: &m, weak: Some(&weak) }, 0).unwrap();
        let (v, k) = guider.velocity(&x, 0.5, 0, &y).unwrap();
        assert_eq!(k, nfe, "{name}");
        assert_eq!(v.dims(), x.dims());
        // methods are data: JSON round trip
        let back: Guidance = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back, g, "{name}");
    }
    // before κ unconditional I-ERG has nothing to contrast
    let g = preset("ierg-uncond", 3.0, 2).unwrap();
    assert_eq!(guided_velocity(&m, &g, &x, 0.1, &y).unwrap().1, 1);
}

#[test]
fn guidance_scale_one_gives_the_positive_for_linear_methods() {
    let (m, weak, x, y) = setup();
    let none = guided_velocity(&m, &Guidance::none(), &x, 0.6, &y).unwrap().0;
    for name in ["cfg", "ierg", "erg", "autoguidance"] {
        let g = preset(name, 1.0, 2).unwrap();
        let (v, nfe) = Guider::new(&g, Models { main: &m, weak: Some(&weak) }, 0).unwrap().velocity(&x, 0.6, 0, &y).unwrap();
        assert_eq!(max_abs_diff(&v, &none), 0.0, "{name}");
        assert_eq!(nfe, 1, "{name}");
    }
}

#[test]
fn unconditional_perturbation_guidance_is_not_cfg() {
    // The perturbed pass must use the positive's (null) condition: unconditional PAG/SEG differ
    // from unconditional sampling and from CFG (diffusers silently reduces them to CFG).
    let (m, _, x, y) = setup();
    let uncond = guided_velocity(&m, &Guidance::unconditional(), &x, 0.5, &y).unwrap().0;
    let cfg = guided_velocity(&m, &Guidance::cfg(3.0), &x, 0.5, &y).unwrap().0;
    for name in ["pag-uncond", "seg-uncond", "sag-uncond"] {
        let (v, _) = guided_velocity(&m, &preset(name, 3.0, 2).unwrap(), &x, 0.5, &y).unwrap();
        assert!(max_abs_diff(&v, &uncond) > 1e-4, "{name} equals unconditional sampling");
        assert!(max_abs_diff(&v, &cfg) > 1e-4, "{name} equals CFG");
    }
}

#[test]
fn windows_switch_terms_on_and_off() {
    let (m, _, x, y) = setup();
    let mut g = Guidance::cfg(3.0);
    g.terms[0].window = Window { start: 0.2, stop: 0.4 };
    assert_eq!(guided_velocity(&m, &g, &x, 0.1, &y).unwrap().1, 1);
    assert_eq!(guided_velocity(&m, &g, &x, 0.3, &y).unwrap().1, 2);
    assert_eq!(guided_velocity(&m, &g, &x, 0.5, &y).unwrap().1, 1);
}

#[test]
fn invalid_configurations_are_clear_errors() {
    let (m, _, x, y) = setup();
    let mut g = Guidance::cfg(3.0);
    g.terms[0].window = Window { start: 0.6, stop: 0.4 };
    assert!(g.validate(2).unwrap_err().to_string().contains("window"));
    let mut g = preset("pag", 3.0, 2).unwrap();
    g.terms[0].negative.attention.l_max = g.terms[0].negative.attention.l_min;
    assert!(g.validate(2).unwrap_err().to_string().contains("empty"));
    let mut g = preset("seg", 3.0, 2).unwrap();
    g.terms[0].negative.attention.rectifier = Rectifier::SmoothedQueries { sigma: -2.0 };
    assert!(g.validate(2).unwrap_err().to_string().contains("sigma"));
    let e = Guider::new(&preset("autoguidance", 3.0, 2).unwrap(), Models::main(&m), 0).err().unwrap().to_string();
    assert!(e.contains("weak model"), "{e}");
    let mut g = preset("cads", 3.0, 2).unwrap();
    g.cads.as_mut().unwrap().tau1 = 0.95;
    assert!(guided_velocity(&m, &g, &x, 0.5, &y).unwrap_err().to_string().contains("tau1"));
    assert!(preset("magic", 3.0, 2).unwrap_err().to_string().contains("known"));
}

#[test]
fn every_method_stays_finite_on_the_shipped_model() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/checkpoints/emoji-dit-ema.safetensors");
    let weak_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/checkpoints/emoji-dit-weak.safetensors");
    let (m, card) = erg::models::dit::load(&path, &Device::Cpu).expect("the shipped checkpoint loads");
    let (weak, _) = erg::models::dit::load(&weak_path, &Device::Cpu).expect("the shipped weak checkpoint loads");
    let n = card.classes.len() as u32;
    let y = Tensor::new(&[0u32, n / 2, n - 1], &Device::Cpu).unwrap();
    let mut r = erg::rng::stream(8, 8);
    let x0 = erg::rng::randn(&mut r, &[3, 3, 32, 32], &Device::Cpu).unwrap();
    for name in PRESET_NAMES.iter().filter(|n| !["cerg", "nag", "cfg+nag"].contains(*n)) {
        for w in [0.0, 5.0, 20.0] {
            let g = preset(name, w, m.depth()).unwrap();
            let mut guider = Guider::new(&g, Models { main: &m, weak: Some(&weak) }, 1).unwrap();
            let mut x = x0.clone();
            for (step, time) in [0.0, 0.35, 0.7, 0.95].into_iter().enumerate() {
                let (v, _) = guider.velocity(&x, time, step, &y).unwrap();
                let s = v.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(s.is_finite(), "{name} at w = {w}, t = {time} is not finite");
                x = (x + (v * 0.2).unwrap()).unwrap();
            }
        }
    }
}
