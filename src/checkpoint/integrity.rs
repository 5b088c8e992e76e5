//! What a loaded tensor file must prove before it is used: every tensor's bytes match the
//! checksum written with it, and every float is finite.
//!
//! [`super::save_tensors`] writes the SHA-256 of each tensor's data into the safetensors header
//! (metadata key [`CHECKSUMS`], a JSON object name → hex digest), so a flipped byte inside the
//! data region, which the safetensors format itself cannot notice, is caught at load and named.
//! Files written elsewhere (hub checkpoints) carry no checksums; they are still checked for
//! non-finite values.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;
use safetensors::View;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Header metadata key of the per-tensor checksums.
pub const CHECKSUMS: &str = "erg.sha256";

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Hex SHA-256 of a file's content (the identity of a weight file in run keys).
/// Errors: the file cannot be read (naming it).
pub fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    Ok(sha256_hex(&bytes))
}

/// The checksum metadata of tensors as they will be written (after conversion to their stored
/// dtype): name → SHA-256 of the little-endian data bytes.
pub(super) fn checksums(tensors: &HashMap<String, Tensor>) -> String {
    let sums: BTreeMap<&str, String> = tensors.iter().map(|(name, t)| (name.as_str(), sha256_hex(&t.data()))).collect();
    serde_json::to_string(&sums).expect("a map of strings serialises")
}

/// Checks each tensor of the safetensors `bytes` against the checksums in its header, if any.
/// Errors: a tensor whose bytes differ (naming it), a checksum for a tensor not in the file, or
/// unreadable checksum metadata.
pub(super) fn verify_checksums(path: &Path, bytes: &[u8]) -> Result<()> {
    let bad = |reason: String| Error::corrupt(path, reason);
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a readable safetensors file ({e})")))?;
    let Some(expected) = meta.metadata().as_ref().and_then(|m| m.get(CHECKSUMS)) else {
        return Ok(());
    };
    let expected: BTreeMap<String, String> = serde_json::from_str(expected).map_err(|e| bad(format!("unreadable {CHECKSUMS} header ({e})")))?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a readable safetensors file ({e})")))?;
    if st.len() != expected.len() {
        return Err(bad(format!("{} tensors in the file, {} checksums in its header", st.len(), expected.len())));
    }
    for (name, digest) in &expected {
        let view = st.tensor(name).map_err(|_| bad(format!("tensor {name} is listed in the checksums but missing")))?;
        if sha256_hex(view.data()) != *digest {
            return Err(bad(format!("the data of tensor {name} does not match its checksum: the file is corrupted; restore or re-export it")));
        }
    }
    Ok(())
}

/// Whether every element of a float tensor is finite (integer tensors always are). Computed on
/// the tensor's device: x − x is 0 where x is finite and NaN where it is not.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    if !t.dtype().is_float() || t.elem_count() == 0 {
        return Ok(true);
    }
    let s = t.sub(t)?.to_dtype(candle_core::DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    Ok(s.is_finite())
}

/// Errors, naming the first tensor (by name) with a NaN or infinite value.
pub(super) fn check_finite(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        if !all_finite(&tensors[name])? {
            return Err(Error::corrupt(
                path,
                format!("tensor {name} holds NaN or infinite values; the weights are unusable (a diverged run or a corrupted file)"),
            ));
        }
    }
    Ok(())
}
