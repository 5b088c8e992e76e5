//! The Hopfield-energy view of attention (ERG Sec. 2.3 and 3.1; Ramsauer et al. 2021).
//!
//! A state (query) ξ ∈ ℝ^d and N stored patterns X = (x₁ … x_N) ∈ ℝ^{d×N} have the rectified energy
//! (Eq. 9)
//!
//! E(ξ; X) = ½ ξᵀξ − α · lse(Xᵀξ, τβ),  lse(z, b) = b⁻¹ log Σᵢ exp(b zᵢ),
//!
//! whose gradient is ξ − α X softmax(τβ Xᵀξ). A gradient step of size γ is Algorithm 1's update
//! ξ ← ξ − γ (ξ − α X softmax(τβ Xᵀξ)); with α = γ = 1 it is the CCCP update (Eq. 5–8), i.e.
//! attention with keys = values = X. τ = α = γ = K = 1 is standard attention.
//!
//! The trajectories here run the crate's own [`crate::attention::attention`] (Algorithm 1 is
//! implemented once), one step at a time so each iterate can be plotted; β = 1/√d as in attention.
use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::attention::{attention, Energy, Rectifier};
use crate::nn::Ops;
use crate::Result;

/// log Σ exp(zᵢ), stable.
fn log_sum_exp(z: &[f64]) -> f64 {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// The rectified energy E(ξ; X) of Eq. (9) with inverse temperature β = 1/√d.
/// `xi` (d), `patterns` N rows of length d; `e` gives τ and α (γ and K do not enter the energy).
pub fn energy(xi: &[f64], patterns: &[Vec<f64>], e: &Energy) -> f64 {
    let d = xi.len() as f64;
    let b = e.tau / d.sqrt();
    let z: Vec<f64> = patterns.iter().map(|x| b * x.iter().zip(xi).map(|(a, c)| a * c).sum::<f64>()).collect();
    0.5 * xi.iter().map(|v| v * v).sum::<f64>() - e.alpha * log_sum_exp(&z) / b
}

/// Softmax attention weights of ξ over the patterns at temperature τ: softmax(τβ Xᵀξ).
pub fn attention_weights(xi: &[f64], patterns: &[Vec<f64>], tau: f64) -> Vec<f64> {
    let b = tau / (xi.len() as f64).sqrt();
    let z: Vec<f64> = patterns.iter().map(|x| b * x.iter().zip(xi).map(|(a, c)| a * c).sum::<f64>()).collect();
    let l = log_sum_exp(&z);
    z.iter().map(|v| (v - l).exp()).collect()
}

/// Shannon entropy (nats) of a probability vector.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter().filter(|v| **v > 0.0).map(|v| v * v.ln()).sum::<f64>()
}

/// The iterates ξ₀, ξ₁, …, ξ_K of Algorithm 1 from `xi0`, each step computed by the crate's
/// attention function with one energy step (queries = ξ, keys = values = X). Shapes: `xi0` (d),
/// `patterns` N × d; returns K + 1 states.
pub fn trajectory(xi0: &[f64], patterns: &[Vec<f64>], e: &Energy) -> Result<Vec<Vec<f64>>> {
    e.validate()?;
    let d = xi0.len();
    let n = patterns.len();
    let flat: Vec<f32> = patterns.iter().flat_map(|p| p.iter().map(|v| *v as f32)).collect();
    let x = Tensor::from_vec(flat, (1, 1, n, d), &Device::Cpu)?;
    let one = Rectifier::Energy(Energy { steps: 1, ..*e });
    let mut out = vec![xi0.to_vec()];
    let mut q = Tensor::from_vec(xi0.iter().map(|v| *v as f32).collect::<Vec<_>>(), (1, 1, 1, d), &Device::Cpu)?;
    for _ in 0..e.steps {
        // The update needs queries and values of one shape: pad the single query to N rows.
        let qs = q.broadcast_as((1, 1, n, d))?.contiguous()?;
        let next = attention(&qs, &x, &x, &one, Ops::infer(), None)?.narrow(2, 0, 1)?;
        out.push(next.flatten_all()?.to_vec1::<f32>()?.into_iter().map(|v| v as f64).collect());
        q = next;
    }
    Ok(out)
}

/// Energy on a regular 2-D grid over [x0, x1] × [y0, y1] (`n` × `n` points, row-major from y0),
/// for contour plots of a 2-D landscape.
pub fn energy_grid(patterns: &[Vec<f64>], e: &Energy, (x0, x1): (f64, f64), (y0, y1): (f64, f64), n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|j| {
            let y = y0 + (y1 - y0) * j as f64 / (n - 1).max(1) as f64;
            (0..n).map(|i| energy(&[x0 + (x1 - x0) * i as f64 / (n - 1).max(1) as f64, y], patterns, e)).collect()
        })
        .collect()
}

/// A small, serialisable summary of the chapter's analysis (snapshot-tested).
#[derive(Debug, Clone, Serialize)]
pub struct HopfieldSummary {
    /// (τ, mean attention entropy in nats over the probe states) for the swept temperatures.
    pub entropy_vs_tau: Vec<(f64, f64)>,
    /// The largest possible entropy, ln N.
    pub max_entropy: f64,
    /// Per setting: name, energies along its trajectory (evaluated at that setting's τ and α), and
    /// its final state.
    pub trajectories: Vec<TrajectorySummary>,
}

/// One trajectory of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct TrajectorySummary {
    /// Setting label, e.g. `τ=0.5 α=1 γ=1 K=3`.
    pub name: String,
    /// E(ξ_k) for k = 0 … K.
    pub energies: Vec<f64>,
    /// ξ_K.
    pub final_state: Vec<f64>,
}

/// A label for an energy setting.
pub fn label(e: &Energy) -> String {
    format!("τ={} α={} γ={} K={}", e.tau, e.alpha, e.gamma, e.steps)
}

/// Runs the analysis: entropy of attention over `patterns` averaged over `probes` for each τ in
/// `taus`, and the trajectories of `settings` from `start`. Values rounded to 4 decimals.
pub fn summarize(patterns: &[Vec<f64>], probes: &[Vec<f64>], taus: &[f64], start: &[f64], settings: &[Energy]) -> Result<HopfieldSummary> {
    let r = |v: f64| (v * 1e4).round() / 1e4;
    let entropy_vs_tau =
        taus.iter().map(|&t| (t, r(probes.iter().map(|p| entropy(&attention_weights(p, patterns, t))).sum::<f64>() / probes.len() as f64))).collect();
    let trajectories = settings
        .iter()
        .map(|e| {
            let tr = trajectory(start, patterns, e)?;
            Ok(TrajectorySummary {
                name: label(e),
                energies: tr.iter().map(|s| r(energy(s, patterns, e))).collect(),
                final_state: tr.last().unwrap().iter().map(|v| r(*v)).collect(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(HopfieldSummary { entropy_vs_tau, max_entropy: r((patterns.len() as f64).ln()), trajectories })
}
