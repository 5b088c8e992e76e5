//! The guidance methods adopted since the ERG paper (issue 17): CFG-Zero*, the guidance
//! interval and tangential damping (TCFG), as combiners and windows of the same composition:
//! hand-computed cases, identities, NFE, finiteness over guidance scales, JSON round trips.
mod common;
use candle_core::{Device, Tensor};
use common::{max_abs_diff, random_dit};
use erg::guidance::{guided_velocity, preset, tcfg, CfgZeroStar, Combiner, Guidance, Guider, Models, Window};
use erg::models::dit::DitConfig;

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

fn setup() -> (erg::models::dit::Dit, Tensor, Tensor) {
    let (m, _) = random_dit(&DitConfig::test_tiny(), 41);
    let x = erg::rng::randn(&mut erg::rng::stream(41, 0), &[2, 1, 28, 28], &Device::Cpu).unwrap();
    (m, x, Tensor::new(&[3u32, 8], &Device::Cpu).unwrap())
}

#[test]
fn cfg_zero_star_scale_on_a_hand_computed_case() {
    let z = CfgZeroStar::default();
    // pos = (1, 2), neg = (2, 0): s* = ⟨pos, neg⟩ / ‖neg‖² = 2 / 4 = 0.5; pos − s*·neg = (0, 2)
    let (pos, neg) = (t(&[1.0, 2.0, 3.0, 0.0], &[2, 2]), t(&[2.0, 0.0, 0.0, 0.0], &[2, 2]));
    assert_eq!(z.scale(&pos, &neg).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [0.5, 1.0], "‖neg‖ = 0 gives s* = 1");
    assert_eq!(z.difference(&pos, &neg).unwrap().to_vec2::<f32>().unwrap(), [[0.0, 2.0], [3.0, 0.0]]);
    let off = CfgZeroStar { optimize_scale: false, ..z };
    assert_eq!(off.scale(&pos, &neg).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [1.0, 1.0]);
}

#[test]
fn cfg_zero_star_without_its_two_changes_is_cfg_and_zero_init_skips_the_model() {
    let (m, x, y) = setup();
    let plain = CfgZeroStar { optimize_scale: false, zero_init_steps: 0 };
    let cfg = preset("cfg", 4.0, 2).unwrap();
    let z = cfg.clone().with_combiner(Combiner::CfgZeroStar(plain)).unwrap();
    let (a, _) = guided_velocity(&m, &cfg, &x, 0.4, &y).unwrap();
    let (b, nfe) = guided_velocity(&m, &z, &x, 0.4, &y).unwrap();
    assert_eq!(nfe, 2);
    assert!(max_abs_diff(&a, &b) < 1e-6);
    // the optimised scale changes the result
    let star = preset("cfg-zero-star", 4.0, 2).unwrap();
    let mut g = Guider::new(&star, Models::main(&m), 0).unwrap();
    let (v0, n0) = g.velocity(&x, 0.0, 0, &y).unwrap();
    assert_eq!((n0, v0.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()), (0, 0.0), "zero-init: v = 0 without evaluating");
    let (v1, n1) = g.velocity(&x, 0.4, 1, &y).unwrap();
    assert_eq!(n1, 2);
    assert!(max_abs_diff(&v1, &a) > 1e-4);
    // by hand: v = pos + s·(pos − s*·neg)
    let pos = guided_velocity(&m, &preset("none", 4.0, 2).unwrap(), &x, 0.4, &y).unwrap().0;
    let neg = guided_velocity(&m, &preset("uncond", 4.0, 2).unwrap(), &x, 0.4, &y).unwrap().0;
    let want = (&pos + (CfgZeroStar::default().difference(&pos, &neg).unwrap() * 3.0).unwrap()).unwrap();
    assert!(max_abs_diff(&v1, &want) < 1e-5);
}

