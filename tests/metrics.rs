//! Metrics on cases with known answers.
use erg::metrics::{frechet_distance, prdc, Gaussian};
use ndarray::{array, Array2};

fn cloud(seed: u64, n: usize, d: usize, shift: f64, scale: f64) -> Array2<f64> {
    let mut r = erg::rng::stream(seed, 0);
    let t = erg::rng::randn(&mut r, &[n, d], &candle_core::Device::Cpu).unwrap();
    let v: Vec<f64> = t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|&x| x as f64 * scale + shift).collect();
    Array2::from_shape_vec((n, d), v).unwrap()
}

#[test]
fn frechet_distance_closed_forms() {
    let x = cloud(1, 200, 4, 0.0, 1.0);
    let g = Gaussian::fit(&x).unwrap();
    assert!(frechet_distance(&g, &g).unwrap().abs() < 1e-8);
    // diagonal Gaussians: d² = Σ (μ1−μ2)² + Σ (σ1 − σ2)²
    let a = Gaussian { mean: array![0.0, 1.0, 2.0], cov: Array2::from_diag(&array![1.0, 4.0, 9.0]) };
    let b = Gaussian { mean: array![1.0, 1.0, 0.0], cov: Array2::from_diag(&array![4.0, 1.0, 9.0]) };
    let want = (1.0 + 0.0 + 4.0) + ((1.0f64 - 2.0).powi(2) + (2.0f64 - 1.0).powi(2) + 0.0);
    assert!((frechet_distance(&a, &b).unwrap() - want).abs() < 1e-9);
    // a non-diagonal case: rotate both by the same orthogonal matrix, the distance is unchanged
    let c = std::f64::consts::FRAC_1_SQRT_2;
    let q = array![[c, -c, 0.0], [c, c, 0.0], [0.0, 0.0, 1.0]];
    let rot = |g: &Gaussian| Gaussian { mean: q.dot(&g.mean), cov: q.dot(&g.cov).dot(&q.t()) };
    assert!((frechet_distance(&rot(&a), &rot(&b)).unwrap() - want).abs() < 1e-9);
    assert!(Gaussian::fit(&Array2::zeros((1, 3))).is_err());
}

#[test]
fn prdc_on_known_sets() {
    let x = cloud(2, 60, 3, 0.0, 1.0);
    let same = prdc(&x, &x, 3, 5).unwrap();
    assert_eq!((same.precision, same.recall, same.coverage), (100.0, 100.0, 100.0));
    assert!(same.density >= 100.0); // each point is inside its own ball and k others' on average
    let far = cloud(3, 50, 3, 1000.0, 1.0);
    let d = prdc(&x, &far, 3, 5).unwrap();
    assert_eq!((d.precision, d.recall, d.density, d.coverage), (0.0, 0.0, 0.0, 0.0));
    // a collapsed generator: all fakes at the real mean ⇒ high precision, low recall/coverage
    let collapsed = Array2::from_elem((40, 3), 0.0) + &cloud(4, 40, 3, 0.0, 0.01);
    let c = prdc(&x, &collapsed, 3, 5).unwrap();
    assert!(c.precision > 90.0 && c.recall < 20.0 && c.coverage < 30.0, "{c:?}");
    // hand-built 1-D case: real {0, 1, 2, 3}, k = 1 radii {1, 1, 1, 1}; fake {0.5, 10}
    let real = array![[0.0], [1.0], [2.0], [3.0]];
    let fake = array![[0.5], [10.0], [20.0]];
    let p = prdc(&real, &fake, 1, 1).unwrap();
    assert!((p.precision - 100.0 / 3.0).abs() < 1e-9);
    assert!((p.density - 200.0 / 3.0).abs() < 1e-9); // 0.5 lies in the balls of 0 and 1
    assert!((p.coverage - 50.0).abs() < 1e-9);
    assert!(prdc(&real, &array![[0.0, 1.0]], 1, 1).is_err());
}
