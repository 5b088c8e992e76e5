//! Fréchet distance between two Gaussians (Dowson & Landau 1982; FID of Heusel et al. 2017):
//!
//! d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})
//!
//! The trace of the matrix square root is computed from symmetric eigendecompositions in f64
//! (nalgebra): Σ₁^{1/2} from the eigenvalues of Σ₁ (clamped at 0), then the eigenvalues of the
//! symmetric PSD matrix Σ₁^{1/2} Σ₂ Σ₁^{1/2}. This equals Tr((Σ₁Σ₂)^{1/2}), the quantity that
//! pytorch-fid takes from `scipy.linalg.sqrtm`, without its complex round-off.
use nalgebra::DMatrix;
use ndarray::{Array1, Array2, Axis};
use ndarray_stats::CorrelationExt;

use crate::{Error, Result};

/// Mean and covariance of a feature set.
#[derive(Debug, Clone)]
pub struct Gaussian {
    /// Mean (D,).
    pub mean: Array1<f64>,
    /// Covariance (D, D), unbiased (ddof = 1).
    pub cov: Array2<f64>,
}

impl Gaussian {
    /// Fits the features (N, D), N ≥ 2 (ndarray-stats' covariance).
    pub fn fit(features: &Array2<f64>) -> Result<Self> {
        if features.nrows() < 2 {
            return Err(Error::shape("a Gaussian fit needs at least 2 samples"));
        }
        let mean = features.mean_axis(Axis(0)).expect("non-empty");
        let cov = features.t().cov(1.0).map_err(|e| Error::Other(format!("covariance: {e}")))?;
        Ok(Self { mean, cov })
    }
}

fn to_dmatrix(a: &Array2<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]])
}

/// Symmetric PSD square root through the eigendecomposition (negative eigenvalues clamped to 0).
fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (m + m.transpose()) * 0.5;
    let e = sym.symmetric_eigen();
    let d = DMatrix::from_diagonal(&e.eigenvalues.map(|v| v.max(0.0).sqrt()));
    &e.eigenvectors * d * e.eigenvectors.transpose()
}

/// Fréchet distance d² between two Gaussians (FID's units: no square root).
///
/// Errors: mismatched dimensions.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Result<f64> {
    if a.mean.len() != b.mean.len() || a.cov.dim() != b.cov.dim() {
        return Err(Error::shape(format!("feature dimensions differ: {} vs {}", a.mean.len(), b.mean.len())));
    }
    let diff = &a.mean - &b.mean;
    let (s1, s2) = (to_dmatrix(&a.cov), to_dmatrix(&b.cov));
    let r1 = sqrt_psd(&s1);
    let m = &r1 * &s2 * &r1;
    let tr_sqrt: f64 = {
        let sym = (&m + m.transpose()) * 0.5;
        sym.symmetric_eigen().eigenvalues.iter().map(|v| v.max(0.0).sqrt()).sum()
    };
    Ok(diff.dot(&diff) + s1.trace() + s2.trace() - 2.0 * tr_sqrt)
}
