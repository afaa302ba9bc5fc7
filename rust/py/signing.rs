//! `RequestVerifier`, `verify_request`, `sign_request` and `SignatureError`: RFC 9421 request
//! signatures from Python, through the same `Signer` and `RequestVerifier` the core uses.

use crate::signing::{
    NonceStore, PairsRequest, RequestVerifier, Signer, SigningKey, SigningKeySettings,
    VerifiedSignature, VerifyError, VerifyingKey, DEFAULT_REQUIRED, GATEWAY_HEADERS,
};
use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::time::{SystemTime, UNIX_EPOCH};

create_exception!(
    cellgate._core,
    SignatureError,
    PyValueError,
    "A request's signature was refused: `.reason` is the code (missing_signature, \
     malformed_signature, unknown_key, bad_signature, stale_signature, digest_mismatch, \
     replayed, missing_component), `.detail` says why."
);

/// The Python exception for a refused signature, carrying `.reason` and `.detail`.
fn signature_error(py: Python<'_>, err: &VerifyError) -> PyErr {
    let exception = SignatureError::new_err(err.to_string());
    let value = exception.value(py);
    if let Err(failed) = value
        .setattr("reason", err.reason.code())
        .and_then(|()| value.setattr("detail", &err.detail))
    {
        return failed;
    }
    exception
}

/// A key dict (`keyid`, `alg` and one key form), decoded as the core's settings; errors name
/// `<path>.<field>`.
fn key_settings(key: &Bound<'_, PyAny>, path: &str) -> PyResult<SigningKeySettings> {
    let py = key.py();
    if !key.is_instance_of::<PyDict>() {
        return Err(PyValueError::new_err(format!(
            "{path}: a key must be a dict"
        )));
    }
    let json: String = py
        .import("json")?
        .call_method1("dumps", (key,))
        .and_then(|text| text.extract())
        .map_err(|err| PyValueError::new_err(format!("{path}: {}", err.value(py))))?;
    serde_json::from_str(&json).map_err(|err| PyValueError::new_err(format!("{path}: {err}")))
}

/// The `(name, value)` pairs of a header list or mapping.
fn header_pairs(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let items = if headers.hasattr("items")? {
        headers.call_method0("items")?
    } else {
        headers.clone()
    };
    let bad = || PyTypeError::new_err("headers: each header must be a (name, value) pair of str");
    let mut pairs = Vec::new();
    for item in items.try_iter().map_err(|_| bad())? {
        let pair: (String, String) = item?.extract().map_err(|_| bad())?;
        pairs.push(pair);
    }
    Ok(pairs)
}

fn borrowed(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// Seconds since the epoch, whole: `now_s` when given, else the system clock.
fn seconds(now_s: Option<f64>) -> PyResult<u64> {
    match now_s {
        Some(t) if t.is_finite() && t >= 0.0 && t < u64::MAX as f64 => Ok(t.floor() as u64),
        Some(t) => Err(PyValueError::new_err(format!(
            "now_s must be a finite number >= 0, got {t}"
        ))),
        None => Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)),
    }
}

fn verified_dict<'py>(
    py: Python<'py>,
    verified: VerifiedSignature,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("label", verified.label)?;
    dict.set_item("keyid", verified.keyid)?;
    dict.set_item("alg", verified.alg)?;
    dict.set_item("created", verified.created)?;
    dict.set_item("expires", verified.expires)?;
    dict.set_item("nonce", verified.nonce)?;
    dict.set_item("covered", PyList::new(py, verified.covered)?)?;
    Ok(dict)
}

/// Verifies RFC 9421 request signatures with a set of keys (several, so keys rotate), and
/// remembers the nonces it accepted so that a signature is accepted once.
#[pyclass(name = "RequestVerifier", frozen, module = "cellgate._core")]
pub struct PyRequestVerifier {
    inner: RequestVerifier,
    nonces: NonceStore,
}

#[pymethods]
impl PyRequestVerifier {
    /// Builds the verifier; ValueError names `keys[i].<field>` (or `required[i]`, `label`).
    #[new]
    #[pyo3(signature = (keys, required=None, max_age_s=300, clock_skew_s=5, label=None, nonce_capacity=100_000))]
    fn new(
        keys: &Bound<'_, PyAny>,
        required: Option<Vec<String>>,
        max_age_s: u64,
        clock_skew_s: u64,
        label: Option<&str>,
        nonce_capacity: usize,
    ) -> PyResult<Self> {
        let mut errors = Vec::new();
        let mut verifying = Vec::new();
        for (index, key) in keys.try_iter()?.enumerate() {
            let path = format!("keys[{index}]");
            match key_settings(&key?, &path) {
                Ok(settings) => match VerifyingKey::from_settings(&settings) {
                    Ok(key) => verifying.push(key),
                    Err(message) => errors.push(format!("{path}.{message}")),
                },
                Err(err) => errors.push(err.value(keys.py()).to_string()),
            }
        }
        if !errors.is_empty() {
            return Err(PyValueError::new_err(errors.join("; ")));
        }
        let required =
            required.unwrap_or_else(|| DEFAULT_REQUIRED.iter().map(|s| s.to_string()).collect());
        let inner = RequestVerifier::new(verifying, &required, max_age_s, clock_skew_s, label)
            .map_err(|errors| PyValueError::new_err(errors.join("; ")))?;
        Ok(PyRequestVerifier {
            inner,
            nonces: NonceStore::new(nonce_capacity),
        })
    }

