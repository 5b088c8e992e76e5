//! Guidance identities (ERG Eq. 10) on a random DiT.
mod common;
use candle_core::{Device, Tensor};
use common::{max_abs_diff, random_dit};
use erg::attention::{AttentionPlan, ForwardPlan};
use erg::guidance::{guided_velocity, Guidance, IErg};
use erg::models::{dit::DitConfig, Denoiser};

fn setup() -> (erg::models::dit::Dit, Tensor, Tensor) {
    let (m, _) = random_dit(&DitConfig::test_tiny(), 11);
    let mut r = erg::rng::stream(11, 0);
    let x = erg::rng::randn(&mut r, &[3, 1, 28, 28], &Device::Cpu).unwrap();
    let y = Tensor::new(&[1u32, 5, 9], &Device::Cpu).unwrap();
    (m, x, y)
}

fn ierg() -> IErg {
    IErg::class_conditional_defaults(2) // blocks [0, 2) of the 2-block model, κ = 0.3, τ = 0.01
}

fn forward(m: &erg::models::dit::Dit, x: &Tensor, t: f32, y: &Tensor, plan: AttentionPlan) -> Tensor {
    let tt = Tensor::new(&vec![t; x.dim(0).unwrap()][..], &Device::Cpu).unwrap();
    m.velocity(x, &tt, y, &ForwardPlan::uniform(x.dim(0).unwrap(), plan)).unwrap()
}

#[test]
fn guidance_scale_one_is_the_positive_prediction() {
    let (m, x, y) = setup();
    let pos = forward(&m, &x, 0.5, &y, AttentionPlan::standard());
    for g in [Guidance::cfg(1.0), Guidance::i_erg(1.0, ierg())] {
        let (v, nfe) = guided_velocity(&m, &g, &x, 0.5, &y).unwrap();
        assert_eq!(max_abs_diff(&v, &pos), 0.0);
        assert_eq!(nfe, 1);
    }
}

#[test]
fn cfg_is_eq_10_with_the_null_class() {
    let (m, x, y) = setup();
    let pos = forward(&m, &x, 0.5, &y, AttentionPlan::standard());
    let neg = forward(&m, &x, 0.5, &m.null_condition(&y).unwrap(), AttentionPlan::standard());
    let want = ((&pos * 3.0).unwrap() + (&neg * -2.0).unwrap()).unwrap();
    let (v, nfe) = guided_velocity(&m, &Guidance::cfg(3.0), &x, 0.5, &y).unwrap();
    assert!(max_abs_diff(&v, &want) < 1e-4); // one batched forward vs two separate ones
    assert_eq!(nfe, 2);
}

#[test]
fn i_erg_uses_standard_attention_until_kappa() {
    let (m, x, y) = setup();
    let (cfg_v, _) = guided_velocity(&m, &Guidance::cfg(3.0), &x, 0.3, &y).unwrap();
    let (ierg_v, _) = guided_velocity(&m, &Guidance::i_erg(3.0, ierg()), &x, 0.3, &y).unwrap();
    assert_eq!(max_abs_diff(&cfg_v, &ierg_v), 0.0, "t = κ: the negative is not rectified");
    let (cfg_v, _) = guided_velocity(&m, &Guidance::cfg(3.0), &x, 0.31, &y).unwrap();
    let (ierg_v, _) = guided_velocity(&m, &Guidance::i_erg(3.0, ierg()), &x, 0.31, &y).unwrap();
    assert!(max_abs_diff(&cfg_v, &ierg_v) > 1e-3, "t > κ: the negative is rectified");
    // the rectified negative equals a separate forward with the rectified plan
    let p = ierg();
    let plan = AttentionPlan::blocks(erg::attention::Rectifier::Energy(p.energy), p.l_min, p.l_max);
    let pos = forward(&m, &x, 0.8, &y, AttentionPlan::standard());
    let neg = forward(&m, &x, 0.8, &m.null_condition(&y).unwrap(), plan);
    let want = ((&pos * 3.0).unwrap() + (&neg * -2.0).unwrap()).unwrap();
    let (v, _) = guided_velocity(&m, &Guidance::i_erg(3.0, p), &x, 0.8, &y).unwrap();
    assert!(max_abs_diff(&v, &want) < 1e-4);
}

#[test]
fn unconditional_i_erg_has_no_guidance_before_kappa() {
    let (m, x, y) = setup();
    let g = Guidance::i_erg_unconditional(3.0, IErg::unconditional_defaults(2));
    let null = m.null_condition(&y).unwrap();
    let uncond = forward(&m, &x, 0.1, &null, AttentionPlan::standard());
    let (v, nfe) = guided_velocity(&m, &g, &x, 0.1, &y).unwrap();
    assert_eq!(max_abs_diff(&v, &uncond), 0.0);
    assert_eq!(nfe, 1);
    let (v, nfe) = guided_velocity(&m, &g, &x, 0.9, &y).unwrap();
    assert_eq!(nfe, 2);
    assert!(max_abs_diff(&v, &forward(&m, &x, 0.9, &null, AttentionPlan::standard())) > 1e-3);
}

#[test]
fn same_condition_variant_is_one_field_away() {
    let (m, x, y) = setup();
    let same = Guidance::i_erg_same_condition(3.0, ierg());
    assert_eq!(same.terms[0].negative.condition, erg::guidance::Condition::Given);
    let (a, _) = guided_velocity(&m, &same, &x, 0.8, &y).unwrap();
    let (b, _) = guided_velocity(&m, &Guidance::i_erg(3.0, ierg()), &x, 0.8, &y).unwrap();
    assert!(max_abs_diff(&a, &b) > 1e-4);
    // before κ the same-condition negative equals the positive: no guidance, one NFE
    let (v, nfe) = guided_velocity(&m, &same, &x, 0.2, &y).unwrap();
    assert_eq!(nfe, 1);
    assert_eq!(max_abs_diff(&v, &forward(&m, &x, 0.2, &y, AttentionPlan::standard())), 0.0);
}

#[test]
fn invalid_guidance_is_rejected() {
    let mut p = ierg();
    p.kappa = 1.5;
    assert!(Guidance::i_erg(3.0, p).validate(2).unwrap_err().to_string().contains("kappa"));
    let mut p = ierg();
    p.l_max = 3;
    assert!(Guidance::i_erg(3.0, p).validate(2).unwrap_err().to_string().contains("depth"));
    let mut p = ierg();
    p.energy.tau = 0.0;
    assert!(Guidance::i_erg(3.0, p).validate(2).unwrap_err().to_string().contains("tau"));
    assert!(Guidance::cfg(f64::NAN).validate(2).is_err());
}
