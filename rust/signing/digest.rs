//! RFC 9530 Content-Digest: the digest of the message content, written by the signer and checked
//! by the verifier, so that a signature covering the field covers the body.

use super::errors::{VerifyError, VerifyReason};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::digest::{self, SHA256, SHA512};
use sfv::{Dictionary, ListEntry, Parser, Version};

/// Which digests a Content-Digest field carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestAlgs {
    pub sha256: bool,
    pub sha512: bool,
}

impl DigestAlgs {
    /// `sha-256` alone, what the signer writes by default.
    pub const SHA256: DigestAlgs = DigestAlgs {
        sha256: true,
        sha512: false,
    };
    /// `sha-512` alone.
    pub const SHA512: DigestAlgs = DigestAlgs {
        sha256: false,
        sha512: true,
    };
    /// Both, `sha-256` first.
    pub const BOTH: DigestAlgs = DigestAlgs {
        sha256: true,
        sha512: true,
    };
}

/// Appends the Content-Digest field value of `body` to `out`: `sha-256=:<b64>:`, then
/// `, sha-512=:<b64>:` when asked (`sha-256` alone when neither is chosen).
pub fn write_content_digest(body: &[u8], algs: DigestAlgs, out: &mut String) {
    let sha256 = algs.sha256 || !algs.sha512;
    if sha256 {
        out.push_str("sha-256=:");
        STANDARD.encode_string(digest::digest(&SHA256, body), out);
        out.push(':');
    }
    if algs.sha512 {
        if sha256 {
            out.push_str(", ");
        }
        out.push_str("sha-512=:");
        STANDARD.encode_string(digest::digest(&SHA512, body), out);
        out.push(':');
    }
}

/// The Content-Digest field value of `body` (see [`write_content_digest`]).
pub fn content_digest(body: &[u8], algs: DigestAlgs) -> String {
    let mut out = String::with_capacity(140);
    write_content_digest(body, algs, &mut out);
    out
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a Content-Digest field value against `body`: at least one of `sha-256` and `sha-512`
/// must be present and every one present must match; other algorithms are ignored.
/// A field that does not parse is `malformed_signature`; a wrong or unusable one is
/// `digest_mismatch`.
pub fn check_content_digest(field: &str, body: &[u8]) -> Result<(), VerifyError> {
    let members: Dictionary = Parser::new(field)
        .with_version(Version::Rfc8941)
        .parse()
        .map_err(|err| VerifyError::malformed(format!("content-digest does not parse: {err}")))?;
    let mut checked = 0;
    for (name, member) in &members {
        let algorithm = match name.as_str() {
            "sha-256" => &SHA256,
            "sha-512" => &SHA512,
            _ => continue,
        };
        let expected = match member {
            ListEntry::Item(item) => item.bare_item.as_byte_sequence(),
            ListEntry::InnerList(_) => None,
        }
        .ok_or_else(|| {
            VerifyError::malformed(format!(
                "content-digest: {} is not a byte sequence",
                name.as_str()
            ))
        })?;
        if !same_bytes(digest::digest(algorithm, body).as_ref(), expected) {
            return Err(VerifyError::new(
                VerifyReason::DigestMismatch,
                format!(
                    "content-digest: the {} digest does not match the body",
                    name.as_str()
                ),
            ));
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(VerifyError::new(
            VerifyReason::DigestMismatch,
            "content-digest has neither a sha-256 nor a sha-512 digest",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9530 appendix B.1: `{"hello": "world"}` followed by LF.
    const HELLO_LF: &[u8] = b"{\"hello\": \"world\"}\n";
    const HELLO_LF_SHA256: &str = "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:";
    /// RFC 9530 section 2's sha-512 example, the digest of the same content.
    const HELLO_LF_SHA512: &str = concat!(
        "sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCs",
        "yRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:"
    );
    /// RFC 9421 appendix B.2's test-request body (no LF) and its Content-Digest.
    const HELLO: &[u8] = b"{\"hello\": \"world\"}";
    const HELLO_SHA512: &str = concat!(
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+T",
        "aPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
    );

    #[test]
    fn writes_the_rfc_9530_examples() {
        assert_eq!(
            content_digest(HELLO_LF, DigestAlgs::SHA256),
            HELLO_LF_SHA256
        );
        assert_eq!(
            content_digest(HELLO_LF, DigestAlgs::SHA512),
            HELLO_LF_SHA512
        );
        assert_eq!(
            content_digest(HELLO_LF, DigestAlgs::BOTH),
            format!("{HELLO_LF_SHA256}, {HELLO_LF_SHA512}")
        );
        assert_eq!(content_digest(HELLO, DigestAlgs::SHA512), HELLO_SHA512);
        let neither = DigestAlgs {
            sha256: false,
            sha512: false,
        };
        assert_eq!(content_digest(HELLO_LF, neither), HELLO_LF_SHA256);
    }

    #[test]
    fn accepts_the_rfc_examples() {
        check_content_digest(HELLO_LF_SHA256, HELLO_LF).unwrap();
        check_content_digest(HELLO_LF_SHA512, HELLO_LF).unwrap();
        check_content_digest(&format!("{HELLO_LF_SHA256}, {HELLO_LF_SHA512}"), HELLO_LF).unwrap();
        check_content_digest(HELLO_SHA512, HELLO).unwrap();
        // RFC 9530 B.2: the digest of empty content.
        check_content_digest(
            "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
            b"",
        )
        .unwrap();
    }

    #[test]
    fn unknown_algorithms_are_ignored_but_one_known_is_needed() {
        let with_unknown = format!("md5=:AAAA:, unixsum=:AAAA:, {HELLO_LF_SHA256}");
        check_content_digest(&with_unknown, HELLO_LF).unwrap();
        let err = check_content_digest("md5=:AAAA:", HELLO_LF).unwrap_err();
        assert_eq!(err.reason, VerifyReason::DigestMismatch);
    }

    #[test]
    fn every_known_digest_must_match() {
        let err = check_content_digest(HELLO_LF_SHA256, HELLO).unwrap_err();
        assert_eq!(err.reason, VerifyReason::DigestMismatch);
        // A right sha-512 does not excuse a wrong sha-256.
        let mixed = format!("{HELLO_LF_SHA256}, {HELLO_SHA512}");
        let err = check_content_digest(&mixed, HELLO).unwrap_err();
        assert_eq!(err.reason, VerifyReason::DigestMismatch);
        assert!(err.detail.contains("sha-256"), "{}", err.detail);
        let truncated = "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8Fa:";
        let err = check_content_digest(truncated, HELLO_LF).unwrap_err();
        assert_eq!(err.reason, VerifyReason::DigestMismatch);
    }

    #[test]
    fn malformed_fields_are_refused() {
        for field in [
            "",
            "sha-256",
            "sha-256=\"RK/0\"",
            "sha-256=(:AAAA:)",
            "sha-256=:not base64!:",
            "SHA-256=:AAAA:",
            "sha-256=:AAAA:,",
        ] {
            let err = check_content_digest(field, HELLO_LF).unwrap_err();
            assert!(
                matches!(
                    err.reason,
                    VerifyReason::MalformedSignature | VerifyReason::DigestMismatch
                ),
                "{field:?}: {err}"
            );
        }
        let err = check_content_digest("sha-256=\"RK/0\"", HELLO_LF).unwrap_err();
        assert_eq!(err.reason, VerifyReason::MalformedSignature);
        let err = check_content_digest("sha-256=:AAAA:,", HELLO_LF).unwrap_err();
        assert_eq!(err.reason, VerifyReason::MalformedSignature);
    }
}
