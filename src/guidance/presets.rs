//! Every method of the ERG paper's comparisons (Tables 1–3, Appendix D) as a [`Guidance`] value,
//! with the published defaults; block indices are scaled from the reference depth to the model's
//! depth with [`scale_block_range`].
//!
//! | name | positive | terms (negative branch, scale) | NFE |
//! |---|---|---|---|
//! | `none` | c | — | 1 |
//! | `uncond` | ∅ | — | 1 |
//! | `cfg` | c | (∅, w − 1) | 2 |
//! | `apg` | c | (∅, w − 1), APG combiner | 2 |
//! | `cads` | c + CADS | (∅, w − 1) | 2 |
//! | `pag` | c | (c, identity attention in the middle blocks, s = 3) | 2 |
//! | `seg` | c | (c, queries smoothed with σ = ∞ in the middle blocks, s = 3) | 2 |
//! | `sag` | c | (c with SAG's blurred input, s = 0.75) | 2 |
//! | `slg` | c | (∅, w − 1), (c, middle blocks skipped, s = 2.8) | 3 |
//! | `autoguidance` | c | (c on the weak model, w − 1) | 2 |
//! | `ierg`, `erg` | c | (∅, τ = 0.01 in blocks 12–15 of 28 when t > κ = 0.3, w − 1) | 2 |
//! | `cerg` (text) | c | (φ_c^τ: the prompt encoded with τ_c = 0.01 in every text layer, w − 1) | 2 |
//! | `ierg` (text) | c | (∅, τ = 0.01, γ = 1.5 in blocks 10–17 of 24 when t > κ = 0.4, w − 1) | 2 |
//! | `erg` (text) | c | (φ_c^τ with the I-ERG attention when t > κ, w − 1) | 2 |
//! | `erg+apg` | c | as `ierg`, APG combiner | 2 |
//! | `erg+cads` | c + CADS | as `ierg` | 2 |
//! | `cfg+pag`, `cfg+seg`, `cfg+sag` | c | (∅, w − 1) and the perturbed term | 3 |
//! | `pag-uncond`, `seg-uncond`, `sag-uncond`, `autoguidance-uncond`, `ierg-uncond` | ∅ | the perturbed term with ∅ | 2 |
//!
//! Methods adopted since the paper (the "Beyond the paper" chapter):
//!
//! | name | as | NFE |
//! |---|---|---|
//! | `cfg-zero-star`, `ierg-zero-star` | `cfg` / `ierg` with the CFG-Zero* combiner (optimised s*, zero-init of the first step) | 2 (0 on zeroed steps) |
//! | `cfg-interval`, `ierg-interval` | `cfg` / `ierg` inside the guidance interval σ ∈ (0.28, 5.42] (t ∈ [0.156, 0.781]) | 2 inside, 1 outside |
//! | `tcfg`, `ierg-tcfg` | `cfg` / `ierg` with tangential damping of the negative | 2 |
//! | `nag`, `cfg+nag` (text) | NAG (φ = 5, τ = 2.5, α = 0.25, every block) against the empty prompt, alone or with CFG | 2, 3 |
//!
//! For a class-conditional DiT there is no text encoder, so `erg` is I-ERG (C-ERG needs one).
//! For a text-to-image model ([`preset_for`] with the encoder's layer count) `ierg`, `cerg` and
//! `erg` (and `erg+apg`, `erg+cads`) use Table 7's text-to-image defaults ([`TextErg`]).
use serde::{Deserialize, Serialize};

use super::{Apg, Branch, Cads, CfgZeroStar, Combiner, Condition, Guidance, ModelChoice, NagBranch, Sag, Term, Window};
use crate::attention::{scale_block_range, AttentionPlan, Energy, Nag, Rectifier};
use crate::text::TextRectification;
use crate::{Error, Result};

/// I-ERG hyperparameters (Table 7 names): rectifier (τ, α, γ, K) in blocks [l_min, l_max) of the
/// negative branch when t > κ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IErg {
    /// Rectified-energy parameters.
    pub energy: Energy,
    /// Kickoff threshold κ.
    pub kappa: f64,
    /// First rectified block.
    pub l_min: usize,
    /// One past the last rectified block.
    pub l_max: usize,
}

