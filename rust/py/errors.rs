//! Exceptions the core raises.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;

create_exception!(
    cellgate._core,
    CoreConfigError,
    PyValueError,
    "The compiled configuration or profile source was refused; args[0] lists every error."
);
