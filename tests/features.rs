//! The classifier used as feature extractor: learns MNIST-5k, saves and reloads identically.
use candle_core::{Device, Tensor};
use erg::features::classifier::{self, ClassifierConfig, SmallCnn};
use erg::features::{consistency, FeatureExtractor};

#[test]
fn classifier_learns_and_round_trips() {
    let data = erg::data::mnist::load(erg::data::mnist::DEFAULT_PATH, Some(1000)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clf.safetensors");
    let cfg = ClassifierConfig::new(1, vec![16, 32, 64], 10);
    let (model, card) = classifier::train(
        &cfg,
        &data,
        &classifier::ClassifierTraining {
            steps: 150,
            batch_size: 32,
            lr: 3e-3,
            cosine: false,
            weight_decay: 1e-4,
            seed: 0,
            shift: 0,
            mixup: false,
            cutout: 0,
            label_smoothing: 0.0,
            dropout: 0.0,
            progress: false,
            checkpoint_every: 0,
            resume: false,
            stop_at: None,
        },
        &Device::Cpu,
        &path,
    )
    .unwrap();
    assert!(card.heldout_accuracy > 40.0, "held-out accuracy {}", card.heldout_accuracy);
    let (loaded, card2) = SmallCnn::load(&path, &Device::Cpu).unwrap();
    assert_eq!(card2.heldout_accuracy, card.heldout_accuracy);
    let x = data.images.narrow(0, 0, 5).unwrap();
    let (a, b) = (model.features(&x).unwrap(), loaded.features(&x).unwrap());
    assert_eq!(a.dims(), &[5, 64]);
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    // a card whose config does not match the weights is a clear error
    let mut bad = card.clone();
    bad.config.widths = vec![16, 32, 32];
    std::fs::write(path.with_extension("json"), serde_json::to_string(&bad).unwrap()).unwrap();
    assert!(SmallCnn::load(&path, &Device::Cpu).err().unwrap().to_string().contains("does not match the weights"));
}

#[test]
fn consistency_counts_hits() {
    let logits = Tensor::new(&[[2.0f32, 1.0], [0.0, 3.0], [5.0, 1.0]], &Device::Cpu).unwrap();
    let labels = Tensor::new(&[0u32, 1, 1], &Device::Cpu).unwrap();
    assert!((consistency(&logits, &labels).unwrap() - 200.0 / 3.0).abs() < 1e-9);
}

#[test]
fn optimizer_state_never_holds_an_autograd_graph() {
    // candle's conv2d backward returns gradients that track their inputs; AdamW's moments built
    // from them would chain every step's graph and grow without bound (seen: 23 GB, OOM).
    use erg::nn::{seeded_varbuilder, SeededVarMap};
    let data = erg::data::mnist::load(erg::data::mnist::DEFAULT_PATH, Some(20)).unwrap();
    let map = SeededVarMap::new(0);
    let cfg = ClassifierConfig::new(1, vec![4, 8], 10);
    let model = SmallCnn::new(&cfg, seeded_varbuilder(&map, candle_core::DType::F32, &Device::Cpu)).unwrap();
    let vars: Vec<_> = map.varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut opt = erg::train::AdamW::new(vars, Default::default()).unwrap();
    let y = Tensor::new(&data.labels[..8], &Device::Cpu).unwrap();
    for _ in 0..2 {
        let loss = candle_nn::loss::cross_entropy(&model.logits(&data.images.narrow(0, 0, 8).unwrap()).unwrap(), &y).unwrap();
        opt.apply(&loss.backward().unwrap()).unwrap();
    }
    for (name, t) in opt.state() {
        assert!(!t.track_op(), "{name} tracks an autograd graph");
    }
}

#[test]
fn channels_last_convolutions_equal_candles_conv2d() {
    // SmallCnn's im2col convolutions (and GroupNorm) against candle's conv2d / group_norm /
    // max_pool2d on the same weights, two convs per stage, on a batch with a non-square image.
    use erg::nn::{seeded_varbuilder, SeededVarMap};
    for norm_groups in [0, 2] {
        let map = SeededVarMap::new(3);
        let cfg = ClassifierConfig { convs_per_stage: 2, norm_groups, ..ClassifierConfig::new(3, vec![4, 6], 5) };
        let model = SmallCnn::new(&cfg, seeded_varbuilder(&map, candle_core::DType::F32, &Device::Cpu)).unwrap();
        let vars = map.varmap.data().lock().unwrap().clone();
        // non-trivial norm scales and shifts, so that a mix-up of channels would show
        for (name, v) in vars.iter().filter(|(k, _)| k.starts_with("norms.")) {
            v.set(&Tensor::randn(if name.ends_with("weight") { 1f32 } else { 0.0 }, 0.5, v.shape(), &Device::Cpu).unwrap()).unwrap();
        }
        let x = Tensor::randn(0f32, 1.0, (2, 3, 8, 12), &Device::Cpu).unwrap();
        let mut h = x.clone();
        for i in 0..4 {
            let w = vars[&format!("convs.{i}.weight")].as_tensor().clone();
            let b = vars[&format!("convs.{i}.bias")].as_tensor().clone();
            h = h.conv2d(&w, 1, 1, 1, 1).unwrap().broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap();
            if norm_groups > 0 {
                let (s, t) = (vars[&format!("norms.{i}.weight")].as_tensor().clone(), vars[&format!("norms.{i}.bias")].as_tensor().clone());
                let c = s.dim(0).unwrap();
                h = candle_nn::Module::forward(&candle_nn::GroupNorm::new(s, t, c, norm_groups, 1e-5).unwrap(), &h).unwrap();
            }
            h = h.relu().unwrap();
            if i == 1 {
                h = h.max_pool2d(2).unwrap();
            }
        }
        let reference = h.mean(3).unwrap().mean(2).unwrap();
        let ours = model.embed(&x).unwrap();
        let diff: f32 = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(diff < 1e-4, "norm_groups {norm_groups}: max |Δ| = {diff}");
    }
    // a width that the groups do not divide is refused
    let map = SeededVarMap::new(3);
    let bad = ClassifierConfig { norm_groups: 4, ..ClassifierConfig::new(3, vec![4, 6], 5) };
    let e = SmallCnn::new(&bad, seeded_varbuilder(&map, candle_core::DType::F32, &Device::Cpu)).err().unwrap().to_string();
    assert!(e.contains("multiple of norm_groups"), "{e}");
}

#[test]
fn flip_averaged_logits_do_not_change_under_mirroring() {
    use erg::nn::{seeded_varbuilder, SeededVarMap};
    let x = Tensor::randn(0f32, 1.0, (3, 3, 8, 8), &Device::Cpu).unwrap();
    let mirrored = x.index_select(&Tensor::new(&[7u32, 6, 5, 4, 3, 2, 1, 0], &Device::Cpu).unwrap(), 3).unwrap();
    let gap = |flip_average: bool| -> f32 {
        let map = SeededVarMap::new(5);
        let cfg = ClassifierConfig { flip_average, ..ClassifierConfig::new(3, vec![4, 6], 5) };
        let model = SmallCnn::new(&cfg, seeded_varbuilder(&map, candle_core::DType::F32, &Device::Cpu)).unwrap();
        let (a, b) = (model.logits(&x).unwrap(), model.logits(&mirrored).unwrap());
        // the single-image logits are what training sees, with or without the averaging
        let single = model.logits_single(&x).unwrap();
        let avg = ((single + model.logits_single(&mirrored).unwrap()).unwrap() * 0.5).unwrap();
        let d: f32 = (&a - if flip_average { avg } else { model.logits_single(&x).unwrap() }).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-6, "logits are not the documented combination: {d}");
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    };
    assert!(gap(true) < 1e-5);
    assert!(gap(false) > 1e-4, "the plain network should see the mirror image differently");
}

