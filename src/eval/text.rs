//! Text-to-image evaluation (the Table 1 analogue): prompts drawn from the emoji captions, images
//! sampled with a method, and the metrics of [`super::Scorer::metrics`] against the training
//! images. Consistency is the shipped classifier's agreement with the prompt's emoji category
//! (the paper uses CLIPScore/VQAScore on COCO; here no captioned reference set of that kind
//! exists, and CLIP can be plugged in as the feature extractor where its weights are available).

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::run::{evaluate_conditions, run_key, Conditions, Scorer};
use super::{EvalConfig, ResultsFile, RunRecord};
use crate::data::emoji::Meta;
use crate::guidance::{Guidance, Models};
use crate::models::mmdit::TextToImage;
use crate::{Error, Result};

/// Evaluation prompts with the class (emoji category) each should depict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptSet {
    /// The prompts.
    pub prompts: Vec<String>,
    /// Class index of each prompt (into the data set's classes).
    pub classes: Vec<u32>,
}

impl PromptSet {
    /// `per_class` prompts of each emoji category: the names (caption before `;`) of items spread
    /// evenly through the category's list, each name once. Deterministic.
    /// Errors: a category with fewer distinct names than `per_class`.
    pub fn emoji(meta: &Meta, per_class: usize) -> Result<Self> {
        let (mut prompts, mut classes) = (vec![], vec![]);
        for (c, class) in meta.classes.iter().enumerate() {
            let mut names: Vec<String> = vec![];
            for it in meta.items.iter().filter(|it| it.label as usize == c) {
                let name = it.caption.split(';').next().unwrap_or("").trim().to_string();
                if !name.is_empty() && !names.contains(&name) {
                    names.push(name);
                }
            }
            if names.len() < per_class {
                return Err(Error::hp(format!("class {class} has {} distinct names, fewer than {per_class}", names.len())));
            }
            for j in 0..per_class {
                prompts.push(names[j * names.len() / per_class].clone());
                classes.push(c as u32);
            }
        }
        Ok(Self { prompts, classes })
    }

    /// A short stable hash of the prompts (part of run keys).
    pub fn hash(&self) -> String {
        let h = crate::rng::fnv1a(self.prompts.join("\n").as_bytes());
        format!("{h:016x}")
    }
}

/// Samples `samples_per_prompt` images for each prompt of `prompts` with `guidance` (sample i of
/// the run from seed stream (cfg.seed, i)), and computes FID, precision, recall, density,
/// coverage against `reference` and consistency (the classifier's accuracy on the prompts'
/// classes; NaN for unconditional methods) with `scorer`. `cfg.samples_per_class` is ignored.
///
/// Errors: those of [`super::run::evaluate_conditions`]; prompts the tokenizer rejects.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_prompts(
    models: Models<'_, TextToImage>,
    guidance: &Guidance,
    scorer: &Scorer,
    prompts: &PromptSet,
    samples_per_prompt: usize,
    cfg: &EvalConfig,
    device: &Device,
    on_step: impl FnMut(usize, usize),
) -> Result<RunRecord> {
    let expanded: Vec<&str> = prompts.prompts.iter().flat_map(|p| std::iter::repeat_n(p.as_str(), samples_per_prompt)).collect();
    let ids = models.main.prompt_ids(&expanded, device)?; // (P·S, L)
    let wanted: Vec<u32> = prompts.classes.iter().flat_map(|&c| std::iter::repeat_n(c, samples_per_prompt)).collect();
    let wanted = Tensor::new(wanted.as_slice(), device)?;
    let key = run_key(guidance, &key_config(cfg, prompts, samples_per_prompt));
    evaluate_conditions(models, guidance, &Conditions { conditions: &ids, classes: &wanted, key }, scorer, cfg, device, on_step)
}

/// The configuration whose [`run_key`] identifies a text-to-image run (prompts and samples per
/// prompt included).
pub fn key_config(cfg: &EvalConfig, prompts: &PromptSet, samples_per_prompt: usize) -> EvalConfig {
    let mut k = cfg.clone();
    k.samples_per_class = samples_per_prompt;
    k.features = Some(format!("{}|t2i-prompts:{}", cfg.features.clone().unwrap_or_default(), prompts.hash()));
    k
}

