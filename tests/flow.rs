//! Rectified-flow conventions: t = 0 noise, t = 1 data.
mod common;
use candle_core::{Device, Tensor};
use common::max_abs_diff;
use erg::flow::*;

fn data() -> (Tensor, Tensor, Tensor) {
    let mut r = erg::rng::stream(1, 1);
    let d = &Device::Cpu;
    let x1 = erg::rng::randn(&mut r, &[3, 2, 4, 4], d).unwrap();
    let eps = erg::rng::randn(&mut r, &[3, 2, 4, 4], d).unwrap();
    (x1, eps, Tensor::new(&[0.0f32, 0.37, 0.9], d).unwrap())
}

#[test]
fn interpolation_endpoints_and_velocity() {
    let (x1, eps, _) = data();
    let zeros = Tensor::new(&[0f32; 3], &Device::Cpu).unwrap();
    let ones = Tensor::new(&[1f32; 3], &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&interpolate(&x1, &eps, &zeros).unwrap(), &eps), 0.0);
    assert_eq!(max_abs_diff(&interpolate(&x1, &eps, &ones).unwrap(), &x1), 0.0);
    // dx_t/dt = x1 − eps: finite difference
    let a = interpolate(&x1, &eps, &Tensor::new(&[0.5f32; 3], &Device::Cpu).unwrap()).unwrap();
    let b = interpolate(&x1, &eps, &Tensor::new(&[0.75f32; 3], &Device::Cpu).unwrap()).unwrap();
    let fd = ((b - a).unwrap() / 0.25).unwrap();
    assert!(max_abs_diff(&fd, &velocity_target(&x1, &eps).unwrap()) < 1e-5);
}

#[test]
fn conversions_round_trip() {
    let (x1, eps, t) = data();
    let x_t = interpolate(&x1, &eps, &t).unwrap();
    let v = velocity_target(&x1, &eps).unwrap();
    assert!(max_abs_diff(&clean_from_velocity(&x_t, &v, &t).unwrap(), &x1) < 1e-5);
    assert!(max_abs_diff(&noise_from_velocity(&x_t, &v, &t).unwrap(), &eps) < 1e-5);
    let x1_hat = clean_from_velocity(&x_t, &v, &t).unwrap();
    assert!(max_abs_diff(&velocity_from_clean(&x_t, &x1_hat, &t).unwrap(), &v) < 1e-4);
    let one = Tensor::new(&[1f32, 0.5, 0.5], &Device::Cpu).unwrap();
    assert!(velocity_from_clean(&x_t, &x1_hat, &one).is_err());
}

#[test]
fn euler_integrates_the_true_velocity_exactly() {
    // With the exact (straight-line) velocity, Euler reaches x1 from eps in any number of steps.
    let (x1, eps, _) = data();
    let v = velocity_target(&x1, &eps).unwrap();
    let mut seen = vec![];
    let out = euler(
        eps.clone(),
        &uniform_schedule(7),
        |_, _, _| Ok(v.clone()),
        |s| {
            seen.push((s.step, s.t, s.t_next));
            Ok(())
        },
    )
    .unwrap();
    assert!(max_abs_diff(&out, &x1) < 1e-5);
    assert_eq!(seen.len(), 7);
    assert_eq!(seen[0], (0, 0.0, 1.0 / 7.0));
    assert!(euler(eps.clone(), &[0.0, 0.5, 0.4, 1.0], |_, _, _| Ok(v.clone()), |_| Ok(())).is_err());
    assert!(euler(eps, &[0.0, 1.5], |_, _, _| Ok(v.clone()), |_| Ok(())).is_err());
}

#[test]
fn time_sampling_stays_in_the_unit_interval() {
    let mut r = erg::rng::stream(3, 0);
    for ts in [TimeSampling::Uniform, TimeSampling::LogitNormal { mean: 0.0, std: 1.0 }] {
        let s = ts.sample(&mut r, 2000);
        assert!(s.iter().all(|&t| (0.0..=1.0).contains(&t)));
        let mean = s.iter().sum::<f32>() / s.len() as f32;
        assert!((mean - 0.5).abs() < 0.03, "{mean}");
    }
}
