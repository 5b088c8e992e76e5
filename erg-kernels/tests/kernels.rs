//! The fused CPU kernels against candle's differentiable compositions ([`Kernels::Candle`]):
//! same values and same gradients, within f32 rounding (tolerances stated).
use candle_core::{Device, Tensor, Var, D};
use erg_kernels::{fused, Kernels};

const F: Kernels = Kernels::Fused;

/// N(0, scale²) values of `shape`, reproducible per seed.
fn input(shape: &[usize], seed: u64, scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    // A small LCG + Box–Muller keeps this crate's tests free of erg's RNG.
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let v: Vec<f32> = (0..n).map(|_| ((-2.0 * next().ln()).sqrt() * (std::f64::consts::TAU * next()).cos() * scale) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// max |a − b|, or +∞ when any element is not finite (an unwritten output slot is NaN in debug
/// builds, see `buffer.rs`, and a max reduction could skip it).
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let d: Vec<f32> = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().to_vec1().unwrap();
    d.iter().try_fold(0f32, |m, &v| v.is_finite().then(|| m.max(v))).unwrap_or(f32::INFINITY)
}

/// Value and gradient of Σ w ⊙ f(x) for a random weighting w, through `f`.
fn value_and_grad(x: &Tensor, w: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
    let v = Var::from_tensor(x).unwrap();
    let y = f(v.as_tensor());
    let g = (&y * w).unwrap().sum_all().unwrap().backward().unwrap();
    (y, g.get(v.as_tensor()).expect("gradient reaches the input").clone())
}

#[test]
fn fused_softmax_matches_candle_values_and_gradients() {
    for (shape, scale) in [(vec![3, 4, 17, 33], 3.0), (vec![2, 64, 64], 30.0), (vec![5, 1], 1.0)] {
        let x = input(&shape, 1, scale);
        let w = input(&shape, 2, 1.0);
        let (ya, ga) = value_and_grad(&x, &w, |x| fused::softmax_last_dim(x, F).unwrap());
        let (yb, gb) = value_and_grad(&x, &w, |x| candle_nn::ops::softmax(x, D::Minus1).unwrap());
        let (yc, gc) = value_and_grad(&x, &w, |x| fused::softmax_last_dim(x, Kernels::Candle).unwrap());
        assert!(max_abs_diff(&yb, &yc) == 0.0 && max_abs_diff(&gb, &gc) == 0.0, "Kernels::Candle is candle's composition");
        assert!(max_abs_diff(&ya, &yb) < 1e-6, "{shape:?}: values");
        assert!(max_abs_diff(&ga, &gb) < 1e-5, "{shape:?}: gradients {}", max_abs_diff(&ga, &gb));
    }
    // A strided view takes the contiguous copy, same result.
    let x = input(&[4, 6], 3, 1.0).t().unwrap();
    assert!(max_abs_diff(&fused::softmax_last_dim(&x, F).unwrap(), &candle_nn::ops::softmax_last_dim(&x.contiguous().unwrap()).unwrap()) < 1e-6);
}

#[test]
fn fused_layer_norm_matches_candle_values_and_gradients() {
    for shape in [vec![2, 49, 128], vec![3, 7, 5]] {
        let x = (input(&shape, 4, 2.0) + 0.7).unwrap();
        let w = input(&shape, 5, 1.0);
        let (ya, ga) = value_and_grad(&x, &w, |x| fused::layer_norm_no_affine(x, 1e-6, F).unwrap());
        let (yb, gb) = value_and_grad(&x, &w, |x| {
            let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1).unwrap()).unwrap();
            xc.broadcast_div(&(xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-6).unwrap().sqrt().unwrap()).unwrap()
        });
        assert!(max_abs_diff(&ya, &yb) < 1e-5, "{shape:?}: values {}", max_abs_diff(&ya, &yb));
        assert!(max_abs_diff(&ga, &gb) < 1e-4, "{shape:?}: gradients {}", max_abs_diff(&ga, &gb));
    }
}

