//! Signing and verifying keys, each with its `keyid` and the one algorithm it serves
//! (`hmac-sha256` or `ed25519`, RFC 9421 section 3.3), built from the configured settings.

use super::base::is_sf_string;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::hmac;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::Deserialize;
use std::fmt;

/// The shortest HMAC secret accepted: the SHA-256 output length (RFC 2104 section 3).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// One configured key: its `keyid`, its algorithm, and exactly one key form. Binary forms are
/// base64url without padding (standard base64 and padding are accepted too).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeySettings {
    pub keyid: String,
    /// `hmac-sha256` or `ed25519`.
    pub alg: String,
    /// The shared secret of an `hmac-sha256` key, at least 32 bytes.
    #[serde(default)]
    pub secret_b64: Option<String>,
    /// An Ed25519 private key as DER PKCS#8 (v1 or v2); for verifying, its public half is used.
    #[serde(default)]
    pub pkcs8_b64: Option<String>,
    /// An Ed25519 key as an OKP JWK (RFC 8037); `d` is needed to sign.
    #[serde(default)]
    pub jwk: Option<OkpJwkSettings>,
    /// An Ed25519 public key as DER SubjectPublicKeyInfo, for verifying.
    #[serde(default)]
    pub spki_b64: Option<String>,
}

/// The members of an OKP JWK that matter here (others, such as `kid` and `use`, are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct OkpJwkSettings {
    pub kty: String,
    pub crv: String,
    pub x: String,
    #[serde(default)]
    pub d: Option<String>,
}

/// The signature algorithms this core signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    Ed25519,
}

impl Algorithm {
    /// The algorithm's name in the HTTP Signature Algorithms registry.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// The algorithm named `name`; the error names the field and what is supported.
    pub fn parse(name: &str) -> Result<Algorithm, String> {
        match name {
            "hmac-sha256" => Ok(Algorithm::HmacSha256),
            "ed25519" => Ok(Algorithm::Ed25519),
            other => Err(format!(
                "alg: {other:?} is not supported (hmac-sha256, ed25519)"
            )),
        }
    }
}

/// Decodes base64url or standard base64, with or without padding.
fn b64(field: &str, value: &str) -> Result<Vec<u8>, String> {
    let value = value.trim().trim_end_matches('=');
    let engine = if value.contains(['+', '/']) {
        &STANDARD_NO_PAD
    } else {
        &URL_SAFE_NO_PAD
    };
    engine
        .decode(value)
        .map_err(|err| format!("{field}: not base64url: {err}"))
}

fn check_keyid(keyid: &str) -> Result<(), String> {
    if keyid.is_empty() {
        return Err("keyid: must not be empty".into());
    }
    if !is_sf_string(keyid) {
        return Err("keyid: must be printable ASCII".into());
    }
    Ok(())
}

/// Which one key form the settings give; refuses none and several.
fn single_form(settings: &SigningKeySettings) -> Result<&'static str, String> {
    let given: Vec<&'static str> = [
        ("secret_b64", settings.secret_b64.is_some()),
        ("pkcs8_b64", settings.pkcs8_b64.is_some()),
        ("jwk", settings.jwk.is_some()),
        ("spki_b64", settings.spki_b64.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    match given.as_slice() {
        [one] => Ok(one),
        [] => Err(
            "exactly one key form must be given (secret_b64, pkcs8_b64, jwk or spki_b64), got none"
                .into(),
        ),
        several => Err(format!(
            "exactly one key form must be given (secret_b64, pkcs8_b64, jwk or spki_b64), got {}",
            several.join(", ")
        )),
    }
}

fn hmac_secret(settings: &SigningKeySettings, form: &str) -> Result<hmac::Key, String> {
    let Some(secret) = settings.secret_b64.as_deref() else {
        return Err(format!(
            "{form}: an hmac-sha256 key is a shared secret: give secret_b64"
        ));
    };
    let secret = b64("secret_b64", secret)?;
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(format!(
            "secret_b64: an hmac-sha256 key must be at least {MIN_HMAC_SECRET_BYTES} bytes, got {}",
            secret.len()
        ));
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &secret))
}

