//! The text-to-image MMDiT: C-ERG's negative conditioning, every guidance preset on prompts,
//! ERG = C-ERG before κ, PAG's image–image identity in joint attention, training from caption
//! tables (loss falls, every weight learns, checkpoints load with named errors), and the real
//! all-MiniLM-L6-v2 when the hf-hub cache holds it.
mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::max_abs_diff;
use erg::attention::{attention, AttentionPlan, ForwardPlan, Rectifier};
use erg::guidance::{preset, preset_for, Guidance, Guider, Models, TextErg, PRESET_NAMES};
use erg::models::mmdit::{TextToImage, TextToImageConfig};
use erg::models::Denoiser;
use erg::nn::Ops;
use erg::text::{empty_prompt_ids, MiniLm, MiniLmConfig, TextEncoder, TextRectification};

fn prompts() -> Tensor {
    common::t2i_prompts()
}

fn noise(seed: u64) -> Tensor {
    let mut r = erg::rng::stream(seed, 0);
    erg::rng::randn(&mut r, &[2, 3, 8, 8], &Device::Cpu).unwrap()
}

#[test]
fn packed_embeddings_and_the_c_erg_negative() {
    let enc = common::text_encoder(3);
    let ids = prompts();
    let plain = enc.encode_ids(&ids, None).unwrap();
    assert_eq!(plain.dims(), &[2, 7, 12]);
    // padding rows are zero, the pooled row has unit norm
    assert_eq!(plain.get(0).unwrap().get(5).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    let pooled_norm = plain.get(1).unwrap().get(6).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!((pooled_norm - 1.0).abs() < 1e-5);
    let rect = TextRectification::new(0.01, 0, 2);
    let rectified = enc.encode_ids(&ids, Some(&rect)).unwrap();
    let empty = enc.encode_ids(&empty_prompt_ids(2, 6, &Device::Cpu).unwrap(), None).unwrap();
    // C-ERG's negative is neither the prompt nor the empty prompt
    assert!(max_abs_diff(&rectified, &plain) > 1e-2);
    assert!(max_abs_diff(&rectified, &empty) > 1e-2);
    // τ_c = 1 is the plain encoder
    let identity = enc.encode_ids(&ids, Some(&TextRectification { tau: 1.0, ..rect })).unwrap();
    assert!(max_abs_diff(&identity, &plain) < 1e-6);
    // wrong context length and a bad τ_c are clear errors
    assert!(enc.encode_ids(&ids.narrow(1, 0, 5).unwrap(), None).unwrap_err().to_string().contains("6"));
    assert!(enc.encode_ids(&ids, Some(&TextRectification { tau: 0.0, ..rect })).is_err());
}

#[test]
fn every_preset_runs_on_prompts_with_its_nfe() {
    let (m, weak) = (common::t2i_model(10), common::t2i_model(20));
    let (x, ids) = (noise(1), prompts());
    for name in PRESET_NAMES {
        let g = preset_for(name, 3.0, m.depth(), m.text_layers()).unwrap();
        let mut guider = Guider::new(&g, Models { main: &m, weak: Some(&weak) }, 0).unwrap();
        // t = 0.05: CADS's condition is mostly noise; t = 0.7: I-ERG is on (t > κ)
        for (step, t) in [0.05, 0.7].into_iter().enumerate() {
            let (v, nfe) = guider.velocity(&x, t, step, &ids).unwrap();
            assert_eq!(v.dims(), x.dims(), "{name}");
            let want = match *name {
                "none" | "uncond" => 1,
                "ierg-uncond" if t < 0.2 => 1,                        // both branches are the same before κ
                "cfg-zero-star" | "ierg-zero-star" if step == 0 => 0, // zero-init: no evaluation
                "cfg-interval" | "ierg-interval" if t < 0.156 => 1,   // outside the guidance interval
                "slg" | "cfg+pag" | "cfg+seg" | "cfg+sag" | "cfg+nag" => 3,
                _ => 2,
            };
            assert_eq!(nfe, want, "{name}");
            assert!(v.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|a| a.is_finite()), "{name} at t = {t}");
        }
    }
}

