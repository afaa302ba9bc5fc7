//! Verification keys by `kid`, each bound to exactly one algorithm (RFC 8725 section 3.1), so an
//! HS256 token can never be checked against an RSA key's bytes, nor an RS256 one against a secret.

use super::spki::{self, Curve, PublicKey};
use crate::settings::{JwkSettings, KeySettings};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use ring::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};
use std::collections::HashMap;

/// The smallest RSA modulus accepted (RFC 7518 section 3.3).
const MIN_RSA_BITS: usize = 2048;

/// A key and the one algorithm it may verify.
pub struct Key {
    pub alg: &'static str,
    material: KeyMaterial,
}

enum KeyMaterial {
    Hmac(hmac::Key),
    Rsa {
        params: &'static RsaParameters,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// ECDSA (fixed-length r || s, as JWS encodes it) and Ed25519.
    Unparsed(UnparsedPublicKey<Vec<u8>>),
}

impl Key {
    /// Whether `signature` is valid for `signing_input` under this key.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            KeyMaterial::Hmac(key) => hmac::verify(key, signing_input, signature).is_ok(),
            KeyMaterial::Rsa { params, n, e } => RsaPublicKeyComponents { n, e }
                .verify(params, signing_input, signature)
                .is_ok(),
            KeyMaterial::Unparsed(key) => key.verify(signing_input, signature).is_ok(),
        }
    }
}

/// Why a configured key was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyError {
    pub index: usize,
    pub message: String,
}

/// The family of an algorithm, and what its key must be.
enum Family {
    Hmac(hmac::Algorithm, usize),
    Rsa(&'static RsaParameters),
    Ecdsa(Curve, &'static signature::EcdsaVerificationAlgorithm),
    Ed25519,
}

fn family(alg: &str) -> Option<(&'static str, Family)> {
    Some(match alg {
        "HS256" => ("HS256", Family::Hmac(hmac::HMAC_SHA256, 32)),
        "HS384" => ("HS384", Family::Hmac(hmac::HMAC_SHA384, 48)),
        "HS512" => ("HS512", Family::Hmac(hmac::HMAC_SHA512, 64)),
        "RS256" => ("RS256", Family::Rsa(&signature::RSA_PKCS1_2048_8192_SHA256)),
        "RS384" => ("RS384", Family::Rsa(&signature::RSA_PKCS1_2048_8192_SHA384)),
        "RS512" => ("RS512", Family::Rsa(&signature::RSA_PKCS1_2048_8192_SHA512)),
        "PS256" => ("PS256", Family::Rsa(&signature::RSA_PSS_2048_8192_SHA256)),
        "PS384" => ("PS384", Family::Rsa(&signature::RSA_PSS_2048_8192_SHA384)),
        "PS512" => ("PS512", Family::Rsa(&signature::RSA_PSS_2048_8192_SHA512)),
        "ES256" => (
            "ES256",
            Family::Ecdsa(Curve::P256, &signature::ECDSA_P256_SHA256_FIXED),
        ),
        "ES384" => (
            "ES384",
            Family::Ecdsa(Curve::P384, &signature::ECDSA_P384_SHA384_FIXED),
        ),
        "EdDSA" => ("EdDSA", Family::Ed25519),
        _ => return None,
    })
}

fn b64(value: &str, what: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|err| format!("{what}: not base64url: {err}"))
}

fn member<'a>(
    jwk: &'a JwkSettings,
    name: &str,
    value: &'a Option<String>,
) -> Result<&'a str, String> {
    value
        .as_deref()
        .ok_or_else(|| format!("jwk.{name}: missing for kty {:?}", jwk.kty))
}

