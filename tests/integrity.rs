//! No silent wrong results (issue 19): faults and mismatches that used to load, resume or
//! evaluate quietly now fail with an error naming the file, the tensor or the field.
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use erg::checkpoint::{load_tensors, save_checkpoint, ModelCard};
use erg::data::mnist;
use erg::models::dit::DitConfig;
use erg::train::{train, RunOptions, RunPaths, TrainConfig};

fn config(steps: u64) -> TrainConfig {
    let mut c = TrainConfig::new(DitConfig::test_tiny(), "mnist", steps, 5);
    c.batch_size = 8;
    c.optim.lr = 2e-3;
    c.warmup_steps = 2;
    c.checkpoint_every = 2;
    c.ema_decay = 0.9;
    c.weak_step = Some(2);
    c
}

fn data() -> erg::data::Dataset {
    mnist::load(mnist::DEFAULT_PATH, Some(128)).unwrap()
}

fn trained(steps: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    train(&config(steps), &data(), &Device::Cpu, &RunPaths::new(dir.path()), RunOptions::new()).unwrap();
    dir
}

fn card(weights: &Path) -> ModelCard<DitConfig> {
    erg::checkpoint::load_card(weights).unwrap()
}

fn write_card(weights: &Path, card: &ModelCard<DitConfig>) {
    std::fs::write(erg::checkpoint::card_path(weights), serde_json::to_string_pretty(card).unwrap()).unwrap();
}

