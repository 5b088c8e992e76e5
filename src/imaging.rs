//! Images people look at: tensors → RGB images, grids, and labelled side-by-side comparisons
//! (text drawn with plotters and the embedded DejaVu Sans font, so no system fonts are needed).
use std::path::Path;
use std::sync::Once;

use candle_core::{DType, Tensor};
use image::{Rgb, RgbImage};
use plotters::prelude::*;

use crate::{Error, Result};

static FONT: &[u8] = include_bytes!("../data/fonts/DejaVuSans.ttf");

/// The embedded DejaVu Sans (for [`png_and_svg!`](crate::png_and_svg), which registers it with the
/// caller's plotters: in evcxr each cell links its own copy of plotters' font registry).
pub static FONT_DATA: &[u8] = FONT;
static REGISTER: Once = Once::new();

/// Registers the embedded DejaVu Sans as plotters' "sans-serif" (once; needed for text layout).
pub fn register_font() {
    REGISTER.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Images (N, C, H, W) in [−1, 1] (C = 1 or 3) → N RGB images (values clamped).
pub fn to_rgb8(images: &Tensor) -> Result<Vec<RgbImage>> {
    let (n, c, h, w) = images.dims4()?;
    if c != 1 && c != 3 {
        return Err(Error::shape(format!("images must have 1 or 3 channels, got {c}")));
    }
    let x = ((images.to_dtype(DType::F32)?.clamp(-1.0, 1.0)? + 1.0)? * 127.5)?.round()?;
    let x = x.permute((0, 2, 3, 1))?.contiguous()?.to_dtype(DType::U8)?; // (N, H, W, C)
    let flat = x.flatten_all()?.to_vec1::<u8>()?;
    Ok((0..n)
        .map(|i| {
            let s = &flat[i * h * w * c..(i + 1) * h * w * c];
            RgbImage::from_fn(w as u32, h as u32, |xx, yy| {
                let o = (yy as usize * w + xx as usize) * c;
                if c == 1 {
                    Rgb([s[o]; 3])
                } else {
                    Rgb([s[o], s[o + 1], s[o + 2]])
                }
            })
        })
        .collect())
}

/// Tiles `images` row-major into `cols` columns, each upscaled ×`scale` (nearest), `pad` pixels
/// of white between tiles.
pub fn grid(images: &[RgbImage], cols: usize, pad: u32, scale: u32) -> RgbImage {
    let (w, h) = images.first().map(|i| (i.width() * scale, i.height() * scale)).unwrap_or((1, 1));
    let cols = cols.max(1);
    let rows = images.len().div_ceil(cols).max(1);
    let mut out = RgbImage::from_pixel(cols as u32 * (w + pad) + pad, rows as u32 * (h + pad) + pad, Rgb([255, 255, 255]));
    for (i, img) in images.iter().enumerate() {
        let tile = image::imageops::resize(img, w, h, image::imageops::FilterType::Nearest);
        let (x, y) = ((i % cols) as u32 * (w + pad) + pad, (i / cols) as u32 * (h + pad) + pad);
        image::imageops::overlay(&mut out, &tile, x as i64, y as i64);
    }
    out
}

/// A titled image in a comparison.
pub struct Panel {
    /// Title drawn above the image.
    pub title: String,
    /// The image.
    pub image: RgbImage,
}

/// Panels of equal size with their titles on top, `per_row` panels to a row, and optional row
/// labels on the left of each row of panels (one per band of `row_height` pixels starting
/// `first_row_offset` pixels into the panel, e.g. class names beside a class × seed grid).
pub fn labelled_comparison(panels: &[Panel], row_labels: &[String], row_height: u32, first_row_offset: u32, per_row: usize) -> Result<RgbImage> {
    register_font();
    let title_h = 30u32;
    let label_w = if row_labels.is_empty() { 0 } else { 150 };
    let gap = 16u32;
    let per_row = per_row.max(1).min(panels.len().max(1));
    let (pw, ph) = panels.iter().fold((0, 0), |(w, h), p| (w.max(p.image.width()), h.max(p.image.height())));
    let bands = panels.len().div_ceil(per_row).max(1) as u32;
    let width = label_w + per_row as u32 * (pw + gap) + gap;
    let height = bands * (title_h + ph + gap);
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let origin = |i: usize| (label_w + gap + (i % per_row) as u32 * (pw + gap), (i / per_row) as u32 * (title_h + ph + gap));
    for (i, p) in panels.iter().enumerate() {
        let (x, y) = origin(i);
        image::imageops::overlay(&mut canvas, &p.image, x as i64, (y + title_h) as i64);
    }
    {
        let mut buf = canvas.as_flat_samples_mut();
        let root = BitMapBackend::with_buffer(buf.as_mut_slice(), (width, height)).into_drawing_area();
        let err = |e: plotters::drawing::DrawingAreaErrorKind<_>| Error::Other(e.to_string());
        // A title fits its panel: a smaller font first, then cut with "…" (titles never overlap).
        // Titles fit their panel and row labels their margin: a smaller font first, then cut with "…".
        let style_of = |size: f64| TextStyle::from(("sans-serif", size).into_font()).color(&BLACK);
        let fit = |text: &str, base: f64, room: u32| -> (String, f64) {
            let fits = |text: &str, size: f64| root.estimate_text_size(text, &style_of(size)).map(|(w, _)| w <= room).unwrap_or(true);
            let mut size = base;
            let mut text = text.to_string();
            for smaller in [15.0, 13.0, 11.0].into_iter().filter(|s| *s < base) {
                if fits(&text, size) {
                    break;
                }
                size = smaller;
            }
            while !fits(&text, size) && text.chars().count() > 1 {
                let keep = text.chars().count().saturating_sub(2);
                text = text.chars().take(keep).collect::<String>() + "…";
            }
            (text, size)
        };
        for (i, p) in panels.iter().enumerate() {
            let (x, y) = origin(i);
            let (text, size) = fit(&p.title, 17.0, (pw + gap).saturating_sub(8));
            root.draw(&Text::new(text, (x as i32 + 4, y as i32 + 6), style_of(size))).map_err(err)?;
        }
        for band in 0..bands {
            for (i, l) in row_labels.iter().enumerate() {
                let y = band * (title_h + ph + gap) + title_h + first_row_offset + i as u32 * row_height + row_height / 2 - 8;
                let (text, size) = fit(l, 15.0, label_w + gap - 10);
                root.draw(&Text::new(text, (6, y as i32), style_of(size))).map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    Ok(canvas)
}

/// Saves an image as PNG (creating parent folders).
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| crate::Error::io(d, e))?;
    }
    img.save(path).map_err(|e| Error::Other(format!("cannot write {}: {e}", path.display())))
}

/// A PNG image to look at: in evcxr Jupyter a value of this type displays as the picture
/// (evcxr's display protocol, `evcxr_display`); elsewhere it is bytes to save.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// PNG-encoded bytes.
    pub png: Vec<u8>,
}