#[test]
fn erg_is_c_erg_before_kappa_and_differs_after() {
    let m = common::t2i_model(30);
    let (x, ids) = (noise(2), prompts());
    let layers = m.text_layers();
    let run = |name: &str, t: f64| erg::guidance::guided_velocity(&m, &preset_for(name, 3.0, m.depth(), layers).unwrap(), &x, t, &ids).unwrap().0;
    let kappa = TextErg::defaults(m.depth(), 2).ierg.kappa;
    assert!(max_abs_diff(&run("erg", kappa - 0.1), &run("cerg", kappa - 0.1)) < 1e-5);
    assert!(max_abs_diff(&run("erg", kappa + 0.1), &run("cerg", kappa + 0.1)) > 1e-4);
    // C-ERG differs from CFG (its negative is not the empty prompt)
    assert!(max_abs_diff(&run("cerg", 0.5), &run("cfg", 0.5)) > 1e-4);
}

#[test]
fn c_erg_needs_a_text_encoder() {
    let (dit, _) = common::random_dit(&erg::models::dit::DitConfig::test_tiny(), 0);
    assert!(preset("cerg", 3.0, 2).unwrap_err().to_string().contains("text"));
    let g = preset_for("cerg", 3.0, 2, Some(2)).unwrap();
    let e = Guider::new(&g, Models::main(&dit), 0).err().unwrap().to_string();
    assert!(e.contains("text encoder"), "{e}");
    // a text model without its encoder cannot encode prompts, and says so
    let cfg = TextToImageConfig::test_tiny();
    let w = common::random_tensors(5, 0.3, |vb| TextToImage::new(&cfg, vb, None));
    let bare = TextToImage::new(&cfg, VarBuilder::from_tensors(w, DType::F32, &Device::Cpu), None).unwrap();
    let e = erg::guidance::guided_velocity(&bare, &Guidance::cfg(3.0), &noise(3), 0.5, &prompts()).unwrap_err().to_string();
    assert!(e.contains("text encoder"), "{e}");
    // a C-ERG layer range beyond the encoder is rejected
    let m = common::t2i_model(40);
    let mut g = preset_for("cerg", 3.0, m.depth(), Some(2)).unwrap();
    if let erg::guidance::Condition::Rectified(r) = &mut g.terms[0].negative.condition {
        r.l_max = 5;
    }
    assert!(Guider::new(&g, Models::main(&m), 0).is_err());
}

#[test]
fn pag_in_joint_attention_replaces_only_the_image_image_block() {
    let mut r = erg::rng::stream(9, 0);
    let q = erg::rng::randn(&mut r, &[1, 2, 7, 4], &Device::Cpu).unwrap(); // 4 image + 3 text tokens
    let k = erg::rng::randn(&mut r, &[1, 2, 7, 4], &Device::Cpu).unwrap();
    let v = erg::rng::randn(&mut r, &[1, 2, 7, 4], &Device::Cpu).unwrap();
    let pag = attention(&q, &k, &v, &Rectifier::Identity, Ops::infer(), Some((2, 2))).unwrap();
    let std = attention(&q, &k, &v, &Rectifier::Standard, Ops::infer(), Some((2, 2))).unwrap();
    // text queries attend as usual
    assert!(max_abs_diff(&pag.narrow(2, 4, 3).unwrap(), &std.narrow(2, 4, 3).unwrap()) < 1e-6);
    // image query 0 ignores the values of the other image tokens, but not those of the text
    let bump = |i: usize| {
        let mut d = vec![0f32; 7 * 4];
        d[i * 4] = 5.0;
        (&v + Tensor::from_vec(d, (1, 1, 7, 4), &Device::Cpu).unwrap().broadcast_as(v.dims()).unwrap()).unwrap()
    };
    let row0 = |v: &Tensor| attention(&q, &k, v, &Rectifier::Identity, Ops::infer(), Some((2, 2))).unwrap().narrow(2, 0, 1).unwrap();
    assert!(max_abs_diff(&row0(&bump(2)), &row0(&v)) < 1e-6);
    assert!(max_abs_diff(&row0(&bump(5)), &row0(&v)) > 1e-3);
    // without text tokens it is the identity (DiT)
    let img = |t: &Tensor| t.narrow(2, 0, 4).unwrap().contiguous().unwrap();
    let only = attention(&img(&q), &img(&k), &img(&v), &Rectifier::Identity, Ops::infer(), Some((2, 2))).unwrap();
    assert!(max_abs_diff(&only, &img(&v)) < 1e-7);
}