#[test]
fn fused_gelu_matches_candle_values_and_gradients() {
    let x = input(&[3, 50, 70], 6, 3.0);
    let w = input(&[3, 50, 70], 7, 1.0);
    let (ya, ga) = value_and_grad(&x, &w, |x| fused::gelu_erf(x, F).unwrap());
    let (yb, gb) = value_and_grad(&x, &w, |x| x.gelu_erf().unwrap());
    assert!(max_abs_diff(&ya, &yb) < 1e-5, "values {}", max_abs_diff(&ya, &yb));
    assert!(max_abs_diff(&ga, &gb) < 1e-4, "gradients {}", max_abs_diff(&ga, &gb));
}

#[test]
fn fused_tanh_gelu_matches_candle_values_and_gradients() {
    let x = input(&[3, 50, 70], 16, 4.0);
    let w = input(&[3, 50, 70], 17, 1.0);
    let (ya, ga) = value_and_grad(&x, &w, |x| fused::gelu_tanh(x, F).unwrap());
    let (yb, gb) = value_and_grad(&x, &w, |x| x.gelu().unwrap());
    assert!(max_abs_diff(&ya, &yb) < 1e-5, "values {}", max_abs_diff(&ya, &yb));
    assert!(max_abs_diff(&ga, &gb) < 1e-4, "gradients {}", max_abs_diff(&ga, &gb));
}

#[test]
fn vectorisable_tanh_is_accurate() {
    let mut max_err = 0f32;
    for i in -200_000..=200_000 {
        let u = i as f32 * 2.5e-4; // [−50, 50]
        max_err = max_err.max((erg_kernels::tanh_approx(u) - u.tanh()).abs());
    }
    assert!(max_err < 3e-7, "tanh abs. error {max_err}");
    assert_eq!(erg_kernels::tanh_approx(100.0), 1.0);
    assert_eq!(erg_kernels::tanh_approx(-100.0), -1.0);
}

#[test]
fn vectorisable_exp_and_erf_are_accurate() {
    use erg_kernels::{erf_approx, exp_approx};
    let (mut max_exp, mut max_erf) = (0f32, 0f32);
    for i in -200_000..=200_000 {
        let x = i as f32 * 1e-4 * 4.0; // [−80, 80] for exp, steps of 4e-4
        let rel = ((exp_approx(x) - x.exp()) / x.exp()).abs();
        max_exp = max_exp.max(rel);
        let y = i as f32 * 5e-5; // [−10, 10] for erf
        max_erf = max_erf.max((erf_approx(y) - libm::erff(y)).abs());
    }
    assert!(max_exp < 2e-7, "exp rel. error {max_exp}");
    assert!(max_erf < 6e-7, "erf abs. error {max_erf}");
    assert_eq!(exp_approx(-1000.0), exp_approx(-87.3));
    assert!(erf_approx(0.0).abs() < 1e-7 && (erf_approx(-3.0) + libm::erff(3.0)).abs() < 6e-7);
}

/// Values and gradients of Σ w ⊙ f(xs) with respect to every input, through `f`.
fn values_and_grads(xs: &[Tensor], w: &Tensor, f: impl Fn(&[Tensor]) -> Tensor) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = xs.iter().map(|x| Var::from_tensor(x).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts);
    let g = (&y * w).unwrap().sum_all().unwrap().backward().unwrap();
    (y, ts.iter().map(|t| g.get(t).expect("gradient reaches every input").clone()).collect())
}

fn assert_same(a: &(Tensor, Vec<Tensor>), b: &(Tensor, Vec<Tensor>), tol: f32, what: &str) {
    let d = max_abs_diff(&a.0, &b.0);
    assert!(d < tol, "{what}: values differ by {d}");
    for (i, (ga, gb)) in a.1.iter().zip(&b.1).enumerate() {
        assert_eq!(ga.dims(), gb.dims(), "{what}: gradient {i} shape");
        let d = max_abs_diff(ga, gb);
        assert!(d < tol, "{what}: gradient {i} differs by {d}");
    }
}

