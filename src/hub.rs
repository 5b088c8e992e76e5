//! Where pretrained weights come from: a local file, or a file of a Hugging Face Hub repository
//! fetched (and cached) by `hf-hub`. Offline, `hf-hub` serves files already in its cache
//! (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`); [`populate_cache`] puts files there in the
//! cache's layout (`models--{org}--{name}/refs/{revision}` → `snapshots/{commit}/{file}`), so that
//! weights shipped some other way (a PyPI wheel, a USB stick) load through the same code path.
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::{Error, Result};

/// A weight file: local, or in a Hub model repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightSource {
    /// A file on disk.
    Local(PathBuf),
    /// `file` of model repository `repo` at `revision` (default `main`).
    Hub {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
        /// Path of the file inside the repository.
        file: String,
    },
}

impl FromStr for WeightSource {
    type Err = Error;
    /// `hf://org/name/path/in/repo.safetensors`, `hf://org/name@revision/path`, or a local path.
    fn from_str(s: &str) -> Result<Self> {
        let Some(rest) = s.strip_prefix("hf://") else {
            return Ok(Self::Local(PathBuf::from(s)));
        };
        let parts: Vec<&str> = rest.splitn(3, '/').collect();
        if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(Error::Hyperparameter(format!("{s:?}: a Hub source is hf://org/name[@revision]/file")));
        }
        let (name, revision) = match parts[1].split_once('@') {
            Some((n, r)) => (n, r.to_string()),
            None => (parts[1], "main".to_string()),
        };
        Ok(Self::Hub { repo: format!("{}/{}", parts[0], name), revision, file: parts[2].to_string() })
    }
}

impl WeightSource {
    /// A file of a Hub model repository at `main`.
    pub fn hub(repo: &str, file: &str) -> Self {
        Self::Hub { repo: repo.into(), revision: "main".into(), file: file.into() }
    }

    /// The local path of the file: the path itself, or the hf-hub cache entry (downloading it if
    /// it is not cached and the network allows). Errors say what to do.
    pub fn resolve(&self) -> Result<PathBuf> {
        match self {
            Self::Local(p) if p.exists() => Ok(p.clone()),
            Self::Local(p) => {
                Err(Error::Missing { path: p.clone(), hint: "pass an existing weight file, or hf://org/name/file to fetch it with hf-hub".into() })
            }
            Self::Hub { repo, revision, file } => {
                let api = api()?;
                api.repo(Repo::with_revision(repo.clone(), RepoType::Model, revision.clone())).get(file).map_err(|e| Error::Missing {
                    path: PathBuf::from(format!("hf://{repo}@{revision}/{file}")),
                    hint: format!("hf-hub could not fetch it ({e}); offline, put it in the hf-hub cache (see erg::hub::populate_cache) or pass a local path"),
                })
            }
        }
    }
}

/// The hf-hub client: the cache of `$HF_HOME` (hf-hub's `from_env`), progress bars, and the
/// access token of `HF_TOKEN` when set (hf-hub 0.4 itself reads only `$HF_HOME/token`), which
/// the gated repositories (SD3, SD3.5) need.
fn api() -> Result<hf_hub::api::sync::Api> {
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty());
    let mut b = ApiBuilder::from_env().with_progress(true);
    if token.is_some() {
        b = b.with_token(token);
    }
    b.build().map_err(|e| Error::Other(format!("hf-hub: {e}")))
}

/// Downloads (or finds in the cache) the files of model repository `repo` (at `main`) whose paths
/// start with one of `prefixes`: configs (`*.json`), tokenizers (`tokenizer.json`) and
/// safetensors weights (full precision when both it and an `.fp16`/`.bf16` variant exist).
/// Returns the local snapshot folder. Errors say what to do (token, network, cache).
pub fn snapshot(repo: &str, prefixes: &[&str]) -> Result<PathBuf> {
    let api = api()?;
    let r = api.repo(Repo::new(repo.to_string(), RepoType::Model));
    let hint = |e: String| Error::Missing {
        path: PathBuf::from(format!("hf://{repo}")),
        hint: format!(
            "hf-hub could not list or fetch it ({e}); gated repositories need HF_TOKEN (and the licence accepted on the Hub); offline, pass a local folder"
        ),
    };
    let info = r.info().map_err(|e| hint(e.to_string()))?;
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let variant = |n: &str| n.contains(".fp16.") || n.contains(".bf16.") || n.contains(".fp16-") || n.contains(".bf16-");
    let wanted: Vec<&String> = names
        .iter()
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .filter(|n| n.ends_with(".json") || n.ends_with(".safetensors"))
        .filter(|n| {
            let dir = n.rsplit_once('/').map_or("", |(d, _)| d);
            !(variant(n) && names.iter().any(|m| m.starts_with(dir) && m.ends_with(".safetensors") && !variant(m)))
        })
        .collect();
    let mut root = None;
    for n in wanted {
        let p = r.get(n).map_err(|e| hint(e.to_string()))?;
        if n == "model_index.json" {
            root = p.parent().map(Path::to_path_buf);
        }
    }
    root.ok_or_else(|| hint("no model_index.json: not a diffusers repository".into()))
}

/// Copies `files` ((name in the repository, source path)) into the hf-hub cache at `cache_dir`
/// (the `hub` folder, e.g. `$HF_HOME/hub`) as model `repo` at `revision`, under snapshot
/// `commit`, and points the revision's ref at it. Existing files are overwritten atomically.
/// Afterwards `WeightSource::Hub` resolves them without network.
pub fn populate_cache(cache_dir: &Path, repo: &str, revision: &str, commit: &str, files: &[(&str, &Path)]) -> Result<()> {
    let cache = Cache::new(cache_dir.to_path_buf());
    let r = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    let snapshot = cache_dir.join(r.folder_name()).join("snapshots").join(commit);
    for (name, src) in files {
        let dst = snapshot.join(name);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let bytes = std::fs::read(src).map_err(|e| Error::Missing { path: src.to_path_buf(), hint: format!("source of {repo}/{name}: {e}") })?;
        crate::checkpoint::write_atomic(&dst, &bytes)?;
    }
    cache.repo(r).create_ref(commit)?;
    Ok(())
}

/// The default hf-hub cache folder: `$HF_HOME/hub`, or `~/.cache/huggingface/hub`.
pub fn default_cache_dir() -> PathBuf {
    Cache::from_env().path().clone()
}
