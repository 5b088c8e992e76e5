//! The process-wide switch between the fused kernels and candle's compositions. In its own test
//! binary (its own process): flipping the switch while other tests run would change which path
//! those tests exercise.
mod common;

use candle_core::{Device, Tensor};
use common::max_abs_diff;

fn input(shape: &[usize], seed: u64, scale: f64) -> Tensor {
    let mut r = erg::rng::stream(seed, 0);
    (erg::rng::randn(&mut r, shape, &Device::Cpu).unwrap() * scale).unwrap()
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