fn err<T>(r: erg::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Offset of a tensor's first data byte in a safetensors file.
fn data_offset(bytes: &[u8], name: &str) -> usize {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    8 + n + header[name]["data_offsets"][0].as_u64().unwrap() as usize
}

#[test]
fn item2_corrupted_bytes_inside_a_tensor_are_caught_and_named() {
    let dir = trained(2);
    let state = dir.path().join("state.safetensors");
    let mut bytes = std::fs::read(&state).unwrap();
    let at = data_offset(&bytes, "ema.final_layer.linear.weight") + 5;
    bytes[at] ^= 0x40;
    std::fs::write(&state, &bytes).unwrap();
    let e = err(load_tensors(&state, &Device::Cpu));
    assert!(e.contains("ema.final_layer.linear.weight") && e.contains("checksum"), "{e}");
    // and a resume refuses to continue from it
    let mut cfg = config(4);
    cfg.weak_step = Some(2);
    let e = err(train(&cfg, &data(), &Device::Cpu, &RunPaths::new(dir.path()), RunOptions::new().resume(true)));
    assert!(e.contains("checksum"), "{e}");
}

#[test]
fn item2_non_finite_weights_are_refused_naming_the_tensor() {
    let dir = trained(2);
    let ema = dir.path().join("ema.safetensors");
    let mut tensors = load_tensors(&ema, &Device::Cpu).unwrap();
    let w = &tensors["blocks.0.attn.qkv.weight"];
    let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[3] = f32::NAN;
    tensors.insert("blocks.0.attn.qkv.weight".into(), Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap());
    let nan = dir.path().join("nan.safetensors");
    save_checkpoint(&tensors, &card(&ema), &nan, DType::F32).unwrap();
    let e = err(erg::models::dit::load(&nan, &Device::Cpu));
    assert!(e.contains("blocks.0.attn.qkv.weight") && e.contains("NaN"), "{e}");
}

#[test]
fn item2_non_finite_images_are_not_scored() {
    let scorer = tiny_scorer();
    let x = Tensor::full(f32::NAN, (12, 1, 8, 8), &Device::Cpu).unwrap();
    let e = err(scorer.metrics(&x, None, &erg::eval::EvalConfig::default(), &Device::Cpu));
    assert!(e.contains("not finite") || e.contains("NaN"), "{e}");
}

/// A scorer on random 8×8 grey images with an untrained 2-class classifier.
fn tiny_scorer() -> erg::eval::Scorer {
    use erg::features::classifier::{ClassifierCard, ClassifierConfig, SmallCnn};
    let cfg = ClassifierConfig::new(1, vec![4, 8], 2);
    let map = erg::nn::SeededVarMap::new(1);
    let cnn = SmallCnn::new(&cfg, erg::nn::seeded_varbuilder(&map, DType::F32, &Device::Cpu)).unwrap();
    let images = erg::rng::randn(&mut erg::rng::stream(1, 0), &[40, 1, 8, 8], &Device::Cpu).unwrap().clamp(-1.0, 1.0).unwrap();
    let labels: Vec<u32> = (0..40).map(|i| i % 2).collect();
    let data = erg::data::Dataset { images, labels, classes: vec!["a".into(), "b".into()], captions: None };
    let reference = erg::eval::reference(&cnn, &data, None, &Device::Cpu).unwrap();
    let card = ClassifierCard::untrained(cfg, data.classes.clone());
    erg::eval::Scorer::from_parts(cnn, card, None, data, reference)
}

#[test]
fn item3_a_stale_ema_export_is_rewritten_on_resume() {
    let straight = trained(4);
    // a run killed between the final state write and the EMA write: state at 4, EMA export at 2
    let broken = tempfile::tempdir().unwrap();
    let d = data();
    train(&config(4), &d, &Device::Cpu, &RunPaths::new(broken.path()), RunOptions::new().stop_at(2)).unwrap();
    let old = tempfile::tempdir().unwrap();
    for f in ["ema.safetensors", "ema.json"] {
        std::fs::copy(broken.path().join(f), old.path().join(f)).unwrap();
    }
    train(&config(4), &d, &Device::Cpu, &RunPaths::new(broken.path()), RunOptions::new().resume(true)).unwrap();
    for f in ["ema.safetensors", "ema.json"] {
        std::fs::copy(old.path().join(f), broken.path().join(f)).unwrap();
    }
    assert_eq!(card(&broken.path().join("ema.safetensors")).step, 2);
    // resume at start == end runs no step, but must repair the export
    let r = train(&config(4), &d, &Device::Cpu, &RunPaths::new(broken.path()), RunOptions::new().resume(true)).unwrap();
    assert_eq!((r.resumed_from, r.step), (4, 4));
    assert_eq!(card(&broken.path().join("ema.safetensors")).step, 4);
    let (a, b) = (
        load_tensors(&straight.path().join("ema.safetensors"), &Device::Cpu).unwrap(),
        load_tensors(&broken.path().join("ema.safetensors"), &Device::Cpu).unwrap(),
    );
    for (k, v) in &a {
        assert_eq!(v.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b[k].flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{k}");
    }
}

#[test]
fn item4_resume_without_a_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(train(&config(2), &data(), &Device::Cpu, &RunPaths::new(dir.path()), RunOptions::new().resume(true)));
    assert!(e.contains("state.safetensors"), "{e}");
    // a started run whose state went missing: loss.csv and the EMA stay untouched
    let dir = trained(2);
    std::fs::remove_file(dir.path().join("state.safetensors")).unwrap();
    let log = std::fs::read_to_string(dir.path().join("loss.csv")).unwrap();
    let e = err(train(&config(4), &data(), &Device::Cpu, &RunPaths::new(dir.path()), RunOptions::new().resume(true)));
    assert!(e.contains("state.safetensors"), "{e}");
    assert_eq!(std::fs::read_to_string(dir.path().join("loss.csv")).unwrap(), log);
}

#[test]
fn item5_unknown_fields_are_rejected() {
    let g = serde_json::to_value(erg::guidance::preset("autoguidance", 2.0, 2).unwrap()).unwrap();
    let mut wrong = g.clone();
    wrong["terms"][0]["negative"]["modle"] = "weak".into();
    let e = serde_json::from_value::<erg::guidance::Guidance>(wrong).unwrap_err().to_string();
    assert!(e.contains("modle"), "{e}");
    assert!(serde_json::from_value::<erg::guidance::Guidance>(g).is_ok());
    // a misspelt card field
    let dir = trained(2);
    let ema = dir.path().join("ema.safetensors");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("ema.json")).unwrap()).unwrap();
    v["config"]["num_haeds"] = 2.into();
    std::fs::write(dir.path().join("ema.json"), v.to_string()).unwrap();
    let e = err(erg::models::dit::load(&ema, &Device::Cpu));
    assert!(e.contains("num_haeds"), "{e}");
    // a run config
    let mut run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap()).unwrap();
    run["ema_decy"] = 0.5.into();
    assert!(serde_json::from_value::<TrainConfig>(run).unwrap_err().to_string().contains("ema_decy"));
}

