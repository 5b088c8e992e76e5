//! SD3 against diffusers: a tiny random-weight pipeline built with diffusers' and transformers'
//! own classes (`benches/reference/sd3_reference.py`), its weights in both layouts and its
//! stage-by-stage outputs committed under `tests/fixtures/sd3/`. Tolerances on f32: encoders
//! 1e-4 absolute (outputs of order 1); the MMDiT 1e-4 relative to the largest output value (its
//! random weights give outputs up to ≈ 20; measured 1.8e-5); the 4 CFG latents 5e-4 relative
//! (w = 5 amplifies differences between the two branches; measured 1.2e-4); the image 1e-3.
mod common;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use common::max_abs_diff;
use erg::text::{BiasTemperature, ClipText, ClipTextConfig, T5Config, T5Encoder, TextRectification};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd3")
}

fn fixtures() -> HashMap<String, Tensor> {
    erg::checkpoint::load_tensors(&fixtures_dir().join("fixtures.safetensors"), &Device::Cpu).unwrap()
}

/// max |a − b| / max(1, max |b|).
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    max_abs_diff(a, b) / scale.max(1.0)
}

fn ids(fx: &HashMap<String, Tensor>, key: &str) -> Tensor {
    fx[key].to_dtype(DType::U32).unwrap()
}

fn component(dir: &str, file: &str) -> VarBuilder<'static> {
    let t = erg::checkpoint::load_tensors(&fixtures_dir().join("diffusers").join(dir).join(file), &Device::Cpu).unwrap();
    VarBuilder::from_tensors(t, DType::F32, &Device::Cpu)
}

fn config<T: serde::de::DeserializeOwned>(dir: &str) -> T {
    serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("diffusers").join(dir).join("config.json")).unwrap()).unwrap()
}

#[test]
fn clip_encoders_match_transformers_and_candle() {
    let fx = fixtures();
    for (dir, name, key) in [("text_encoder", "clip_l", "clip_l"), ("text_encoder_2", "clip_g", "clip_g")] {
        let cfg: ClipTextConfig = config(dir);
        let vb = component(dir, "model.safetensors");
        let clip = ClipText::new(&cfg, vb.clone()).unwrap();
        for tag in ["prompt", "empty"] {
            let i = ids(&fx, &format!("{tag}.{key}_ids"));
            let out = clip.forward(&i, None).unwrap();
            let d_pen = max_abs_diff(&out.penultimate, &fx[&format!("{tag}.{key}_penultimate")]);
            let d_pool = max_abs_diff(&out.pooled, &fx[&format!("{tag}.{key}_pooled")]);
            eprintln!("{name} {tag}: penultimate max |Δ| = {d_pen:.2e}, pooled {d_pool:.2e}");
            assert!(d_pen < 1e-4 && d_pool < 1e-4, "{name} {tag}: penultimate {d_pen}, pooled {d_pool}");
        }
        // candle-transformers' CLIP text model (final layer norm at the end-of-text token) on the same weights
        let ccfg = candle_transformers::models::clip::text_model::ClipTextConfig {
            vocab_size: cfg.vocab_size,
            embed_dim: cfg.hidden_size,
            activation: match cfg.hidden_act {
                erg::text::clip::ClipActivation::QuickGelu => candle_transformers::models::clip::text_model::Activation::QuickGelu,
                erg::text::clip::ClipActivation::Gelu => candle_transformers::models::clip::text_model::Activation::QuickGelu,
            },
            intermediate_size: cfg.intermediate_size,
            max_position_embeddings: cfg.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: cfg.num_hidden_layers,
            num_attention_heads: cfg.num_attention_heads,
            projection_dim: cfg.projection_dim,
        };
        if cfg.hidden_act == erg::text::clip::ClipActivation::QuickGelu {
            let theirs = candle_transformers::models::clip::text_model::ClipTextTransformer::new(vb.pp("text_model"), &ccfg).unwrap();
            let i = ids(&fx, "prompt.clip_l_ids");
            let d = max_abs_diff(&theirs.forward(&i).unwrap(), &clip.forward(&i, None).unwrap().pooled); // CLIP-L's projection is the identity here
            assert!(d < 1e-4, "candle-transformers CLIP-L pooled differs by {d}");
        }
    }
}

