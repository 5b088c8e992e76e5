//! Loss curves of training runs (their `loss.csv`, or a shipped checkpoint's `<stem>.loss.csv`)
//! in one figure, with each run's steps and total training time (summed over resumed segments).
//!
//! ```text
//! cargo run --release --example loss_curves -- --run emoji-base=runs/emoji-base/loss.csv --out results/loss_emoji_base
//! cargo run --release --example loss_curves -- --run a=runs/a/loss.csv --run b=runs/b/loss.csv --x hours
//! ```
mod common;
use std::path::PathBuf;

use clap::Parser;
use erg::train::loss_log;

/// Loss curves of training runs in one figure (PNG and SVG), with steps and training time.
#[derive(Parser, Debug)]
struct Args {
    /// `LABEL=PATH` of a `loss.csv` (repeat for several runs).
    #[arg(long = "run", value_parser = labelled, required = true)]
    runs: Vec<(String, PathBuf)>,
    /// Horizontal axis: `step` or `hours` (training time, resumed segments summed).
    #[arg(long, default_value = "step", value_parser = ["step", "hours"])]
    x: String,
    /// Steps of the running mean.
    #[arg(long, value_parser = common::count, default_value_t = 100)]
    window: usize,
    /// Output stem (`.png` and `.svg` are written).
    #[arg(long, default_value = "results/loss_curves")]
    out: PathBuf,
}

fn labelled(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((label, path)) if !label.is_empty() && !path.is_empty() => Ok((label.to_string(), PathBuf::from(path))),
        _ => Err(format!("{s:?}: expected LABEL=PATH of a loss.csv")),
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    // Every log is read (and so checked) before anything is drawn.
    let logs: Vec<(String, Vec<loss_log::LossRow>)> =
        a.runs.iter().map(|(label, path)| Ok((label.clone(), loss_log::read(path)?))).collect::<anyhow::Result<_>>()?;
    let mut curves = Vec::new();
    for (label, rows) in &logs {
        let hours = loss_log::total_seconds(rows) / 3600.0;
        let last = rows.last().map_or(0, |r| r.step);
        println!(
            "{label}: {last} steps, {hours:.2} h of training, final loss (mean of the last {} steps) {:.4}",
            a.window.min(rows.len()),
            loss_log::tail_mean(rows, a.window)
        );
        let per_step = if last > 0 { hours / last as f64 } else { 0.0 };
        let pts = loss_log::running_mean(rows, a.window);
        let pts = if a.x == "hours" { pts.into_iter().map(|(s, l)| (s * per_step, l)).collect() } else { pts };
        curves.push((format!("{label} ({last} steps, {hours:.1} h)"), pts));
    }
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        common::create_dir(dir)?;
    }
    let x_desc = if a.x == "hours" { "training hours (steps × mean time per step)" } else { "step" };
    loss_log::plot_loss_curves(&a.out, "training loss", x_desc, &format!("loss (running mean of {} steps)", a.window), &curves)?;
    eprintln!("→ {}.{{png,svg}}", a.out.display());
    Ok(())
}
