//! ImageNet in its usual folder layout: `root/<wnid>/*.JPEG` (e.g. `train/n01440764/…`).
//! Classes are the sorted folder names; each image is resized (short side) and center-cropped to
//! the training resolution, as in ADM/DiT preprocessing. Works for any folder-per-class data set.
use std::path::Path;

use candle_core::Tensor;

use super::{image_to_tensor, Dataset};
use crate::{Error, Result};

/// The 1,000 ImageNet-1k classes in label order (DiT/SiT's class indices): (WordNet id, lemmas),
/// from `data/imagenet_classes.tsv` (timm's tables).
pub fn class_names() -> Vec<(&'static str, &'static str)> {
    include_str!("../../data/imagenet_classes.tsv")
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            f.next()?;
            Some((f.next()?, f.next()?))
        })
        .collect()
}

/// A short display name of class `i`: its first lemma ("macaw", "golden retriever"), or
/// `class i` out of range.
pub fn class_name(i: usize) -> String {
    class_names().get(i).map_or(format!("class {i}"), |(_, l)| l.split(',').next().unwrap_or(l).trim().to_string())
}

const EXTENSIONS: [&str; 4] = ["jpeg", "jpg", "png", "webp"];

/// The images of an ImageNet-layout folder in a fixed order (classes sorted, files sorted), with
/// their labels, and the class names. Errors: no class folders or no images.
pub fn image_list(root: &Path, max_per_class: Option<usize>) -> Result<(Vec<String>, Vec<(std::path::PathBuf, u32)>)> {
    let mut classes: Vec<String> = std::fs::read_dir(root)
        .map_err(|_| Error::Missing { path: root.into(), hint: "expected a folder with one sub-folder per class (ImageNet `train/`)".into() })?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    let mut items = vec![];
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join(class))
            .map_err(|e| Error::io(root.join(class), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| EXTENSIONS.contains(&x.to_string_lossy().to_lowercase().as_str())))
            .collect();
        files.sort();
        items.extend(files.into_iter().take(max_per_class.unwrap_or(usize::MAX)).map(|f| (f, label as u32)));
    }
    if classes.is_empty() || items.is_empty() {
        return Err(Error::corrupt(root, "no class sub-folders with images (extensions: JPEG, JPG, PNG, WEBP)"));
    }
    Ok((classes, items))
}

/// Loads at most `max_per_class` images per class folder under `root` at `size`×`size` RGB.
/// Errors: missing root, no class folders, an unreadable image (named in the message).
pub fn load(root: impl AsRef<Path>, size: usize, max_per_class: Option<usize>) -> Result<Dataset> {
    let (classes, files) = image_list(root.as_ref(), max_per_class)?;
    let mut tensors = Vec::with_capacity(files.len());
    let mut labels = Vec::with_capacity(files.len());
    for (f, label) in files {
        let img = image::open(&f).map_err(|e| Error::corrupt(&f, e))?;
        tensors.push(image_to_tensor(&img, size, 3)?);
        labels.push(label);
    }
    Ok(Dataset { images: Tensor::stack(&tensors, 0)?, labels, classes, captions: None })
}