#[test]
fn temperature_one_reproduces_the_standard_model() {
    let m = common::t2i_model(50);
    let (x, ids) = (noise(4), prompts());
    let emb = m.embed_condition(&ids).unwrap();
    let t = Tensor::new(&[0.3f32, 0.8], &Device::Cpu).unwrap();
    let std = m.velocity_embedded(&x, &t, &emb, &ForwardPlan::uniform(2, AttentionPlan::standard())).unwrap();
    let one = m.velocity_embedded(&x, &t, &emb, &ForwardPlan::uniform(2, AttentionPlan::blocks(Rectifier::temperature(1.0), 0, 2))).unwrap();
    assert!(max_abs_diff(&std, &one) < 1e-5);
    let low = m.velocity_embedded(&x, &t, &emb, &ForwardPlan::uniform(2, AttentionPlan::blocks(Rectifier::temperature(0.01), 0, 2))).unwrap();
    assert!(max_abs_diff(&std, &low) > 1e-3);
    // a packed embedding of the wrong shape is an error naming the expected one
    assert!(m.velocity_embedded(&x, &t, &emb.narrow(1, 0, 6).unwrap(), &ForwardPlan::uniform(2, AttentionPlan::standard())).is_err());
}

fn tiny_task(data: &erg::data::Dataset) -> erg::train::TextToImageTask {
    // one "caption" row per class plus the empty prompt, from the tiny random encoder
    let enc = common::text_encoder(60);
    let ids: Vec<u32> = (0..data.classes.len() as u32 + 1)
        .flat_map(|c| if c == data.classes.len() as u32 { vec![101, 102, 0, 0, 0, 0] } else { vec![101, 3 + c, 20 + c, 102, 0, 0] })
        .collect();
    let n = data.classes.len() + 1;
    let texts = enc.encode_ids(&Tensor::from_vec(ids, (n, 6), &Device::Cpu).unwrap(), None).unwrap();
    erg::train::TextToImageTask { texts, prompts: (0..n).map(|c| format!("class {c}")).collect(), item_texts: data.labels.iter().map(|&l| vec![l]).collect() }
}

#[test]
fn training_lowers_the_loss_and_the_checkpoint_loads() {
    let data = erg::data::emoji::load(erg::data::emoji::DEFAULT_DIR, 8).unwrap();
    let task = tiny_task(&data);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = erg::train::TrainConfig::new(TextToImageConfig::test_tiny(), "emoji", 60, 3);
    cfg.batch_size = 16;
    cfg.optim.lr = 2e-3;
    cfg.warmup_steps = 5;
    cfg.checkpoint_every = 60;
    cfg.weak_step = None;
    let r = erg::train::train_task(&task, &cfg, &data, &Device::Cpu, &erg::train::RunPaths::new(dir.path()), erg::train::RunOptions::new()).unwrap();
    let log = std::fs::read_to_string(dir.path().join("loss.csv")).unwrap();
    let losses: Vec<f64> = log.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect();
    let (first, last) = (losses[..10].iter().sum::<f64>() / 10.0, losses[50..].iter().sum::<f64>() / 10.0);
    assert!(last < 0.8 * first, "loss {first} -> {last}");
    assert!(r.final_loss < r.first_loss);

    let ema = dir.path().join("ema.safetensors");
    let (m, card) = TextToImage::load(&ema, Some(common::text_encoder(60)), &Device::Cpu).unwrap();
    assert_eq!((card.model.as_str(), card.step), ("mmdit-t2i", 60));
    let (v, _) = erg::guidance::guided_velocity(&m, &Guidance::cfg(2.0), &noise(5), 0.5, &prompts()).unwrap();
    assert_eq!(v.dims(), &[2, 3, 8, 8]);
    // an encoder of the wrong width is refused
    let wide = MiniLmConfig { hidden_size: 24, num_attention_heads: 4, ..common::tiny_minilm() };
    let ww = common::random_tensors(1, 0.5, |vb| MiniLm::new(&wide, vb));
    let wrong = TextEncoder::new(MiniLm::new(&wide, VarBuilder::from_tensors(ww, DType::F32, &Device::Cpu)).unwrap(), 6).unwrap();
    assert!(TextToImage::load(&ema, Some(wrong), &Device::Cpu).is_err());
    // a missing tensor is named
    let mut t = erg::checkpoint::load_tensors(&ema, &Device::Cpu).unwrap();
    t.remove("joint_blocks.1.x_block.mlp.fc2.weight");
    let broken = dir.path().join("broken.safetensors");
    let card: erg::checkpoint::ModelCard<serde_json::Value> = erg::checkpoint::load_card(&ema).unwrap();
    erg::checkpoint::save_checkpoint(&t, &card, &broken, DType::F32).unwrap();
    let e = TextToImage::load(&broken, None, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("joint_blocks.1.x_block.mlp.fc2.weight"), "{e}");
    // a DiT card is not a text-to-image model
    assert!(TextToImage::load(std::path::Path::new(erg::checkpoint::SHIPPED_EMOJI_DIT), None, &Device::Cpu).is_err());
}