impl IErg {
    /// Table 7's class-conditional defaults (DiT-XL/2): κ = 0.3, τ = 0.01, α = γ = K = 1,
    /// blocks 12–15 of 28, scaled to a model of `depth` blocks.
    pub fn class_conditional_defaults(depth: usize) -> Self {
        let (l_min, l_max) = scale_block_range(12, 15, 28, depth);
        Self { energy: Energy::temperature(0.01), kappa: 0.3, l_min, l_max }
    }
    /// Table 7's unconditional defaults (MMDiT-B/2 with empty prompt): κ = 0.2, τ = 0.01,
    /// α = γ = K = 1, blocks 10–17 of 24, scaled to `depth`.
    pub fn unconditional_defaults(depth: usize) -> Self {
        let (l_min, l_max) = scale_block_range(10, 17, 24, depth);
        Self { energy: Energy::temperature(0.01), kappa: 0.2, l_min, l_max }
    }
    /// The negative branch with this rectification and `condition`.
    pub fn branch(&self, condition: Condition) -> Branch {
        Branch { attention: AttentionPlan::blocks(Rectifier::Energy(self.energy), self.l_min, self.l_max), kappa: self.kappa, ..Branch::plain(condition) }
    }
}

/// ERG for text-to-image models (Table 7, text-to-image MMDiT): I-ERG with κ = 0.4, τ = 0.01,
/// α = 1, γ = 1.5, K = 1 in blocks 10–17 of 24 (scaled to the depth), and C-ERG with τ_c = 0.01
/// in every layer of the text encoder.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextErg {
    /// The denoiser part.
    pub ierg: IErg,
    /// The text-encoder part (C-ERG).
    pub text: TextRectification,
}

impl TextErg {
    /// Table 7's text-to-image defaults for a denoiser of `depth` blocks and a text encoder of
    /// `text_layers` layers.
    pub fn defaults(depth: usize, text_layers: usize) -> Self {
        let (l_min, l_max) = scale_block_range(10, 17, 24, depth);
        Self {
            ierg: IErg { energy: Energy { tau: 0.01, alpha: 1.0, gamma: 1.5, steps: 1 }, kappa: 0.4, l_min, l_max },
            text: TextRectification::new(0.01, 0, text_layers),
        }
    }
    /// Table 7's SD3-medium row: I-ERG with τ = 0.01, α = γ = K = 1 in blocks 6–8 of 24 when
    /// t > κ = 0.2; C-ERG with τ_c = 0.1 in CLIP-L layers 1–10 of 12, CLIP-G 1–31 of 32 and T5
    /// 1–22 of 24. Ranges "a–b" are read as [a, b), as everywhere in the crate (Table 7 does not
    /// say whether its ends are inclusive), and scaled to a denoiser of `depth` blocks and encoders
    /// of `encoder_layers` = [CLIP-L, CLIP-G, T5] layers.
    pub fn sd3(depth: usize, encoder_layers: [usize; 3]) -> Self {
        let (l_min, l_max) = scale_block_range(6, 8, 24, depth);
        let [l, g, t] = encoder_layers;
        let ranges = [scale_block_range(1, 10, 12, l), scale_block_range(1, 31, 32, g), scale_block_range(1, 22, 24, t)];
        Self {
            ierg: IErg { energy: Energy::temperature(0.01), kappa: 0.2, l_min, l_max },
            text: TextRectification { encoder_layers: Some(ranges), ..TextRectification::new(0.1, ranges[0].0, ranges[0].1) },
        }
    }
    /// C-ERG alone: the rectified prompt, standard attention.
    pub fn c_erg_branch(&self) -> Branch {
        Branch::plain(Condition::Rectified(self.text))
    }
    /// ERG: the rectified prompt, and the I-ERG attention when t > κ.
    pub fn erg_branch(&self) -> Branch {
        self.ierg.branch(Condition::Rectified(self.text))
    }
}

/// Names accepted by [`preset`].
pub const PRESET_NAMES: &[&str] = &[
    "none",
    "uncond",
    "cfg",
    "apg",
    "cads",
    "pag",
    "seg",
    "sag",
    "slg",
    "autoguidance",
    "ierg",
    "cerg",
    "erg",
    "erg+apg",
    "erg+cads",
    "cfg+pag",
    "cfg+seg",
    "cfg+sag",
    "pag-uncond",
    "seg-uncond",
    "sag-uncond",
    "autoguidance-uncond",
    "ierg-uncond",
    "cfg-zero-star",
    "ierg-zero-star",
    "cfg-interval",
    "ierg-interval",
    "tcfg",
    "ierg-tcfg",
    "nag",
    "cfg+nag",
];

