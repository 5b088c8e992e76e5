//! Identities of the rectified attention (ERG Sec. 3.1, Algorithm 1).
mod common;
use candle_core::{Device, Tensor, D};
use common::max_abs_diff;
use erg::attention::{attention, AttentionPlan, Energy, ForwardPlan, Rectifier};
use erg::nn::Ops;

fn qkv(seed: u64) -> (Tensor, Tensor, Tensor) {
    let mut r = erg::rng::stream(seed, 0);
    let d = &Device::Cpu;
    let q = erg::rng::randn(&mut r, &[2, 3, 5, 8], d).unwrap();
    let k = erg::rng::randn(&mut r, &[2, 3, 7, 8], d).unwrap();
    let v = erg::rng::randn(&mut r, &[2, 3, 7, 8], d).unwrap();
    (q, k, v)
}

fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
    let logits = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
    candle_nn::ops::softmax(&logits, D::Minus1).unwrap().matmul(v).unwrap()
}

#[test]
fn tau_one_is_standard_attention() {
    let (q, k, v) = qkv(1);
    let std = attention(&q, &k, &v, &Rectifier::Standard, Ops::infer(), None).unwrap();
    let refr = reference(&q, &k, &v, 1.0 / 8f64.sqrt());
    assert!(max_abs_diff(&std, &refr) < 1e-6);
    for mode in [Ops::infer(), Ops::train()] {
        let t1 = attention(&q, &k, &v, &Rectifier::temperature(1.0), mode, None).unwrap();
        assert!(max_abs_diff(&t1, &std) < 1e-6);
    }
}

#[test]
fn energy_with_unit_parameters_is_standard_attention() {
    // τ = α = γ = K = 1 through the explicit update Q − γ(Q − α A): equals A up to rounding.
    let (q, _, _) = qkv(2);
    let (k, v) = (q.clone(), q.clone()); // self-attention: Q and V have one shape
    let std = attention(&q, &k, &v, &Rectifier::Standard, Ops::infer(), None).unwrap();
    let e = Energy { tau: 1.0, alpha: 1.0 + 1e-12, gamma: 1.0, steps: 1 }; // forces the update path
    let upd = attention(&q, &k, &v, &Rectifier::Energy(e), Ops::infer(), None).unwrap();
    assert!(max_abs_diff(&upd, &std) < 1e-6, "{}", max_abs_diff(&upd, &std));
}

#[test]
fn tau_to_zero_gives_uniform_average_of_values() {
    let (q, k, v) = qkv(3);
    let out = attention(&q, &k, &v, &Rectifier::temperature(1e-9), Ops::infer(), None).unwrap();
    let mean = v.mean_keepdim(2).unwrap().broadcast_as(out.shape()).unwrap();
    assert!(max_abs_diff(&out, &mean) < 1e-5);
    // and a small τ lies between: further from standard attention than τ = 0.5 is.
    let std = attention(&q, &k, &v, &Rectifier::Standard, Ops::infer(), None).unwrap();
    let half = attention(&q, &k, &v, &Rectifier::temperature(0.5), Ops::infer(), None).unwrap();
    assert!(max_abs_diff(&out, &std) > max_abs_diff(&half, &std));
}

#[test]
fn algorithm_1_matches_its_explicit_loop() {
    let (x, _, _) = qkv(4);
    let (q, k, v) = (x.clone(), (&x * 0.7).unwrap(), (&x * -1.3).unwrap());
    let e = Energy { tau: 0.3, alpha: 0.8, gamma: 1.5, steps: 3 };
    let got = attention(&q, &k, &v, &Rectifier::Energy(e), Ops::train(), None).unwrap();
    let beta = 1.0 / 8f64.sqrt();
    let mut state = q.clone();
    for _ in 0..3 {
        let a = reference(&state, &k, &v, 0.3 * beta);
        state = (&state - ((&state - (a * 0.8).unwrap()).unwrap() * 1.5).unwrap()).unwrap();
    }
    assert!(max_abs_diff(&got, &state) < 1e-5);
    // K = 1 differs from K = 3.
    let one = attention(&q, &k, &v, &Rectifier::Energy(Energy { steps: 1, ..e }), Ops::train(), None).unwrap();
    assert!(max_abs_diff(&one, &got) > 1e-3);
}

#[test]
fn invalid_hyperparameters_are_rejected() {
    let (q, k, v) = qkv(5);
    for e in [
        Energy { tau: 0.0, ..Energy::temperature(1.0) },
        Energy { tau: -1.0, ..Energy::temperature(1.0) },
        Energy { gamma: 0.0, ..Energy::temperature(1.0) },
        Energy { steps: 0, ..Energy::temperature(1.0) },
        Energy { alpha: f64::NAN, ..Energy::temperature(1.0) },
    ] {
        let err = attention(&q, &k, &v, &Rectifier::Energy(e), Ops::infer(), None).unwrap_err();
        assert!(matches!(err, erg::Error::Hyperparameter(_)), "{err}");
    }
    let bad = AttentionPlan::blocks(Rectifier::temperature(0.1), 3, 2);
    assert!(bad.validate(6).unwrap_err().to_string().contains("l_min"));
    let beyond = AttentionPlan::blocks(Rectifier::temperature(0.1), 2, 7);
    assert!(beyond.validate(6).unwrap_err().to_string().contains("beyond the model depth"));
    assert!(AttentionPlan::blocks(Rectifier::temperature(0.1), 2, 6).validate(6).is_ok());
}

