//! Why a signature was refused, or could not be made.

use std::fmt;

/// Every reason a request's signature can be refused; the codes are what cells and tests match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyReason {
    /// No Signature-Input or Signature field, or no member with the expected label.
    MissingSignature,
    /// A field that does not parse, a required parameter missing, an `alg` that disagrees with
    /// the key's, a duplicate or unsupported component identifier.
    MalformedSignature,
    /// The `keyid` names no configured key.
    UnknownKey,
    /// The signature does not verify over the signature base.
    BadSignature,
    /// Created too long ago, in the future beyond the allowed skew, or past `expires`.
    StaleSignature,
    /// A body whose Content-Digest is absent, uncovered or wrong.
    DigestMismatch,
    /// The nonce was seen before within its signature's lifetime.
    Replayed,
    /// A required component is not covered, or a covered header is absent.
    MissingComponent,
}

impl VerifyReason {
    /// Every reason, in the order the verifier checks for them (tests walk this list).
    pub const ALL: [VerifyReason; 8] = [
        VerifyReason::MissingSignature,
        VerifyReason::MalformedSignature,
        VerifyReason::UnknownKey,
        VerifyReason::MissingComponent,
        VerifyReason::StaleSignature,
        VerifyReason::BadSignature,
        VerifyReason::DigestMismatch,
        VerifyReason::Replayed,
    ];

    /// The machine-readable code (`missing_signature`, `bad_signature`, ...).
    pub fn code(self) -> &'static str {
        match self {
            VerifyReason::MissingSignature => "missing_signature",
            VerifyReason::MalformedSignature => "malformed_signature",
            VerifyReason::UnknownKey => "unknown_key",
            VerifyReason::BadSignature => "bad_signature",
            VerifyReason::StaleSignature => "stale_signature",
            VerifyReason::DigestMismatch => "digest_mismatch",
            VerifyReason::Replayed => "replayed",
            VerifyReason::MissingComponent => "missing_component",
        }
    }
}

/// A refused signature: the reason code and a sentence saying what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub reason: VerifyReason,
    pub detail: String,
}

impl VerifyError {
    /// A refusal for `reason`, explained by `detail`.
    pub fn new(reason: VerifyReason, detail: impl Into<String>) -> Self {
        VerifyError {
            reason,
            detail: detail.into(),
        }
    }

    /// A `malformed_signature` refusal.
    pub fn malformed(detail: impl Into<String>) -> Self {
        VerifyError::new(VerifyReason::MalformedSignature, detail)
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.detail)
    }
}

impl std::error::Error for VerifyError {}

/// Why a request could not be signed (a value that cannot go into a signature base or a field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignError {
    pub detail: String,
}

impl SignError {
    /// A signing failure explained by `detail`.
    pub fn new(detail: impl Into<String>) -> Self {
        SignError {
            detail: detail.into(),
        }
    }
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot sign: {}", self.detail)
    }
}

impl std::error::Error for SignError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_distinct_and_snake_case() {
        let codes: HashSet<_> = VerifyReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), VerifyReason::ALL.len());
        for code in codes {
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }

    #[test]
    fn display_is_reason_then_detail() {
        let err = VerifyError::new(VerifyReason::Replayed, "nonce \"n\" seen before");
        assert_eq!(err.to_string(), "replayed: nonce \"n\" seen before");
    }
}
