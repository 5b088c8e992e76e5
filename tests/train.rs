//! Training on MNIST-5k: the loss falls, checkpoints round-trip, resume is exact, sampling is
//! deterministic, and broken inputs give clear errors.
use candle_core::{Device, Tensor};
use erg::data::mnist;
use erg::guidance::{Guidance, IErg, Models};
use erg::models::dit::DitConfig;
use erg::sample::{class_grid_labels, sample, SampleConfig};
use erg::train::{train, RunPaths, TrainConfig};

fn config(steps: u64) -> TrainConfig {
    let mut c = TrainConfig::new(DitConfig::test_tiny(), "mnist", steps, 5);
    c.batch_size = 16;
    c.optim.lr = 2e-3;
    c.warmup_steps = 5;
    c.checkpoint_every = 4;
    c.ema_decay = 0.9;
    c.weak_step = Some(2);
    c
}

fn data() -> erg::data::Dataset {
    mnist::load(mnist::DEFAULT_PATH, Some(512)).unwrap()
}

fn read(p: &std::path::Path) -> std::collections::HashMap<String, Tensor> {
    erg::checkpoint::load_tensors(p, &Device::Cpu).unwrap()
}

#[test]
fn a_few_steps_lower_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(60);
    cfg.checkpoint_every = 60;
    let r = train(&cfg, &data(), &Device::Cpu, &RunPaths::new(dir.path()), erg::train::RunOptions::new()).unwrap();
    let log = std::fs::read_to_string(dir.path().join("loss.csv")).unwrap();
    let losses: Vec<f64> = log.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(losses.len(), 60);
    let first = losses[..10].iter().sum::<f64>() / 10.0;
    let last = losses[50..].iter().sum::<f64>() / 10.0;
    assert!(last < 0.8 * first, "loss {first} -> {last}");
    assert!(r.final_loss < r.first_loss);
    assert!(dir.path().join("weak.safetensors").exists() && dir.path().join("weak.json").exists());
}

