//! SD3's conditioning from a prompt, as diffusers' `StableDiffusion3Pipeline.encode_prompt`:
//!
//! - token ids: CLIP-L and CLIP-G each 77 tokens (`<|startoftext|>` … `<|endoftext|>`; a longer
//!   prompt is cut to 77 keeping the end-of-text token, with a warning), CLIP-L padded with its
//!   end-of-text token, CLIP-G with "!"; T5 `max_sequence_length` tokens (256 by default; `</s>`
//!   appended, cut the same way, padded with `<pad>`). The raw condition of [`super::Sd3`] packs
//!   them per prompt as one row (77 + 77 + T,) u32: [CLIP-L ‖ CLIP-G ‖ T5].
//! - context (B, 77 + T, W): [CLIP-L ‖ CLIP-G penultimate states] (768 + 1280 wide) zero-padded to
//!   the T5 width W = 4096, followed by T5's last state (zeros without T5, as diffusers).
//! - pooled y (B, 2048): [CLIP-L ‖ CLIP-G projected pooled outputs].
//! - the null condition is the empty prompt, encoded the same way (diffusers' default negative).
//!
//! candle's SD3 example differs (T5 padded/cut to 77, CLIP-L padded with "!", no CLIP cut); this
//! module follows diffusers, whose outputs the tests compare with.
//!
//! C-ERG (ERG Sec. 3.2): [`Sd3Text::encode`] with a [`TextRectification`] runs every encoder with
//! its range (`encoder_layers` in the order CLIP-L, CLIP-G, T5, or the same range in each); the
//! pooled vector passes through the CLIP layers too, so the negative's y is rectified as well.
use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

use crate::text::{ClipText, T5Encoder, TextRectification};
use crate::{Error, Result};

/// CLIP's context length.
pub const CLIP_TOKENS: usize = 77;

/// The three text encoders and their tokenizers.
pub struct Sd3Text {
    /// CLIP-L/14.
    pub clip_l: ClipText,
    /// OpenCLIP bigG/14.
    pub clip_g: ClipText,
    /// T5-XXL; `None` runs SD3 without it (zeros in its place, as diffusers).
    pub t5: Option<T5Encoder>,
    tokenizers: Option<[Tokenizer; 3]>,
    /// T5 tokens T (diffusers' `max_sequence_length`, 256).
    pub max_sequence_length: usize,
    /// The T5 width W (the MMDiT's context width).
    pub context_width: usize,
}

/// Token ids of one prompt for one encoder: `ids` with special tokens, cut to `len` keeping the
/// last id (end of text), padded with `pad`. Returns the row and whether it was cut.
fn fit(mut ids: Vec<u32>, len: usize, pad: u32) -> (Vec<u32>, bool) {
    let cut = ids.len() > len;
    if cut {
        let last = *ids.last().expect("non-empty");
        ids.truncate(len - 1);
        ids.push(last);
    }
    ids.resize(len, pad);
    (ids, cut)
}

fn token_id(tok: &Tokenizer, token: &str, which: &str) -> Result<u32> {
    tok.token_to_id(token).ok_or_else(|| Error::hp(format!("the {which} tokenizer has no token {token:?}: is it the right tokenizer.json?")))
}

impl Sd3Text {
    /// The encoders (with tokenizers in the order CLIP-L, CLIP-G, T5, or `None` to encode only
    /// given token ids). `context_width`: the MMDiT's context width (≥ the two CLIP widths
    /// together and = T5's width when T5 is present). Errors: widths that do not fit.
    pub fn new(
        clip_l: ClipText,
        clip_g: ClipText,
        t5: Option<T5Encoder>,
        tokenizers: Option<[Tokenizer; 3]>,
        max_sequence_length: usize,
        context_width: usize,
    ) -> Result<Self> {
        let clip_w = clip_l.config().hidden_size + clip_g.config().hidden_size;
        if clip_w > context_width {
            return Err(Error::shape(format!("CLIP states are {clip_w} wide, the context only {context_width}")));
        }
        if let Some(t5) = &t5 {
            if t5.config().d_model != context_width {
                return Err(Error::shape(format!("T5 is {} wide, the MMDiT's context {context_width}", t5.config().d_model)));
            }
        }
        if max_sequence_length == 0 {
            return Err(Error::hp("max_sequence_length must be >= 1"));
        }
        let tokenizers = tokenizers.map(|mut ts| {
            for t in ts.iter_mut() {
                t.with_padding(None);
                let _ = t.with_truncation(None);
            }
            ts
        });
        Ok(Self { clip_l, clip_g, t5, tokenizers, max_sequence_length, context_width })
    }

    /// Length of a packed id row: 77 + 77 + T.
    pub fn ids_len(&self) -> usize {
        2 * CLIP_TOKENS + self.max_sequence_length
    }

    /// Context tokens 77 + T.
    pub fn context_len(&self) -> usize {
        CLIP_TOKENS + self.max_sequence_length
    }

    /// Width of the pooled vector (CLIP-L + CLIP-G projections).
    pub fn pooled_width(&self) -> usize {
        self.clip_l.config().projection_dim + self.clip_g.config().projection_dim
    }

