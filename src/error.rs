//! The crate's error type: every user-facing failure says what was wrong and what to do.
use std::path::PathBuf;

/// Errors of the `erg` crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hyperparameter is outside its valid range (the message names it and the range).
    #[error("invalid hyperparameter: {0}")]
    Hyperparameter(String),
    /// A tensor or image has the wrong shape for the model it is given to.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A file the crate needs is missing.
    #[error("file not found: {path}: {hint}")]
    Missing { path: PathBuf, hint: String },
    /// A file exists but cannot be read as what it should be.
    #[error("corrupt or unreadable file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Any other error, with context.
    #[error("{0}")]
    Other(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn hp(msg: impl Into<String>) -> Self {
        Error::Hyperparameter(msg.into())
    }
    pub(crate) fn shape(msg: impl Into<String>) -> Self {
        Error::Shape(msg.into())
    }
    /// An I/O error on `path`, naming it.
    pub(crate) fn io(path: impl AsRef<std::path::Path>, e: std::io::Error) -> Self {
        Error::Other(format!("{}: {e}", path.as_ref().display()))
    }
    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Error::Corrupt { path: path.into(), reason: reason.to_string() }
    }
}
