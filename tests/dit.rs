//! DiT shapes, checkpoint key names, positions and input checks.
mod common;
use candle_core::{DType, Device, Tensor};
use common::{max_abs_diff, random_dit};
use erg::attention::{AttentionPlan, ForwardPlan, Rectifier};
use erg::models::dit::{Dit, DitConfig};
use erg::models::embed::pos_embed_2d;
use erg::nn::{seeded_varbuilder, SeededVarMap};

fn inputs(cfg: &DitConfig, b: usize) -> (Tensor, Tensor, Tensor) {
    let mut r = erg::rng::stream(9, 0);
    let x = erg::rng::randn(&mut r, &[b, cfg.in_channels, cfg.input_size.0, cfg.input_size.1], &Device::Cpu).unwrap();
    let t = Tensor::new(&vec![0.3f32; b][..], &Device::Cpu).unwrap();
    let y = Tensor::new(&(0..b as u32).map(|i| i % (cfg.num_classes as u32 + 1)).collect::<Vec<_>>()[..], &Device::Cpu).unwrap();
    (x, t, y)
}

#[test]
fn output_shapes_for_every_path() {
    let mut cfg = DitConfig::test_tiny();
    let (m, _) = random_dit(&cfg, 1);
    let (x, t, y) = inputs(&cfg, 3);
    for plan in [
        ForwardPlan::uniform(3, AttentionPlan::standard()),
        ForwardPlan::train(3),
        ForwardPlan::uniform(3, AttentionPlan::blocks(Rectifier::temperature(0.1), 0, 2)),
    ] {
        assert_eq!(m.forward(&x, &t, &y, &plan).unwrap().dims(), &[3, 1, 28, 28]);
    }
    // learn_sigma: the final layer outputs 2C channels; the velocity keeps the first C.
    cfg.learn_sigma = true;
    let (m, _) = random_dit(&cfg, 1);
    assert_eq!(m.forward(&x, &t, &y, &ForwardPlan::uniform(3, AttentionPlan::standard())).unwrap().dims(), &[3, 1, 28, 28]);
    // non-square RGB input
    let cfg = DitConfig { input_size: (16, 24), in_channels: 3, ..DitConfig::test_tiny() };
    let (m, _) = random_dit(&cfg, 2);
    let (x, t, y) = inputs(&cfg, 2);
    assert_eq!(m.forward(&x, &t, &y, &ForwardPlan::uniform(2, AttentionPlan::standard())).unwrap().dims(), &[2, 3, 16, 24]);
}

#[test]
fn fused_and_differentiable_kernels_agree() {
    let cfg = DitConfig::test_tiny();
    let (m, _) = random_dit(&cfg, 3);
    let (x, t, y) = inputs(&cfg, 4);
    let a = m.forward(&x, &t, &y, &ForwardPlan::uniform(4, AttentionPlan::standard())).unwrap();
    let b = m.forward(&x, &t, &y, &ForwardPlan::train(4)).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-4, "{}", max_abs_diff(&a, &b));
}

#[test]
fn weight_names_follow_official_checkpoints() {
    let cfg = DitConfig { learn_sigma: true, activation: erg::models::dit::Activation::GeluTanh, ..DitConfig::test_tiny() };
    let map = SeededVarMap::new(0);
    Dit::new(&cfg, seeded_varbuilder(&map, DType::F32, &Device::Cpu)).unwrap();
    let data = map.varmap.data().lock().unwrap();
    let shape = |k: &str| data.get(k).unwrap_or_else(|| panic!("missing {k}")).dims().to_vec();
    let d = cfg.hidden_size;
    assert_eq!(shape("x_embedder.proj.weight"), vec![d, 1, 4, 4]);
    assert_eq!(shape("t_embedder.mlp.0.weight"), vec![d, 256]);
    assert_eq!(shape("t_embedder.mlp.2.weight"), vec![d, d]);
    assert_eq!(shape("y_embedder.embedding_table.weight"), vec![11, d]);
    assert_eq!(shape("blocks.1.attn.qkv.weight"), vec![3 * d, d]);
    assert_eq!(shape("blocks.1.attn.proj.bias"), vec![d]);
    assert_eq!(shape("blocks.0.mlp.fc1.weight"), vec![2 * d, d]);
    assert_eq!(shape("blocks.0.adaLN_modulation.1.weight"), vec![6 * d, d]);
    assert_eq!(shape("final_layer.linear.weight"), vec![4 * 4 * 2, d]);
    assert_eq!(shape("final_layer.adaLN_modulation.1.weight"), vec![2 * d, d]);
    let n: usize = data.values().map(|v| v.elem_count()).sum();
    assert_eq!(n, cfg.num_params());
    // adaLN-Zero: modulations and the output layer start at zero
    assert_eq!(data["blocks.0.adaLN_modulation.1.weight"].as_tensor().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    assert_eq!(data["final_layer.linear.weight"].as_tensor().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn presets_are_the_official_sizes() {
    let xl = DitConfig::xl_2();
    assert_eq!((xl.depth, xl.hidden_size, xl.num_heads, xl.patch_size), (28, 1152, 16, 2));
    // DiT-XL/2 has 675M parameters (Peebles & Xie, Table 1)
    assert!((xl.num_params() as f64 / 1e6 - 675.0).abs() < 1.0, "{}", xl.num_params());
    assert!(DitConfig::preset("DiT-B/2").is_ok());
    assert!(DitConfig::preset("DiT-Q/3").unwrap_err().to_string().contains("known"));
}

#[test]
fn sincos_positions_match_dit() {
    // DiT's get_2d_sincos_pos_embed: first half encodes the column (w), second the row (h).
    let p = pos_embed_2d(8, 2, 3, &Device::Cpu).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    // token (row 1, col 2) = index 5; omega = [1, 0.01]
    let want = [2f64.sin(), 0.02f64.sin(), 2f64.cos(), 0.02f64.cos(), 1f64.sin(), 0.01f64.sin(), 1f64.cos(), 0.01f64.cos()];
    for (g, w) in p[5].iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-6);
    }
}

#[test]
fn bad_inputs_give_clear_errors() {
    let cfg = DitConfig::test_tiny();
    let (m, _) = random_dit(&cfg, 4);
    let (x, t, y) = inputs(&cfg, 2);
    let plan = ForwardPlan::uniform(2, AttentionPlan::standard());
    let small = x.narrow(2, 0, 24).unwrap();
    let e = m.forward(&small, &t, &y, &plan).unwrap_err().to_string();
    assert!(e.contains("expects images of shape"), "{e}");
    let bad_y = Tensor::new(&[0u32, 11], &Device::Cpu).unwrap();
    assert!(m.forward(&x, &t, &bad_y, &plan).unwrap_err().to_string().contains("null class"));
    let e = m.forward(&x, &t, &y, &ForwardPlan::uniform(3, AttentionPlan::standard())).unwrap_err().to_string();
    assert!(e.contains("plan covers"), "{e}");
    let deep = ForwardPlan::uniform(2, AttentionPlan::blocks(Rectifier::temperature(0.1), 0, 5));
    assert!(m.forward(&x, &t, &y, &deep).unwrap_err().to_string().contains("beyond the model depth"));
    let cfg = DitConfig { input_size: (30, 28), ..DitConfig::test_tiny() };
    assert!(cfg.validate().unwrap_err().to_string().contains("multiple of patch size"));
}
