//! cellgate's hot path, built by maturin into `cellgate._core`.

pub mod audit;
pub mod auth;
pub mod breaker;
pub mod catalog;
pub mod cells;
pub mod client_address;
pub mod clock;
pub mod compliance;
pub mod explain;
pub mod forward;
pub mod health;
pub mod ingress;
pub mod networks;
pub mod placement;
pub mod profiles;
pub mod py;
pub mod ratelimit;
pub mod reason;
pub mod rendezvous;
pub mod replay;
pub mod request_id;
pub mod risk;
pub mod router;
pub mod runtime;
pub mod selection;
pub mod settings;
pub mod signing;
pub mod state;
pub mod target;
#[cfg(test)]
mod testing;
pub mod trace;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<py::router::PyRouter>()?;
    m.add_class::<py::decision::PyDecision>()?;
    m.add_class::<py::clock::PyClock>()?;
    m.add_class::<py::bridge::PyBridge>()?;
    m.add_class::<py::zone::PyZone>()?;
    m.add_function(wrap_pyfunction!(py::profiles::check_profiles, m)?)?;
    m.add_function(wrap_pyfunction!(py::tls::check_cell_tls, m)?)?;
    m.add(
        "CoreConfigError",
        m.py().get_type::<py::errors::CoreConfigError>(),
    )?;
    m.add_class::<py::signing::PyRequestVerifier>()?;
    m.add_function(wrap_pyfunction!(py::signing::verify_request, m)?)?;
    m.add_function(wrap_pyfunction!(py::signing::sign_request, m)?)?;
    m.add(
        "SignatureError",
        m.py().get_type::<py::signing::SignatureError>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
