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
                let api = ApiBuilder::from_env().with_progress(true).build().map_err(|e| Error::Other(format!("hf-hub: {e}")))?;
                api.repo(Repo::with_revision(repo.clone(), RepoType::Model, revision.clone())).get(file).map_err(|e| Error::Missing {
                    path: PathBuf::from(format!("hf://{repo}@{revision}/{file}")),
                    hint: format!("hf-hub could not fetch it ({e}); offline, put it in the hf-hub cache (see erg::hub::populate_cache) or pass a local path"),
                })
            }
        }
    }
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
