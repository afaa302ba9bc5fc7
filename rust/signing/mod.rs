//! HTTP Message Signatures (RFC 9421) and Content-Digest (RFC 9530), sign and verify.
//!
//! The gateway signs what it forwards to a cell ([`Signer`]): the request line, the authority,
//! the body's digest and the headers it vouches for (customer, tier, risk, step-up, request id),
//! with `hmac-sha256` or `ed25519`. A cell, or a test, checks that signature
//! ([`RequestVerifier`]), each refusal carrying one [`VerifyReason`] code, and spends its nonce
//! once ([`NonceStore`]). Structured fields are parsed with `sfv`; crypto is `ring`'s.

mod base;
mod components;
mod digest;
mod errors;
mod keys;
mod nonces;
mod sign;
mod verify;

pub use base::{serialize_params, signature_base, Param, SignatureParams};
pub use components::{
    Component, ComponentError, HeaderMapRequest, Message, PairsRequest, ValueError,
};
pub use digest::{check_content_digest, content_digest, write_content_digest, DigestAlgs};
pub use errors::{SignError, VerifyError, VerifyReason};
pub use keys::{Algorithm, OkpJwkSettings, SigningKey, SigningKeySettings, VerifyingKey};
pub use nonces::NonceStore;
pub use sign::{
    Signer, SignerSettings, DEFAULT_COMPONENTS, DEFAULT_LABEL, DEFAULT_TTL_S, GATEWAY_HEADERS,
};
pub use verify::{
    RequestVerifier, VerifiedSignature, VerifierSettings, DEFAULT_CLOCK_SKEW_S, DEFAULT_MAX_AGE_S,
    DEFAULT_REQUIRED,
};
