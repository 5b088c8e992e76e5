//! The T5 v1.1 encoder (Raffel et al. 2020; SD3's T5-XXL `text_encoder_3`) with C-ERG's
//! attention temperature.
//!
//! Weight names as transformers' `T5EncoderModel` (diffusers' `text_encoder_3/`; SD3 single files
//! put them below `text_encoders.t5xxl.transformer.`): `shared` (or `encoder.embed_tokens`),
//! `encoder.block.{i}.layer.0.{layer_norm, SelfAttention.{q,k,v,o}}`,
//! `encoder.block.0.layer.0.SelfAttention.relative_attention_bias`,
//! `encoder.block.{i}.layer.1.{layer_norm, DenseReluDense.{wi_0,wi_1,wo}}`,
//! `encoder.final_layer_norm`. Layer norms are T5's RMS norms (no mean, no bias); the feed-forward
//! is gated (`gated-gelu`: tanh-GELU(x·wi_0) ⊙ x·wi_1, then wo) or plain ReLU (`relu`).
//!
//! Attention logits are QKᵀ without 1/√d (T5 folds it into the initialisation) plus a relative
//! position bias B (B, H, L, L) computed once from block 0's bucket table and shared by every
//! block. C-ERG's τ_c acts per [`BiasTemperature`]: τ·(QKᵀ + B) (a true softmax temperature,
//! default) or τ·QKᵀ + B. With τ_c = 1 the output equals candle-transformers'
//! `t5::T5EncoderModel` and transformers' (tests).
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::{BiasTemperature, TextRectification};
use crate::{Error, Result};

fn default_eps() -> f64 {
    1e-6
}
fn default_ff() -> String {
    "gated-gelu".into()
}

/// T5 encoder hyperparameters: the fields of transformers' `T5Config` (`config.json`) that matter
/// here; other fields of such a file are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T5Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub d_model: usize,
    /// Per-head width.
    pub d_kv: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Heads.
    pub num_heads: usize,
    /// Relative-position buckets (32).
    pub relative_attention_num_buckets: usize,
    /// Largest distance told apart (128).
    pub relative_attention_max_distance: usize,
    /// RMS-norm ε.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `gated-gelu` (T5 v1.1) or `relu` (T5 v1.0).
    #[serde(default = "default_ff")]
    pub feed_forward_proj: String,
}

impl T5Config {
    /// T5-XXL v1.1 encoder (SD3's `text_encoder_3`): 24 blocks × 4096, 64 heads of 64, d_ff 10240.
    pub fn t5_xxl() -> Self {
        Self {
            vocab_size: 32128,
            d_model: 4096,
            d_kv: 64,
            d_ff: 10240,
            num_layers: 24,
            num_heads: 64,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "gated-gelu".into(),
        }
    }
    fn gated(&self) -> Result<bool> {
        match self.feed_forward_proj.as_str() {
            "gated-gelu" => Ok(true),
            "relu" => Ok(false),
            other => Err(Error::hp(format!("T5 feed_forward_proj {other:?} is not supported (gated-gelu, relu)"))),
        }
    }
}

struct T5Block {
    ln_attn: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln_ff: Tensor,
    wi_0: Linear,
    wi_1: Option<Linear>,
    wo: Linear,
}

/// T5's layer norm: x / √(mean(x²) + ε) · w, computed in f32.
fn t5_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let var = x32.sqr()?.mean_keepdim(D::Minus1)?;
    let y = x32.broadcast_div(&(var + eps)?.sqrt()?)?.to_dtype(dtype)?;
    Ok(y.broadcast_mul(w)?)
}

/// The T5 encoder (inference).
pub struct T5Encoder {
    cfg: T5Config,
    embed: Embedding,
    bias_table: Tensor, // (buckets, H)
    blocks: Vec<T5Block>,
    final_ln: Tensor,
}