#[test]
fn t5_encoder_matches_transformers_and_candle() {
    let fx = fixtures();
    let cfg: T5Config = config("text_encoder_3");
    let vb = component("text_encoder_3", "model.safetensors");
    let t5 = T5Encoder::new(&cfg, vb.clone()).unwrap();
    for tag in ["prompt", "empty"] {
        let i = ids(&fx, &format!("{tag}.t5_ids"));
        let d = max_abs_diff(&t5.forward(&i, None).unwrap(), &fx[&format!("{tag}.t5_last")]);
        eprintln!("T5 {tag}: max |Δ| = {d:.2e}");
        assert!(d < 1e-4, "T5 {tag}: {d}");
    }
    let ccfg: candle_transformers::models::t5::Config =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("diffusers/text_encoder_3/config.json")).unwrap()).unwrap();
    let mut theirs = candle_transformers::models::t5::T5EncoderModel::load(vb, &ccfg).unwrap();
    let i = ids(&fx, "prompt.t5_ids");
    let d = max_abs_diff(&theirs.forward(&i).unwrap(), &t5.forward(&i, None).unwrap());
    assert!(d < 1e-4, "candle-transformers T5 differs by {d}");
}

#[test]
fn c_erg_temperature_in_the_encoders() {
    let fx = fixtures();
    let t5 = T5Encoder::new(&config("text_encoder_3"), component("text_encoder_3", "model.safetensors")).unwrap();
    let i = ids(&fx, "prompt.t5_ids");
    let plain = t5.forward(&i, None).unwrap();
    let one = TextRectification::new(1.0, 0, 2);
    assert!(max_abs_diff(&t5.forward(&i, Some(&one)).unwrap(), &plain) < 1e-6, "tau_c = 1 is the plain encoder");
    let whole = TextRectification::new(0.1, 1, 2);
    let qk = TextRectification { bias: BiasTemperature::QkOnly, ..whole };
    let (a, b) = (t5.forward(&i, Some(&whole)).unwrap(), t5.forward(&i, Some(&qk)).unwrap());
    assert!(max_abs_diff(&a, &plain) > 1e-3 && max_abs_diff(&b, &plain) > 1e-3, "tau_c < 1 changes the output");
    assert!(max_abs_diff(&a, &b) > 1e-4, "tau·(QK + B) and tau·QK + B differ");
    // τ·QKᵀ + B with τ → 0 leaves attention to the position bias alone: compare with a model whose q is zero
    let vb = component("text_encoder_3", "model.safetensors");
    let mut zero_q: HashMap<String, Tensor> = HashMap::new();
    for l in 0..2 {
        let k = format!("encoder.block.{l}.layer.0.SelfAttention.q.weight");
        zero_q.insert(k.clone(), vb.get((32, 32), &k).unwrap().zeros_like().unwrap());
    }
    let mut all = erg::checkpoint::load_tensors(&fixtures_dir().join("diffusers/text_encoder_3/model.safetensors"), &Device::Cpu).unwrap();
    all.extend(zero_q);
    let t5_zero = T5Encoder::new(&config("text_encoder_3"), VarBuilder::from_tensors(all, DType::F32, &Device::Cpu)).unwrap();
    let tiny = TextRectification { bias: BiasTemperature::QkOnly, ..TextRectification::new(1e-9, 0, 2) };
    let d = max_abs_diff(&t5.forward(&i, Some(&tiny)).unwrap(), &t5_zero.forward(&i, None).unwrap());
    assert!(d < 1e-4, "QkOnly with tau -> 0 should leave only the bias: {d}");

    let clip = ClipText::new(&config("text_encoder_2"), component("text_encoder_2", "model.safetensors")).unwrap();
    let i = ids(&fx, "prompt.clip_g_ids");
    let plain = clip.forward(&i, None).unwrap();
    assert!(max_abs_diff(&clip.forward(&i, Some(&TextRectification::new(1.0, 0, 3))).unwrap().pooled, &plain.pooled) < 1e-6);
    let late = clip.forward(&i, Some(&TextRectification::new(0.1, 2, 3))).unwrap();
    assert!(max_abs_diff(&late.penultimate, &plain.penultimate) < 1e-6, "the last layer does not feed the penultimate state");
    assert!(max_abs_diff(&late.pooled, &plain.pooled) > 1e-4, "but it feeds the pooled output");
}

