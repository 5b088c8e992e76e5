//! One evaluation split across processes or machines: shard i of n samples the rows
//! [⌊B·i/n⌋, ⌊B·(i+1)/n⌋) of the full request, with the same per-sample seeds as the whole run
//! (sample r always draws from stream (seed, r)), and saves what the metrics need — the features
//! of its images and the classifier's hits — as a [`ShardPart`]. [`merge`] checks that the parts
//! are the n disjoint shards of one run (same key, every index once) and computes the metrics on
//! all rows together: the record equals the unsharded run's (up to the float differences of
//! batching the forward passes differently; tested).
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::run::{metrics_from_parts, weights_used, Conditions, EvalConfig, SampleScorer};
use super::RunRecord;
use crate::guidance::{Condition, Guidance, Models};
use crate::models::Denoiser;
use crate::sample::{sample, SampleConfig};
use crate::{Error, Result};

/// Shard `index` of `count` (written `i/n`, 0 ≤ i < n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Which part, 0-based.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::hp(format!("--shard {s:?}: write i/n with 0 <= i < n, e.g. 0/4"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// The rows [lo, hi) of `total` this shard samples.
    pub fn rows(&self, total: usize) -> (usize, usize) {
        (total * self.index / self.count, total * (self.index + 1) / self.count)
    }
}

/// What a shard keeps for the merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardMeta {
    /// The run's key (that of the unsharded run).
    pub key: String,
    /// Which shard.
    pub shard: Shard,
    /// Its rows [lo, hi) of `total`.
    pub rows: (usize, usize),
    /// Rows of the whole run.
    pub total: usize,
    /// Method name and configuration, seed, steps, NFE per step, wall time, weights (as
    /// [`RunRecord`]).
    pub method: String,
    /// The method's configuration.
    pub guidance: serde_json::Value,
    /// Sampling seed.
    pub seed: u64,
    /// Steps.
    pub steps: usize,
    /// NFE per step.
    pub nfe_per_step: f64,
    /// Seconds this shard took.
    pub wall_s: f64,
    /// Weight hashes.
    pub weights: std::collections::BTreeMap<String, String>,
}

/// A shard's output: its features (n, F) and consistency hits (n,) (None for unconditional methods).
pub struct ShardPart {
    /// Settings and provenance.
    pub meta: ShardMeta,
    /// Features of its images (n, F) f32.
    pub features: Tensor,
    /// 1 where the classifier saw the requested class (n,) f32.
    pub hits: Option<Tensor>,
}

impl ShardPart {
    /// `<dir>/<key>.<i>of<n>.safetensors` (its metadata in the sidecar `.json`).
    pub fn path(dir: &Path, key: &str, shard: Shard) -> PathBuf {
        dir.join(format!("{key}.{}of{}.safetensors", shard.index, shard.count))
    }

    /// Writes the part atomically (tensors with checksums, then the metadata).
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = Self::path(dir, &self.meta.key, self.meta.shard);
        let mut t = std::collections::HashMap::from([("features".to_string(), self.features.clone())]);
        if let Some(h) = &self.hits {
            t.insert("hits".into(), h.clone());
        }
        crate::checkpoint::save_tensors(&t, &path, candle_core::DType::F32)?;
        crate::checkpoint::write_atomic(
            &path.with_extension("json"),
            serde_json::to_string_pretty(&self.meta).map_err(|e| Error::Other(e.to_string()))?.as_bytes(),
        )?;
        Ok(path)
    }

    /// Reads a part written by [`Self::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let meta_path = path.with_extension("json");
        let meta: ShardMeta = serde_json::from_str(&std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?)
            .map_err(|e| Error::corrupt(&meta_path, e.to_string()))?;
        let t = crate::checkpoint::load_tensors(path, &Device::Cpu)?;
        let features = t.get("features").cloned().ok_or_else(|| Error::corrupt(path, "no features"))?;
        Ok(Self { meta, features, hits: t.get("hits").cloned() })
    }

    /// Every part of run `key` in `dir`.
    pub fn find(dir: &Path, key: &str) -> Result<Vec<Self>> {
        let mut out = vec![];
        if !dir.exists() {
            return Ok(out);
        }
        for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{key}.")) && name.ends_with(".safetensors") {
                out.push(Self::load(&e.path())?);
            }
        }
        Ok(out)
    }
}