/// The 32 bytes of an Ed25519 key member or point.
fn ed25519_bytes(field: &str, value: &str) -> Result<[u8; 32], String> {
    let bytes = b64(field, value)?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{field}: an Ed25519 key is 32 bytes, got {}", bytes.len()))
}

fn check_okp(jwk: &OkpJwkSettings) -> Result<[u8; 32], String> {
    if jwk.kty != "OKP" {
        return Err(format!(
            "jwk.kty: an ed25519 key is \"OKP\", got {:?}",
            jwk.kty
        ));
    }
    if jwk.crv != "Ed25519" {
        return Err(format!(
            "jwk.crv: an ed25519 key is \"Ed25519\", got {:?}",
            jwk.crv
        ));
    }
    ed25519_bytes("jwk.x", &jwk.x)
}

fn ed25519_pkcs8(value: &str) -> Result<Ed25519KeyPair, String> {
    let der = b64("pkcs8_b64", value)?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|err| format!("pkcs8_b64: not an Ed25519 PKCS#8 private key ({err})"))
}

/// The DER of an Ed25519 SubjectPublicKeyInfo up to the key (RFC 8410 section 4).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn ed25519_spki(value: &str) -> Result<[u8; 32], String> {
    let der = b64("spki_b64", value)?;
    der.strip_prefix(&ED25519_SPKI_PREFIX)
        .and_then(|key| <[u8; 32]>::try_from(key).ok())
        .ok_or_else(|| "spki_b64: not an Ed25519 SubjectPublicKeyInfo".to_string())
}

/// A key that signs: an HMAC-SHA256 secret or an Ed25519 private key.
pub struct SigningKey {
    keyid: String,
    material: SigningMaterial,
}

enum SigningMaterial {
    Hmac(hmac::Key),
    Ed25519(Box<Ed25519KeyPair>),
}

impl SigningKey {
    /// Builds the key the settings describe; the error is a short message naming the field.
    pub fn from_settings(settings: &SigningKeySettings) -> Result<SigningKey, String> {
        check_keyid(&settings.keyid)?;
        let alg = Algorithm::parse(&settings.alg)?;
        let form = single_form(settings)?;
        let material = match alg {
            Algorithm::HmacSha256 => SigningMaterial::Hmac(hmac_secret(settings, form)?),
            Algorithm::Ed25519 => {
                let pair = match (form, &settings.pkcs8_b64, &settings.jwk) {
                    ("pkcs8_b64", Some(pkcs8), _) => ed25519_pkcs8(pkcs8)?,
                    ("jwk", _, Some(jwk)) => {
                        let x = check_okp(jwk)?;
                        let d = jwk
                            .d
                            .as_deref()
                            .ok_or("jwk.d: a signing key needs the private key")?;
                        let d = ed25519_bytes("jwk.d", d)?;
                        Ed25519KeyPair::from_seed_and_public_key(&d, &x)
                            .map_err(|_| "jwk: d and x are not one Ed25519 key pair".to_string())?
                    }
                    ("spki_b64", ..) => return Err(
                        "spki_b64: a signing key needs the private key (pkcs8_b64 or jwk with d)"
                            .into(),
                    ),
                    _ => {
                        return Err(format!(
                            "{form}: an ed25519 key is given as pkcs8_b64 or jwk"
                        ))
                    }
                };
                SigningMaterial::Ed25519(Box::new(pair))
            }
        };
        Ok(SigningKey {
            keyid: settings.keyid.clone(),
            material,
        })
    }

