//! SD3 against diffusers: a tiny random-weight pipeline built with diffusers' and transformers'
//! own classes (`benches/reference/sd3_reference.py`), its weights in both layouts and its
//! stage-by-stage outputs committed under `tests/fixtures/sd3/`. Tolerances are absolute, on f32.
mod common;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use common::max_abs_diff;
use erg::text::{BiasTemperature, ClipText, ClipTextConfig, T5Config, T5Encoder, TextRectification};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd3")
}

fn fixtures() -> HashMap<String, Tensor> {
    erg::checkpoint::load_tensors(&fixtures_dir().join("fixtures.safetensors"), &Device::Cpu).unwrap()
}

fn ids(fx: &HashMap<String, Tensor>, key: &str) -> Tensor {
    fx[key].to_dtype(DType::U32).unwrap()
}

fn component(dir: &str, file: &str) -> VarBuilder<'static> {
    let t = erg::checkpoint::load_tensors(&fixtures_dir().join("diffusers").join(dir).join(file), &Device::Cpu).unwrap();
    VarBuilder::from_tensors(t, DType::F32, &Device::Cpu)
}

fn config<T: serde::de::DeserializeOwned>(dir: &str) -> T {
    serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("diffusers").join(dir).join("config.json")).unwrap()).unwrap()
}

#[test]
fn clip_encoders_match_transformers_and_candle() {
    let fx = fixtures();
    for (dir, name, key) in [("text_encoder", "clip_l", "clip_l"), ("text_encoder_2", "clip_g", "clip_g")] {
        let cfg: ClipTextConfig = config(dir);
        let vb = component(dir, "model.safetensors");
        let clip = ClipText::new(&cfg, vb.clone()).unwrap();
        for tag in ["prompt", "empty"] {
            let i = ids(&fx, &format!("{tag}.{key}_ids"));
            let out = clip.forward(&i, None).unwrap();
            let d_pen = max_abs_diff(&out.penultimate, &fx[&format!("{tag}.{key}_penultimate")]);
            let d_pool = max_abs_diff(&out.pooled, &fx[&format!("{tag}.{key}_pooled")]);
            assert!(d_pen < 1e-4 && d_pool < 1e-4, "{name} {tag}: penultimate {d_pen}, pooled {d_pool}");
        }
        // candle-transformers' CLIP text model (final layer norm at the end-of-text token) on the same weights
        let ccfg = candle_transformers::models::clip::text_model::ClipTextConfig {
            vocab_size: cfg.vocab_size,
            embed_dim: cfg.hidden_size,
            activation: match cfg.hidden_act {
                erg::text::clip::ClipActivation::QuickGelu => candle_transformers::models::clip::text_model::Activation::QuickGelu,
                erg::text::clip::ClipActivation::Gelu => candle_transformers::models::clip::text_model::Activation::QuickGelu,
            },
            intermediate_size: cfg.intermediate_size,
            max_position_embeddings: cfg.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: cfg.num_hidden_layers,
            num_attention_heads: cfg.num_attention_heads,
            projection_dim: cfg.projection_dim,
        };
        if cfg.hidden_act == erg::text::clip::ClipActivation::QuickGelu {
            let theirs = candle_transformers::models::clip::text_model::ClipTextTransformer::new(vb.pp("text_model"), &ccfg).unwrap();
            let i = ids(&fx, "prompt.clip_l_ids");
            let d = max_abs_diff(&theirs.forward(&i).unwrap(), &clip.forward(&i, None).unwrap().pooled); // CLIP-L's projection is the identity here
            assert!(d < 1e-4, "candle-transformers CLIP-L pooled differs by {d}");
        }
    }
}