#[test]
fn split_batch_plan_equals_separate_calls() {
    let (q, k, v) = qkv(6);
    let rect = AttentionPlan::blocks(Rectifier::temperature(0.05), 1, 2);
    let plan = ForwardPlan::new(vec![(1, AttentionPlan::standard()), (1, rect)]);
    let both = plan.attend(1, &q, &k, &v, None, &mut erg::attention::NoProbe).unwrap();
    let first =
        attention(&q.narrow(0, 0, 1).unwrap(), &k.narrow(0, 0, 1).unwrap(), &v.narrow(0, 0, 1).unwrap(), &Rectifier::Standard, Ops::infer(), None).unwrap();
    let second =
        attention(&q.narrow(0, 1, 1).unwrap(), &k.narrow(0, 1, 1).unwrap(), &v.narrow(0, 1, 1).unwrap(), &Rectifier::temperature(0.05), Ops::infer(), None)
            .unwrap();
    assert!(max_abs_diff(&both.narrow(0, 0, 1).unwrap(), &first) < 1e-6);
    assert!(max_abs_diff(&both.narrow(0, 1, 1).unwrap(), &second) < 1e-6);
    // outside [l_min, l_max) both rows are standard
    let b0 = plan.attend(0, &q, &k, &v, None, &mut erg::attention::NoProbe).unwrap();
    assert!(max_abs_diff(&b0, &attention(&q, &k, &v, &Rectifier::Standard, Ops::infer(), None).unwrap()) < 1e-6);
}

#[test]
fn block_range_scaling_follows_table_7() {
    assert_eq!(erg::attention::scale_block_range(12, 15, 28, 28), (12, 15));
    assert_eq!(erg::attention::scale_block_range(12, 15, 28, 6), (2, 4));
    assert_eq!(erg::attention::scale_block_range(12, 15, 28, 2), (0, 2));
    let (lo, hi) = erg::attention::scale_block_range(27, 28, 28, 1);
    assert!(lo < hi && hi <= 1);
}

fn input(shape: &[usize], seed: u64, scale: f64) -> Tensor {
    let mut r = erg::rng::stream(seed, 0);
    (erg::rng::randn(&mut r, shape, &Device::Cpu).unwrap() * scale).unwrap()
}

#[test]
fn packed_attention_of_a_mixed_plan_matches_split_heads_attention() {
    use erg::attention::{AttentionPlan, Energy, ForwardPlan, NoProbe, Rectifier};
    let (heads, dh, grid) = (2, 8, (4, 4));
    let n = grid.0 * grid.1;
    let in_range = |rectifier| AttentionPlan { rectifier, l_min: 0, l_max: 1 };
    // CFG's two plain rows, an ERG row (τ), a SEG row, a PAG row, another τ row, a multi-step energy row.
    let groups = vec![
        (2, AttentionPlan::standard()),
        (1, in_range(Rectifier::temperature(0.2))),
        (1, in_range(Rectifier::SmoothedQueries { sigma: f64::INFINITY })),
        (1, in_range(Rectifier::Identity)),
        (1, in_range(Rectifier::temperature(3.0))),
        (1, in_range(Rectifier::Energy(Energy { tau: 0.5, alpha: 1.0, gamma: 0.5, steps: 2 }))),
    ];
    let b: usize = groups.iter().map(|g| g.0).sum();
    let plan = ForwardPlan::new(groups);
    let qkv = input(&[b, n, 3 * heads * dh], 50, 1.5);
    let got = plan.attend_packed(0, &qkv, heads, Some(grid), &mut NoProbe).unwrap(); // (B, N, D)
    let p = qkv.reshape((b, n, 3, heads, dh)).unwrap().permute((2, 0, 3, 1, 4)).unwrap();
    let (q, k, v) = (p.get(0).unwrap(), p.get(1).unwrap(), p.get(2).unwrap());
    let want = plan.attend(0, &q, &k, &v, Some(grid), &mut NoProbe).unwrap().transpose(1, 2).unwrap().reshape((b, n, heads * dh)).unwrap();
    assert!(max_abs_diff(&got, &want) < 1e-5, "{}", max_abs_diff(&got, &want));
    // Outside the range every row is standard attention, one packed call.
    let got = plan.attend_packed(1, &qkv, heads, Some(grid), &mut NoProbe).unwrap();
    let want = plan.attend(1, &q, &k, &v, Some(grid), &mut NoProbe).unwrap().transpose(1, 2).unwrap().reshape((b, n, heads * dh)).unwrap();
    assert!(max_abs_diff(&got, &want) < 1e-5);
    assert!(plan.attend_packed(0, &qkv, 5, Some(grid), &mut NoProbe).is_err());
}

#[test]
fn fused_and_candle_kernels_give_the_same_training_forward() {
    use erg::attention::ForwardPlan;
    use erg::models::dit::DitConfig;
    use erg::nn::Kernels;
    let cfg = DitConfig::test_tiny();
    let (model, _) = common::random_dit(&cfg, 11);
    let x = input(&[4, 1, 28, 28], 12, 1.0);
    let t = Tensor::new(&[0.1f32, 0.4, 0.7, 0.9], &Device::Cpu).unwrap();
    let y = Tensor::new(&[0u32, 3, 5, 10], &Device::Cpu).unwrap();
    let fused = ForwardPlan::train(4);
    let candle = ForwardPlan::train(4).with_kernels(Kernels::Candle);
    let a = model.forward(&x, &t, &y, &candle).unwrap();
    let b = model.forward(&x, &t, &y, &fused).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-4, "{}", max_abs_diff(&a, &b));
    assert!(max_abs_diff(&a, &b) > 0.0, "the two kernel sets are different code paths");
}
