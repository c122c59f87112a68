//! The one error type of the core. The Python binding maps each variant to one exception class
//! of `alpo.AlpoError`'s hierarchy, in one place (`alpo-py/src/errors.rs`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Encoding { path: PathBuf, reason: String },
    #[error("{path}: line {line}: {reason}")]
    Parse {
        path: PathBuf,
        line: u32,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