#[test]
fn tcfg_damping_matches_an_explicit_svd() {
    let mut r = erg::rng::stream(7, 7);
    let pos = erg::rng::randn(&mut r, &[3, 2, 4, 5], &Device::Cpu).unwrap();
    let neg = erg::rng::randn(&mut r, &[3, 2, 4, 5], &Device::Cpu).unwrap();
    let got = tcfg::damped_negative(&pos, &neg).unwrap();
    let (p, n, g) = (
        pos.flatten_from(1).unwrap().to_vec2::<f32>().unwrap(),
        neg.flatten_from(1).unwrap().to_vec2::<f32>().unwrap(),
        got.flatten_from(1).unwrap().to_vec2::<f32>().unwrap(),
    );
    for i in 0..3 {
        let a = nalgebra::DMatrix::from_fn(2, 40, |r, c| f64::from(if r == 0 { p[i][c] } else { n[i][c] }));
        let svd = a.svd(false, true);
        let vt = svd.v_t.unwrap();
        let k = svd.singular_values.imax();
        let v1 = vt.row(k).transpose();
        let nv = nalgebra::DVector::from_iterator(40, n[i].iter().map(|&v| f64::from(v)));
        let want = &v1 * nv.dot(&v1);
        for c in 0..40 {
            assert!((f64::from(g[i][c]) - want[c]).abs() < 1e-4, "sample {i}, {c}: {} vs {}", g[i][c], want[c]);
        }
    }
    // a negative parallel to the positive has no tangential part: unchanged (TCFG = CFG)
    let par = (&pos * -0.5).unwrap();
    assert!(max_abs_diff(&tcfg::damped_negative(&pos, &par).unwrap(), &par) < 1e-5);
    // zeros stay zeros
    let z = Tensor::zeros((1, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(tcfg::damped_negative(&z, &z).unwrap().to_vec2::<f32>().unwrap(), [[0.0, 0.0, 0.0]]);
}

#[test]
fn the_guidance_interval_in_flow_time() {
    let w = Window::paper_interval();
    assert!((w.start - 1.0 / 6.42).abs() < 1e-12 && (w.stop - 1.0 / 1.28).abs() < 1e-12);
    assert!(Window::noise_interval(1.0, 0.5).is_err() && Window::noise_interval(-1.0, 2.0).is_err());
    assert_eq!(Window::noise_interval(0.0, f64::INFINITY).unwrap(), Window::default());
    let (m, x, y) = setup();
    let g = preset("cfg-interval", 3.0, 2).unwrap();
    // outside: the positive alone, one evaluation; inside: CFG
    let (out, nfe) = guided_velocity(&m, &g, &x, 0.1, &y).unwrap();
    assert_eq!(nfe, 1);
    assert!(max_abs_diff(&out, &guided_velocity(&m, &preset("none", 3.0, 2).unwrap(), &x, 0.1, &y).unwrap().0) < 1e-6);
    let (inside, nfe) = guided_velocity(&m, &g, &x, 0.5, &y).unwrap();
    assert_eq!(nfe, 2);
    assert!(max_abs_diff(&inside, &guided_velocity(&m, &preset("cfg", 3.0, 2).unwrap(), &x, 0.5, &y).unwrap().0) < 1e-6);
    assert!(preset("none", 3.0, 2).unwrap().with_interval(w).is_err(), "no term to restrict");
}

#[test]
fn new_methods_stay_finite_for_guidance_scales_up_to_20_and_round_trip_as_json() {
    let (m, _, y) = setup();
    for name in ["cfg-zero-star", "ierg-zero-star", "cfg-interval", "ierg-interval", "tcfg", "ierg-tcfg"] {
        for w in [0.0, 1.0, 3.0, 7.5, 20.0] {
            let g = preset(name, w, 2).unwrap();
            let s =
                erg::sample::sample(Models::main(&m), &g, &y, &erg::sample::SampleConfig { num_steps: 6, seed: 1, batch_size: 2 }, 0, &Device::Cpu, |_, _| {})
                    .unwrap();
            assert!(erg::checkpoint::all_finite(&s.images).unwrap(), "{name} at w = {w}");
        }
        let g = preset(name, 3.0, 2).unwrap();
        let back: Guidance = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back, g, "{name}");
        assert!(!g.describe().is_empty());
    }
}

#[test]
fn guidance_strength_and_matched_scales() {
    use erg::analysis::strength::{guidance_strength, match_strength};
    let (m, _, y) = setup();
    let models = Models::main(&m);
    let s = |g: &Guidance| guidance_strength(models, g, &y, 6, 2).unwrap();
    // no guidance, or w = 1: nothing added
    assert_eq!(s(&preset("none", 3.0, 2).unwrap()), 0.0);
    assert!(s(&preset("cfg", 1.0, 2).unwrap()) < 1e-7);
    // grows with w; an interval guides less than the same method throughout
    let (s2, s3) = (s(&preset("cfg", 2.0, 2).unwrap()), s(&preset("cfg", 3.0, 2).unwrap()));
    assert!(0.0 < s2 && s2 < s3, "{s2} {s3}");
    assert!(s(&preset("cfg-interval", 3.0, 2).unwrap()) < s3);
    // CFG matched to its own strength at w = 3 finds w = 3
    let cfg2 = preset("cfg", 2.0, 2).unwrap(); // s = 1: factor λ gives w = 1 + λ
    let mt = match_strength(models, &cfg2, s3, 4.0, &y, 6, 2, 20).unwrap();
    assert!((mt.guidance_scale - 3.0).abs() < 1e-3, "{mt:?}");
    assert!((mt.strength - s3).abs() < 1e-4 * (1.0 + s3));
    // another method is matched to CFG's strength, and an unreachable target is an error
    let pag = preset("pag", 3.0, 2).unwrap();
    let mp = match_strength(models, &pag, s3, 8.0, &y, 6, 2, 16).unwrap();
    assert!((mp.strength - s3).abs() < 1e-2 * s3, "{mp:?}");
    assert!(match_strength(models, &pag, 1e9, 2.0, &y, 6, 2, 4).is_err());
    assert!(match_strength(models, &preset("none", 3.0, 2).unwrap(), s3, 2.0, &y, 6, 2, 4).is_err());
}

#[test]
fn nag_formula_on_a_hand_computed_case() {
    use erg::attention::Nag;
    let pos = t(&[1.0, 1.0], &[1, 2]);
    let neg = t(&[0.0, 2.0], &[1, 2]);
    // Z̃ = 3·(1, 1) − 2·(0, 2) = (3, −1); ‖Z̃‖₁ / ‖Z⁺‖₁ = 4 / 2 = 2
    let nag = Nag { scale: 3.0, tau: 10.0, alpha: 1.0, l_min: 0, l_max: 1 };
    assert_eq!(nag.combine(&pos, &neg).unwrap().to_vec2::<f32>().unwrap(), [[3.0, -1.0]]);
    // τ = 1.5 clips the ratio: × 1.5 / 2; α = 0.5 blends with Z⁺
    let clipped = Nag { tau: 1.5, alpha: 0.5, ..nag }.combine(&pos, &neg).unwrap().to_vec2::<f32>().unwrap();
    assert!((clipped[0][0] - 1.625).abs() < 1e-6 && (clipped[0][1] - 0.125).abs() < 1e-6, "{clipped:?}");
    // φ = 1: Z⁺ whatever the rest
    assert_eq!(Nag { scale: 1.0, ..nag }.combine(&pos, &neg).unwrap().to_vec2::<f32>().unwrap(), [[1.0, 1.0]]);
    assert!(Nag { scale: 0.5, ..nag }.validate(2).is_err() && Nag { l_max: 3, ..nag }.validate(2).is_err());
}

#[test]
fn nag_couples_two_row_groups_of_a_forward_plan() {
    use erg::attention::{AttentionPlan, ForwardPlan, Nag};
    let nag = Nag { scale: 2.0, tau: 100.0, alpha: 1.0, l_min: 1, l_max: 2 };
    let plan =
        ForwardPlan::new(vec![(1, AttentionPlan::standard()), (1, AttentionPlan::standard()), (1, AttentionPlan::standard())]).with_nag(nag, 0, 2).unwrap();
    let o = t(&[1.0, 10.0, 3.0], &[3, 1, 1]); // rows: positive, another group, NAG negative
    assert_eq!(plan.nag_outputs(0, &o).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [1.0, 10.0, 3.0], "block 0 is outside NAG's blocks");
    assert_eq!(plan.nag_outputs(1, &o).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [-1.0, 10.0, 3.0], "2·1 − 1·3");
    assert_eq!(plan.nag_share_image(o.clone()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [1.0, 10.0, 1.0]);
    assert!(ForwardPlan::new(vec![(1, AttentionPlan::standard()), (2, AttentionPlan::standard())]).with_nag(nag, 0, 1).is_err());
}

#[test]
fn nag_on_the_text_to_image_model() {
    use erg::guidance::preset_for;
    use erg::models::Denoiser;
    let m = common::t2i_model(90);
    let ids = common::t2i_prompts();
    let (depth, layers) = (m.depth(), m.text_layers());
    let x = erg::rng::randn(&mut erg::rng::stream(90, 1), &[2, 3, 8, 8], &Device::Cpu).unwrap();
    let none = guided_velocity(&m, &preset_for("none", 3.0, depth, layers).unwrap(), &x, 0.5, &ids).unwrap().0;
    let nag = preset_for("nag", 3.0, depth, layers).unwrap();
    let (v, nfe) = guided_velocity(&m, &nag, &x, 0.5, &ids).unwrap();
    assert_eq!(nfe, 2);
    assert!(max_abs_diff(&v, &none) > 1e-4, "NAG changes the prediction");
    // φ = 1 leaves attention, and so the prediction, unchanged
    let mut one = nag.clone();
    one.nag.as_mut().unwrap().nag.scale = 1.0;
    assert!(max_abs_diff(&guided_velocity(&m, &one, &x, 0.5, &ids).unwrap().0, &none) < 1e-5);
    assert_eq!(guided_velocity(&m, &preset_for("cfg+nag", 3.0, depth, layers).unwrap(), &x, 0.5, &ids).unwrap().1, 3);
    // finite up to φ = 20, JSON round trip
    for phi in [1.0, 5.0, 20.0] {
        let mut g = nag.clone();
        g.nag.as_mut().unwrap().nag.scale = phi;
        let s =
            erg::sample::sample(Models::main(&m), &g, &ids, &erg::sample::SampleConfig { num_steps: 4, seed: 0, batch_size: 2 }, 0, &Device::Cpu, |_, _| {})
                .unwrap();
        assert!(erg::checkpoint::all_finite(&s.images).unwrap(), "φ = {phi}");
    }
    let back: Guidance = serde_json::from_str(&serde_json::to_string(&nag).unwrap()).unwrap();
    assert_eq!(back, nag);
    // the class-conditional DiT: NAG does not apply, said before any compute
    assert!(preset("nag", 3.0, 2).unwrap_err().to_string().contains("adaLN"));
    let (dit, x, y) = setup();
    let e = Guider::new(&Guidance { nag: nag.nag, ..preset("none", 3.0, 2).unwrap() }, Models::main(&dit), 0).err().unwrap().to_string();
    assert!(e.contains("NAG"), "{e}");
    let _ = (x, y);
}
