//! Improved precision and recall (Kynkäänniemi et al. 2019, NeurIPS) and density and coverage
//! (Naeem et al. 2020, ICML), from k-nearest-neighbour balls in feature space (Euclidean).
//!
//! With real features X (N) and generated Y (M), and NND_k(x) the distance from x to its k-th
//! nearest neighbour in its own set (itself excluded):
//! - precision = (1/M) Σ_j 1[∃ i: ‖Y_j − X_i‖ ≤ NND_k(X_i)]  (k = 3 in the paper's protocol);
//! - recall    = (1/N) Σ_i 1[∃ j: ‖X_i − Y_j‖ ≤ NND_k(Y_j)];
//! - density   = (1/(kM)) Σ_j Σ_i 1[‖Y_j − X_i‖ ≤ NND_k(X_i)]  (k = 5), can exceed 100 %;
//! - coverage  = (1/N) Σ_i 1[∃ j: ‖Y_j − X_i‖ ≤ NND_k(X_i)].
//! All in percent.
use ndarray::{Array2, ArrayView1};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The four nearest-neighbour metrics, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prdc {
    /// Improved precision (k = `k_pr`).
    pub precision: f64,
    /// Improved recall (k = `k_pr`).
    pub recall: f64,
    /// Density (k = `k_dc`).
    pub density: f64,
    /// Coverage (k = `k_dc`).
    pub coverage: f64,
}

fn dist(a: ArrayView1<f64>, b: ArrayView1<f64>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

/// Pairwise distances (rows of a) × (rows of b).
fn pairwise(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
    let mut d = Array2::zeros((a.nrows(), b.nrows()));
    for (i, ra) in a.rows().into_iter().enumerate() {
        for (j, rb) in b.rows().into_iter().enumerate() {
            d[[i, j]] = dist(ra, rb);
        }
    }
    d
}

/// Distance from each row to its k-th nearest neighbour among the other rows.
fn kth_nn(self_dist: &Array2<f64>, k: usize) -> Vec<f64> {
    self_dist
        .rows()
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut v: Vec<f64> = r.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, &x)| x).collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[k - 1]
        })
        .collect()
}

/// Precision and recall with `k_pr` neighbours, density and coverage with `k_dc`
/// (paper protocol: 3 and 5). `real` (N, D), `fake` (M, D).
///
/// Errors: differing D; fewer than k + 1 samples in a set.
pub fn prdc(real: &Array2<f64>, fake: &Array2<f64>, k_pr: usize, k_dc: usize) -> Result<Prdc> {
    if real.ncols() != fake.ncols() {
        return Err(Error::shape(format!("feature dimensions differ: {} vs {}", real.ncols(), fake.ncols())));
    }
    let kmax = k_pr.max(k_dc);
    if k_pr == 0 || k_dc == 0 || real.nrows() <= kmax || fake.nrows() <= k_pr {
        return Err(Error::hp(format!("need k >= 1 and more than k samples per set (k = {kmax}, real {}, fake {})", real.nrows(), fake.nrows())));
    }
    let rr = pairwise(real, real);
    let ff = pairwise(fake, fake);
    let rf = pairwise(real, fake); // (N, M)
    let (r_pr, r_dc, f_pr) = (kth_nn(&rr, k_pr), kth_nn(&rr, k_dc), kth_nn(&ff, k_pr));
    let (n, m) = (real.nrows(), fake.nrows());
    let precision = (0..m).filter(|&j| (0..n).any(|i| rf[[i, j]] <= r_pr[i])).count() as f64 / m as f64;
    let recall = (0..n).filter(|&i| (0..m).any(|j| rf[[i, j]] <= f_pr[j])).count() as f64 / n as f64;
    let density = (0..m).map(|j| (0..n).filter(|&i| rf[[i, j]] <= r_dc[i]).count()).sum::<usize>() as f64 / (k_dc * m) as f64;
    let coverage = (0..n).filter(|&i| (0..m).any(|j| rf[[i, j]] <= r_dc[i])).count() as f64 / n as f64;
    Ok(Prdc { precision: 100.0 * precision, recall: 100.0 * recall, density: 100.0 * density, coverage: 100.0 * coverage })
}
