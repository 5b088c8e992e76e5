//! The fused CPU kernels (softmax, layer norm, erf-GELU) against candle's differentiable
//! compositions: same values and same gradients, within f32 rounding (tolerances stated).
mod common;

use candle_core::{Device, Tensor, Var, D};
use common::max_abs_diff;
use erg::nn::fused;

fn input(shape: &[usize], seed: u64, scale: f64) -> Tensor {
    let mut r = erg::rng::stream(seed, 0);
    (erg::rng::randn(&mut r, shape, &Device::Cpu).unwrap() * scale).unwrap()
}

/// Value and gradient of Σ w ⊙ f(x) for a random weighting w, through `f`.
fn value_and_grad(x: &Tensor, w: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
    let v = Var::from_tensor(x).unwrap();
    let y = f(v.as_tensor());
    let g = (&y * w).unwrap().sum_all().unwrap().backward().unwrap();
    (y, g.get(v.as_tensor()).expect("gradient reaches the input").clone())
}

#[test]
fn fused_softmax_matches_candle_values_and_gradients() {
    for (shape, scale) in [(vec![3, 4, 17, 33], 3.0), (vec![2, 64, 64], 30.0), (vec![5, 1], 1.0)] {
        let x = input(&shape, 1, scale);
        let w = input(&shape, 2, 1.0);
        let (ya, ga) = value_and_grad(&x, &w, |x| fused::softmax_last_dim(x).unwrap());
        let (yb, gb) = value_and_grad(&x, &w, |x| candle_nn::ops::softmax(x, D::Minus1).unwrap());
        assert!(max_abs_diff(&ya, &yb) < 1e-6, "{shape:?}: values");
        assert!(max_abs_diff(&ga, &gb) < 1e-5, "{shape:?}: gradients {}", max_abs_diff(&ga, &gb));
    }
    // A strided view takes the contiguous copy, same result.
    let x = input(&[4, 6], 3, 1.0).t().unwrap();
    assert!(max_abs_diff(&fused::softmax_last_dim(&x).unwrap(), &candle_nn::ops::softmax_last_dim(&x.contiguous().unwrap()).unwrap()) < 1e-6);
}

#[test]
fn fused_layer_norm_matches_candle_values_and_gradients() {
    for shape in [vec![2, 49, 128], vec![3, 7, 5]] {
        let x = (input(&shape, 4, 2.0) + 0.7).unwrap();
        let w = input(&shape, 5, 1.0);
        let (ya, ga) = value_and_grad(&x, &w, |x| fused::layer_norm_no_affine(x, 1e-6).unwrap());
        let (yb, gb) = value_and_grad(&x, &w, |x| {
            let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1).unwrap()).unwrap();
            xc.broadcast_div(&(xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-6).unwrap().sqrt().unwrap()).unwrap()
        });
        assert!(max_abs_diff(&ya, &yb) < 1e-5, "{shape:?}: values {}", max_abs_diff(&ya, &yb));
        assert!(max_abs_diff(&ga, &gb) < 1e-4, "{shape:?}: gradients {}", max_abs_diff(&ga, &gb));
    }
}

#[test]
fn fused_gelu_matches_candle_values_and_gradients() {
    let x = input(&[3, 50, 70], 6, 3.0);
    let w = input(&[3, 50, 70], 7, 1.0);
    let (ya, ga) = value_and_grad(&x, &w, |x| fused::gelu_erf(x).unwrap());
    let (yb, gb) = value_and_grad(&x, &w, |x| x.gelu_erf().unwrap());
    assert!(max_abs_diff(&ya, &yb) < 1e-5, "values {}", max_abs_diff(&ya, &yb));
    assert!(max_abs_diff(&ga, &gb) < 1e-4, "gradients {}", max_abs_diff(&ga, &gb));
}

#[test]
fn training_forward_is_the_same_with_and_without_fused_kernels() {
    use erg::attention::ForwardPlan;
    use erg::models::dit::DitConfig;
    let cfg = DitConfig::test_tiny();
    let (model, _) = common::random_dit(&cfg, 11);
    let x = input(&[4, 1, 28, 28], 12, 1.0);
    let t = Tensor::new(&[0.1f32, 0.4, 0.7, 0.9], &Device::Cpu).unwrap();
    let y = Tensor::new(&[0u32, 3, 5, 10], &Device::Cpu).unwrap();
    let plan = ForwardPlan::train(4);
    erg::nn::ops::set_fused_kernels(false);
    let a = model.forward(&x, &t, &y, &plan).unwrap();
    erg::nn::ops::set_fused_kernels(true);
    let b = model.forward(&x, &t, &y, &plan).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-4, "{}", max_abs_diff(&a, &b));
}

#[test]
fn vectorisable_exp_and_erf_are_accurate() {
    use erg::nn::fused::{erf_approx, exp_approx};
    let (mut max_exp, mut max_erf) = (0f32, 0f32);
    for i in -200_000..=200_000 {
        let x = i as f32 * 1e-4 * 4.0; // [−80, 80] for exp, steps of 4e-4
        let rel = ((exp_approx(x) - x.exp()) / x.exp()).abs();
        max_exp = max_exp.max(rel);
        let y = i as f32 * 5e-5; // [−10, 10] for erf
        max_erf = max_erf.max((erf_approx(y) - libm::erff(y)).abs());
    }
    assert!(max_exp < 2e-7, "exp rel. error {max_exp}");
    assert!(max_erf < 6e-7, "erf abs. error {max_erf}");
    assert_eq!(exp_approx(-1000.0), exp_approx(-87.3));
    assert!(erf_approx(0.0).abs() < 1e-7 && (erf_approx(-3.0) + libm::erff(3.0)).abs() < 6e-7);
}