    /// The `keyid` signatures carry.
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// The one algorithm this key signs with.
    pub fn alg(&self) -> Algorithm {
        match self.material {
            SigningMaterial::Hmac(_) => Algorithm::HmacSha256,
            SigningMaterial::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// Signs `base` and appends the signature, base64, to `out`.
    pub fn sign_b64_into(&self, base: &[u8], out: &mut String) {
        match &self.material {
            SigningMaterial::Hmac(key) => STANDARD.encode_string(hmac::sign(key, base), out),
            SigningMaterial::Ed25519(pair) => STANDARD.encode_string(pair.sign(base), out),
        }
    }

    /// The signature of `base`.
    pub fn sign(&self, base: &[u8]) -> Vec<u8> {
        match &self.material {
            SigningMaterial::Hmac(key) => hmac::sign(key, base).as_ref().to_vec(),
            SigningMaterial::Ed25519(pair) => pair.sign(base).as_ref().to_vec(),
        }
    }

    /// The key that verifies what this one signs, under the same `keyid`.
    pub fn verifying_key(&self) -> VerifyingKey {
        let material = match &self.material {
            SigningMaterial::Hmac(key) => VerifyingMaterial::Hmac(key.clone()),
            SigningMaterial::Ed25519(pair) => VerifyingMaterial::ed25519(pair),
        };
        VerifyingKey {
            keyid: self.keyid.clone(),
            material,
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("keyid", &self.keyid)
            .field("alg", &self.alg().name())
            .finish_non_exhaustive()
    }
}

/// A key that verifies: an HMAC-SHA256 secret or an Ed25519 public key.
#[derive(Clone)]
pub struct VerifyingKey {
    keyid: String,
    material: VerifyingMaterial,
}

#[derive(Clone)]
enum VerifyingMaterial {
    Hmac(hmac::Key),
    Ed25519(UnparsedPublicKey<[u8; 32]>),
}

impl VerifyingMaterial {
    fn ed25519(pair: &Ed25519KeyPair) -> VerifyingMaterial {
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        VerifyingMaterial::Ed25519(UnparsedPublicKey::new(&ED25519, public))
    }
}

impl VerifyingKey {
    /// Builds the key the settings describe (an Ed25519 key from `spki_b64`, `jwk` or the
    /// public half of `pkcs8_b64`); the error is a short message naming the field.
    pub fn from_settings(settings: &SigningKeySettings) -> Result<VerifyingKey, String> {
        check_keyid(&settings.keyid)?;
        let alg = Algorithm::parse(&settings.alg)?;
        let form = single_form(settings)?;
        let material = match alg {
            Algorithm::HmacSha256 => VerifyingMaterial::Hmac(hmac_secret(settings, form)?),
            Algorithm::Ed25519 => match (&settings.pkcs8_b64, &settings.jwk, &settings.spki_b64) {
                (Some(pkcs8), ..) => VerifyingMaterial::ed25519(&ed25519_pkcs8(pkcs8)?),
                (_, Some(jwk), _) => {
                    VerifyingMaterial::Ed25519(UnparsedPublicKey::new(&ED25519, check_okp(jwk)?))
                }
                (.., Some(spki)) => VerifyingMaterial::Ed25519(UnparsedPublicKey::new(
                    &ED25519,
                    ed25519_spki(spki)?,
                )),
                _ => {
                    return Err(format!(
                        "{form}: an ed25519 key is given as spki_b64, jwk or pkcs8_b64"
                    ))
                }
            },
        };
        Ok(VerifyingKey {
            keyid: settings.keyid.clone(),
            material,
        })
    }

    /// The `keyid` that selects this key.
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Algorithm {
        match self.material {
            VerifyingMaterial::Hmac(_) => Algorithm::HmacSha256,
            VerifyingMaterial::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// Whether `signature` is valid for `base` (HMAC compared in constant time).
    pub fn verify(&self, base: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            VerifyingMaterial::Hmac(key) => hmac::verify(key, base, signature).is_ok(),
            VerifyingMaterial::Ed25519(key) => key.verify(base, signature).is_ok(),
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("keyid", &self.keyid)
            .field("alg", &self.alg().name())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 9421 appendix B.1.5: `test-shared-secret`, 64 bytes, as the RFC prints it.
    pub(crate) const TEST_SHARED_SECRET: &str = concat!(
        "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdt",
        "jUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
    );
    /// RFC 9421 appendix B.1.4: `test-key-ed25519`, the PKCS#8 private key and the SPKI public
    /// key (PEM bodies) and the same pair as a JWK.
    pub(crate) const TEST_ED25519_PKCS8: &str =
        "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF";
    pub(crate) const TEST_ED25519_SPKI: &str =
        "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=";
    pub(crate) const TEST_ED25519_X: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";
    pub(crate) const TEST_ED25519_D: &str = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU";

    pub(crate) fn settings(keyid: &str, alg: &str) -> SigningKeySettings {
        SigningKeySettings {
            keyid: keyid.into(),
            alg: alg.into(),
            secret_b64: None,
            pkcs8_b64: None,
            jwk: None,
            spki_b64: None,
        }
    }

    pub(crate) fn hmac_settings() -> SigningKeySettings {
        SigningKeySettings {
            secret_b64: Some(TEST_SHARED_SECRET.into()),
            ..settings("test-shared-secret", "hmac-sha256")
        }
    }

    pub(crate) fn ed25519_settings() -> SigningKeySettings {
        SigningKeySettings {
            pkcs8_b64: Some(TEST_ED25519_PKCS8.into()),
            ..settings("test-key-ed25519", "ed25519")
        }
    }

    fn jwk(d: Option<&str>) -> OkpJwkSettings {
        OkpJwkSettings {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: TEST_ED25519_X.into(),
            d: d.map(Into::into),
        }
    }

    #[test]
    fn every_form_of_the_rfc_ed25519_key_is_one_key() {
        let from_pkcs8 = SigningKey::from_settings(&ed25519_settings()).unwrap();
        let from_jwk = SigningKey::from_settings(&SigningKeySettings {
            jwk: Some(jwk(Some(TEST_ED25519_D))),
            ..settings("test-key-ed25519", "ed25519")
        })
        .unwrap();
        let message = b"one key";
        assert_eq!(from_pkcs8.sign(message), from_jwk.sign(message));
        let signature = from_pkcs8.sign(message);
        for verifying in [
            VerifyingKey::from_settings(&SigningKeySettings {
                spki_b64: Some(TEST_ED25519_SPKI.into()),
                ..settings("test-key-ed25519", "ed25519")
            })
            .unwrap(),
            VerifyingKey::from_settings(&SigningKeySettings {
                jwk: Some(jwk(None)),
                ..settings("test-key-ed25519", "ed25519")
            })
            .unwrap(),
            VerifyingKey::from_settings(&ed25519_settings()).unwrap(),
            from_pkcs8.verifying_key(),
        ] {
            assert_eq!(verifying.alg(), Algorithm::Ed25519);
            assert_eq!(verifying.keyid(), "test-key-ed25519");
            assert!(verifying.verify(message, &signature));
            assert!(!verifying.verify(b"another", &signature));
        }
    }

    #[test]
    fn hmac_keys_sign_and_verify() {
        let key = SigningKey::from_settings(&hmac_settings()).unwrap();
        assert_eq!(key.alg(), Algorithm::HmacSha256);
        let signature = key.sign(b"m");
        assert_eq!(signature.len(), 32);
        let verifying = VerifyingKey::from_settings(&hmac_settings()).unwrap();
        assert!(verifying.verify(b"m", &signature));
        assert!(key.verifying_key().verify(b"m", &signature));
        assert!(!verifying.verify(b"m", &signature[..31]));
        let mut b64 = String::new();
        key.sign_b64_into(b"m", &mut b64);
        assert_eq!(STANDARD.decode(b64).unwrap(), signature);
    }

    #[test]
    fn refusals_name_the_field() {
        let err = |s: SigningKeySettings| SigningKey::from_settings(&s).unwrap_err();
        let verr = |s: SigningKeySettings| VerifyingKey::from_settings(&s).unwrap_err();
        assert_eq!(
            err(SigningKeySettings {
                secret_b64: Some(URL_SAFE_NO_PAD.encode([7u8; 12])),
                ..settings("k", "hmac-sha256")
            }),
            "secret_b64: an hmac-sha256 key must be at least 32 bytes, got 12"
        );
        assert_eq!(
            err(SigningKeySettings {
                secret_b64: Some(TEST_SHARED_SECRET.into()),
                ..settings("k", "rsa-v1_5-sha256")
            }),
            "alg: \"rsa-v1_5-sha256\" is not supported (hmac-sha256, ed25519)"
        );
        assert!(err(settings("k", "ed25519")).starts_with("exactly one key form must be given"));
        let two = SigningKeySettings {
            secret_b64: Some(TEST_SHARED_SECRET.into()),
            pkcs8_b64: Some(TEST_ED25519_PKCS8.into()),
            ..settings("k", "ed25519")
        };
        assert!(err(two.clone()).ends_with("got secret_b64, pkcs8_b64"));
        assert!(verr(two).starts_with("exactly one key form"));
        assert!(err(SigningKeySettings {
            spki_b64: Some(TEST_ED25519_SPKI.into()),
            ..settings("k", "ed25519")
        })
        .starts_with("spki_b64: a signing key needs the private key"));
        assert!(err(SigningKeySettings {
            jwk: Some(jwk(None)),
            ..settings("k", "ed25519")
        })
        .starts_with("jwk.d:"));
        assert!(err(SigningKeySettings {
            pkcs8_b64: Some(TEST_ED25519_PKCS8.into()),
            ..settings("k", "hmac-sha256")
        })
        .starts_with("pkcs8_b64: an hmac-sha256 key is a shared secret"));
        assert!(err(SigningKeySettings {
            secret_b64: Some(TEST_SHARED_SECRET.into()),
            ..settings("k", "ed25519")
        })
        .starts_with("secret_b64: an ed25519 key is given as"));
        assert!(err(SigningKeySettings {
            pkcs8_b64: Some("bm90IGEga2V5".into()),
            ..settings("k", "ed25519")
        })
        .starts_with("pkcs8_b64: not an Ed25519 PKCS#8"));
        assert!(err(SigningKeySettings {
            secret_b64: Some("***".into()),
            ..settings("k", "hmac-sha256")
        })
        .starts_with("secret_b64: not base64url"));
        assert!(err(SigningKeySettings {
            jwk: Some(OkpJwkSettings {
                d: Some(TEST_ED25519_X.into()),
                ..jwk(None)
            }),
            ..settings("k", "ed25519")
        })
        .starts_with("jwk: d and x are not one"));
        assert!(verr(SigningKeySettings {
            jwk: Some(OkpJwkSettings {
                crv: "X25519".into(),
                ..jwk(None)
            }),
            ..settings("k", "ed25519")
        })
        .starts_with("jwk.crv:"));
        assert!(verr(SigningKeySettings {
            jwk: Some(OkpJwkSettings {
                kty: "EC".into(),
                ..jwk(None)
            }),
            ..settings("k", "ed25519")
        })
        .starts_with("jwk.kty:"));
        assert!(verr(SigningKeySettings {
            jwk: Some(OkpJwkSettings {
                x: "AAAA".into(),
                ..jwk(None)
            }),
            ..settings("k", "ed25519")
        })
        .starts_with("jwk.x: an Ed25519 key is 32 bytes, got 3"));
        assert!(verr(SigningKeySettings {
            spki_b64: Some("MCowBQYDK2VxAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=".into()),
            ..settings("k", "ed25519")
        })
        .starts_with("spki_b64: not an Ed25519"));
        assert_eq!(
            err(SigningKeySettings {
                keyid: String::new(),
                ..hmac_settings()
            }),
            "keyid: must not be empty"
        );
        assert_eq!(
            err(SigningKeySettings {
                keyid: "k\n".into(),
                ..hmac_settings()
            }),
            "keyid: must be printable ASCII"
        );
    }

    #[test]
    fn settings_refuse_unknown_fields() {
        let json = r#"{"keyid": "k", "alg": "ed25519", "pkcs8_b64": "x", "pem": "y"}"#;
        let err = serde_json::from_str::<SigningKeySettings>(json).unwrap_err();
        assert!(err.to_string().contains("unknown field `pem`"), "{err}");
        let json = r#"{"keyid": "k", "alg": "ed25519",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "x", "kid": "k", "use": "sig"}}"#;
        let parsed: SigningKeySettings = serde_json::from_str(json).unwrap();
        assert!(parsed.jwk.unwrap().d.is_none());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = SigningKey::from_settings(&hmac_settings()).unwrap();
        let shown = format!("{key:?} {:?}", key.verifying_key());
        assert!(shown.contains("test-shared-secret") && shown.contains("hmac-sha256"));
        assert!(!shown.contains("uzvJ"));
    }
}