#[test]
fn row_broadcast_kernels_match_candle_values_and_gradients() {
    use erg_kernels::{add_bias, gated_residual, modulate};
    let (b, n, d) = (3, 17, 40);
    let x = input(&[b, n, d], 20, 1.0);
    let h = input(&[b, n, d], 21, 1.0);
    // shift/scale/gate as the adaLN chunks are: strided (B, D) views of a (B, 3D) projection.
    let ada = input(&[b, 3 * d], 22, 0.5);
    let w = input(&[b, n, d], 23, 1.0);
    let bias = input(&[d], 24, 1.0);

    let fused = values_and_grads(&[x.clone(), bias.clone()], &w, |t| add_bias(&t[0], &t[1], F).unwrap());
    let plain = values_and_grads(&[x.clone(), bias.clone()], &w, |t| t[0].broadcast_add(&t[1]).unwrap());
    assert_same(&fused, &plain, 1e-5, "add_bias");

    let chunks = |t: &Tensor| t.chunk(3, 1).unwrap();
    let fused = values_and_grads(&[x.clone(), ada.clone()], &w, |t| {
        let m = chunks(&t[1]);
        modulate(&t[0], &m[0], &m[1], F).unwrap()
    });
    let plain = values_and_grads(&[x.clone(), ada.clone()], &w, |t| {
        let m = chunks(&t[1]);
        t[0].broadcast_mul(&(m[1].unsqueeze(1).unwrap() + 1.0).unwrap()).unwrap().broadcast_add(&m[0].unsqueeze(1).unwrap()).unwrap()
    });
    assert_same(&fused, &plain, 1e-5, "modulate");

    let fused = values_and_grads(&[x.clone(), ada.clone(), h.clone()], &w, |t| gated_residual(&t[0], &chunks(&t[1])[2], &t[2], F).unwrap());
    let plain =
        values_and_grads(&[x.clone(), ada.clone(), h.clone()], &w, |t| (&t[0] + t[2].broadcast_mul(&chunks(&t[1])[2].unsqueeze(1).unwrap()).unwrap()).unwrap());
    assert_same(&fused, &plain, 1e-5, "gated_residual");

    // Mismatched shapes are errors, not panics.
    assert!(modulate(&x, &ada, &ada, F).is_err());
    assert!(gated_residual(&x, &chunks(&ada)[0], &x.narrow(1, 0, 3).unwrap(), F).is_err());
    assert!(add_bias(&x, &input(&[d + 1], 1, 1.0), F).is_err());
}

#[test]
fn fused_linear_matches_candle_values_and_gradients() {
    use erg_kernels::linear;
    for shape in [vec![5, 9, 24], vec![7, 24], vec![2, 3, 4, 24]] {
        let x = input(&shape, 30, 1.0);
        let wt = input(&[33, 24], 31, 0.3);
        let b = input(&[33], 32, 1.0);
        let mut out = shape.clone();
        *out.last_mut().unwrap() = 33;
        let w = input(&out, 33, 1.0);
        let fused = values_and_grads(&[x.clone(), wt.clone(), b.clone()], &w, |t| linear(&t[0], &t[1], Some(&t[2]), F).unwrap());
        let plain =
            values_and_grads(&[x.clone(), wt.clone(), b.clone()], &w, |t| t[0].broadcast_matmul(&t[1].t().unwrap()).unwrap().broadcast_add(&t[2]).unwrap());
        assert_same(&fused, &plain, 1e-4, &format!("linear {shape:?}"));
    }
    // Without bias, and a wrong input width is an error.
    let x = input(&[4, 6, 24], 34, 1.0);
    let wt = input(&[10, 24], 35, 0.3);
    assert!(max_abs_diff(&linear(&x, &wt, None, F).unwrap(), &x.broadcast_matmul(&wt.t().unwrap()).unwrap()) < 1e-5);
    assert!(linear(&input(&[4, 6, 23], 36, 1.0), &wt, None, F).is_err());
}