#[test]
fn resume_after_interruption_continues_the_same_run() {
    let straight = tempfile::tempdir().unwrap();
    let broken = tempfile::tempdir().unwrap();
    let cfg = config(8);
    let d = data();
    train(&cfg, &d, &Device::Cpu, &RunPaths::new(straight.path()), erg::train::RunOptions::new()).unwrap();
    // "killed" after the checkpoint at step 4 (the log has rows past it that must be dropped)
    let r = train(&cfg, &d, &Device::Cpu, &RunPaths::new(broken.path()), erg::train::RunOptions::new().stop_at(4)).unwrap();
    assert_eq!(r.step, 4);
    std::fs::OpenOptions::new()
        .append(true)
        .open(broken.path().join("loss.csv"))
        .map(|mut f| std::io::Write::write_all(&mut f, b"5,9.9,0,0\n"))
        .unwrap()
        .unwrap();
    // without --resume an existing run is never overwritten
    let e = train(&cfg, &d, &Device::Cpu, &RunPaths::new(broken.path()), erg::train::RunOptions::new()).unwrap_err();
    assert!(e.to_string().contains("--resume"), "{e}");
    let r = train(&cfg, &d, &Device::Cpu, &RunPaths::new(broken.path()), erg::train::RunOptions::new().resume(true)).unwrap();
    assert_eq!((r.resumed_from, r.step), (4, 8));
    let (a, b) = (read(&straight.path().join("state.safetensors")), read(&broken.path().join("state.safetensors")));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        let diff = (v.to_dtype(candle_core::DType::F64).unwrap() - b[k].to_dtype(candle_core::DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(diff, 0.0, "{k} differs after resume");
    }
    let la = std::fs::read_to_string(straight.path().join("loss.csv")).unwrap();
    let lb = std::fs::read_to_string(broken.path().join("loss.csv")).unwrap();
    let col = |s: &str| s.lines().map(|l| l.split(',').take(2).collect::<Vec<_>>().join(",")).collect::<Vec<_>>();
    assert_eq!(col(&la), col(&lb));
    // a resume with another configuration is refused
    let mut other = cfg.clone();
    other.optim.lr = 1.0;
    assert!(train(&other, &d, &Device::Cpu, &RunPaths::new(broken.path()), erg::train::RunOptions::new().resume(true))
        .unwrap_err()
        .to_string()
        .contains("configuration"));
}

#[test]
fn checkpoint_round_trip_and_deterministic_sampling() {
    let dir = tempfile::tempdir().unwrap();
    train(&config(4), &data(), &Device::Cpu, &RunPaths::new(dir.path()), erg::train::RunOptions::new()).unwrap();
    let ema = dir.path().join("ema.safetensors");
    let (m1, card) = erg::models::dit::load(&ema, &Device::Cpu).unwrap();
    assert_eq!(card.step, 4);
    // save the loaded weights again (f16, as shipped) and reload: outputs equal to f16 precision
    let copy = dir.path().join("copy.safetensors");
    erg::checkpoint::save_checkpoint(&read(&ema), &card, &copy, candle_core::DType::F16).unwrap();
    let (m2, _) = erg::models::dit::load(&copy, &Device::Cpu).unwrap();
    let labels = class_grid_labels(10, 1, &Device::Cpu).unwrap();
    let cfg = SampleConfig { num_steps: 4, seed: 3, batch_size: 6 };
    let g = Guidance::i_erg(2.0, IErg::class_conditional_defaults(2));
    let a = sample(Models::main(&m1), &g, &labels, &cfg, 0, &Device::Cpu, |_, _| {}).unwrap();
    let b = sample(Models::main(&m1), &g, &labels, &cfg, 0, &Device::Cpu, |_, _| {}).unwrap();
    let c = sample(Models::main(&m2), &g, &labels, &cfg, 0, &Device::Cpu, |_, _| {}).unwrap();
    assert_eq!(
        a.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        "same seed ⇒ bit-identical samples"
    );
    let diff = (&a.images - &c.images).unwrap().abs().unwrap().max_keepdim(0).unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 5e-2, "f16 round trip changed samples by {diff}");
    // exact f32 round trip
    let copy32 = dir.path().join("copy32.safetensors");
    erg::checkpoint::save_checkpoint(&read(&ema), &card, &copy32, candle_core::DType::F32).unwrap();
    let (m3, _) = erg::models::dit::load(&copy32, &Device::Cpu).unwrap();
    let d = sample(Models::main(&m3), &g, &labels, &cfg, 0, &Device::Cpu, |_, _| {}).unwrap();
    assert_eq!(a.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(), d.images.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    assert_eq!(a.nfe_per_step, 2.0); // CFG before κ, rectified CFG after: 2 NFE every step
}

#[test]
fn missing_and_corrupt_checkpoints_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let e = erg::models::dit::load(&dir.path().join("nope.safetensors"), &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("not found") || e.contains("nope.json"), "{e}");
    train(&config(4), &data(), &Device::Cpu, &RunPaths::new(dir.path()), erg::train::RunOptions::new()).unwrap();
    let ema = dir.path().join("ema.safetensors");
    std::fs::write(&ema, b"this is not a safetensors file").unwrap();
    let e = erg::models::dit::load(&ema, &Device::Cpu).unwrap_err();
    assert!(matches!(e, erg::Error::Corrupt { .. }), "{e}");
    // a card whose config does not match the weights
    let weak = dir.path().join("weak.safetensors");
    let mut card: erg::checkpoint::ModelCard<erg::models::dit::DitConfig> = erg::checkpoint::load_card(&weak).unwrap();
    card.config.hidden_size = 64;
    std::fs::write(dir.path().join("weak.json"), serde_json::to_string(&card).unwrap()).unwrap();
    assert!(erg::models::dit::load(&weak, &Device::Cpu).unwrap_err().to_string().contains("does not match"));
}

#[test]
fn wrong_data_shape_is_rejected_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(2);
    cfg.model.input_size = (32, 32);
    let e = train(&cfg, &data(), &Device::Cpu, &RunPaths::new(dir.path()), erg::train::RunOptions::new()).unwrap_err();
    assert!(e.to_string().contains("the model expects"), "{e}");
}

