//! The ImageNet models against the official code: DiT (facebookresearch/DiT: ε-prediction, DDPM,
//! DDIM), SiT (willisma/SiT: velocity, its Euler ODE) and diffusers' SD VAE, on tiny random weights
//! (`benches/reference/imagenet_reference.py`, fixtures in `tests/fixtures/imagenet/`).
//! Tolerances: network outputs and states 1e-4 relative to their largest value (f32).
mod common;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::max_abs_diff;
use erg::attention::ForwardPlan;
use erg::models::dit::DitConfig;
use erg::models::imagenet::{alpha_bar_of_t, ddim_timesteps, ddpm_alphas_cumprod, ddpm_index, t_of_alpha_bar, Parametrisation, PretrainedDit};
use erg::models::Denoiser;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imagenet")
}

fn fixtures() -> HashMap<String, Tensor> {
    erg::checkpoint::load_tensors(&dir().join("fixtures.safetensors"), &Device::Cpu).unwrap()
}

fn tiny_cfg() -> DitConfig {
    erg::models::imagenet::preset("tiny-dit").unwrap().0
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    max_abs_diff(a, b) / scale.max(1.0)
}

#[test]
fn ddpm_tables_and_the_time_map() {
    let fx = fixtures();
    let ours = ddpm_alphas_cumprod();
    let theirs = fx["ddpm.alphas_cumprod"].to_vec1::<f32>().unwrap();
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((*a as f32 - b).abs() < 1e-6);
    }
    let steps: Vec<f64> = fx["ddim.timesteps"].to_vec1::<f32>().unwrap().iter().map(|&v| v as f64).collect();
    assert_eq!(ddim_timesteps(4).iter().map(|&i| i as f64).collect::<Vec<_>>(), steps);
    assert_eq!(ddim_timesteps(50).len(), 50);
    for &i in &[0usize, 17, 500, 999] {
        let ab = ours[i];
        assert!((alpha_bar_of_t(t_of_alpha_bar(ab)) - ab).abs() < 1e-12);
        assert!((ddpm_index(&ours, ab) - i as f64).abs() < 1e-9, "index of ᾱ_{i}");
    }
}

#[test]
fn official_dit_and_sit_outputs_from_pt_and_safetensors() {
    let fx = fixtures();
    let dev = Device::Cpu;
    let plan = ForwardPlan::uniform(3, Default::default());
    for file in ["dit_tiny.pt", "dit_tiny.safetensors"] {
        let m = PretrainedDit::load(&tiny_cfg(), Parametrisation::DdpmEpsilon, &dir().join(file), &dev).unwrap();
        // the raw network at DDPM indices
        let y = fx["dit.y"].to_dtype(DType::U32).unwrap();
        let out = m.dit.forward(&fx["dit.x"], &fx["dit.t"], &y, &plan).unwrap();
        let d = rel_diff(&out, &fx["dit.out"].narrow(1, 0, 4).unwrap());
        eprintln!("DiT {file}: relative max |Δ| = {d:.2e}");
        assert!(d < 1e-4, "DiT ({file}) vs official: {d}");
    }
    let sit = PretrainedDit::load(&tiny_cfg(), Parametrisation::Velocity, &dir().join("sit_tiny.pt"), &dev).unwrap();
    let y = fx["dit.y"].to_dtype(DType::U32).unwrap();
    let v = sit.velocity(&fx["dit.x"], &fx["sit.t"], &y, &plan).unwrap();
    let d = rel_diff(&v, &fx["sit.out"]);
    eprintln!("SiT: relative max |Δ| = {d:.2e}");
    assert!(d < 1e-4, "SiT velocity vs official: {d}");
    // a wrong file is named
    let err =
        PretrainedDit::load(&DitConfig { depth: 3, ..tiny_cfg() }, Parametrisation::Velocity, &dir().join("sit_tiny.pt"), &dev).err().unwrap().to_string();
    assert!(err.contains("blocks.2"), "{err}");
}

/// Euler on the converted DDIM grid is DDIM (η = 0), step for step; Euler on SiT is SiT's ODE.
#[test]
fn euler_on_the_converted_grid_is_ddim_and_sits_ode() {
    let fx = fixtures();
    let dev = Device::Cpu;
    let y = fx["ddim.y"].to_dtype(DType::U32).unwrap();
    let dit = PretrainedDit::load(&tiny_cfg(), Parametrisation::DdpmEpsilon, &dir().join("dit_tiny.pt"), &dev).unwrap();
    let sched = dit.schedule(4);
    let ab = ddpm_alphas_cumprod();
    let plan = ForwardPlan::uniform(2, Default::default());
    // flow state = DDPM state / (√ᾱ + √(1 − ᾱ)) at the first (noisiest) grid point
    let s0 = ab[999].sqrt() + (1.0 - ab[999]).sqrt();
    let mut x = (fx["ddim.noise"].clone() / s0).unwrap();
    for (i, w) in sched.windows(2).enumerate() {
        let t = Tensor::full(w[0] as f32, 2, &dev).unwrap();
        let v = dit.velocity(&x, &t, &y, &plan).unwrap();
        x = (&x + (v * (w[1] - w[0])).unwrap()).unwrap();
        // back to DDPM scale at the next grid point (ᾱ_prev = 1 after the last step)
        let ab_next = if i + 1 < 4 { ab[ddim_timesteps(4)[i + 1]] } else { 1.0 };
        let x_vp = (&x * (ab_next.sqrt() + (1.0 - ab_next).sqrt())).unwrap();
        let d = rel_diff(&x_vp, &fx[&format!("ddim.x.{i}")]);
        eprintln!("DDIM step {i}: relative max |Δ| = {d:.2e}");
        assert!(d < 1e-4, "DDIM step {i}: {d}");
    }
    let sit = PretrainedDit::load(&tiny_cfg(), Parametrisation::Velocity, &dir().join("sit_tiny.pt"), &dev).unwrap();
    let mut states = vec![];
    let last = erg::flow::euler(
        fx["ddim.noise"].clone(),
        &sit.schedule(4),
        |x, t, _| sit.velocity(x, &Tensor::full(t as f32, 2, &dev)?, &y, &plan),
        |info| {
            states.push(info.x.clone());
            Ok(())
        },
    )
    .unwrap();
    states.push(last);
    for (i, s) in states.iter().enumerate() {
        let d = rel_diff(s, &fx[&format!("sit.ode.{i}")]);
        eprintln!("SiT ODE point {i}: relative max |Δ| = {d:.2e}");
        assert!(d < 1e-4, "SiT ODE point {i}: {d}");
    }
}

