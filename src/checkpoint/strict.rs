//! Building a model from a checkpoint so that the card and the weights must agree: every tensor
//! the model asks for must be in the file with the right shape (candle checks that), and every
//! tensor in the file must be asked for (checked here), so a card with the wrong depth or a file
//! of another model fails instead of loading part of it.
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::{Error, Result};

/// Named tensors that remember which names were read.
#[derive(Clone)]
struct Tracked {
    tensors: Arc<HashMap<String, Tensor>>,
    used: Arc<Mutex<BTreeSet<String>>>,
}

impl SimpleBackend for Tracked {
    fn get(&self, s: Shape, name: &str, h: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = SimpleBackend::get(self.tensors.as_ref(), s, name, h, dtype, dev)?;
        self.used.lock().expect("not poisoned").insert(name.to_string());
        Ok(t)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = SimpleBackend::get_unchecked(self.tensors.as_ref(), name, dtype, dev)?;
        self.used.lock().expect("not poisoned").insert(name.to_string());
        Ok(t)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Builds a model with `build` from the `tensors` of the file `path` (f32 on `device`) and checks
/// that it used every tensor.
///
/// Errors: the model asks for a tensor the file lacks or has with another shape, or leaves
/// tensors of the file unused; both mean the file does not hold the model its card describes.
pub fn build_strict<M>(path: &Path, tensors: HashMap<String, Tensor>, device: &Device, build: impl FnOnce(VarBuilder<'static>) -> Result<M>) -> Result<M> {
    build_strict_dtype(path, tensors, DType::F32, device, build)
}

/// [`build_strict`] with the model's weights in `dtype` (f16/bf16 on GPUs).
pub fn build_strict_dtype<M>(
    path: &Path,
    tensors: HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder<'static>) -> Result<M>,
) -> Result<M> {
    let tracked = Tracked { tensors: Arc::new(tensors), used: Arc::new(Mutex::new(BTreeSet::new())) };
    let vb = VarBuilder::from_backend(Box::new(tracked.clone()), dtype, device.clone());
    let model = build(vb).map_err(|e| Error::corrupt(path, format!("the weights do not match the model configuration: {e}")))?;
    let used = tracked.used.lock().expect("not poisoned");
    let mut unused: Vec<&String> = tracked.tensors.keys().filter(|k| !used.contains(*k)).collect();
    if !unused.is_empty() {
        unused.sort();
        let shown: Vec<&str> = unused.iter().take(4).map(|s| s.as_str()).collect();
        return Err(Error::corrupt(
            path,
            format!(
                "{} tensors of the file are not part of the configured model ({}{}): the configuration (card) does not describe these weights",
                unused.len(),
                shown.join(", "),
                if unused.len() > 4 { ", ..." } else { "" }
            ),
        ));
    }
    Ok(model)
}
