//! Every trainable tensor of the DiT receives a non-zero gradient from the rectified-flow loss
//! (candle-nn's fused softmax / layer norm have no backward pass and would silently stop it).
mod common;
use candle_core::{Device, Tensor};
use common::random_dit;
use erg::models::dit::DitConfig;

#[test]
fn every_parameter_gets_a_nonzero_gradient() {
    let cfg = DitConfig::test_tiny();
    let (model, map) = random_dit(&cfg, 7);
    let mut r = erg::rng::stream(7, 99);
    let x1 = erg::rng::randn(&mut r, &[4, 1, 28, 28], &Device::Cpu).unwrap();
    let eps = erg::rng::randn(&mut r, &[4, 1, 28, 28], &Device::Cpu).unwrap();
    let t = Tensor::new(&[0.1f32, 0.4, 0.6, 0.9], &Device::Cpu).unwrap();
    let y = Tensor::new(&[0u32, 3, 10, 7], &Device::Cpu).unwrap();
    let loss = erg::flow::loss(&model, &x1, &eps, &t, &y).unwrap();
    let grads = loss.backward().unwrap();
    let data = map.varmap.data().lock().unwrap();
    let mut names: Vec<_> = data.keys().cloned().collect();
    names.sort();
    assert!(names.len() > 20);
    for n in names {
        let g = grads.get(data[&n].as_tensor()).unwrap_or_else(|| panic!("{n} has no gradient"));
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm > 0.0 && norm.is_finite(), "{n}: gradient norm {norm}");
    }
}