impl T5Encoder {
    /// Builds from `vb` at the model root (holding `shared` or `encoder.embed_tokens`, and
    /// `encoder.*`). Errors: a missing or misshaped tensor, named; an unknown feed-forward.
    pub fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let (d, inner) = (cfg.d_model, cfg.num_heads * cfg.d_kv);
        let gated = cfg.gated()?;
        let embed_vb = if vb.contains_tensor("shared.weight") { vb.pp("shared") } else { vb.pp("encoder.embed_tokens") };
        let enc = vb.pp("encoder");
        let lin = |i, o, vb: VarBuilder| candle_nn::linear_no_bias(i, o, vb);
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                let b = enc.pp(format!("block.{i}"));
                let (a, f) = (b.pp("layer.0"), b.pp("layer.1"));
                let sa = a.pp("SelfAttention");
                let ff = f.pp("DenseReluDense");
                let (wi_0, wi_1) =
                    if gated { (lin(d, cfg.d_ff, ff.pp("wi_0"))?, Some(lin(d, cfg.d_ff, ff.pp("wi_1"))?)) } else { (lin(d, cfg.d_ff, ff.pp("wi"))?, None) };
                Ok(T5Block {
                    ln_attn: a.pp("layer_norm").get(d, "weight")?,
                    q: lin(d, inner, sa.pp("q"))?,
                    k: lin(d, inner, sa.pp("k"))?,
                    v: lin(d, inner, sa.pp("v"))?,
                    o: lin(inner, d, sa.pp("o"))?,
                    ln_ff: f.pp("layer_norm").get(d, "weight")?,
                    wi_0,
                    wi_1,
                    wo: lin(cfg.d_ff, d, ff.pp("wo"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            embed: candle_nn::embedding(cfg.vocab_size, d, embed_vb)?,
            bias_table: enc.pp("block.0.layer.0.SelfAttention.relative_attention_bias").get((cfg.relative_attention_num_buckets, cfg.num_heads), "weight")?,
            blocks,
            final_ln: enc.pp("final_layer_norm").get(d, "weight")?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &T5Config {
        &self.cfg
    }

    /// Blocks (the range of C-ERG's l_min^c, l_max^c).
    pub fn layers(&self) -> usize {
        self.cfg.num_layers
    }

    /// The relative position bias (1, H, L, L) for L tokens (bidirectional buckets of
    /// transformers' `T5Attention._relative_position_bucket`, computed in f32 as there).
    pub fn position_bias(&self, l: usize, device: &Device) -> Result<Tensor> {
        let buckets = relative_position_buckets(l, self.cfg.relative_attention_num_buckets, self.cfg.relative_attention_max_distance);
        let idx = Tensor::from_vec(buckets, l * l, device)?;
        let b = self.bias_table.embedding(&idx)?; // (L·L, H)
        Ok(b.reshape((l, l, self.cfg.num_heads))?.permute((2, 0, 1))?.unsqueeze(0)?)
        // (1, H, L, L)
    }

    /// The last hidden state (B, L, d_model) of token ids (B, L) u32, with the C-ERG
    /// rectification `rect` (None = plain). No padding mask (SD3 passes none).
    /// Errors: `rect` outside the blocks.
    pub fn forward(&self, ids: &Tensor, rect: Option<&TextRectification>) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        if let Some(r) = rect {
            r.validate(self.layers())?;
        }
        let (h, dk, eps) = (self.cfg.num_heads, self.cfg.d_kv, self.cfg.layer_norm_epsilon);
        let mut x = self.embed.forward(ids)?; // (B, L, D)
        let dtype = x.dtype();
        let bias = self.position_bias(l, ids.device())?.to_dtype(DType::F32)?; // (1, H, L, L)
        for (i, blk) in self.blocks.iter().enumerate() {
            let n = t5_norm(&x, &blk.ln_attn, eps)?;
            let heads = |t: Tensor| -> Result<Tensor> { Ok(t.reshape((b, l, h, dk))?.transpose(1, 2)?.contiguous()?) }; // (B, H, L, d_kv)
            let (q, k, v) = (heads(blk.q.forward(&n)?)?, heads(blk.k.forward(&n)?)?, heads(blk.v.forward(&n)?)?);
            let scores = q.matmul(&k.t()?)?.to_dtype(DType::F32)?; // (B, H, L, L), QKᵀ unscaled
            let tau = rect.map_or(1.0, |r| r.tau_at(i));
            let logits = match rect.map_or(BiasTemperature::WholeLogit, |r| r.bias) {
                BiasTemperature::WholeLogit => (scores.broadcast_add(&bias)? * tau)?, // τ·(QKᵀ + B)
                BiasTemperature::QkOnly => (scores * tau)?.broadcast_add(&bias)?,     // τ·QKᵀ + B
            };
            let p = candle_nn::ops::softmax_last_dim(&logits)?.to_dtype(dtype)?;
            let a = p.matmul(&v)?.transpose(1, 2)?.reshape((b, l, h * dk))?; // (B, L, H·d_kv)
            x = (&x + blk.o.forward(&a)?)?;
            let n = t5_norm(&x, &blk.ln_ff, eps)?;
            let f = match &blk.wi_1 {
                Some(wi_1) => (blk.wi_0.forward(&n)?.gelu()? * wi_1.forward(&n)?)?, // tanh-GELU gate (gelu_new)
                None => blk.wi_0.forward(&n)?.relu()?,
            };
            x = (&x + blk.wo.forward(&f)?)?;
        }
        t5_norm(&x, &self.final_ln, eps)
    }
}

/// Bucket index (L·L, row-major over (query i, key j)) of the relative position j − i, as
/// transformers' bidirectional `_relative_position_bucket`: half the buckets per direction, exact
/// below half of those, logarithmic up to `max_distance`.
pub fn relative_position_buckets(l: usize, num_buckets: usize, max_distance: usize) -> Vec<u32> {
    let n = num_buckets / 2;
    let max_exact = n / 2;
    let mut out = Vec::with_capacity(l * l);
    for i in 0..l {
        for j in 0..l {
            let rel = j as i64 - i as i64;
            let mut bucket = if rel > 0 { n } else { 0 };
            let r = rel.unsigned_abs() as usize;
            bucket += if r < max_exact {
                r
            } else {
                let f = ((r as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln() * (n - max_exact) as f32) as usize;
                (max_exact + f).min(n - 1)
            };
            out.push(bucket as u32);
        }
    }
    out
}