use erg::attention::{ForwardPlan, NoProbe};
use erg::guidance::{Guidance, Guider, Models};
use erg::models::mmdit::{Mmdit, MmditConfig};
use erg::models::sd3::{weights, Sd3, Sd3Options, Sd3Spec};
use erg::models::Denoiser;

fn tiny_opts() -> Sd3Options {
    Sd3Options { image_size: (128, 128), max_sequence_length: 16, ..Default::default() }
}

fn mmdit_config(json: &str) -> MmditConfig {
    // the diffusers transformer config beside the weights, read as Sd3Spec reads a folder's
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures_dir().join("diffusers");
    for c in ["text_encoder", "text_encoder_2", "text_encoder_3", "vae"] {
        std::fs::create_dir_all(dir.path().join(c)).unwrap();
        std::fs::copy(src.join(c).join("config.json"), dir.path().join(c).join("config.json")).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("transformer")).unwrap();
    std::fs::copy(fixtures_dir().join(json), dir.path().join("transformer/config.json")).unwrap();
    Sd3Spec::from_diffusers(dir.path()).unwrap().mmdit
}

#[test]
fn mmdit_matches_diffusers_in_both_layouts_with_qk_norm_and_mmdit_x() {
    let fx = fixtures();
    let dev = Device::Cpu;
    let run = |m: &Mmdit| {
        m.forward_sd3(&fx["dit.x"], &fx["dit.timestep"], &fx["dit.y"], &fx["dit.context"], &ForwardPlan::uniform(2, Default::default()), &mut NoProbe).unwrap()
    };
    // diffusers layout → SD3 names
    let spec = Sd3Spec::from_diffusers(&fixtures_dir().join("diffusers")).unwrap();
    let dir = fixtures_dir().join("diffusers/transformer");
    let t = weights::diffusers_to_sd3(weights::load_component(&dir, &dev).unwrap(), spec.mmdit.depth, &dir).unwrap();
    let m = erg::checkpoint::build_strict(&dir, t, &dev, |vb| Mmdit::new(&spec.mmdit, vb)).unwrap();
    let d = rel_diff(&run(&m), &fx["dit.out"]);
    eprintln!("MMDiT (diffusers layout): relative max |Δ| = {d:.2e}");
    assert!(d < 1e-4, "MMDiT (diffusers layout) vs diffusers: {d}");
    // single file
    let single = erg::checkpoint::load_tensors(&fixtures_dir().join("sd3_tiny.safetensors"), &dev).unwrap();
    let parts = weights::split_single_file(single, 4, &fixtures_dir()).unwrap();
    let m = erg::checkpoint::build_strict(&dir, parts.transformer, &dev, |vb| Mmdit::new(&spec.mmdit, vb)).unwrap();
    let d = rel_diff(&run(&m), &fx["dit.out"]);
    assert!(d < 1e-4, "MMDiT (single file) vs diffusers: {d}");
    for tag in ["qknorm", "mmditx"] {
        let cfg = mmdit_config(&format!("transformer_{tag}.json"));
        let path = fixtures_dir().join(format!("transformer_{tag}.safetensors"));
        let t = weights::split_single_file(erg::checkpoint::load_tensors(&path, &dev).unwrap(), 4, &path).unwrap().transformer;
        let m = erg::checkpoint::build_strict(&path, t, &dev, |vb| Mmdit::new(&cfg, vb)).unwrap();
        let d = rel_diff(&run(&m), &fx[&format!("{tag}.out")]);
        eprintln!("MMDiT {tag}: relative max |Δ| = {d:.2e}");
        assert!(d < 1e-4, "MMDiT {tag} vs diffusers: {d}");
    }
}

