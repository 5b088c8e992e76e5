//! Pretrained feature extractors (DINOv2, pytorch-fid Inception-v3, CLIP) and hf-hub resolution,
//! offline: each test writes random weights in the checkpoint's key layout to a safetensors file,
//! loads it through the public loader, and checks what can be checked without the real weights.
mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use common::max_abs_diff;
use erg::features::resize::{bicubic, bicubic_matrix};
use erg::features::FeatureExtractor;
use erg::nn::{seeded_varbuilder, SeededVarMap};

/// Builds a model with seeded random weights, writes them to `path`, returns the tensors.
fn write_random<T>(path: &Path, seed: u64, build: impl Fn(VarBuilder) -> erg::Result<T>) -> HashMap<String, Tensor> {
    let map = SeededVarMap::new(seed);
    build(seeded_varbuilder(&map, DType::F32, &Device::Cpu)).unwrap();
    let tensors: HashMap<String, Tensor> = map.varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    erg::checkpoint::save_tensors(&tensors, path, DType::F32).unwrap();
    tensors
}

fn images(n: usize, c: usize, s: usize, seed: u64) -> Tensor {
    let mut r = erg::rng::stream(seed, 0);
    erg::rng::randn(&mut r, &[n, c, s, s], &Device::Cpu).unwrap().tanh().unwrap()
}

#[test]
fn bicubic_matches_pytorch_interpolate() {
    // Reference values: PyTorch 2.15 `F.interpolate(..., mode="bicubic", align_corners=False)`,
    // (a) x = arange(8)²/10 of shape (1, 1, 1, 8) to size (1, 19);
    // (b) y = sin(arange(37)) of shape (1, 1, 1, 37) with scale_factor (1, 16.1/37), as DINOv2
    //     interpolates its position embedding (output width 16).
    let a_ref = [
        -0.010960507,
        0.007670307,
        0.025172733,
        0.09236183,
        0.19012813,
        0.30795845,
        0.5150918,
        0.67741835,
        0.9657885,
        1.2125,
        1.5123981,
        1.9061171,
        2.2169216,
        2.7322922,
        3.1022885,
        3.6469045,
        4.2858377,
        4.7687154,
        5.042487,
    ];
    let b_ref = [
        0.5529372,
        0.20511942,
        -0.8613151,
        0.97734147,
        -0.38512868,
        -0.394828,
        0.9792217,
        -0.8577101,
        0.19167724,
        0.60925257,
        -1.0237994,
        0.70515019,
        0.021398967,
        -0.8023393,
        0.99189025,
        -0.5522493,
    ];
    let x = (Tensor::arange(0f32, 8.0, &Device::Cpu).unwrap().sqr().unwrap() / 10.0).unwrap().reshape((1, 1, 1, 8)).unwrap();
    let a = bicubic(&x, 1, 19, None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let y = Tensor::arange(0f32, 37.0, &Device::Cpu).unwrap().sin().unwrap().reshape((1, 1, 1, 37)).unwrap();
    let b = bicubic(&y, 1, 16, Some((1.0, 37.0 / 16.1))).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (got, want) in [(a, &a_ref[..]), (b, &b_ref[..])] {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
    // Same size is the identity; constants stay constant (weights sum to one).
    let x = images(2, 3, 16, 1);
    assert!(max_abs_diff(&bicubic(&x, 16, 16, None).unwrap(), &x) < 1e-6);
    let c = Tensor::full(0.3f32, (1, 2, 9, 7), &Device::Cpu).unwrap();
    assert!(max_abs_diff(&bicubic(&c, 20, 5, None).unwrap(), &Tensor::full(0.3f32, (1, 2, 20, 5), &Device::Cpu).unwrap()) < 1e-6);
    let m = bicubic_matrix(37, 16, 37.0 / 16.1);
    assert!((0..16).all(|i| (m[i * 37..(i + 1) * 37].iter().sum::<f64>() - 1.0).abs() < 1e-12));
}

#[test]
fn fid_average_pool_excludes_padding() {
    let ones = Tensor::ones((1, 1, 4, 5), DType::F32, &Device::Cpu).unwrap();
    let p = erg::features::inception::avg_pool_3x3_exclude_pad(&ones).unwrap();
    assert!(max_abs_diff(&p, &ones) < 1e-6, "corners average 4 real taps, not 4/9");
    let x = Tensor::arange(0f32, 9.0, &Device::Cpu).unwrap().reshape((1, 1, 3, 3)).unwrap();
    let p = erg::features::inception::avg_pool_3x3_exclude_pad(&x).unwrap();
    // corner (0,0): mean of 0,1,3,4 = 2; centre: mean of 0..9 = 4.
    let v = p.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!((v[0] - 2.0).abs() < 1e-6 && (v[4] - 4.0).abs() < 1e-6, "{v:?}");
}

#[test]
fn inception_loads_pytorch_fid_layout_and_names_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inception.safetensors");
    let mut tensors = write_random(&path, 3, erg::features::inception::FidInception::new);
    assert!(tensors.contains_key("Mixed_7c.branch3x3dbl_3b.bn.running_var"));
    assert!(tensors.contains_key("Conv2d_1a_3x3.conv.weight"));
    let net = erg::features::inception::FidInception::load(&path, &Device::Cpu).unwrap();
    let x = images(2, 1, 32, 4);
    let f = net.features(&x).unwrap();
    assert_eq!(f.dims(), &[2, 2048]);
    let v = f.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|a| a.is_finite() && *a >= 0.0), "pool3 of ReLU outputs is finite and ≥ 0");
    assert!(max_abs_diff(&f.i(0).unwrap(), &f.i(1).unwrap()) > 0.0, "different images, different features");
    // By name, as the command-line tools load it; unknown names and missing files are clear errors.
    let by_name = erg::features::load("inception", path.to_str().unwrap(), &Device::Cpu).unwrap();
    assert!(max_abs_diff(&by_name.features(&x).unwrap(), &f) < 1e-6);
    assert!(erg::features::load("inceptionv4", path.to_str().unwrap(), &Device::Cpu).err().unwrap().to_string().contains("dinov2-vitl14"));
    assert!(erg::features::load("inception", "/nonexistent.safetensors", &Device::Cpu).is_err());
    // A missing tensor is named in the error.
    tensors.remove("Mixed_6b.branch7x7_2.bn.running_mean");
    erg::checkpoint::save_tensors(&tensors, &path, DType::F32).unwrap();
    let err = erg::features::inception::FidInception::load(&path, &Device::Cpu).err().expect("missing key must fail").to_string();
    assert!(err.contains("Mixed_6b.branch7x7_2.bn.running_mean"), "{err}");
}

