//! The ImageNet-latents chain on CPU: a tiny ImageNet-layout folder → `prepare_latents` with the
//! tiny SD VAE of the fixtures → resume after a kill without losing or duplicating shards → 20
//! training steps lower the loss → samples decode to images of the right shape.
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use erg::data::latents::{load_latents, prepare_latents, ImageSource, PrepareConfig};
use erg::guidance::{Guidance, Models};
use erg::models::dit::{Activation, DitConfig};
use erg::models::vae::{Vae, VaeConfig};
use erg::train::{train, RunPaths, TrainConfig};

fn tiny_vae() -> Vae {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imagenet/sd_vae");
    let cfg: VaeConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let t = erg::checkpoint::load_tensors(&dir.join("diffusion_pytorch_model.safetensors"), &Device::Cpu).unwrap();
    erg::checkpoint::build_strict(&dir, t, &Device::Cpu, |vb| Vae::new(&cfg, vb)).unwrap()
}

/// 3 classes × 5 images of random sizes with a class-dependent colour.
fn tiny_imagenet(root: &Path) {
    for (c, wnid) in ["n01440764", "n01443537", "n01484850"].iter().enumerate() {
        std::fs::create_dir_all(root.join(wnid)).unwrap();
        for i in 0..5u32 {
            let (w, h) = (20 + 7 * i, 40 - 3 * i);
            let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(80 * c as u32 + x * 3) as u8, (y * 5) as u8, (200 - 60 * c as u32) as u8]));
            img.save(root.join(wnid).join(format!("{i}.JPEG"))).unwrap();
        }
    }
}

#[test]
fn prepare_resume_train_and_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, out) = (tmp.path().join("train"), tmp.path().join("latents"));
    tiny_imagenet(&root);
    let vae = tiny_vae();
    let cfg = PrepareConfig { image_size: 16, shard_size: 4, flip: true, max_per_class: None, batch_size: 3 };
    let src = ImageSource::Folder(root.clone());
    let r = prepare_latents(&src, &out, &vae, &cfg, None, &Device::Cpu, |_, _| {}).unwrap();
    assert_eq!((r.written, r.kept, r.latents), (4, 0, 30), "15 images in shards of 4, each with its mirror image");
    let data = load_latents(&out).unwrap();
    assert_eq!(data.images.dims(), &[30, 4, 8, 8]);
    assert_eq!(data.classes.len(), 3);
    assert_eq!(data.labels.iter().filter(|&&l| l == 2).count(), 10);
    // a kill: shard 2 never written, and a stray temporary file left behind
    std::fs::remove_file(out.join("shard_00002.safetensors")).unwrap();
    std::fs::write(out.join("shard_00002.safetensors.tmp"), b"partial").unwrap();
    assert!(load_latents(&out).err().unwrap().to_string().contains("shard_00002"));
    let r = prepare_latents(&src, &out, &vae, &cfg, None, &Device::Cpu, |_, _| {}).unwrap();
    assert_eq!((r.written, r.kept), (1, 3), "only the missing shard is encoded again");
    let again = load_latents(&out).unwrap();
    assert_eq!(again.labels, data.labels, "no image lost or duplicated");
    // other settings in the same folder are refused before any work
    let other = PrepareConfig { flip: false, ..cfg.clone() };
    assert!(prepare_latents(&src, &out, &vae, &other, None, &Device::Cpu, |_, _| {}).is_err());

    // 20 training steps on the latents lower the loss
    let model = DitConfig {
        input_size: (8, 8),
        patch_size: 2,
        in_channels: 4,
        hidden_size: 32,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 2.0,
        num_classes: 3,
        learn_sigma: false,
        activation: Activation::GeluErf,
    };
    let mut tc = TrainConfig::new(model, "latents", 20, 1);
    tc.batch_size = 30;
    tc.optim.lr = 3e-3;
    tc.warmup_steps = 2;
    tc.checkpoint_every = 10;
    let run = tmp.path().join("run");
    let report = train(&tc, &again, &Device::Cpu, &RunPaths::new(&run), erg::train::RunOptions::new()).unwrap();
    assert!(report.final_loss < report.first_loss, "loss {} -> {}", report.first_loss, report.final_loss);

    // sample with CFG and decode through the VAE
    let (dit, _) = erg::models::dit::load(&RunPaths::new(&run).ema(), &Device::Cpu).unwrap();
    let y = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
    let s = erg::sample::sample(
        Models::main(&dit),
        &Guidance::cfg(3.0),
        &y,
        &erg::sample::SampleConfig { num_steps: 4, seed: 0, batch_size: 2 },
        0,
        &Device::Cpu,
        |_, _| {},
    )
    .unwrap();
    let img = vae.decode(&s.images).unwrap();
    assert_eq!(img.dims(), &[2, 3, 16, 16]);
    assert_eq!(img.dtype(), DType::F32);
    assert!(erg::checkpoint::all_finite(&img).unwrap());
}

/// The parquet route (hf-hub's image-dataset layout, as candle-datasets fetches it): rows across
/// row groups, labels from the `label` column.
#[test]
fn prepare_from_parquet_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imagenet/tiny_images.parquet");
    let src = ImageSource::open(file.to_str().unwrap()).unwrap();
    let cfg = PrepareConfig { image_size: 16, shard_size: 4, flip: false, max_per_class: None, batch_size: 3 };
    let r = prepare_latents(&src, tmp.path(), &tiny_vae(), &cfg, None, &Device::Cpu, |_, _| {}).unwrap();
    assert_eq!((r.written, r.latents), (3, 12));
    let data = load_latents(tmp.path()).unwrap();
    assert_eq!(data.labels, (0..12).map(|i| i % 3).collect::<Vec<u32>>(), "rows in order, labels from the label column");
    assert_eq!(data.classes, vec!["0", "1", "2"]);
    assert_eq!(data.images.dims(), &[12, 4, 8, 8]);
    let capped = PrepareConfig { max_per_class: Some(2), ..cfg };
    let r = prepare_latents(&src, &tmp.path().join("capped"), &tiny_vae(), &capped, None, &Device::Cpu, |_, _| {}).unwrap();
    assert_eq!(r.latents, 6);
}
