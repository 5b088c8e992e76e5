//! Sample-quality metrics as in the ERG paper's evaluation (Sec. 4.1, Appendix A):
//! Fréchet distance between Gaussian fits of features (FID when the features are Inception-v3's),
//! improved precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al.
//! 2020). Features are (N, D) matrices from any [feature extractor](crate::metrics); results are
//! reported in percent, like the paper's tables, except the Fréchet distance.
pub mod frechet;
pub mod prdc;

use candle_core::{DType, Tensor};
use ndarray::Array2;

use crate::{Error, Result};

pub use frechet::{frechet_distance, Gaussian};
pub use prdc::{prdc, Prdc};

/// A candle (N, D) tensor as an f64 ndarray.
pub fn to_array2(features: &Tensor) -> Result<Array2<f64>> {
    let (n, d) = features.dims2().map_err(|_| Error::shape(format!("features must be (N, D), got {:?}", features.dims())))?;
    let v = features.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(Array2::from_shape_vec((n, d), v).expect("shape checked"))
}
