//! Prompts → the conditioning of a text-to-image MMDiT: fixed-length token ids, and the
//! "packed" text embedding that [`crate::models::mmdit::TextToImage`] consumes.
//!
//! Packing: for a prompt of token ids (L,) (BERT ids, \[CLS] … \[SEP], right-padded with 0 to
//! `context_len` = L), the encoder's token states (L, D) with padding rows set to zero, followed
//! by one row holding the pooled sentence embedding (mean over tokens, L2-normalised, as
//! sentence-transformers): (L + 1, D). Rows 0..L are the MMDiT's context tokens, row L its pooled
//! vector `y` (SD3 takes both from its text encoders). C-ERG (ERG Sec. 3.2, App. C) runs the same
//! encoder with τ_c in layers [l_min^c, l_max^c): both the tokens and the pooled vector are
//! rectified, as for SD3-medium's CLIP encoders (Table 7).
use candle_core::{DType, Device, Tensor};

use super::{MiniLm, TextRectification};
use crate::{Error, Result};

/// BERT's padding id.
pub const PAD_ID: u32 = 0;

/// A frozen text encoder producing packed embeddings of `context_len` tokens.
pub struct TextEncoder {
    /// The encoder (all-MiniLM-L6-v2).
    pub minilm: MiniLm,
    /// Tokens per prompt, L (longer prompts are cut, keeping the final \[SEP]).
    pub context_len: usize,
}

impl TextEncoder {
    /// Wraps `minilm`; `context_len` ≥ 2 (\[CLS] and \[SEP]).
    pub fn new(minilm: MiniLm, context_len: usize) -> Result<Self> {
        if context_len < 2 || context_len > minilm.config().max_position_embeddings {
            return Err(Error::hp(format!("context_len must be in [2, {}], got {context_len}", minilm.config().max_position_embeddings)));
        }
        Ok(Self { minilm, context_len })
    }

    /// Width D of the packed rows.
    pub fn width(&self) -> usize {
        self.minilm.config().hidden_size
    }

    /// Number of self-attention layers (the range of l_min^c, l_max^c).
    pub fn layers(&self) -> usize {
        self.minilm.config().num_hidden_layers
    }

    /// Token ids (B, L) u32 of `prompts`, right-padded with [`PAD_ID`]; a prompt longer than L
    /// tokens is cut and ends with its \[SEP]. The empty prompt is \[CLS] \[SEP].
    /// Errors: the encoder was loaded without its tokenizer.
    pub fn token_ids(&self, prompts: &[&str], device: &Device) -> Result<Tensor> {
        let l = self.context_len;
        let mut all = Vec::with_capacity(prompts.len() * l);
        for p in prompts {
            let ids = self.minilm.tokenize(p, &Device::Cpu)?.squeeze(0)?.to_vec1::<u32>()?;
            let mut row: Vec<u32> = if ids.len() > l { ids[..l - 1].iter().copied().chain(std::iter::once(ids[ids.len() - 1])).collect() } else { ids };
            row.resize(l, PAD_ID);
            all.extend(row);
        }
        Ok(Tensor::from_vec(all, (prompts.len(), l), device)?)
    }

    /// Packed embeddings (B, L + 1, D) of token ids (B, L) u32 (see the module docs), with the
    /// C-ERG rectification `rect` (None = the plain encoder).
    /// Errors: ids of another length than `context_len`; invalid `rect`.
    pub fn encode_ids(&self, ids: &Tensor, rect: Option<&TextRectification>) -> Result<Tensor> {
        let (_, l) = ids.dims2()?;
        if l != self.context_len {
            return Err(Error::shape(format!("token ids have {l} positions, the encoder packs {}", self.context_len)));
        }
        let mask = ids.ne(PAD_ID)?.to_dtype(DType::F32)?; // (B, L)
        let states = self.minilm.forward(ids, Some(&mask), rect)?.broadcast_mul(&mask.unsqueeze(2)?)?; // (B, L, D), padding rows 0
        let pooled = MiniLm::pooled(&states, Some(&mask))?; // (B, D)
        Ok(Tensor::cat(&[states, pooled.unsqueeze(1)?], 1)?) // (B, L + 1, D)
    }

    /// Packed embeddings (B, L + 1, D) of `prompts`.
    pub fn encode(&self, prompts: &[&str], rect: Option<&TextRectification>, device: &Device) -> Result<Tensor> {
        self.encode_ids(&self.token_ids(prompts, device)?, rect)
    }
}

/// The token ids (B, L) of the empty prompt, \[CLS] \[SEP] then padding, given BERT's \[CLS] = 101
/// and \[SEP] = 102 (all-MiniLM-L6-v2's vocabulary).
pub fn empty_prompt_ids(batch: usize, context_len: usize, device: &Device) -> Result<Tensor> {
    let mut row = vec![PAD_ID; context_len];
    row[0] = 101;
    row[1.min(context_len - 1)] = 102;
    let all: Vec<u32> = (0..batch).flat_map(|_| row.iter().copied()).collect();
    Ok(Tensor::from_vec(all, (batch, context_len), device)?)
}
