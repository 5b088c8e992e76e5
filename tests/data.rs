//! The shipped data and the ImageNet folder loader.
use candle_core::Device;
use erg::data::{emoji, imagenet, mnist};

#[test]
fn emoji_ships_with_nine_classes_and_captions() {
    let d = emoji::load(emoji::DEFAULT_DIR, 32).unwrap();
    assert!(d.len() > 3000, "{}", d.len());
    assert_eq!(d.images.dims()[1..], [3, 32, 32]);
    assert_eq!(d.classes.len(), 9);
    assert!(!d.classes.iter().any(|c| c == "Component"));
    let caps = d.captions.as_ref().unwrap();
    assert_eq!(caps.len(), d.len());
    assert!(caps.iter().any(|c| c.contains("grinning face")));
    let (lo, hi) = (d.images.min_all().unwrap().to_scalar::<f32>().unwrap(), d.images.max_all().unwrap().to_scalar::<f32>().unwrap());
    assert!(lo >= -1.0 && hi <= 1.0 && hi > 0.99, "range {lo}..{hi}");
    // white background: the corner pixel of most images is white
    let corner = d.images.narrow(2, 0, 1).unwrap().narrow(3, 0, 1).unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(corner > 0.8, "{corner}");
    let meta = emoji::load_meta(emoji::DEFAULT_DIR).unwrap();
    assert!(meta.items.iter().all(|i| !i.subcategory.is_empty()));
    let mut r = erg::rng::stream(0, 0);
    let (x, y) = d.batch(&mut r, 5, &Device::Cpu).unwrap();
    assert_eq!((x.dims()[0], y.dims()[0]), (5, 5));
}

#[test]
fn mnist_5k_loads() {
    let d = mnist::load(mnist::DEFAULT_PATH, None).unwrap();
    assert_eq!(d.len(), 5000);
    assert_eq!(d.images.dims(), &[5000, 1, 28, 28]);
    let mut counts = [0; 10];
    d.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert!(counts.iter().all(|&c| c > 350), "{counts:?}");
    // a limited load keeps every class (the file is sorted by digit)
    let d = mnist::load(mnist::DEFAULT_PATH, Some(50)).unwrap();
    let mut counts = [0; 10];
    d.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [5; 10]);
}

#[test]
fn imagenet_folder_layout_loads_with_resize_and_center_crop() {
    let dir = tempfile::tempdir().unwrap();
    for (wnid, color, (w, h)) in [("n02", [0u8, 0, 255], (40, 20)), ("n01", [255u8, 0, 0], (20, 30))] {
        std::fs::create_dir(dir.path().join(wnid)).unwrap();
        for i in 0..3 {
            let img = image::RgbImage::from_fn(w, h, |x, _| if x < w / 2 { image::Rgb(color) } else { image::Rgb([255, 255, 255]) });
            img.save(dir.path().join(wnid).join(format!("img{i}.JPEG"))).unwrap();
        }
    }
    std::fs::write(dir.path().join("n01").join("notes.txt"), "ignored").unwrap();
    let d = imagenet::load(dir.path(), 16, None).unwrap();
    assert_eq!(d.classes, vec!["n01", "n02"]); // sorted folder names
    assert_eq!(d.images.dims(), &[6, 3, 16, 16]);
    assert_eq!(d.labels, vec![0, 0, 0, 1, 1, 1]);
    // class n01 is red on the left half: the top-left pixel is red after resize + crop
    let px = d.images.get(0).unwrap().narrow(1, 8, 1).unwrap().narrow(2, 1, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(px[0] > 0.8 && px[1] < -0.5, "{px:?}");
    let d = imagenet::load(dir.path(), 16, Some(1)).unwrap();
    assert_eq!(d.len(), 2);
    let e = imagenet::load(dir.path().join("missing"), 16, None).unwrap_err();
    assert!(matches!(e, erg::Error::Missing { .. }));
    std::fs::write(dir.path().join("n01").join("broken.JPEG"), b"not a jpeg").unwrap();
    assert!(matches!(imagenet::load(dir.path(), 16, None).unwrap_err(), erg::Error::Corrupt { .. }));
}

#[test]
fn missing_data_files_say_how_to_rebuild() {
    let e = mnist::load("/nonexistent/mnist.csv.gz", None).unwrap_err().to_string();
    assert!(e.contains("prepare.py"), "{e}");
    let e = emoji::load("/nonexistent", 32).unwrap_err().to_string();
    assert!(e.contains("prepare.py"), "{e}");
}

#[test]
fn datasets_from_unit_range_tensors() {
    // the layout candle-datasets' hub loaders return: (N, 784) in [0, 1] and integer labels
    let imgs = candle_core::Tensor::full(0.5f32, (3, 784), &Device::Cpu).unwrap();
    let labels = candle_core::Tensor::new(&[0u8, 1, 2], &Device::Cpu).unwrap();
    let classes: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    let d = erg::data::Dataset::from_unit_images(&imgs, &labels, classes.clone(), Some(28)).unwrap();
    assert_eq!(d.images.dims(), &[3, 1, 28, 28]);
    assert_eq!(d.images.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    assert!(erg::data::Dataset::from_unit_images(&imgs, &labels, classes[..2].to_vec(), Some(28)).is_err());
    assert!(erg::data::Dataset::from_unit_images(&imgs, &labels, classes, None).is_err());
}
