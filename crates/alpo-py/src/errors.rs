//! alpo's exception hierarchy, declared once, and the one mapping from the core error enum.
//! Python re-exports these from `alpo.exceptions`.

use alpo_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    alpo,
    AlpoError,
    PyException,
    "Base class of every error alpo raises."
);
create_exception!(
    alpo,
    InputError,
    AlpoError,
    "A file or folder cannot be read."
);
create_exception!(
    alpo,
    EncodingError,
    AlpoError,
    "A file's text encoding cannot be decoded."
);
create_exception!(
    alpo,
    ParseError,
    AlpoError,
    "A file's content cannot be parsed."
);
create_exception!(
    alpo,
    ConfigError,
    AlpoError,
    "An option or configuration value is invalid."
);

pub fn to_py(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::Io { .. } => InputError::new_err(msg),
        Error::Encoding { .. } => EncodingError::new_err(msg),
        Error::Parse { .. } => ParseError::new_err(msg),
        Error::Config(_) => ConfigError::new_err(msg),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("AlpoError", py.get_type::<AlpoError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("EncodingError", py.get_type::<EncodingError>())?;
    m.add("ParseError", py.get_type::<ParseError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    Ok(())
}