impl Figure {
    /// Reads a PNG file (e.g. a figure an example wrote). Errors name the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let png =
            std::fs::read(path).map_err(|e| crate::Error::Missing { path: path.to_path_buf(), hint: format!("{e}; run the example that writes it first") })?;
        if !png.starts_with(b"\x89PNG") {
            return Err(crate::Error::Corrupt { path: path.to_path_buf(), reason: "not a PNG file".into() });
        }
        Ok(Self { png })
    }

    /// Encodes an RGB image (e.g. a sample grid) as a figure.
    pub fn from_rgb(img: &RgbImage) -> Result<Self> {
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).map_err(|e| crate::Error::Other(format!("PNG encoding: {e}")))?;
        Ok(Self { png })
    }

    /// The text evcxr reads from stdout to show the image.
    pub fn evcxr_content(&self) -> String {
        use base64::Engine;
        format!("EVCXR_BEGIN_CONTENT image/png\n{}\nEVCXR_END_CONTENT", base64::engine::general_purpose::STANDARD.encode(&self.png))
    }

    /// evcxr's display hook: prints [`Figure::evcxr_content`].
    pub fn evcxr_display(&self) {
        println!("{}", self.evcxr_content());
    }
}

/// Runs the same plotters drawing code twice, on a bitmap backend writing `<stem>.png` (text in
/// the embedded font, see [`register_font`]) and on an SVG backend writing `<stem>.svg`, so
/// every figure comes in both formats. `$root` names the `DrawingArea` inside the body; the body
/// may use `?`.
///
/// ```ignore
/// erg::png_and_svg!(Path::new("results/fig"), (640, 480), |root| {
///     root.fill(&WHITE)?;
///     // ... ChartBuilder::on(&root) ...
///     root.present()?;
/// });
/// ```
#[macro_export]
macro_rules! png_and_svg {
    ($stem:expr, $size:expr, |$root:ident| $body:block) => {{
        let stem: std::path::PathBuf = $stem.into();
        let (png, svg) = (stem.with_extension("png"), stem.with_extension("svg"));
        // The embedded font, registered with the plotters this expansion uses.
        let _ = plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, $crate::imaging::FONT_DATA);
        {
            let $root = plotters::prelude::BitMapBackend::new(&png, $size).into_drawing_area();
            $body
        }
        {
            let $root = plotters::prelude::SVGBackend::new(&svg, $size).into_drawing_area();
            $body
        }
    }};
}
