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

#[test]
fn typed_modifiers_change_only_what_they_name_and_refuse_methods_without_it() {
    use erg::attention::{Energy, Rectifier};
    use erg::guidance::preset;
    let depth = 12;
    let base = preset("ierg", 3.0, depth).unwrap();
    let g = base.clone().with_tau(0.5).unwrap().with_kappa(0.4).unwrap().with_blocks(3, 7).unwrap();
    let n = &g.terms[0].negative;
    assert_eq!(n.attention.rectifier, Rectifier::temperature(0.5));
    assert_eq!((n.kappa, n.attention.l_min, n.attention.l_max), (0.4, 3, 7));
    assert_eq!(g.terms[0].scale, base.terms[0].scale, "the guidance scale is untouched");
    assert_eq!(n.condition, base.terms[0].negative.condition);
    let e = Energy { tau: 0.2, alpha: 1.0, gamma: 0.5, steps: 3 };
    assert_eq!(base.clone().with_energy(e).unwrap().terms[0].negative.attention.rectifier, Rectifier::Energy(e));
    assert_eq!(base.clone().with_guidance_scale(5.0).unwrap().guidance_scale(), 5.0);
    // SEG's blur in I-ERG's blocks and kickoff: only the rectifier changes.
    let seg = base.clone().with_rectifier(Rectifier::SmoothedQueries { sigma: f64::INFINITY }).unwrap();
    assert_eq!(seg.terms[0].negative.kappa, base.terms[0].negative.kappa);
    assert_eq!(
        (seg.terms[0].negative.attention.l_min, seg.terms[0].negative.attention.l_max),
        (base.terms[0].negative.attention.l_min, base.terms[0].negative.attention.l_max)
    );
    // Nothing to set is an error, not a silent no-op.
    let cfg = preset("cfg", 3.0, depth).unwrap();
    assert!(cfg.clone().with_tau(0.5).unwrap_err().to_string().contains("cfg has no rectified attention"));
    assert!(cfg.clone().with_kappa(0.5).is_err());
    assert!(preset("pag", 3.0, depth).unwrap().with_tau(0.5).is_err(), "PAG perturbs attention but has no temperature");
    assert!(preset("pag", 3.0, depth).unwrap().with_kappa(0.5).is_ok());
    assert!(cfg.clone().with_tau_c(0.1).is_err());
    assert!(cfg.clone().with_cads_on_negatives().is_err());
    assert!(cfg.with_cads(0.6, 0.9, 0.25).is_err());
    assert!(Guidance::none().with_guidance_scale(2.0).is_err());
    // The queries replace name matching: the unconditional I-ERG keeps Table 7's κ = 0.2.
    let uncond = preset("ierg-uncond", 3.0, depth).unwrap();
    assert!(uncond.has_rectified_attention() && !uncond.has_rectified_condition());
    assert_eq!(uncond.terms[0].negative.kappa, 0.2);
    assert!(!preset("seg", 3.0, depth).unwrap().has_rectified_attention());
    assert!(preset("seg", 3.0, depth).unwrap().has_attention_perturbation());
}

#[test]
fn an_attention_recorder_sees_the_first_groups_standard_attention_without_changing_the_output() {
    use erg::attention::{AttentionRecorder, Rectifier};
    let (m, x, y) = setup();
    let t = Tensor::full(0.6f32, 3, &Device::Cpu).unwrap();
    let plan = ForwardPlan::new(vec![(2, AttentionPlan::standard()), (1, AttentionPlan::blocks(Rectifier::temperature(0.1), 0, 2))]);
    let emb = m.embed_condition(&y).unwrap();
    let plain = m.velocity_embedded(&x, &t, &emb, &plan).unwrap();
    let mut rec = AttentionRecorder::new(1);
    let probed = m.velocity_probed(&x, &t, &emb, &plan, &mut rec).unwrap();
    assert!(max_abs_diff(&plain, &probed) < 1e-5, "probing does not change the prediction");
    let map = rec.map.expect("block 1 recorded");
    let n = m.token_grid().0 * m.token_grid().1;
    assert_eq!(map.dims(), &[2, n, n], "the first group's rows, head-averaged");
    let row_sums = map.sum(2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(row_sums.iter().all(|s| (s - 1.0).abs() < 1e-4), "probabilities");
    let mut none = AttentionRecorder::new(5);
    assert!(m.velocity_probed(&x, &t, &emb, &plan, &mut none).is_ok() && none.map.is_none(), "a block the model lacks is never observed");
}
