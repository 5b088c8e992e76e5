//! An append-only results file: one JSON record per line (JSON Lines). A sweep checks
//! [`ResultsFile::contains`] before each run and appends after it, so an interrupted sweep resumes
//! where it stopped and never loses a finished run. A torn last line (a kill during a write) is
//! ignored on reading and overwritten by the next append.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One evaluation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique key of the run's settings (method, hyperparameters, seed, steps, sample count).
    pub key: String,
    /// Method name.
    pub method: String,
    /// The full method configuration.
    pub guidance: serde_json::Value,
    /// Sampling seed.
    pub seed: u64,
    /// Euler steps.
    pub steps: usize,
    /// Function evaluations per step.
    pub nfe_per_step: f64,
    /// Samples generated.
    pub samples: usize,
    /// Wall time of sampling and evaluation, seconds.
    pub wall_s: f64,
    /// Metric name → value (percent for precision/recall/density/coverage/consistency). A metric
    /// that does not apply (consistency of an unconditional method) is NaN, written as `null`.
    #[serde(deserialize_with = "nan_from_null")]
    pub metrics: BTreeMap<String, f64>,
    /// Content hash (SHA-256) of each weight file the run used, by role (part of the key).
    #[serde(default)]
    pub weights: BTreeMap<String, String>,
}

/// JSON has no NaN: serde_json writes it as `null`; read `null` back as NaN.
fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<BTreeMap<String, f64>, D::Error> {
    let m: BTreeMap<String, Option<f64>> = BTreeMap::deserialize(d)?;
    Ok(m.into_iter().map(|(k, v)| (k, v.unwrap_or(f64::NAN))).collect())
}

/// A JSON Lines file of [`RunRecord`]s.
pub struct ResultsFile {
    path: PathBuf,
    records: Vec<RunRecord>,
}

impl ResultsFile {
    /// Opens (or starts) the file at `path`, reading the complete records already there.
    ///
    /// Errors: unreadable file; a corrupt line other than a torn last one.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut records = Vec::new();
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let complete = text.ends_with('\n');
            for (i, line) in lines.iter().enumerate() {
                match serde_json::from_str::<RunRecord>(line) {
                    Ok(r) => records.push(r),
                    Err(_) if i + 1 == lines.len() && !complete => {} // torn last line
                    Err(e) => return Err(Error::corrupt(&path, format!("line {}: {e}", i + 1))),
                }
            }
            // rewrite without a torn tail so that appends start on a fresh line
            if !complete && !text.is_empty() {
                let body: String = records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
                crate::checkpoint::write_atomic(&path, body.as_bytes())?;
            }
        }
        Ok(Self { path, records })
    }

    /// Records read or appended so far.
    pub fn records(&self) -> &[RunRecord] {
        &self.records
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether a run with this key is finished.
    pub fn contains(&self, key: &str) -> bool {
        self.records.iter().any(|r| r.key == key)
    }

    /// Appends a record (one line, flushed and synced).
    pub fn append(&mut self, record: RunRecord) -> Result<()> {
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let line = serde_json::to_string(&record).map_err(|e| Error::Other(e.to_string()))? + "\n";
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        self.records.push(record);
        Ok(())
    }
}
