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

/// Every tensor `build` asks its `VarBuilder` for, filled with N(0, scale²) values from the
/// seeded generator (tensor i of the sorted names from stream (seed, 100 + i)): random weights in
/// a model's real key layout, for loading and parity tests.
pub fn random_tensors<T>(seed: u64, scale: f64, build: impl FnOnce(candle_nn::VarBuilder) -> erg::Result<T>) -> std::collections::HashMap<String, Tensor> {
    let map = SeededVarMap::new(seed);
    build(seeded_varbuilder(&map, DType::F32, &Device::Cpu)).unwrap();
    let data = map.varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut r = erg::rng::stream(seed, 100 + i as u64);
            ((*n).clone(), (erg::rng::randn(&mut r, data[*n].dims(), &Device::Cpu).unwrap() * scale).unwrap())
        })
        .collect()
}
