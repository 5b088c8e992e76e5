//! The MiniLM text encoder with C-ERG's temperature: parity with candle-transformers' BERT at
//! τ_c = 1 (random weights in the real key layout), τ_c changes only the chosen layers, and the
//! real all-MiniLM-L6-v2 through hf-hub when the cache holds it (`.ci/run` runs `setup_minilm`).
mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::max_abs_diff;
use erg::text::{MiniLm, MiniLmConfig, TextRectification};

fn tiny() -> MiniLmConfig {
    MiniLmConfig {
        vocab_size: 50,
        hidden_size: 24,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        intermediate_size: 48,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    }
}

fn random_weights(cfg: &MiniLmConfig) -> std::collections::HashMap<String, Tensor> {
    common::random_tensors(7, 0.5, |vb| MiniLm::new(cfg, vb))
}

#[test]
fn matches_candle_transformers_bert_and_rectifies_only_chosen_layers() {
    let cfg = tiny();
    let w = random_weights(&cfg);
    let ours = MiniLm::new(&cfg, VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu)).unwrap();
    let bert_cfg = candle_transformers::models::bert::Config {
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        num_hidden_layers: cfg.num_hidden_layers,
        num_attention_heads: cfg.num_attention_heads,
        intermediate_size: cfg.intermediate_size,
        max_position_embeddings: cfg.max_position_embeddings,
        ..Default::default()
    };
    let theirs = candle_transformers::models::bert::BertModel::load(VarBuilder::from_tensors(w, DType::F32, &Device::Cpu), &bert_cfg).unwrap();
    let ids = Tensor::new(&[[1u32, 7, 9, 3, 2, 0], [1, 4, 2, 0, 0, 0]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], &Device::Cpu).unwrap();
    let want = theirs.forward(&ids, &ids.zeros_like().unwrap(), Some(&mask)).unwrap();
    let got = ours.forward(&ids, Some(&mask), None).unwrap();
    // Compare the real (unpadded) tokens.
    for (row, len) in [(0usize, 5usize), (1, 3)] {
        let d = max_abs_diff(&got.get(row).unwrap().narrow(0, 0, len).unwrap(), &want.get(row).unwrap().narrow(0, 0, len).unwrap());
        assert!(d < 1e-4, "row {row}: {d}");
    }
    let tau1 = ours.forward(&ids, Some(&mask), Some(&TextRectification::new(1.0, 0, 3))).unwrap();
    assert!(max_abs_diff(&tau1, &got) < 1e-6, "τ_c = 1 is the plain encoder");
    // τ_c = 0.01 in layer 0 moves the output measurably (random weights make later layers' attention
    // matter less: 5e-3 for layer 1, 1e-4 for layer 2); a 1-layer encoder (layer 0 of the same
    // weights) is unaffected by a range that starts at layer 1 — only the chosen layers change.
    let cold = ours.forward(&ids, Some(&mask), Some(&TextRectification::new(0.01, 0, 1))).unwrap();
    let moved = max_abs_diff(&cold, &got);
    assert!(moved > 1e-2, "τ_c = 0.01 in layer 0 moved the states by only {moved}");
    let one = MiniLmConfig { num_hidden_layers: 1, ..cfg.clone() };
    let w1: std::collections::HashMap<String, Tensor> =
        random_weights(&cfg).into_iter().filter(|(k, _)| !k.contains("layer.1.") && !k.contains("layer.2.")).collect();
    let first = MiniLm::new(&one, VarBuilder::from_tensors(w1, DType::F32, &Device::Cpu)).unwrap();
    let a = first.forward(&ids, Some(&mask), None).unwrap();
    let b = first.forward(&ids, Some(&mask), Some(&TextRectification::new(0.01, 1, 1))).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-6);
    assert!(first.forward(&ids, Some(&mask), Some(&TextRectification::new(0.01, 1, 2))).is_err(), "a range past the depth is an error");
    assert!(TextRectification::new(0.0, 0, 1).validate(3).is_err());
    assert!(TextRectification::new(0.5, 2, 4).validate(3).is_err());
}

#[test]
fn real_minilm_through_hf_hub_when_cached() {
    let m = match MiniLm::from_hub(&Device::Cpu) {
        Ok(m) => m,
        Err(e) if std::env::var("CI").is_err() => {
            eprintln!("skipped: all-MiniLM-L6-v2 is not in the hf-hub cache ({e}); run the setup_minilm example");
            return;
        }
        Err(e) => panic!("CI runs setup_minilm first, the cache must hold the model: {e}"),
    };
    let enc = |p: &str, r: Option<&TextRectification>| {
        let ids = m.tokenize(p, &Device::Cpu).unwrap();
        MiniLm::pooled(&m.forward(&ids, None, r).unwrap(), None).unwrap()
    };
    assert_eq!(m.tokenize("a red apple", &Device::Cpu).unwrap().dims(), &[1, 5], "[CLS] a red apple [SEP], no padding");
    let cos = |a: &Tensor, b: &Tensor| (a * b).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    let (apple, fruit, car) = (enc("a red apple", None), enc("a piece of fruit", None), enc("a racing car", None));
    assert!(cos(&apple, &fruit) > cos(&apple, &car), "semantic similarity: apple~fruit {} vs apple~car {}", cos(&apple, &fruit), cos(&apple, &car));
    // C-ERG's weak conditioning differs from the plain one but stays a normalised embedding.
    let weak = enc("a red apple", Some(&TextRectification::new(0.01, 0, 6)));
    assert!(cos(&apple, &weak) < 0.999);
    assert!((cos(&weak, &weak) - 1.0).abs() < 1e-4);
}