#[test]
fn debiased_ema_forgets_the_initial_weights() {
    // θ₀ = 0, then θ_k = 2 for every k: the raw EMA is 2·(1 − dⁿ), the debiased one exactly 2.
    let v = candle_core::Var::from_tensor(&Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
    let vars = vec![("w".to_string(), v.clone())];
    let mut ema = erg::train::Ema::new(&vars, 0.9).unwrap();
    let init = ema.weights.clone();
    v.set(&Tensor::full(2f32, 3, &Device::Cpu).unwrap()).unwrap();
    for _ in 0..5 {
        ema.update(&vars).unwrap();
    }
    let raw = ema.weights["w"].to_vec1::<f32>().unwrap()[0];
    assert!((raw - 2.0 * (1.0 - 0.9f32.powi(5))).abs() < 1e-5);
    let fixed = ema.debiased(&init, 5).unwrap()["w"].to_vec1::<f32>().unwrap();
    assert!(fixed.iter().all(|x| (x - 2.0).abs() < 1e-5), "{fixed:?}");
    assert_eq!(ema.debiased(&init, 0).unwrap()["w"].to_vec1::<f32>().unwrap()[0], raw);
}

/// The loss log read back: rows, time summed over resumed segments, running means, the figure;
/// a damaged log is refused with its file and line.
#[test]
fn loss_log_rows_total_time_and_figure() {
    use erg::train::loss_log::{plot_loss_curves, read, running_mean, tail_mean, total_seconds};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.csv");
    // Two segments: steps 1–3 in 3 s, resumed, steps 4–5 in 2.5 s.
    std::fs::write(&path, "step,loss,lr,elapsed_s\n1,1.0,1e-3,1.0\n2,0.8,1e-3,2.0\n3,0.6,1e-3,3.0\n4,0.5,1e-3,1.5\n5,0.3,1e-3,2.5\n").unwrap();
    let rows = read(&path).unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!((rows[3].step, rows[3].loss), (4, 0.5));
    assert!((total_seconds(&rows) - 5.5).abs() < 1e-12);
    let m = running_mean(&rows, 2);
    assert_eq!(m.len(), 4);
    assert_eq!(m[0].0, 2.0);
    assert!((m[0].1 - 0.9).abs() < 1e-12 && (m[3].1 - 0.4).abs() < 1e-12);
    assert_eq!(running_mean(&rows, 50).len(), 1); // the window shrinks to the log
    assert!((tail_mean(&rows, 2) - 0.4).abs() < 1e-12 && (tail_mean(&rows, 99) - 0.64).abs() < 1e-12);
    assert!(tail_mean(&[], 3).is_nan());
    plot_loss_curves(&dir.path().join("loss"), "t", "step", "loss", &[("a".into(), m)]).unwrap();
    assert!(std::fs::read_to_string(dir.path().join("loss.svg")).unwrap().contains("<svg"));
    assert!(plot_loss_curves(&dir.path().join("none"), "t", "step", "loss", &[]).is_err());
    // A gap in the steps and a bad number are refused, naming the line.
    std::fs::write(&path, "step,loss,lr,elapsed_s\n1,1.0,1e-3,1.0\n3,0.8,1e-3,2.0\n").unwrap();
    let e = read(&path).unwrap_err().to_string();
    assert!(e.contains("line 3") && e.contains("follow"), "{e}");
    std::fs::write(&path, "step,loss,lr,elapsed_s\n1,x,1e-3,1.0\n").unwrap();
    assert!(read(&path).unwrap_err().to_string().contains("line 2"));
    std::fs::write(&path, "a,b\n").unwrap();
    assert!(read(&path).unwrap_err().to_string().contains("header"));
}

/// A time limit stops the call at the first step past it with the state saved there (not only at
/// the checkpoint interval), and resuming finishes the run as an uninterrupted one.
#[test]
fn a_time_limit_stops_checkpointed_and_resumes_exactly() {
    let straight = tempfile::tempdir().unwrap();
    let limited = tempfile::tempdir().unwrap();
    let mut cfg = config(6);
    cfg.checkpoint_every = 100; // no interval checkpoint before the end
    let d = data();
    train(&cfg, &d, &Device::Cpu, &RunPaths::new(straight.path()), erg::train::RunOptions::new()).unwrap();
    let r = train(&cfg, &d, &Device::Cpu, &RunPaths::new(limited.path()), erg::train::RunOptions::new().time_limit(std::time::Duration::ZERO)).unwrap();
    assert_eq!(r.step, 1, "a zero limit stops after the first step");
    let st = read(&limited.path().join("state.safetensors"));
    assert_eq!(st["meta.step"].to_vec1::<i64>().unwrap(), vec![1]);
    let r = train(&cfg, &d, &Device::Cpu, &RunPaths::new(limited.path()), erg::train::RunOptions::new().resume(true)).unwrap();
    assert_eq!((r.resumed_from, r.step), (1, 6));
    let (a, b) = (read(&straight.path().join("state.safetensors")), read(&limited.path().join("state.safetensors")));
    let values = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert_eq!(values(v), values(&b[k]), "{k} differs after the time-limited call and its resume");
    }
}