/// A classifier run stopped after its state was saved continues to the same weights as an
/// uninterrupted one; an existing state needs `resume`, and another recipe is refused.
#[test]
fn classifier_training_resumes_exactly() {
    let data = erg::data::mnist::load(erg::data::mnist::DEFAULT_PATH, Some(200)).unwrap();
    let cfg = ClassifierConfig::new(1, vec![4, 8], 10);
    let how = classifier::ClassifierTraining {
        steps: 6,
        batch_size: 8,
        lr: 3e-3,
        cosine: true,
        weight_decay: 0.05,
        seed: 3,
        shift: 2,
        mixup: true,
        cutout: 3,
        label_smoothing: 0.1,
        dropout: 0.2,
        progress: false,
        checkpoint_every: 0,
        resume: false,
        stop_at: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let (straight, card) = classifier::train(&cfg, &data, &how, &Device::Cpu, &dir.path().join("a.safetensors")).unwrap();
    let b = dir.path().join("b.safetensors");
    let stopped = classifier::ClassifierTraining { stop_at: Some(3), ..how };
    let (_, partial) = classifier::train(&cfg, &data, &stopped, &Device::Cpu, &b).unwrap();
    assert!(partial.heldout_accuracy.is_nan() && !b.exists() && classifier::state_path(&b).exists());
    let e = classifier::train(&cfg, &data, &how, &Device::Cpu, &b).unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
    let other = classifier::ClassifierTraining { lr: 1e-3, resume: true, ..how };
    let e = classifier::train(&cfg, &data, &other, &Device::Cpu, &b).unwrap_err().to_string();
    assert!(e.contains("another recipe"), "{e}");
    let (resumed, card_b) = classifier::train(&cfg, &data, &classifier::ClassifierTraining { resume: true, ..how }, &Device::Cpu, &b).unwrap();
    assert_eq!(card_b, card);
    assert!(!classifier::state_path(&b).exists(), "a finished run leaves no state behind");
    let x = data.images.narrow(0, 0, 4).unwrap();
    let v = |m: &SmallCnn| m.logits(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(v(&straight), v(&resumed));
}
