//! Seeded randomness. `Device::Cpu.set_seed` is not supported by candle, so every random tensor
//! of the crate (noise, timesteps, label dropout, initial weights) is drawn here on the host from
//! a seeded generator and then moved to the device: same seed ⇒ same numbers on every device.
use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::Result;

/// A generator seeded from a base seed and a stream label (e.g. the training step), so that
/// any step's randomness can be reproduced without replaying earlier steps.
pub fn stream(seed: u64, label: u64) -> StdRng {
    StdRng::seed_from_u64(splitmix(seed ^ splitmix(label.wrapping_add(0x9E37_79B9_7F4A_7C15))))
}

/// A generator for a named stream (FNV-1a hash of the name), e.g. one per weight tensor.
pub fn named(seed: u64, name: &str) -> StdRng {
    stream(seed, fnv1a(name.as_bytes()))
}

/// The 64-bit FNV-1a hash of `bytes`: a stable, platform-independent key (stream names, run keys).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Standard normal tensor of `shape` (f32) drawn from `rng`.
pub fn randn(rng: &mut StdRng, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// Uniform tensor in [lo, hi) of `shape` (f32) drawn from `rng`.
pub fn rand_uniform(rng: &mut StdRng, lo: f64, hi: f64, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi) as f32).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// Per-sample noise for a batch: sample `i` uses the stream `(seed, first + i)`, so a sample's
/// noise does not depend on the batch it is drawn in. Shape `(n, dims...)`.
pub fn per_sample_noise(seed: u64, first: u64, n: usize, dims: &[usize], device: &Device) -> Result<Tensor> {
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let mut r = stream(seed, first + i as u64);
        rows.push(randn(&mut r, dims, device)?);
    }
    Ok(Tensor::stack(&rows, 0)?)
}