#[test]
fn t5_encoder_matches_transformers_and_candle() {
    let fx = fixtures();
    let cfg: T5Config = config("text_encoder_3");
    let vb = component("text_encoder_3", "model.safetensors");
    let t5 = T5Encoder::new(&cfg, vb.clone()).unwrap();
    for tag in ["prompt", "empty"] {
        let i = ids(&fx, &format!("{tag}.t5_ids"));
        let d = max_abs_diff(&t5.forward(&i, None).unwrap(), &fx[&format!("{tag}.t5_last")]);
        assert!(d < 1e-4, "T5 {tag}: {d}");
    }
    let ccfg: candle_transformers::models::t5::Config =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("diffusers/text_encoder_3/config.json")).unwrap()).unwrap();
    let mut theirs = candle_transformers::models::t5::T5EncoderModel::load(vb, &ccfg).unwrap();
    let i = ids(&fx, "prompt.t5_ids");
    let d = max_abs_diff(&theirs.forward(&i).unwrap(), &t5.forward(&i, None).unwrap());
    assert!(d < 1e-4, "candle-transformers T5 differs by {d}");
}

#[test]
fn c_erg_temperature_in_the_encoders() {
    let fx = fixtures();
    let t5 = T5Encoder::new(&config("text_encoder_3"), component("text_encoder_3", "model.safetensors")).unwrap();
    let i = ids(&fx, "prompt.t5_ids");
    let plain = t5.forward(&i, None).unwrap();
    let one = TextRectification::new(1.0, 0, 2);
    assert!(max_abs_diff(&t5.forward(&i, Some(&one)).unwrap(), &plain) < 1e-6, "tau_c = 1 is the plain encoder");
    let whole = TextRectification::new(0.1, 1, 2);
    let qk = TextRectification { bias: BiasTemperature::QkOnly, ..whole };
    let (a, b) = (t5.forward(&i, Some(&whole)).unwrap(), t5.forward(&i, Some(&qk)).unwrap());
    assert!(max_abs_diff(&a, &plain) > 1e-3 && max_abs_diff(&b, &plain) > 1e-3, "tau_c < 1 changes the output");
    assert!(max_abs_diff(&a, &b) > 1e-4, "tau·(QK + B) and tau·QK + B differ");
    // τ·QKᵀ + B with τ → 0 leaves attention to the position bias alone: compare with a model whose q is zero
    let vb = component("text_encoder_3", "model.safetensors");
    let mut zero_q: HashMap<String, Tensor> = HashMap::new();
    for l in 0..2 {
        let k = format!("encoder.block.{l}.layer.0.SelfAttention.q.weight");
        zero_q.insert(k.clone(), vb.get((32, 32), &k).unwrap().zeros_like().unwrap());
    }
    let mut all = erg::checkpoint::load_tensors(&fixtures_dir().join("diffusers/text_encoder_3/model.safetensors"), &Device::Cpu).unwrap();
    all.extend(zero_q);
    let t5_zero = T5Encoder::new(&config("text_encoder_3"), VarBuilder::from_tensors(all, DType::F32, &Device::Cpu)).unwrap();
    let tiny = TextRectification { bias: BiasTemperature::QkOnly, ..TextRectification::new(1e-9, 0, 2) };
    let d = max_abs_diff(&t5.forward(&i, Some(&tiny)).unwrap(), &t5_zero.forward(&i, None).unwrap());
    assert!(d < 1e-4, "QkOnly with tau -> 0 should leave only the bias: {d}");

    let clip = ClipText::new(&config("text_encoder_2"), component("text_encoder_2", "model.safetensors")).unwrap();
    let i = ids(&fx, "prompt.clip_g_ids");
    let plain = clip.forward(&i, None).unwrap();
    assert!(max_abs_diff(&clip.forward(&i, Some(&TextRectification::new(1.0, 0, 3))).unwrap().pooled, &plain.pooled) < 1e-6);
    let late = clip.forward(&i, Some(&TextRectification::new(0.1, 2, 3))).unwrap();
    assert!(max_abs_diff(&late.penultimate, &plain.penultimate) < 1e-6, "the last layer does not feed the penultimate state");
    assert!(max_abs_diff(&late.pooled, &plain.pooled) > 1e-4, "but it feeds the pooled output");
}