#[test]
fn packed_attention_matches_split_heads_attention_with_per_row_temperatures() {
    use erg_kernels::packed_attention;
    let (b, n, heads, dh) = (4, 19, 3, 8);
    let qkv = input(&[b, n, 3 * heads * dh], 40, 1.5);
    let w = input(&[b, n, heads * dh], 41, 1.0);
    let beta = 1.0 / (dh as f64).sqrt();
    let taus = [1.0, 1.0, 0.3, 0.3]; // two rows standard, two rectified (ERG's batched branches)
    let scales: Vec<f64> = taus.iter().map(|t| t * beta).collect();
    let fused = values_and_grads(std::slice::from_ref(&qkv), &w, |t| packed_attention(&t[0], heads, &scales, F).unwrap());
    let reference = values_and_grads(std::slice::from_ref(&qkv), &w, |t| {
        let p = t[0].reshape((b, n, 3, heads, dh)).unwrap().permute((2, 0, 3, 1, 4)).unwrap(); // (3, B, H, N, d_h)
        let rows: Vec<Tensor> = (0..b)
            .map(|i| {
                let part = |k: usize| p.get(k).unwrap().narrow(0, i, 1).unwrap();
                let logits = (part(0).matmul(&part(1).t().unwrap()).unwrap() * scales[i]).unwrap(); // (1, H, N, N)
                let o = candle_nn::ops::softmax(&logits, D::Minus1).unwrap().matmul(&part(2)).unwrap(); // (1, H, N, d_h)
                o.transpose(1, 2).unwrap().reshape((1, n, heads * dh)).unwrap()
            })
            .collect();
        Tensor::cat(&rows, 0).unwrap()
    });
    assert_same(&fused, &reference, 1e-5, "packed attention");
    let composed = values_and_grads(std::slice::from_ref(&qkv), &w, |t| packed_attention(&t[0], heads, &scales, Kernels::Candle).unwrap());
    assert_same(&composed, &reference, 1e-5, "packed attention, candle composition");
    assert!(packed_attention(&qkv, 5, &scales, F).is_err(), "3·H·d_h must divide the width");
    assert!(packed_attention(&qkv, heads, &scales[..3], F).is_err(), "one scale per row");
}

#[test]
fn in_place_adamw_and_ema_match_the_composed_update() {
    use erg_kernels::optim::{adamw_step, applies, ema_step, AdamWStep};
    let shape = [3, 50, 70];
    let (p0, g) = (input(&shape, 21, 1.0), input(&shape, 22, 0.1));
    let (m0, v0) = (input(&shape, 23, 0.01), input(&shape, 24, 0.01).abs().unwrap());
    let s = AdamWStep {
        lr: 3e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.05,
        bias_correction1: 1.0 - 0.9f64.powi(3),
        bias_correction2: 1.0 - 0.999f64.powi(3),
    };
    // The composition AdamW used before (src/train/optim.rs).
    let m = ((&m0 * s.beta1).unwrap() + (&g * (1.0 - s.beta1)).unwrap()).unwrap();
    let v = ((&v0 * s.beta2).unwrap() + (g.sqr().unwrap() * (1.0 - s.beta2)).unwrap()).unwrap();
    let update = ((&m / s.bias_correction1).unwrap() / ((&v / s.bias_correction2).unwrap().sqrt().unwrap() + s.eps).unwrap()).unwrap();
    let p = ((&p0 * (1.0 - s.lr * s.weight_decay)).unwrap() - (update * s.lr).unwrap()).unwrap();
    // The parameter in place (on a copy), the moments as new tensors.
    let pi = p0.copy().unwrap();
    let m_before = m0.to_vec3::<f32>().unwrap();
    assert!(applies(&[&pi, &m0, &v0, &g], F) && !applies(&[&pi], Kernels::Candle));
    let (mi, vi) = adamw_step(&pi, &m0, &v0, &g, &s).unwrap();
    assert_eq!(m0.to_vec3::<f32>().unwrap(), m_before, "the old moment is left as it was");
    assert!(max_abs_diff(&mi, &m) < 1e-7, "m {}", max_abs_diff(&mi, &m));
    assert!(max_abs_diff(&vi, &v) < 1e-8, "v {}", max_abs_diff(&vi, &v));
    assert!(max_abs_diff(&pi, &p) < 1e-6, "θ {}", max_abs_diff(&pi, &p));
    assert!(max_abs_diff(&pi, &p0) > 1e-4, "the parameter moved");
    let e = input(&shape, 25, 1.0);
    let expected = ((&e * 0.99).unwrap() + (&pi * 0.01).unwrap()).unwrap();
    let e1 = ema_step(&e, &pi, 0.99).unwrap();
    assert!(max_abs_diff(&e1, &expected) < 1e-6, "ema {}", max_abs_diff(&e1, &expected));
}
