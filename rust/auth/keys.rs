//! Verification keys by `kid`, each bound to exactly one algorithm (RFC 8725 section 3.1).

use crate::settings::KeySettings;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use std::collections::HashMap;

/// A key and the one algorithm it may verify.
pub struct Key {
    pub alg: &'static str,
    verifier: KeyMaterial,
}

enum KeyMaterial {
    Hmac(hmac::Key),
}

impl Key {
    /// Whether `signature` is valid for `signing_input` under this key.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match &self.verifier {
            KeyMaterial::Hmac(key) => hmac::verify(key, signing_input, signature).is_ok(),
        }
    }
}

/// Why a configured key was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyError {
    pub index: usize,
    pub message: String,
}

/// The configured keys, found by `kid`.
pub struct KeySet {
    by_kid: HashMap<String, Key>,
}

impl KeySet {
    /// Builds the key set, refusing unknown algorithms, short secrets and duplicate kids.
    pub fn build(settings: &[KeySettings]) -> Result<Self, Vec<KeyError>> {
        let mut by_kid = HashMap::new();
        let mut errors = Vec::new();
        for (index, key) in settings.iter().enumerate() {
            let fail = |message: String| KeyError { index, message };
            let (alg, hmac_alg, min_len) = match key.alg.as_str() {
                "HS256" => ("HS256", hmac::HMAC_SHA256, 32),
                "HS384" => ("HS384", hmac::HMAC_SHA384, 48),
                "HS512" => ("HS512", hmac::HMAC_SHA512, 64),
                other => {
                    errors.push(fail(format!("alg: unsupported algorithm {other:?}")));
                    continue;
                }
            };
            let secret = match URL_SAFE_NO_PAD.decode(&key.secret_b64) {
                Ok(secret) => secret,
                Err(err) => {
                    errors.push(fail(format!("secret: not base64url: {err}")));
                    continue;
                }
            };
            if secret.len() < min_len {
                errors.push(fail(format!(
                    "secret: {alg} needs at least {min_len} bytes (RFC 7518 3.2), got {}",
                    secret.len()
                )));
                continue;
            }
            let material = KeyMaterial::Hmac(hmac::Key::new(hmac_alg, &secret));
            if by_kid
                .insert(
                    key.kid.clone(),
                    Key {
                        alg,
                        verifier: material,
                    },
                )
                .is_some()
            {
                errors.push(fail(format!("kid: duplicate kid {:?}", key.kid)));
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
