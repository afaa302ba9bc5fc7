//! Bearer-token authentication: JWS verification, claim checks and the verified-token cache.

mod cache;
mod claims;
mod keys;
mod members;
pub(crate) mod revocations;
mod spki;
mod verifier;

pub use cache::TokenCache;
pub use keys::{KeyError, KeySet};
pub use revocations::{RevocationCounts, Revocations};
pub use verifier::{StepUpProof, Verified, Verifier};
