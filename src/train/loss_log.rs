//! A run's loss log (`loss.csv`: `step,loss,lr,elapsed_s`, one row per optimisation step, written
//! by [`super::train_task`]) read back: the rows, the total training time over resumed segments
//! (`elapsed_s` restarts at 0 in each process), running means, and the loss-curve figure shipped
//! beside each checkpoint and drawn in book chapter 2.
use std::path::Path;

use plotters::prelude::*;

use crate::{Error, Result};

/// One optimisation step of the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossRow {
    /// Step number, from 1.
    pub step: u64,
    /// The step's rectified-flow loss (mean squared velocity error of its batch).
    pub loss: f64,
    /// Learning rate used at the step.
    pub lr: f64,
    /// Seconds since this process started training (0 again after each resume).
    pub elapsed_s: f64,
}

/// The rows of a `loss.csv`.
///
/// Errors: an unreadable file; a header other than `step,loss,lr,elapsed_s`; a row that does not
/// parse, or whose step does not follow the previous one (both naming the file and line).
pub fn read(path: &Path) -> Result<Vec<LossRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("step,loss,lr,elapsed_s") {
        return Err(Error::corrupt(path, "not a loss log: the header must be step,loss,lr,elapsed_s"));
    }
    let mut rows: Vec<LossRow> = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |what: &str| Error::corrupt(path, format!("line {}: {what}: {line:?}", i + 2));
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 4 {
            return Err(bad("expected 4 fields"));
        }
        let num = |s: &str| s.trim().parse::<f64>().map_err(|_| bad("not a number"));
        let row = LossRow { step: f[0].trim().parse().map_err(|_| bad("not a step number"))?, loss: num(f[1])?, lr: num(f[2])?, elapsed_s: num(f[3])? };
        if rows.last().is_some_and(|p| p.step + 1 != row.step) {
            return Err(bad("the step does not follow the previous row's"));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Total training seconds: the sum over the log's segments (a segment ends where `elapsed_s`
/// falls, i.e. a resume) of each segment's last `elapsed_s`. Time before the first logged step of
/// a segment (loading, the resumed state) is not counted.
pub fn total_seconds(rows: &[LossRow]) -> f64 {
    let mut total = 0.0;
    for (i, r) in rows.iter().enumerate() {
        let ends = rows.get(i + 1).is_none_or(|next| next.elapsed_s < r.elapsed_s);
        if ends {
            total += r.elapsed_s;
        }
    }
    total
}

/// Mean loss of the last `n` rows (all of them when fewer; NaN for an empty log).
pub fn tail_mean(rows: &[LossRow], n: usize) -> f64 {
    let tail = &rows[rows.len().saturating_sub(n.max(1))..];
    tail.iter().map(|r| r.loss).sum::<f64>() / tail.len() as f64
}

/// (step, mean loss over the `window` steps ending there), one point per step from the
/// `window`-th on (the window shrinks to the log's length for shorter logs).
pub fn running_mean(rows: &[LossRow], window: usize) -> Vec<(f64, f64)> {
    let w = window.clamp(1, rows.len().max(1));
    rows.windows(w).map(|win| (win[w - 1].step as f64, win.iter().map(|r| r.loss).sum::<f64>() / w as f64)).collect()
}

/// Draws loss curves (x, loss) into `<stem>.png` and `<stem>.svg`, one line per labelled curve;
/// the y range leaves out the first tenth of each curve (the initial drop) so that the tails can
/// be told apart, and what lies above it is not drawn.
///
/// Errors: no points; unwritable files.
pub fn plot_loss_curves(stem: &Path, title: &str, x_desc: &str, y_desc: &str, curves: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    let points = || curves.iter().flat_map(|c| c.1.iter());
    let xmax = points().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    if !xmax.is_finite() {
        return Err(Error::Other(format!("{}: no loss points to draw", stem.display())));
    }
    let ymax = curves.iter().flat_map(|c| c.1.iter().skip(c.1.len() / 10).map(|p| p.1)).fold(f64::NEG_INFINITY, f64::max) * 1.1;
    let ymin = points().map(|p| p.1).fold(f64::INFINITY, f64::min) * 0.95;
    let ytop = ymax.max(ymin * 1.01 + 1e-9);
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        crate::png_and_svg!(stem, (640, 400), |root| {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(0.0..xmax * 1.02, ymin..ytop)?;
            let decimals = if xmax >= 100.0 { 0 } else { 1 };
            chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).x_label_formatter(&|x| format!("{x:.decimals$}")).draw()?;
            for (i, (name, pts)) in curves.iter().enumerate() {
                let colour = Palette99::pick(i).to_rgba();
                chart
                    // The start of a curve above the range is left out, not drawn flat along the top.
                    .draw_series(LineSeries::new(pts.iter().copied().filter(|p| p.1 <= ytop), colour.stroke_width(2)))?
                    .label(name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
            root.present()?;
        });
        Ok(())
    };
    draw().map_err(|e| Error::Other(format!("{}: {e}", stem.display())))
}
