//! Reproducible initialisation: a candle-nn `VarBuilder` backend that creates each missing
//! variable from a generator seeded by (seed, tensor name), so that the same seed gives the
//! same initial weights whatever the order of construction, and registers it in a `VarMap`
//! for training. (candle's own `VarMap` init uses the device RNG, which cannot be seeded on CPU.)
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::{var_builder::SimpleBackend, Init, VarBuilder, VarMap};
use rand_distr::{Distribution, Normal, Uniform};

use crate::rng;

/// A `VarMap` whose missing variables are initialised from a seeded generator.
#[derive(Clone)]
pub struct SeededVarMap {
    /// The trainable variables, by checkpoint name.
    pub varmap: VarMap,
    seed: u64,
}

impl SeededVarMap {
    /// An empty map that will initialise variables from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { varmap: VarMap::new(), seed }
    }
}

struct Backend(Arc<SeededVarMap>);

fn fan_in(shape: &Shape) -> usize {
    let d = shape.dims();
    if d.len() < 2 {
        d.iter().product::<usize>().max(1)
    } else {
        d[1..].iter().product()
    }
}

fn init_tensor(seed: u64, name: &str, shape: &Shape, init: Init, dev: &Device) -> candle_core::Result<Tensor> {
    let n = shape.elem_count();
    let mut r = rng::named(seed, name);
    let v: Vec<f32> = match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Randn { mean, stdev } => {
            let d = Normal::new(mean, stdev.max(1e-12)).map_err(candle_core::Error::wrap)?;
            (0..n).map(|_| d.sample(&mut r) as f32).collect()
        }
        Init::Uniform { lo, up } => {
            let d = Uniform::new(lo, up.max(lo + 1e-12)).map_err(candle_core::Error::wrap)?;
            (0..n).map(|_| d.sample(&mut r) as f32).collect()
        }
        Init::Kaiming { .. } => {
            // candle's default for `linear`: kaiming-uniform with ReLU gain, fan-in.
            let bound = (2.0f64).sqrt() * (3.0 / fan_in(shape) as f64).sqrt();
            let d = Uniform::new(-bound, bound).map_err(candle_core::Error::wrap)?;
            (0..n).map(|_| d.sample(&mut r) as f32).collect()
        }
    };
    Tensor::from_vec(v, shape.clone(), dev)
}

impl SimpleBackend for Backend {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut data = self.0.varmap.data().lock().unwrap();
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("shape mismatch for {name}: {:?} vs {:?}", v.shape(), s);
            }
            return v.as_tensor().to_dtype(dtype);
        }
        let t = init_tensor(self.0.seed, name, &s, h, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        let data = self.0.varmap.data().lock().unwrap();
        match data.get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype),
            None => candle_core::bail!("cannot find {name} in the seeded varmap"),
        }
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.0.varmap.data().lock().unwrap().contains_key(name)
    }
}

/// A `VarBuilder` whose variables live in `map` (created on first use, seeded by name).
pub fn seeded_varbuilder(map: &SeededVarMap, dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(Backend(Arc::new(map.clone()))), dtype, device.clone())
}