/// Everything a text-to-image evaluation on the emoji needs, loaded once: the model and its weak
/// early checkpoint, the [`Scorer`] (classifier, data, reference features) and the prompts.
pub struct TextBench {
    /// The model being evaluated (with its text encoder).
    pub model: TextToImage,
    /// Its card.
    pub card: crate::checkpoint::ModelCard<crate::models::mmdit::TextToImageConfig>,
    /// AutoGuidance's weak model.
    pub weak: TextToImage,
    /// Classifier, data and reference features.
    pub scorer: Scorer,
    /// The evaluation prompts.
    pub prompts: PromptSet,
    /// Seeds per prompt.
    pub samples_per_prompt: usize,
    /// Content hash (SHA-256) of each weight file loaded, by role (see [`EvalConfig::weights`]).
    pub weights: std::collections::BTreeMap<String, String>,
}

impl TextBench {
    /// Loads the model and weak model (text encoder through hf-hub), the [`Scorer`] at the model's
    /// resolution, and [`PromptSet::emoji`] with `prompts_per_class`.
    /// Errors: missing or corrupt files; the text encoder not in the hf-hub cache.
    pub fn load(
        checkpoint: &std::path::Path,
        weak: &std::path::Path,
        classifier: &std::path::Path,
        prompts_per_class: usize,
        samples_per_prompt: usize,
        device: &Device,
    ) -> Result<Self> {
        let (model, card) = TextToImage::load_with_hub_encoder(checkpoint, device)?;
        let weak_file = weak;
        let weak = TextToImage::load_with_hub_encoder(weak_file, device)?.0;
        let scorer = Scorer::load(classifier, card.config.image_size.0, device)?;
        let meta = crate::data::emoji::load_meta(crate::data::emoji::DEFAULT_DIR)?;
        let prompts = PromptSet::emoji(&meta, prompts_per_class)?;
        let encoder = crate::hub::WeightSource::hub(crate::text::minilm::HUB_REPO, "model.safetensors").resolve()?;
        let weights = super::run::weight_hashes(&[("main", checkpoint), ("weak", weak_file), ("classifier", classifier), ("text_encoder", &encoder)])?;
        Ok(Self { model, card, weak, scorer, prompts, samples_per_prompt, weights })
    }

    /// [`Self::load`] from a [`super::BenchPaths`] (model, weak model, classifier, and optional
    /// pretrained features replacing the classifier's for the distribution metrics).
    /// Errors: as [`Self::load`]; unknown features or unreadable feature weights.
    pub fn from_paths(paths: &super::BenchPaths, prompts_per_class: usize, samples_per_prompt: usize, device: &Device) -> Result<Self> {
        let mut bench = Self::load(&paths.checkpoint, &paths.weak_checkpoint, &paths.classifier, prompts_per_class, samples_per_prompt, device)?;
        if let Some((name, source)) = &paths.features {
            bench.weights.insert("features".into(), super::run::feature_weights_hash(source)?);
            bench.scorer.set_extractor(crate::features::load(name, source, device)?, device)?;
        }
        Ok(bench)
    }

    /// The key of a run of `guidance` with `cfg` on this bench.
    pub fn key(&self, guidance: &Guidance, cfg: &EvalConfig) -> String {
        run_key(guidance, &key_config(&cfg.with_weights(&self.weights), &self.prompts, self.samples_per_prompt))
    }

    /// One evaluation run (see [`evaluate_prompts`]).
    pub fn evaluate(&self, guidance: &Guidance, cfg: &EvalConfig, device: &Device, on_step: impl FnMut(usize, usize)) -> Result<RunRecord> {
        let models = Models { main: &self.model, weak: Some(&self.weak) };
        evaluate_prompts(models, guidance, &self.scorer, &self.prompts, self.samples_per_prompt, &cfg.with_weights(&self.weights), device, on_step)
    }

    /// Evaluates each labelled variant (or reuses its record from `results`), in order, with a
    /// progress bar per run ([`super::report::cached_runs`]).
    /// Errors: those of the runs; an unwritable results file.
    pub fn evaluate_variants(
        &self,
        variants: &[(String, Guidance)],
        cfg: &EvalConfig,
        results: &mut ResultsFile,
        device: &Device,
    ) -> Result<Vec<(String, RunRecord)>> {
        super::report::cached_runs(variants, results, |g| self.key(g, cfg), |_, g, on_step| self.evaluate(g, cfg, device, on_step))
    }
}
