//! Snapshots of the book's analyses on tiny deterministic configurations (fixed inputs, CPU f32,
//! values rounded to 4 decimals): a change in behaviour shows up as a snapshot diff to review
//! (`cargo insta review`, or compare the `.snap.new` file and rename it).
use erg::analysis::hopfield::summarize;
use erg::attention::Energy;

#[test]
fn ch01_hopfield_energy_and_entropy() {
    let patterns = vec![vec![2.0, 1.5], vec![-2.0, 1.0], vec![0.5, -2.5]];
    let settings = [
        Energy { tau: 1.0, alpha: 1.0, gamma: 1.0, steps: 3 },
        Energy { tau: 0.1, alpha: 1.0, gamma: 1.0, steps: 3 },
        Energy { tau: 1.0, alpha: 0.5, gamma: 0.5, steps: 3 },
    ];
    let s = summarize(&patterns, &[vec![1.0, 0.0], vec![0.0, 1.0]], &[0.01, 0.1, 1.0, 10.0], &[-0.5, -0.3], &settings).unwrap();
    // Properties that hold whatever the snapshot says: entropy falls with τ and is bounded by
    // ln N; with γ = 1 (CCCP) the energy never increases along the trajectory.
    assert!(s.entropy_vs_tau.windows(2).all(|w| w[1].1 <= w[0].1 + 1e-4));
    assert!(s.entropy_vs_tau.iter().all(|&(_, h)| h <= s.max_entropy + 1e-4));
    for t in &s.trajectories[..2] {
        assert!(t.energies.windows(2).all(|w| w[1] <= w[0] + 1e-3), "{}: {:?}", t.name, t.energies);
    }
    insta::assert_json_snapshot!("ch01_hopfield", s);
}

#[test]
fn figures_display_in_evcxr_as_png() {
    use base64::Engine;
    let img = image::RgbImage::from_pixel(3, 2, image::Rgb([10, 200, 30]));
    let fig = erg::imaging::Figure::from_rgb(&img).unwrap();
    let text = fig.evcxr_content();
    let body = text.strip_prefix("EVCXR_BEGIN_CONTENT image/png\n").unwrap().strip_suffix("\nEVCXR_END_CONTENT").unwrap();
    let png = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    assert_eq!(image::load_from_memory(&png).unwrap().to_rgb8(), img);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.png");
    std::fs::write(&path, &fig.png).unwrap();
    assert_eq!(erg::imaging::Figure::open(&path).unwrap(), fig);
    std::fs::write(&path, b"GIF89a").unwrap();
    assert!(matches!(erg::imaging::Figure::open(&path), Err(erg::Error::Corrupt { .. })));
    assert!(erg::imaging::Figure::open(dir.path().join("missing.png")).unwrap_err().to_string().contains("run the example"));
}
