//! Shared helpers for the integration tests.
#![allow(dead_code)]
use candle_core::{DType, Device, Tensor};
use erg::models::dit::{Dit, DitConfig};
use erg::nn::{seeded_varbuilder, SeededVarMap};

/// A test-tiny DiT whose every weight is random (non-zero), so attention and every block matter
/// (a fresh DiT has zero-initialised gates and output, which hides most behaviour).
pub fn random_dit(cfg: &DitConfig, seed: u64) -> (Dit, SeededVarMap) {
    let map = SeededVarMap::new(seed);
    let model = Dit::new(cfg, seeded_varbuilder(&map, DType::F32, &Device::Cpu)).unwrap();
    let mut names: Vec<String> = map.varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    for (i, n) in names.iter().enumerate() {
        let data = map.varmap.data().lock().unwrap();
        let v = &data[n];
        let mut r = erg::rng::stream(seed, 1000 + i as u64);
        let t = (erg::rng::randn(&mut r, v.dims(), &Device::Cpu).unwrap() * 0.2).unwrap();
        v.set(&t).unwrap();
    }
    (model, map)
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}