#[test]
fn sd_vae_matches_diffusers() {
    let fx = fixtures();
    let dev = Device::Cpu;
    let cfg: erg::models::vae::VaeConfig = serde_json::from_str(&std::fs::read_to_string(dir().join("sd_vae/config.json")).unwrap()).unwrap();
    assert_eq!((cfg.latent_channels, cfg.scaling_factor, cfg.shift_factor), (4, 0.18215, None));
    let t = erg::checkpoint::load_tensors(&dir().join("sd_vae/diffusion_pytorch_model.safetensors"), &dev).unwrap();
    let vae = erg::checkpoint::build_strict(&dir(), t, &dev, |vb| erg::models::vae::Vae::new(&cfg, vb)).unwrap();
    let img = vae.decode(&fx["vae.z"]).unwrap();
    let d = max_abs_diff(&img, &fx["vae.image"]);
    eprintln!("SD VAE decode: max |Δ| = {d:.2e}");
    assert!(d < 1e-4, "SD VAE decode: {d}");
    let z = vae.encode(&fx["vae.image"].repeat((1024, 1, 1, 1)).unwrap()).unwrap().mean_keepdim(0).unwrap();
    let want = (fx["vae.mean"].clone() * 0.18215).unwrap();
    let (a, b) = (z.flatten_all().unwrap(), want.flatten_all().unwrap());
    let corr = {
        let (a, b) = (a.broadcast_sub(&a.mean_all().unwrap()).unwrap(), b.broadcast_sub(&b.mean_all().unwrap()).unwrap());
        (&a * &b).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()
            / (a.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() * b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()).sqrt()
    };
    eprintln!("SD VAE encode (mean of 1024 draws) vs diffusers' mean: correlation {corr:.3}");
    assert!(corr > 0.9, "{corr}");
}

/// Table 3 on a latent ImageNet model: VAE-decoded samples against a cached reference folder, and
/// the same record from two shards.
#[test]
fn latent_evaluation_with_a_cached_reference_and_shards() {
    use erg::eval::imagenet::{reference_features, LatentScorer};
    use erg::eval::shard::{evaluate_shard, merge, Shard};
    use erg::eval::{evaluate_conditions, run_key, Conditions, EvalConfig};
    use erg::features::PixelFeatures;
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("val");
    std::fs::create_dir_all(real.join("a")).unwrap();
    for i in 0..24u32 {
        image::RgbImage::from_fn(20 + i, 18, |x, y| image::Rgb([(x * 9) as u8, (y * 13 + i) as u8, 90])).save(real.join("a").join(format!("{i}.png"))).unwrap();
    }
    let ex = PixelFeatures { side: 4 };
    let cache = tmp.path().join("cache");
    let r1 = reference_features(&ex, "pixels-4", &real, 16, None, &cache, &dev).unwrap();
    assert_eq!(r1.features.nrows(), 24);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1, "features cached");
    let r2 = reference_features(&ex, "pixels-4", &real, 16, None, &cache, &dev).unwrap();
    assert_eq!(r1.features, r2.features);
    let (vae, _) = erg::models::vae::Vae::load_diffusers(dir().join("sd_vae").to_str().unwrap(), DType::F32, &dev).unwrap();
    let scorer = LatentScorer { vae, extractor: Box::new(ex), reference: r2, decode_batch: 5 };
    let model = PretrainedDit::load(&tiny_cfg(), Parametrisation::Velocity, &dir().join("sit_tiny.pt"), &dev).unwrap();
    let labels = erg::sample::class_grid_labels(10, 2, &dev).unwrap();
    let cfg = EvalConfig { samples_per_class: 2, num_steps: 3, batch_size: 8, k_pr: 3, k_dc: 3, features: Some("pixels-4".into()), ..Default::default() };
    let g = erg::guidance::preset("ierg", 3.0, 2).unwrap();
    let req = Conditions { conditions: &labels, classes: &labels, key: run_key(&g, &cfg) };
    let whole = evaluate_conditions(erg::guidance::Models::main(&model), &g, &req, &scorer, &cfg, &dev, |_, _| {}).unwrap();
    assert!(whole.metrics["consistency"].is_nan() && whole.metrics["fid"].is_finite());
    let parts: Vec<_> = (0..2)
        .map(|i| evaluate_shard(erg::guidance::Models::main(&model), &g, &req, &scorer, &cfg, Shard { index: i, count: 2 }, &dev, |_, _| {}).unwrap())
        .collect();
    let merged = merge(&parts, &scorer, &cfg).unwrap();
    for m in ["fid", "precision", "recall", "density", "coverage"] {
        let (a, b) = (whole.metrics[m], merged.metrics[m]);
        assert!((a - b).abs() <= 1e-3 * a.abs().max(1.0), "{m}: {a} vs {b}");
    }
}