#[test]
fn every_weight_of_the_text_to_image_model_gets_a_gradient() {
    for qk_norm in [false, true] {
        every_weight_gets_a_gradient(TextToImageConfig {
            mmdit: erg::models::mmdit::MmditConfig { qk_norm, ..TextToImageConfig::test_tiny().mmdit },
            ..TextToImageConfig::test_tiny()
        });
    }
}

fn every_weight_gets_a_gradient(cfg: TextToImageConfig) {
    let map = erg::nn::SeededVarMap::new(4);
    let m = TextToImage::new(&cfg, erg::nn::seeded_varbuilder(&map, DType::F32, &Device::Cpu), None).unwrap();
    for (i, v) in map.varmap.all_vars().iter().enumerate() {
        let mut r = erg::rng::stream(4, 500 + i as u64);
        v.set(&(erg::rng::randn(&mut r, v.dims(), &Device::Cpu).unwrap() * 0.2).unwrap()).unwrap();
    }
    let emb = common::text_encoder(2).encode_ids(&prompts(), None).unwrap();
    let x1 = noise(7);
    let t = Tensor::new(&[0.3f32, 0.6], &Device::Cpu).unwrap();
    let loss = erg::flow::loss_embedded(&m, &x1, &noise(8), &t, &emb, erg::nn::Kernels::Fused).unwrap();
    let grads = loss.backward().unwrap();
    let data = map.varmap.data().lock().unwrap();
    // The last block's text stream is pre-only: its queries reach no output, so its ln_q is
    // rightly untouched (SD3.5 ships it anyway).
    let unused = format!("joint_blocks.{}.context_block.attn.ln_q.weight", cfg.mmdit.depth - 1);
    for (name, v) in data.iter().filter(|(n, _)| **n != unused) {
        let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "zero gradient for {name}");
    }
    if cfg.mmdit.qk_norm {
        assert!(data.keys().any(|k| k.ends_with("attn.ln_q.weight")));
    }
}

#[test]
fn real_minilm_prompts_when_cached() {
    let Ok(minilm) = MiniLm::from_hub(&Device::Cpu) else {
        eprintln!("all-MiniLM-L6-v2 is not in the hf-hub cache (run setup_minilm); skipped");
        return;
    };
    let enc = TextEncoder::new(minilm, 16).unwrap();
    let ids = enc.token_ids(&["red apple", "", "a very long prompt that goes on and on with many many words beyond sixteen tokens"], &Device::Cpu).unwrap();
    let rows = ids.to_vec2::<u32>().unwrap();
    assert_eq!(rows[0][0], 101);
    assert!(rows[0][1..].contains(&102) && rows[0][15] == 0);
    assert_eq!(rows[1], empty_prompt_ids(1, 16, &Device::Cpu).unwrap().to_vec2::<u32>().unwrap()[0]);
    assert_eq!(rows[2][15], 102); // cut, ending with [SEP]
    let plain = enc.encode_ids(&ids, None).unwrap();
    let rect = enc.encode_ids(&ids, Some(&TextRectification::new(0.01, 0, 6))).unwrap();
    assert_eq!(plain.dims(), &[3, 17, 384]);
    assert!(max_abs_diff(&plain, &rect) > 1e-2);
}

