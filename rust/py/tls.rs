//! A cell's TLS settings checked on their own, while the control plane validates a
//! configuration, so that their errors are listed with every other one.

use crate::forward::tls::{self, MinVersion, TlsSettings};
use pyo3::prelude::*;

/// Every problem of one cell's TLS material (PEM text already read from its files) for a cell
/// whose endpoint's host is `host`, as `field: message` (`ca_file`, `cert_file`, `key_file`,
/// `server_name`, `min_version`); empty when a client configuration builds from it.
#[pyfunction]
#[pyo3(signature = (ca_pem, host, *, cert_pem=None, key_pem=None, server_name=None, min_version="1.2"))]
pub fn check_cell_tls(
    ca_pem: String,
    host: &str,
    cert_pem: Option<String>,
    key_pem: Option<String>,
    server_name: Option<String>,
    min_version: &str,
) -> Vec<String> {
    let min_version = match min_version {
        "1.2" => MinVersion::Tls12,
        "1.3" => MinVersion::Tls13,
        other => {
            return vec![format!(
                "min_version: must be \"1.2\" or \"1.3\", got {other:?}"
            )]
        }
    };
    let settings = TlsSettings {
        ca_pem,
        cert_pem,
        key_pem,
        server_name,
        min_version,
    };
    tls::check(&settings, host)
}