#[test]
fn dinov2_matches_candle_transformers_on_the_same_weights() {
    use erg::features::dinov2::{Dinov2, Dinov2Config};
    let cfg = Dinov2Config { depth: 2, dim: 32, heads: 2, ..Dinov2Config::vit_small() };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dinov2.safetensors");
    let mut tensors = write_random(&path, 5, |vb| Dinov2::new(&cfg, vb));
    // candle-transformers' model also wants its linear head.
    tensors.insert("head.weight".into(), Tensor::zeros((1000, 64), DType::F32, &Device::Cpu).unwrap());
    tensors.insert("head.bias".into(), Tensor::zeros(1000, DType::F32, &Device::Cpu).unwrap());
    let ours = Dinov2::load(&cfg, &path, &Device::Cpu).unwrap();
    let theirs = candle_transformers::models::dinov2::DinoVisionTransformer::new(
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
        cfg.depth,
        cfg.dim,
        cfg.heads,
    )
    .unwrap();
    // At the native resolution no interpolation happens; the remaining differences are the
    // reference's erf-GELU and LayerNorm ε = 1e-6 (candle-transformers: tanh-GELU, 1e-5).
    let x = images(1, 3, 518, 6);
    let a = ours.forward_tokens(&x).unwrap().i((.., 1..)).unwrap(); // (1, 1369, 32)
    let b = theirs.get_intermediate_layers(&x, &[cfg.depth - 1], false, false, true).unwrap().i(0).unwrap(); // (1, 1369, 32)
    assert_eq!(a.dims(), b.dims());
    let d = max_abs_diff(&a, &b);
    assert!(d < 2e-2, "patch tokens differ by {d}");
    // Features at 224 (interpolated position embedding): CLS (N, D), finite, input-dependent.
    let f = ours.features(&images(2, 3, 32, 7)).unwrap();
    assert_eq!(f.dims(), &[2, 32]);
    assert!(f.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite()));
    assert!(max_abs_diff(&f.i(0).unwrap(), &f.i(1).unwrap()) > 1e-4);
}