    /// Packed token ids (B, 77 + 77 + T) u32 of `prompts` (module docs). A prompt cut for CLIP or
    /// T5 is reported on stderr. Errors: no tokenizers loaded.
    pub fn token_ids(&self, prompts: &[&str], device: &Device) -> Result<Tensor> {
        let [tl, tg, t5] = self.tokenizers.as_ref().ok_or_else(|| Error::hp("this SD3 pipeline was loaded without tokenizers; pass token ids"))?;
        let enc = |t: &Tokenizer, p: &str| -> Result<Vec<u32>> {
            Ok(t.encode(p, true).map_err(|e| Error::Other(format!("tokenize {p:?}: {e}")))?.get_ids().to_vec())
        };
        let pad_l = token_id(tl, "<|endoftext|>", "CLIP-L")?;
        let pad_g = token_id(tg, "!", "CLIP-G")?;
        let pad_t5 = t5.token_to_id("<pad>").unwrap_or(0);
        let mut all = Vec::with_capacity(prompts.len() * self.ids_len());
        for p in prompts {
            let (l, cut_l) = fit(enc(tl, p)?, CLIP_TOKENS, pad_l);
            let (g, _) = fit(enc(tg, p)?, CLIP_TOKENS, pad_g);
            let (t, cut_t) = fit(enc(t5, p)?, self.max_sequence_length, pad_t5);
            if cut_l {
                eprintln!("warning: the prompt {p:?} is longer than CLIP's {CLIP_TOKENS} tokens; CLIP-L and CLIP-G see it cut (as diffusers)");
            }
            if cut_t && self.t5.is_some() {
                eprintln!("warning: the prompt {p:?} is longer than {} T5 tokens (max_sequence_length); T5 sees it cut", self.max_sequence_length);
            }
            all.extend(l);
            all.extend(g);
            all.extend(t);
        }
        Ok(Tensor::from_vec(all, (prompts.len(), self.ids_len()), device)?)
    }

    /// The conditioning of packed ids (B, 77 + 77 + T) u32: context (B, 77 + T, W) and pooled y
    /// (B, 2048), with C-ERG's `rect` (None = the plain encoders). Computed in the encoders' dtype,
    /// returned in f32. Errors: ids of another length; `rect` outside an encoder's layers.
    pub fn encode(&self, ids: &Tensor, rect: Option<&TextRectification>) -> Result<(Tensor, Tensor)> {
        let (b, n) = ids.dims2()?;
        if n != self.ids_len() {
            return Err(Error::shape(format!("SD3 token ids have {n} positions, expected 77 + 77 + {} = {}", self.max_sequence_length, self.ids_len())));
        }
        let f32 = candle_core::DType::F32;
        let r = |i: usize| rect.map(|r| self.rect_for(r, i));
        let l = self.clip_l.forward(&ids.narrow(1, 0, CLIP_TOKENS)?, r(0).as_ref())?;
        let g = self.clip_g.forward(&ids.narrow(1, CLIP_TOKENS, CLIP_TOKENS)?, r(1).as_ref())?;
        let clip = Tensor::cat(&[l.penultimate.to_dtype(f32)?, g.penultimate.to_dtype(f32)?], 2)?; // (B, 77, 768 + 1280)
        let clip = clip.pad_with_zeros(2, 0, self.context_width - clip.dim(2)?)?; // (B, 77, W)
        let t5_ids = ids.narrow(1, 2 * CLIP_TOKENS, self.max_sequence_length)?;
        let t5 = match &self.t5 {
            Some(t5) => t5.forward(&t5_ids, r(2).as_ref())?.to_dtype(f32)?, // (B, T, W)
            None => Tensor::zeros((b, self.max_sequence_length, self.context_width), f32, ids.device())?,
        };
        let context = Tensor::cat(&[clip, t5], 1)?; // (B, 77 + T, W)
        let pooled = Tensor::cat(&[l.pooled.to_dtype(f32)?, g.pooled.to_dtype(f32)?], 1)?; // (B, 2048)
        Ok((context, pooled))
    }

    /// Encoder `i`'s rectification: its own range from `encoder_layers`, or the shared range cut
    /// to its depth.
    fn rect_for(&self, rect: &TextRectification, i: usize) -> TextRectification {
        let r = rect.for_encoder(i);
        if rect.encoder_layers.is_some() {
            return r;
        }
        let d = self.depths()[i.min(2)];
        TextRectification { l_min: r.l_min.min(d), l_max: r.l_max.min(d), ..r }
    }

    /// Layers of [CLIP-L, CLIP-G, T5] (T5: 0 when absent).
    pub fn depths(&self) -> [usize; 3] {
        [self.clip_l.layers(), self.clip_g.layers(), self.t5.as_ref().map_or(0, |t| t.layers())]
    }

    /// Deepest encoder's layers (C-ERG's range check across encoders).
    pub fn max_layers(&self) -> usize {
        self.clip_l.layers().max(self.clip_g.layers()).max(self.t5.as_ref().map_or(0, |t| t.layers()))
    }

    /// Checks `rect` against every encoder's depth, naming the encoder.
    pub fn validate(&self, rect: &TextRectification) -> Result<()> {
        let mut depths = vec![("CLIP-L", self.clip_l.layers()), ("CLIP-G", self.clip_g.layers())];
        if let Some(t5) = &self.t5 {
            depths.push(("T5", t5.layers()));
        }
        for (i, (name, d)) in depths.into_iter().enumerate() {
            self.rect_for(rect, i).validate(d).map_err(|e| Error::hp(format!("C-ERG in {name}: {e}")))?;
        }
        Ok(())
    }
}