#[test]
fn shipped_text_to_image_model_runs_every_method() {
    use erg::models::mmdit::t2i::{SHIPPED_EMOJI_MMDIT, SHIPPED_EMOJI_MMDIT_WEAK};
    let (path, weak_path) = (std::path::Path::new(SHIPPED_EMOJI_MMDIT), std::path::Path::new(SHIPPED_EMOJI_MMDIT_WEAK));
    // Without the text encoder in the cache the weights still load and say what is missing.
    let (bare, card) = TextToImage::load(path, None, &Device::Cpu).expect("the shipped text-to-image checkpoint loads");
    let (bare_weak, wcard) = TextToImage::load(weak_path, None, &Device::Cpu).expect("AutoGuidance's weak model loads");
    assert_eq!((card.model.as_str(), bare.depth()), ("mmdit-t2i", 12));
    // The weak model is smaller and shorter-trained, with the same conditioning (Karras et al. 2024).
    assert!(bare_weak.depth() < bare.depth() && wcard.step < card.step);
    assert_eq!((wcard.config.text_encoder.as_str(), wcard.config.context_len), (card.config.text_encoder.as_str(), card.config.context_len));
    let Ok((m, _)) = TextToImage::load_with_hub_encoder(path, &Device::Cpu) else {
        eprintln!("all-MiniLM-L6-v2 is not in the hf-hub cache (run setup_minilm); skipped");
        return;
    };
    let (weak, _) = TextToImage::load_with_hub_encoder(weak_path, &Device::Cpu).unwrap();
    let ids = m.prompt_ids(&["red apple", "rocket"], &Device::Cpu).unwrap();
    let mut r = erg::rng::stream(8, 8);
    let x0 = erg::rng::randn(&mut r, &[2, 3, 32, 32], &Device::Cpu).unwrap();
    for name in PRESET_NAMES {
        let g = preset_for(name, 3.0, m.depth(), m.text_layers()).unwrap();
        let mut guider = Guider::new(&g, Models { main: &m, weak: Some(&weak) }, 1).unwrap();
        for (step, t) in [0.0, 0.5, 0.9].into_iter().enumerate() {
            let (v, _) = guider.velocity(&x0, t, step, &ids).unwrap();
            assert!(v.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().is_finite(), "{name} at t = {t}");
        }
    }
}

#[test]
fn shipped_text_to_image_checkpoint_is_its_preset_with_its_selection_and_its_loss_log_ends_at_its_step() {
    // The 12-block model, trained in segments (README, "Text-to-image"); its log is replaced with
    // it after every segment, and its card holds its own mean-rank selection (`table1 --sweep`,
    // then `export --selection`), which table1 and t2i use by default.
    use erg::models::mmdit::TextToImageConfig;
    let path = std::path::Path::new(erg::models::mmdit::t2i::SHIPPED_EMOJI_MMDIT);
    let (_, card) = TextToImage::load(path, None, &Device::Cpu).expect("the shipped text-to-image checkpoint loads strictly");
    assert_eq!(card.config, TextToImageConfig::preset("emoji-base").unwrap()); // 12 blocks, D 192
    let selection = card.selection.as_ref().expect("the shipped card holds its mean-rank selection");
    let methods = erg::guidance::from_selection(selection).unwrap();
    for name in ["cfg", "cerg", "ierg", "erg"] {
        assert!(methods.contains_key(name), "the selection has no {name}");
    }
    let log = std::fs::read_to_string(path.with_file_name("emoji-mmdit-base-loss.csv")).unwrap();
    let steps: Vec<u64> = log.lines().skip(1).map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    assert!(steps.iter().copied().eq(1..=card.step), "the log counts steps 1..={} without gaps", card.step);
}

#[test]
fn text_to_image_presets_are_valid_and_unknown_names_are_listed() {
    use erg::models::mmdit::TextToImageConfig;
    for name in ["emoji-small", "emoji-base", "test-tiny"] {
        TextToImageConfig::preset(name).unwrap().validate().unwrap();
    }
    let base = TextToImageConfig::preset("emoji-base").unwrap();
    assert_eq!((base.mmdit.depth, base.mmdit.hidden_size()), (12, 192));
    assert!(TextToImageConfig::preset("emoji-huge").unwrap_err().to_string().contains("emoji-small, emoji-base"));
}