#[test]
fn sigma_grid_is_diffusers() {
    let fx = fixtures();
    let ours: Vec<f32> = erg::flow::flow_match_sigmas(4, 3.0, 1000).iter().map(|&s| s as f32).collect();
    let theirs = fx["sigmas"].to_vec1::<f32>().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - b).abs() < 1e-6, "sigmas {ours:?} vs diffusers {theirs:?}");
    }
    let t = erg::flow::flow_match_schedule(4, 3.0);
    assert!(t[0] == 0.0 && t[4] == 1.0 && t.windows(2).all(|w| w[1] > w[0]), "crate time increases from noise to data: {t:?}");
}

/// The whole pipeline, stage by stage, in both layouts: token ids, prompt embeddings, a 4-step
/// CFG run from diffusers' noise, the decoded image.
#[test]
fn pipeline_matches_diffusers_stage_by_stage_in_both_layouts() {
    let fx = fixtures();
    let dev = Device::Cpu;
    let folder = Sd3::load(fixtures_dir().join("diffusers").to_str().unwrap(), &tiny_opts(), &dev).unwrap();
    let toks = ["tokenizer", "tokenizer_2", "tokenizer_3"].map(|t| fixtures_dir().join("diffusers").join(t).join("tokenizer.json").display().to_string());
    let spec = Sd3Spec::from_diffusers(&fixtures_dir().join("diffusers")).unwrap();
    let single_opts = Sd3Options { spec: Some(spec), tokenizers: Some(toks), ..tiny_opts() };
    let single = Sd3::load(fixtures_dir().join("sd3_tiny.safetensors").to_str().unwrap(), &single_opts, &dev).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("fixtures.json")).unwrap()).unwrap();
    let prompt = meta["prompt"].as_str().unwrap();
    for (name, p) in [("diffusers folder", &folder), ("single file", &single)] {
        // token ids: CLIP-L padded with <|endoftext|>, CLIP-G with "!", T5 with <pad>
        let ids = p.prompt_ids(&[prompt], &dev).unwrap();
        let want = Tensor::cat(&[ids_of(&fx, "prompt.clip_l_ids"), ids_of(&fx, "prompt.clip_g_ids"), ids_of(&fx, "prompt.t5_ids")], 1).unwrap();
        assert_eq!(ids.to_vec2::<u32>().unwrap(), want.to_vec2::<u32>().unwrap(), "{name}: token ids");
        let empty = p.null_condition(&ids).unwrap();
        let want = Tensor::cat(&[ids_of(&fx, "empty.clip_l_ids"), ids_of(&fx, "empty.clip_g_ids"), ids_of(&fx, "empty.t5_ids")], 1).unwrap();
        assert_eq!(empty.to_vec2::<u32>().unwrap(), want.to_vec2::<u32>().unwrap(), "{name}: empty prompt ids");
        // prompt embeddings
        for (ids, pe, ppe) in [(&ids, "prompt_embeds", "pooled_prompt_embeds"), (&empty, "negative_prompt_embeds", "negative_pooled_prompt_embeds")] {
            let (ctx, y) = p.text().encode(ids, None).unwrap();
            let (d1, d2) = (max_abs_diff(&ctx, &fx[pe]), max_abs_diff(&y, &fx[ppe]));
            eprintln!("{name}: {pe} max |Δ| = {d1:.2e}, {ppe} {d2:.2e}");
            assert!(d1 < 1e-4 && d2 < 1e-4, "{name}: {pe} {d1}, {ppe} {d2}");
        }
        // 4-step CFG with w from the fixture, from diffusers' noise
        let w = meta["guidance_scale"].as_f64().unwrap();
        let g = Guidance::cfg(w);
        let mut guider = Guider::new(&g, Models::main(p), 0).unwrap();
        let mut states = vec![];
        let last = erg::flow::euler(
            fx["noise"].clone(),
            &p.schedule(4),
            |x, t, step| Ok(guider.velocity(x, t, step, &ids)?.0),
            |info| {
                if info.step > 0 {
                    states.push(info.x.clone());
                }
                Ok(())
            },
        )
        .unwrap();
        states.push(last.clone());
        for (i, s) in states.iter().enumerate() {
            let d = rel_diff(s, &fx[&format!("latents.{i}")]);
            eprintln!("{name}: latents after step {i}, relative max |Δ| = {d:.2e}");
            assert!(d < 5e-4, "{name}: latents after step {i} differ by {d} (relative)");
        }
        let img = p.vae().decode(&last).unwrap();
        let d = max_abs_diff(&img, &fx["image"]);
        eprintln!("{name}: decoded image max |Δ| = {d:.2e}");
        assert!(d < 1e-3, "{name}: decoded image differs by {d}");
        // encode: candle's KL encoder draws from its Gaussian (its mean is private); the draws
        // have the latent shape and scatter around diffusers' mean: the mean of 64 draws follows it
        let z = p.vae().encode(&fx["image"].repeat((64, 1, 1, 1)).unwrap()).unwrap().mean_keepdim(0).unwrap();
        assert_eq!(z.dims(), fx["image_latent_mean"].dims());
        let want = ((fx["image_latent_mean"].clone() - 0.0609).unwrap() * 1.5305).unwrap();
        let corr = {
            let (a, b) = (z.flatten_all().unwrap(), want.flatten_all().unwrap());
            let (a, b) = (a.broadcast_sub(&a.mean_all().unwrap()).unwrap(), b.broadcast_sub(&b.mean_all().unwrap()).unwrap());
            let num = (&a * &b).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            num / (a.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() * b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()).sqrt()
        };
        eprintln!("{name}: VAE encode (mean of 64 draws) vs diffusers' mean, correlation {corr:.3}");
        assert!(corr > 0.9, "{name}: encoded latents do not follow diffusers' encoder mean (correlation {corr})");
    }
}