    /// Verifies a request; returns what the signature said, or raises SignatureError.
    #[pyo3(signature = (method, authority, path, query, headers, body, now_s=None, scheme="https"))]
    #[allow(clippy::too_many_arguments)]
    fn verify<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        authority: &str,
        path: &str,
        query: &str,
        headers: &Bound<'py, PyAny>,
        body: &[u8],
        now_s: Option<f64>,
        scheme: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let now_s = seconds(now_s)?;
        let pairs = header_pairs(headers)?;
        let result = py.detach(|| {
            let headers = borrowed(&pairs);
            let message = PairsRequest {
                method,
                scheme,
                authority,
                path,
                query,
                headers: &headers,
            };
            self.inner.verify(&message, body, now_s, &self.nonces)
        });
        match result {
            Ok(verified) => verified_dict(py, verified),
            Err(err) => Err(signature_error(py, &err)),
        }
    }

    /// The component names every signature must cover (`content-digest` only with a body).
    #[getter]
    fn required(&self) -> Vec<String> {
        self.inner.required().map(str::to_owned).collect()
    }

    /// How old a signature may be, in seconds.
    #[getter]
    fn max_age_s(&self) -> u64 {
        self.inner.max_age_s()
    }

    /// How far in the future `created` may be, in seconds.
    #[getter]
    fn clock_skew_s(&self) -> u64 {
        self.inner.clock_skew_s()
    }

    /// The label checked; None: the first signature.
    #[getter]
    fn label(&self) -> Option<String> {
        self.inner.label().map(str::to_owned)
    }

    /// How many nonces are remembered now.
    #[getter]
    fn nonces_held(&self) -> usize {
        self.nonces.len()
    }

    /// How many unexpired nonces were forgotten because the store was full.
    #[getter]
    fn nonces_evicted(&self) -> u64 {
        self.nonces.evicted()
    }
}

/// `verifier.verify(...)`, as a function: the documented entry point.
#[pyfunction]
#[pyo3(signature = (verifier, method, authority, path, query, headers, body, now_s=None, scheme="https"))]
#[allow(clippy::too_many_arguments)]
pub fn verify_request<'py>(
    py: Python<'py>,
    verifier: PyRef<'py, PyRequestVerifier>,
    method: &str,
    authority: &str,
    path: &str,
    query: &str,
    headers: &Bound<'py, PyAny>,
    body: &[u8],
    now_s: Option<f64>,
    scheme: &str,
) -> PyResult<Bound<'py, PyDict>> {
    verifier.verify(
        py, method, authority, path, query, headers, body, now_s, scheme,
    )
}

/// Signs a request with `key` through the gateway's `Signer`; returns the headers to add
/// (`content-digest` when there is a body, `signature-input`, `signature`).
#[pyfunction]
#[pyo3(signature = (
    key, method, authority, path, query, headers, body, now_s, nonce, label="cellgate", ttl_s=60,
    covered_headers=None, digest_sha512=false, components=None, include_alg=true
))]
#[allow(clippy::too_many_arguments)]
pub fn sign_request(
    key: &Bound<'_, PyAny>,
    method: &str,
    authority: &str,
    path: &str,
    query: &str,
    headers: &Bound<'_, PyAny>,
    body: &[u8],
    now_s: f64,
    nonce: &str,
    label: &str,
    ttl_s: u64,
    covered_headers: Option<Vec<String>>,
    digest_sha512: bool,
    components: Option<Vec<String>>,
    include_alg: bool,
) -> PyResult<Vec<(String, String)>> {
    let settings = key_settings(key, "key")?;
    let key = SigningKey::from_settings(&settings)
        .map_err(|message| PyValueError::new_err(format!("key.{message}")))?;
    let covered_headers =
        covered_headers.unwrap_or_else(|| GATEWAY_HEADERS.iter().map(|s| s.to_string()).collect());
    let join = |errors: Vec<String>| PyValueError::new_err(errors.join("; "));
    let mut signer =
        Signer::new(key, label, ttl_s, digest_sha512, &covered_headers).map_err(join)?;
    if let Some(components) = components {
        signer = signer.with_components(&components).map_err(join)?;
    }
    let signer = signer.with_alg_param(include_alg);

    let mut map = HeaderMap::new();
    for (name, value) in header_pairs(headers)? {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("headers: {name:?} is not a field name")))?;
        let value = HeaderValue::from_str(&value).map_err(|_| {
            PyValueError::new_err(format!("headers: the value of {name} is not a field value"))
        })?;
        map.append(name, value);
    }
    signer
        .sign(
            method,
            authority,
            path,
            query,
            &mut map,
            body,
            seconds(Some(now_s))?,
            nonce,
        )
        .map_err(|err| PyValueError::new_err(err.to_string()))?;
    let mut added = Vec::with_capacity(3);
    for name in ["content-digest", "signature-input", "signature"] {
        if let Some(value) = map.get(name) {
            let value = value
                .to_str()
                .map_err(|_| PyValueError::new_err(format!("{name} is not text")))?;
            added.push((name.to_owned(), value.to_owned()));
        }
    }
    Ok(added)
}