/// The public key a JWK describes.
fn from_jwk(jwk: &JwkSettings) -> Result<PublicKey, String> {
    match jwk.kty.as_str() {
        "RSA" => {
            let n = b64(member(jwk, "n", &jwk.n)?, "jwk.n")?;
            let e = b64(member(jwk, "e", &jwk.e)?, "jwk.e")?;
            let strip =
                |v: Vec<u8>| v[v.iter().position(|&b| b != 0).unwrap_or(v.len())..].to_vec();
            Ok(PublicKey::Rsa {
                n: strip(n),
                e: strip(e),
            })
        }
        "EC" => {
            let curve = match member(jwk, "crv", &jwk.crv)? {
                "P-256" => Curve::P256,
                "P-384" => Curve::P384,
                other => return Err(format!("jwk.crv: unsupported curve {other:?}")),
            };
            let x = b64(member(jwk, "x", &jwk.x)?, "jwk.x")?;
            let y = b64(member(jwk, "y", &jwk.y)?, "jwk.y")?;
            let len = curve.coordinate_len();
            if x.len() != len || y.len() != len {
                return Err(format!(
                    "jwk: {} coordinates are {len} bytes each, got {} and {}",
                    curve.name(),
                    x.len(),
                    y.len()
                ));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok(PublicKey::Ec { curve, point })
        }
        "OKP" => match member(jwk, "crv", &jwk.crv)? {
            "Ed25519" => Ok(PublicKey::Ed25519(b64(member(jwk, "x", &jwk.x)?, "jwk.x")?)),
            other => Err(format!("jwk.crv: unsupported curve {other:?}")),
        },
        other => Err(format!("jwk.kty: unsupported key type {other:?}")),
    }
}

fn describe(key: &PublicKey) -> String {
    match key {
        PublicKey::Rsa { .. } => "an RSA key".into(),
        PublicKey::Ec { curve, .. } => format!("an EC {} key", curve.name()),
        PublicKey::Ed25519(_) => "an Ed25519 key".into(),
    }
}

/// Builds the key of one configured entry, refusing a key form that does not fit its algorithm.
fn build_key(settings: &KeySettings) -> Result<Key, String> {
    let (alg, family) = family(&settings.alg)
        .ok_or_else(|| format!("alg: unsupported algorithm {:?}", settings.alg))?;
    let forms = [
        settings.secret_b64.is_some(),
        settings.spki_b64.is_some(),
        settings.jwk.is_some(),
    ];
    if forms.iter().filter(|&&given| given).count() != 1 {
        return Err("give exactly one of secret_b64, spki_b64 or jwk".into());
    }
    if let Family::Hmac(hmac_alg, min_len) = family {
        let secret = settings
            .secret_b64
            .as_deref()
            .ok_or_else(|| format!("secret: {alg} takes a shared secret, not a public key"))?;
        let secret = b64(secret, "secret")?;
        if secret.len() < min_len {
            return Err(format!(
                "secret: {alg} needs at least {min_len} bytes (RFC 7518 3.2), got {}",
                secret.len()
            ));
        }
        return Ok(Key {
            alg,
            material: KeyMaterial::Hmac(hmac::Key::new(hmac_alg, &secret)),
        });
    }
    let public = match (&settings.spki_b64, &settings.jwk) {
        (Some(spki), None) => {
            spki::parse(&b64(spki, "public key")?).map_err(|err| format!("public key: {err}"))?
        }
        (None, Some(jwk)) => from_jwk(jwk)?,
        _ => {
            return Err(format!(
                "secret: {alg} takes a public key, not a shared secret"
            ))
        }
    };
    let material = match (family, public) {
        (Family::Rsa(params), PublicKey::Rsa { n, e }) => {
            if n.len() * 8 < MIN_RSA_BITS {
                return Err(format!(
                    "public key: {alg} needs an RSA modulus of at least {MIN_RSA_BITS} bits, got {}",
                    n.len() * 8
                ));
            }
            KeyMaterial::Rsa { params, n, e }
        }
        (
            Family::Ecdsa(curve, verification),
            PublicKey::Ec {
                curve: found,
                point,
            },
        ) if curve == found => KeyMaterial::Unparsed(UnparsedPublicKey::new(verification, point)),
        (Family::Ed25519, PublicKey::Ed25519(key)) if key.len() == 32 => {
            KeyMaterial::Unparsed(UnparsedPublicKey::new(&signature::ED25519, key))
        }
        (_, other) => {
            return Err(format!(
                "public key: {alg} cannot use {} (RFC 7518 3.1)",
                describe(&other)
            ))
        }
    };
    Ok(Key { alg, material })
}

/// The configured keys, found by `kid`.
pub struct KeySet {
    by_kid: HashMap<String, Key>,
}

impl KeySet {
    /// Builds the key set, refusing unknown algorithms, keys that do not fit their algorithm, short
    /// secrets and moduli, and duplicate kids.
    pub fn build(settings: &[KeySettings]) -> Result<Self, Vec<KeyError>> {
        let mut by_kid = HashMap::new();
        let mut errors = Vec::new();
        for (index, key) in settings.iter().enumerate() {
            match build_key(key) {
                Ok(built) => {
                    if by_kid.insert(key.kid.clone(), built).is_some() {
                        errors.push(KeyError {
                            index,
                            message: format!("kid: duplicate kid {:?}", key.kid),
                        });
                    }
                }
                Err(message) => errors.push(KeyError { index, message }),
            }
        }
        if errors.is_empty() {
            Ok(KeySet { by_kid })
        } else {
            Err(errors)
        }
    }

    /// The key for `kid`; without a kid, the only key when exactly one is configured.
    pub fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None if self.by_kid.len() == 1 => self.by_kid.values().next(),
            None => None,
        }
    }
}