/// A warm start begins from the checkpoint's weights exactly, counts card steps on from it, and
/// refuses a checkpoint that changed since or belongs to another architecture.
#[test]
fn a_warm_start_begins_from_the_checkpoint_and_counts_on() {
    use erg::train::{ClassConditional, InitCheckpoint, TrainState};
    let first = tempfile::tempdir().unwrap();
    let d = data();
    train(&config(4), &d, &Device::Cpu, &RunPaths::new(first.path()), erg::train::RunOptions::new()).unwrap();
    let ema = first.path().join("ema.safetensors");
    let mut cfg = config(3);
    cfg.seed = 6;
    cfg.init = Some(InitCheckpoint::from_checkpoint(&ema).unwrap());
    assert_eq!(cfg.init.as_ref().unwrap().step, 4);
    // the network starts as the checkpoint: same samples, bit for bit
    let state = TrainState::new(&ClassConditional, &cfg, &Device::Cpu).unwrap();
    let (m, _) = erg::models::dit::load(&ema, &Device::Cpu).unwrap();
    let labels = class_grid_labels(10, 1, &Device::Cpu).unwrap();
    let sc = SampleConfig { num_steps: 3, seed: 1, batch_size: 10 };
    let a = sample(Models::main(&state.model), &Guidance::cfg(2.0), &labels, &sc, 0, &Device::Cpu, |_, _| {}).unwrap();
    let b = sample(Models::main(&m), &Guidance::cfg(2.0), &labels, &sc, 0, &Device::Cpu, |_, _| {}).unwrap();
    assert_eq!(a.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    // a from-scratch network with the same seed differs
    let scratch = TrainState::new(&ClassConditional, &TrainConfig { init: None, ..cfg.clone() }, &Device::Cpu).unwrap();
    let c = sample(Models::main(&scratch.model), &Guidance::cfg(2.0), &labels, &sc, 0, &Device::Cpu, |_, _| {}).unwrap();
    assert_ne!(a.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(), c.images.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    drop(state);
    // the run's cards count on from step 4; run.json records the warm start
    let second = tempfile::tempdir().unwrap();
    train(&cfg, &d, &Device::Cpu, &RunPaths::new(second.path()), erg::train::RunOptions::new()).unwrap();
    let (_, card) = erg::models::dit::load(&second.path().join("ema.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(card.step, 7);
    let (_, weak) = erg::models::dit::load(&second.path().join("weak.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(weak.step, 6);
    assert!(std::fs::read_to_string(second.path().join("run.json")).unwrap().contains(&cfg.init.as_ref().unwrap().sha256));
    // the checkpoint changed since: refused on resume and on a new run
    std::fs::copy(first.path().join("weak.safetensors"), &ema).unwrap();
    std::fs::copy(first.path().join("weak.json"), first.path().join("ema.json")).unwrap();
    let e = train(&cfg, &d, &Device::Cpu, &RunPaths::new(tempfile::tempdir().unwrap().path()), erg::train::RunOptions::new()).unwrap_err().to_string();
    assert!(e.contains("changed") && e.contains("ema.safetensors"), "{e}");
    // another architecture: refused, naming both
    let mut other = config(3);
    other.model.hidden_size *= 2;
    other.init = Some(InitCheckpoint::from_checkpoint(&ema).unwrap());
    let e = train(&other, &d, &Device::Cpu, &RunPaths::new(tempfile::tempdir().unwrap().path()), erg::train::RunOptions::new()).unwrap_err().to_string();
    assert!(e.contains("same architecture") && e.contains("ema.safetensors"), "{e}");
}