/// Shard `shard` of the evaluation of `request` (see [`super::evaluate_conditions`]): samples
/// its rows with their global seeds and keeps their features and hits.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_shard<M: Denoiser>(
    models: Models<'_, M>,
    guidance: &Guidance,
    request: &Conditions<'_>,
    scorer: &dyn SampleScorer,
    cfg: &EvalConfig,
    shard: Shard,
    device: &Device,
    on_step: impl FnMut(usize, usize),
) -> Result<ShardPart> {
    let t0 = Instant::now();
    let total = request.conditions.dim(0)?;
    let (lo, hi) = shard.rows(total);
    if hi <= lo {
        return Err(Error::hp(format!("shard {}/{} of {total} samples is empty: use fewer shards", shard.index, shard.count)));
    }
    let scfg = SampleConfig { num_steps: cfg.num_steps, seed: cfg.seed, batch_size: cfg.batch_size };
    let s = sample(models, guidance, &request.conditions.narrow(0, lo, hi - lo)?, &scfg, lo as u64, device, on_step)?;
    if !crate::checkpoint::all_finite(&s.images)? {
        return Err(Error::Other(format!("shard {}/{}: the samples hold NaN or infinite values; refusing to score them", shard.index, shard.count)));
    }
    let features = scorer.sample_features(&s.images, device)?;
    let hits = match guidance.positive == Condition::Given {
        true => scorer.sample_hits(&s.images, &request.classes.narrow(0, lo, hi - lo)?)?,
        false => None,
    };
    let meta = ShardMeta {
        key: request.key.clone(),
        shard,
        rows: (lo, hi),
        total,
        method: guidance.name.clone(),
        guidance: serde_json::to_value(guidance).map_err(|e| Error::Other(e.to_string()))?,
        seed: cfg.seed,
        steps: cfg.num_steps,
        nfe_per_step: s.nfe_per_step,
        wall_s: t0.elapsed().as_secs_f64(),
        weights: weights_used(guidance, &cfg.weights),
    };
    Ok(ShardPart { meta, features, hits })
}

/// The record of a run from all its shards: checks they are the `count` disjoint parts of one
/// run (same key, each index once, rows covering it), then scores all rows together with
/// [`super::run::metrics_from_parts`]. `wall_s` is the parts' sum. Errors name what is missing.
pub fn merge(parts: &[ShardPart], scorer: &dyn SampleScorer, cfg: &EvalConfig) -> Result<RunRecord> {
    let first = parts.first().ok_or_else(|| Error::hp("no shards to merge"))?;
    let (key, n) = (&first.meta.key, first.meta.shard.count);
    let mut sorted: Vec<&ShardPart> = parts.iter().collect();
    sorted.sort_by_key(|p| p.meta.shard.index);
    let idx: Vec<usize> = sorted.iter().map(|p| p.meta.shard.index).collect();
    if sorted.iter().any(|p| &p.meta.key != key || p.meta.shard.count != n) || idx != (0..n).collect::<Vec<_>>() {
        return Err(Error::hp(format!("the shards of {key} are incomplete or mixed: have {idx:?} of 0..{n}")));
    }
    let mut next = 0;
    for p in &sorted {
        if p.meta.rows.0 != next || p.features.dim(0)? != p.meta.rows.1 - p.meta.rows.0 {
            return Err(Error::hp(format!("shard {}/{n} of {key} does not continue at row {next}", p.meta.shard.index)));
        }
        next = p.meta.rows.1;
    }
    if next != first.meta.total {
        return Err(Error::hp(format!("the shards of {key} cover {next} of {} rows", first.meta.total)));
    }
    let features = Tensor::cat(&sorted.iter().map(|p| p.features.clone()).collect::<Vec<_>>(), 0)?;
    let hits = match sorted.iter().map(|p| p.hits.clone()).collect::<Option<Vec<_>>>() {
        Some(h) => Some(Tensor::cat(&h, 0)?),
        None => None,
    };
    let metrics = metrics_from_parts(scorer.reference(), &features, hits.as_ref(), cfg)?;
    let m = &first.meta;
    Ok(RunRecord {
        key: key.clone(),
        method: m.method.clone(),
        guidance: m.guidance.clone(),
        seed: m.seed,
        steps: m.steps,
        nfe_per_step: m.nfe_per_step,
        samples: next,
        wall_s: sorted.iter().map(|p| p.meta.wall_s).sum(),
        metrics,
        weights: m.weights.clone(),
    })
}
