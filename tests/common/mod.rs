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

pub fn tiny_minilm() -> erg::text::MiniLmConfig {
    erg::text::MiniLmConfig {
        vocab_size: 128,
        hidden_size: 12,
        num_hidden_layers: 2,
        num_attention_heads: 3,
        intermediate_size: 24,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    }
}

/// A tiny random MiniLM (2 layers, width 12) packing 6 tokens.
pub fn text_encoder(seed: u64) -> erg::text::TextEncoder {
    use erg::text::MiniLm;
    let cfg = tiny_minilm();
    let w = random_tensors(seed, 0.5, |vb| MiniLm::new(&cfg, vb));
    erg::text::TextEncoder::new(MiniLm::new(&cfg, candle_nn::VarBuilder::from_tensors(w, DType::F32, &Device::Cpu)).unwrap(), 6).unwrap()
}

/// A tiny text-to-image model with random weights everywhere (so every block matters) and a tiny
/// random text encoder.
pub fn t2i_model(seed: u64) -> erg::models::mmdit::TextToImage {
    use erg::models::mmdit::{TextToImage, TextToImageConfig};
    let cfg = TextToImageConfig::test_tiny();
    let w = random_tensors(seed, 0.3, |vb| TextToImage::new(&cfg, vb, None));
    TextToImage::new(&cfg, candle_nn::VarBuilder::from_tensors(w, DType::F32, &Device::Cpu), Some(text_encoder(seed + 1))).unwrap()
}

/// Two "prompts" as token ids (2, 6) for [`t2i_model`]: [CLS] a b [SEP] pad pad, and a longer one.
pub fn t2i_prompts() -> Tensor {
    Tensor::new(&[[101u32, 7, 9, 102, 0, 0], [101, 30, 31, 45, 102, 0]], &Device::Cpu).unwrap()
}