fn middle(depth: usize) -> (usize, usize) {
    scale_block_range(12, 15, 28, depth)
}

fn term(negative: Branch, scale: f64) -> Term {
    Term { negative, scale, window: Window::default() }
}

/// PAG's perturbed term: identity attention in the middle blocks (PAG default scale 3.0).
pub fn pag_term(condition: Condition, depth: usize) -> Term {
    let (lo, hi) = middle(depth);
    term(Branch::perturbed(condition, Rectifier::Identity, lo, hi), 3.0)
}

/// SEG's perturbed term: queries smoothed with σ = ∞ in the middle blocks (SEG default scale 3.0).
pub fn seg_term(condition: Condition, depth: usize, sigma: f64) -> Term {
    let (lo, hi) = middle(depth);
    term(Branch::perturbed(condition, Rectifier::SmoothedQueries { sigma }, lo, hi), 3.0)
}

/// SAG's term: blurred re-noised input, mask from the middle block (SAG default scale 0.75).
pub fn sag_term(condition: Condition, depth: usize) -> Term {
    term(Branch { sag: Some(Sag { block: depth / 2, blur_sigma: 1.0 }), ..Branch::plain(condition) }, 0.75)
}

/// SLG's term: skip the blocks that SD3.5 skips (7–9 of 24), scaled; scale 2.8.
pub fn slg_term(depth: usize) -> Term {
    let (lo, hi) = scale_block_range(7, 10, 24, depth);
    term(Branch::perturbed(Condition::Given, Rectifier::SkipBlock, lo, hi), 2.8)
}

/// The methods of a checkpoint card's selection ([`crate::checkpoint::GuidanceSelection`], made
/// by `sweep`), method name → its selected `Guidance`.
/// Errors: a method whose JSON is not a `Guidance` (named).
pub fn from_selection(selection: &crate::checkpoint::GuidanceSelection) -> Result<std::collections::BTreeMap<String, Guidance>> {
    selection
        .methods
        .iter()
        .map(|(m, g)| {
            serde_json::from_value(g.clone()).map(|g| (m.clone(), g)).map_err(|e| Error::Other(format!("the selection of {m} is not a Guidance: {e}")))
        })
        .collect()
}

/// A method by name (see the module table), with guidance scale w for the CFG-like term and the
/// published defaults for the rest, for a class-conditional or unconditional model of `depth`
/// blocks (no text encoder: `cerg` is an error). See [`preset_for`].
pub fn preset(name: &str, guidance_scale: f64, depth: usize) -> Result<Guidance> {
    preset_for(name, guidance_scale, depth, None)
}

/// [`preset`] for a model of `depth` blocks whose text encoder has `text_layers` layers (`None`
/// without one): with a text encoder, `ierg`, `cerg`, `erg`, `erg+apg` and `erg+cads` use
/// [`TextErg::defaults`].
pub fn preset_for(name: &str, guidance_scale: f64, depth: usize, text_layers: Option<usize>) -> Result<Guidance> {
    preset_with_text(name, guidance_scale, depth, text_layers.map(|l| TextErg::defaults(depth, l)))
}