#[test]
fn item6_cards_are_bound_to_their_weights() {
    let dir = trained(2);
    let ema = dir.path().join("ema.safetensors");
    let good = card(&ema);
    assert!(erg::models::dit::load(&ema, &Device::Cpu).is_ok());
    // the number of heads cannot be read off the weights: the embedded card catches it
    let mut c = good.clone();
    c.config.num_heads = 1;
    write_card(&ema, &c);
    let e = err(erg::models::dit::load(&ema, &Device::Cpu));
    assert!(e.contains("config.num_heads") && e.contains("embedded"), "{e}");
    // nor class names
    let mut c = good.clone();
    c.classes[0] = "zero".into();
    write_card(&ema, &c);
    assert!(err(erg::models::dit::load(&ema, &Device::Cpu)).contains("classes[0]"));
    // a shallower card on deeper weights, saved with that card: unused tensors are refused
    let tensors = load_tensors(&ema, &Device::Cpu).unwrap();
    let mut c = good.clone();
    c.config.depth -= 1;
    let shallow = dir.path().join("shallow.safetensors");
    save_checkpoint(&tensors, &c, &shallow, DType::F32).unwrap();
    let e = err(erg::models::dit::load(&shallow, &Device::Cpu));
    assert!(e.contains("not part of the configured model") && e.contains(&format!("blocks.{}", c.config.depth)), "{e}");
    // a deeper card: the missing tensors are named
    let mut c = good.clone();
    c.config.depth += 1;
    let deep = dir.path().join("deep.safetensors");
    save_checkpoint(&tensors, &c, &deep, DType::F32).unwrap();
    assert!(err(erg::models::dit::load(&deep, &Device::Cpu)).contains(&format!("blocks.{}", good.config.depth)));
    // a checkpoint of another model family says so
    write_card(&ema, &good);
    let mut v: serde_json::Value = serde_json::to_value(&good).unwrap();
    v["model"] = "mmdit-t2i".into();
    std::fs::write(dir.path().join("ema.json"), v.to_string()).unwrap();
    let e = err(erg::models::dit::load(&ema, &Device::Cpu));
    assert!(e.contains("mmdit-t2i") && e.contains("not a DiT"), "{e}");
}

#[test]
fn missing_weights_are_reported_as_themselves() {
    let dir = trained(2);
    std::fs::remove_file(dir.path().join("ema.safetensors")).unwrap();
    let e = err(erg::models::dit::load(&dir.path().join("ema.safetensors"), &Device::Cpu));
    assert!(e.contains("ema.safetensors") && !e.contains("ema.json"), "{e}");
}

#[test]
fn a_nan_weight_decay_is_blamed_on_itself() {
    let mut cfg = config(2);
    cfg.optim.weight_decay = f64::NAN;
    let e = err(train(&cfg, &data(), &Device::Cpu, &RunPaths::new(tempfile::tempdir().unwrap().path()), RunOptions::new()));
    assert!(e.contains("weight decay") && !e.contains("learning rate"), "{e}");
}

#[test]
fn io_errors_name_their_path() {
    let dir = tempfile::tempdir().unwrap();
    // a run folder that is a file
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let e = err(train(&config(2), &data(), &Device::Cpu, &RunPaths::new(&file), RunOptions::new()));
    assert!(e.contains("not-a-folder"), "{e}");
    // a results file under a file
    let e = match erg::eval::ResultsFile::open(file.join("r.jsonl")) {
        Ok(mut r) => r.append(serde_json::from_value(serde_json::json!({"key": "k", "method": "m", "guidance": {}, "seed": 0, "steps": 1, "nfe_per_step": 1.0, "samples": 1, "wall_s": 0.0, "metrics": {}})).unwrap()).unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("not-a-folder"), "{e}");
    // a results path that is a folder
    let e = err(erg::eval::ResultsFile::open(dir.path()));
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
}