fn ids_of(fx: &HashMap<String, Tensor>, key: &str) -> Tensor {
    ids(fx, key)
}

fn tiny() -> Sd3 {
    Sd3::load(fixtures_dir().join("diffusers").to_str().unwrap(), &tiny_opts(), &Device::Cpu).unwrap()
}

/// ERG's settings for the tiny pipeline: Table 7's SD3 row scaled to 2 blocks and 3-layer encoders.
fn sd3_erg(p: &Sd3) -> erg::guidance::TextErg {
    erg::guidance::TextErg::sd3(p.depth(), p.text().depths())
}

#[test]
fn c_erg_on_sd3_changes_only_the_rectified_prompt_and_i_erg_before_kappa_is_cfg() {
    let p = tiny();
    let dev = Device::Cpu;
    let ids = p.prompt_ids(&["a red apple", "a cat on a table"], &dev).unwrap();
    let plain = p.embed_condition(&ids).unwrap();
    let one = TextRectification { tau: 1.0, ..sd3_erg(&p).text };
    assert!(max_abs_diff(&p.embed_rectified_condition(&ids, &one).unwrap(), &plain) < 1e-6, "tau_c = 1 is the plain encoding");
    let rect =
        p.embed_rectified_condition(&ids, &TextRectification { encoder_layers: Some([(1, 2), (3, 3), (2, 2)]), ..TextRectification::new(0.1, 0, 0) }).unwrap();
    let ctx_l = |e: &Tensor| e.narrow(1, 0, 77).unwrap().narrow(2, 0, 8).unwrap();
    let rest = |e: &Tensor| e.narrow(1, 0, 77).unwrap().narrow(2, 8, 24).unwrap();
    assert!(max_abs_diff(&ctx_l(&rect), &ctx_l(&plain)) > 1e-4, "tau_c < 1 in CLIP-L layer 1 changes CLIP-L's tokens");
    assert!(max_abs_diff(&rest(&rect), &rest(&plain)) < 1e-6, "and nothing of CLIP-G's");
    assert!(max_abs_diff(&rect.narrow(1, 77, 16).unwrap(), &plain.narrow(1, 77, 16).unwrap()) < 1e-6, "nor T5's");
    // the null condition is not touched by C-ERG: the negative of CFG stays the empty prompt
    let null = p.embed_request(&ids, erg::models::Condition::Null).unwrap();
    let empty = p.embed_condition(&p.prompt_ids(&["", ""], &dev).unwrap()).unwrap();
    assert!(max_abs_diff(&null, &empty) < 1e-6);
    // a range beyond an encoder's layers is refused, naming it
    let bad = TextRectification { encoder_layers: Some([(0, 2), (0, 3), (0, 9)]), ..TextRectification::new(0.1, 0, 0) };
    let err = p.embed_rectified_condition(&ids, &bad).unwrap_err().to_string();
    assert!(err.contains("T5"), "{err}");
    // I-ERG before κ is CFG
    let x = erg::rng::randn(&mut erg::rng::stream(3, 0), &[2, 16, 16, 16], &dev).unwrap();
    let te = sd3_erg(&p);
    let ierg = erg::guidance::preset_with_text("ierg", 5.0, p.depth(), Some(te)).unwrap();
    let cfg = Guidance::cfg(5.0);
    let t_before = te.ierg.kappa * 0.5;
    let (a, _) = erg::guidance::guided_velocity(&p, &ierg, &x, t_before, &ids).unwrap();
    let (b, _) = erg::guidance::guided_velocity(&p, &cfg, &x, t_before, &ids).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-5, "before kappa I-ERG is CFG");
    let (a, _) = erg::guidance::guided_velocity(&p, &ierg, &x, 0.9, &ids).unwrap();
    let (b, _) = erg::guidance::guided_velocity(&p, &cfg, &x, 0.9, &ids).unwrap();
    assert!(max_abs_diff(&a, &b) > 1e-4, "after kappa it is not");
}