#[test]
fn clip_score_is_a_bounded_cosine_and_loads_from_safetensors() {
    use candle_transformers::models::clip::{
        text_model::{Activation, ClipTextConfig},
        vision_model::ClipVisionConfig,
        ClipConfig,
    };
    let cfg = ClipConfig {
        text_config: ClipTextConfig {
            vocab_size: 50,
            embed_dim: 32,
            activation: Activation::QuickGelu,
            intermediate_size: 64,
            max_position_embeddings: 12,
            pad_with: None,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            projection_dim: 16,
        },
        vision_config: ClipVisionConfig {
            embed_dim: 32,
            activation: Activation::QuickGelu,
            intermediate_size: 64,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            projection_dim: 16,
            num_channels: 3,
            image_size: 32,
            patch_size: 8,
        },
        logit_scale_init_value: 2.6592,
        image_size: 32,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.safetensors");
    write_random(&path, 8, |vb| Ok(candle_transformers::models::clip::ClipModel::new(vb, &cfg)?));
    let clip = erg::features::clip::Clip::load(&cfg, &path, None, &Device::Cpu).unwrap();
    let x = images(3, 3, 32, 9);
    let e = clip.image_embeddings(&x).unwrap();
    let norms = e.sqr().unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4), "{norms:?}");
    let ids = Tensor::new(&[[1u32, 5, 49], [2, 7, 49], [1, 5, 49]], &Device::Cpu).unwrap();
    let s = clip.score_ids(&x, &ids).unwrap();
    assert!(s.iter().all(|v| (0.0..=100.0).contains(v)), "{s:?}");
    let again = clip.score_ids(&x, &ids).unwrap();
    assert_eq!(s, again, "deterministic");
    assert!(clip.tokenize(&["a"], &Device::Cpu).is_err(), "no tokenizer loaded: clear error");
    assert!(clip.score_ids(&x, &ids.i(..2).unwrap()).is_err(), "mismatched counts are an error");
}

#[test]
fn hub_sources_parse_and_resolve_from_a_populated_cache() {
    use erg::hub::{populate_cache, WeightSource};
    let s: WeightSource = "hf://org/model@v1/sub/w.safetensors".parse().unwrap();
    assert_eq!(s, WeightSource::Hub { repo: "org/model".into(), revision: "v1".into(), file: "sub/w.safetensors".into() });
    assert_eq!("weights/x.safetensors".parse::<WeightSource>().unwrap(), WeightSource::Local("weights/x.safetensors".into()));
    assert!("hf://org".parse::<WeightSource>().is_err());
    assert!(WeightSource::Local("/nonexistent/w.safetensors".into()).resolve().unwrap_err().to_string().contains("hf://"));

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("w.bin");
    std::fs::write(&src, b"weights").unwrap();
    let cache = dir.path().join("hf").join("hub");
    populate_cache(&cache, "org/model", "main", "0123abcd", &[("sub/w.bin", &src)]).unwrap();
    // hf-hub reads HF_HOME; this is the only test in this binary that touches it.
    std::env::set_var("HF_HOME", dir.path().join("hf"));
    let p = WeightSource::hub("org/model", "sub/w.bin").resolve().unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"weights");
    assert!(p.starts_with(&cache));
}

/// Parity with pytorch-fid's network on random weights (needs PyTorch to make the data, so it is
/// ignored by default; see `benches/reference/inception_parity.py`).
#[test]
#[ignore]
fn inception_matches_pytorch_fid() {
    let dir = std::path::PathBuf::from(std::env::var("ERG_INCEPTION_PARITY").expect("set ERG_INCEPTION_PARITY to the folder the script wrote"));
    let net = erg::features::inception::FidInception::load(&dir.join("weights.safetensors"), &Device::Cpu).unwrap();
    let io = erg::checkpoint::load_tensors(&dir.join("io.safetensors"), &Device::Cpu).unwrap();
    let f = net.features(&io["images"]).unwrap();
    let want = &io["features"];
    let scale = want.abs().unwrap().max_keepdim(1).unwrap().max_keepdim(0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
    let d = max_abs_diff(&f, want);
    assert!(d < 1e-4 * scale.max(1.0), "max |Δ| = {d} (feature scale {scale})");
}