/// [`preset`] for a text-to-image model whose ERG settings are `text` (e.g. [`TextErg::sd3`]);
/// `None` for a model without a text encoder.
pub fn preset_with_text(name: &str, guidance_scale: f64, depth: usize, text: Option<TextErg>) -> Result<Guidance> {
    let w = guidance_scale;
    // The methods adopted since the paper: a base method with another combiner or an interval.
    let derived = |base: &str, f: &dyn Fn(Guidance) -> Result<Guidance>| -> Result<Guidance> { Ok(f(preset_with_text(base, w, depth, text)?)?.named(name)) };
    match name {
        "cfg-zero-star" => return derived("cfg", &|g| g.with_combiner(Combiner::CfgZeroStar(CfgZeroStar::default()))),
        "ierg-zero-star" => return derived("ierg", &|g| g.with_combiner(Combiner::CfgZeroStar(CfgZeroStar::default()))),
        "cfg-interval" => return derived("cfg", &|g| g.with_interval(Window::paper_interval())),
        "ierg-interval" => return derived("ierg", &|g| g.with_interval(Window::paper_interval())),
        "tcfg" => return derived("cfg", &|g| g.with_combiner(Combiner::Tcfg)),
        "ierg-tcfg" => return derived("ierg", &|g| g.with_combiner(Combiner::Tcfg)),
        _ => {}
    }
    if matches!(name, "nag" | "cfg+nag") {
        if text.is_none() {
            return Err(Error::hp(format!(
                "{name}: NAG guides between text contexts inside attention; it needs a text-to-image model (a class-conditional DiT receives its class through adaLN)"
            )));
        }
        let nag = Some(NagBranch { condition: Condition::Null, nag: Nag::defaults(depth) });
        let base = if name == "nag" { Guidance::none() } else { Guidance::cfg(w) };
        return Ok(Guidance { nag, ..base }.named(name));
    }
    if let Some(te) = text {
        let one = |n: &str, b: Branch| Guidance { name: n.into(), terms: vec![term(b, w - 1.0)], ..Guidance::none() };
        match name {
            "ierg" => return Ok(one(name, te.ierg.branch(Condition::Null))),
            "cerg" => return Ok(one(name, te.c_erg_branch())),
            "erg" => return Ok(one(name, te.erg_branch())),
            "erg+apg" => return Ok(Guidance { combiner: Combiner::Apg(Apg::default()), ..one(name, te.erg_branch()) }),
            "erg+cads" => return Ok(Guidance { cads: Some(Cads::default()), ..one(name, te.erg_branch()) }),
            _ => {}
        }
    } else if name == "cerg" {
        return Err(Error::hp("cerg (C-ERG) needs a text-to-image model with a text encoder; use ierg"));
    }
    let ierg = IErg::class_conditional_defaults(depth);
    let named = |mut g: Guidance| {
        g.name = name.to_string();
        g
    };
    let with_cfg = |t: Term| named(Guidance { terms: vec![Guidance::cfg(w).terms[0], t], ..Guidance::none() });
    let uncond = |t: Term| named(Guidance { positive: Condition::Null, terms: vec![t], ..Guidance::none() });
    let alone = |t: Term| named(Guidance { terms: vec![t], ..Guidance::none() });
    Ok(match name {
        "none" => Guidance::none(),
        "uncond" => Guidance::unconditional(),
        "cfg" => Guidance::cfg(w),
        "apg" => named(Guidance { combiner: Combiner::Apg(Apg::default()), ..Guidance::cfg(w) }),
        "cads" => named(Guidance { cads: Some(Cads::default()), ..Guidance::cfg(w) }),
        "pag" => alone(pag_term(Condition::Given, depth)),
        "seg" => alone(seg_term(Condition::Given, depth, f64::INFINITY)),
        "sag" => alone(sag_term(Condition::Given, depth)),
        "slg" => with_cfg(slg_term(depth)),
        "autoguidance" => alone(term(Branch { model: ModelChoice::Weak, ..Branch::plain(Condition::Given) }, w - 1.0)),
        "ierg" | "erg" => named(Guidance::i_erg(w, ierg)),
        "erg+apg" => named(Guidance { combiner: Combiner::Apg(Apg::default()), ..Guidance::i_erg(w, ierg) }),
        "erg+cads" => named(Guidance { cads: Some(Cads::default()), ..Guidance::i_erg(w, ierg) }),
        "cfg+pag" => with_cfg(pag_term(Condition::Given, depth)),
        "cfg+seg" => with_cfg(seg_term(Condition::Given, depth, f64::INFINITY)),
        "cfg+sag" => with_cfg(sag_term(Condition::Given, depth)),
        "pag-uncond" => uncond(pag_term(Condition::Null, depth)),
        "seg-uncond" => uncond(seg_term(Condition::Null, depth, f64::INFINITY)),
        "sag-uncond" => uncond(sag_term(Condition::Null, depth)),
        "autoguidance-uncond" => uncond(term(Branch { model: ModelChoice::Weak, ..Branch::plain(Condition::Null) }, w - 1.0)),
        "ierg-uncond" => named(Guidance::i_erg_unconditional(w, IErg::unconditional_defaults(depth))),
        _ => return Err(Error::hp(format!("unknown guidance {name:?}; known: {}", PRESET_NAMES.join(", ")))),
    })
}