#[test]
fn every_method_runs_on_the_tiny_sd3_pipeline_with_its_nfe() {
    let p = tiny();
    let dev = Device::Cpu;
    let ids = p.prompt_ids(&["a red apple"], &dev).unwrap();
    let te = Some(sd3_erg(&p));
    let expected_nfe = |name: &str| match name {
        "none" | "uncond" => 1,
        "slg" | "cfg+pag" | "cfg+seg" | "cfg+sag" => 3,
        _ => 2,
    };
    for name in erg::guidance::PRESET_NAMES.iter().filter(|n| !n.contains("autoguidance") && !n.ends_with("-uncond")) {
        let g = erg::guidance::preset_with_text(name, 5.0, p.depth(), te).unwrap();
        let s = erg::sample::sample(Models::main(&p), &g, &ids, &erg::sample::SampleConfig { num_steps: 3, seed: 0, batch_size: 1 }, 0, &dev, |_, _| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.images.dims(), &[1, 16, 16, 16], "{name}");
        assert!(erg::checkpoint::all_finite(&s.images).unwrap(), "{name}");
        if !["sag", "cfg+sag", "cads", "erg+cads", "nag", "cfg+nag"].contains(name) && !name.contains("interval") && !name.contains("zero-star") {
            assert_eq!(s.nfe_per_step.round() as usize, expected_nfe(name), "{name}: NFE per step");
        }
    }
}
