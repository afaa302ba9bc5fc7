//! `RequestVerifier`: checks a request's RFC 9421 signature and its RFC 9530 digest, in a fixed
//! order (parse, key, required components, time, signature, digest, nonce), so that each
//! refusal has one reason and a nonce is spent only by a request that passed everything else.

use super::base::{serialize_params, signature_base, Param, SignatureParams};
use super::components::{Component, ComponentError, Message, ValueError};
use super::digest::check_content_digest;
use super::errors::{VerifyError, VerifyReason};
use super::keys::{SigningKeySettings, VerifyingKey};
use super::nonces::NonceStore;
use serde::Deserialize;
use sfv::{BareItem, Dictionary, Key, KeyRef, ListEntry, Parser, Version};
use std::borrow::Cow;
use std::collections::HashMap;

/// What a verifier requires covered by default: the request line, its authority, the body's
/// digest (when there is a body) and the gateway's request id.
pub const DEFAULT_REQUIRED: [&str; 6] = [
    "@method",
    "@authority",
    "@path",
    "@query",
    "content-digest",
    "x-request-id",
];
/// How old a signature may be by default, in seconds.
pub const DEFAULT_MAX_AGE_S: u64 = 300;
/// How far in the future `created` may be by default, in seconds.
pub const DEFAULT_CLOCK_SKEW_S: u64 = 5;

const CONTENT_DIGEST: &str = "content-digest";

fn default_required() -> Vec<String> {
    DEFAULT_REQUIRED.iter().map(|s| s.to_string()).collect()
}

fn default_max_age_s() -> u64 {
    DEFAULT_MAX_AGE_S
}

fn default_clock_skew_s() -> u64 {
    DEFAULT_CLOCK_SKEW_S
}

/// How signed requests are verified: the keys (several at once, so keys rotate), what must be
/// covered, how old a signature may be, and which label to check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierSettings {
    pub keys: Vec<SigningKeySettings>,
    #[serde(default = "default_required")]
    pub required: Vec<String>,
    #[serde(default = "default_max_age_s")]
    pub max_age_s: u64,
    #[serde(default = "default_clock_skew_s")]
    pub clock_skew_s: u64,
    /// The label of the signature to check; none: the first in Signature-Input.
    #[serde(default)]
    pub label: Option<String>,
}

/// What a verified signature said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    pub label: String,
    pub keyid: String,
    pub alg: &'static str,
    pub created: u64,
    pub expires: Option<u64>,
    pub nonce: Option<String>,
    /// The covered component names, in signed order.
    pub covered: Vec<String>,
}

/// Verifies request signatures against configured keys and policy.
#[derive(Debug)]
pub struct RequestVerifier {
    keys: HashMap<String, VerifyingKey>,
    required: Vec<Component>,
    max_age_s: u64,
    clock_skew_s: u64,
    label: Option<Key>,
}

/// The parsed signature to check.
struct Parsed {
    label: String,
    components: Vec<Component>,
    params: SignatureParams,
    signature: Vec<u8>,
}

/// The values of every `name` field line, joined with ", " as RFC 9110 section 5.3 allows.
fn joined<'m>(message: &'m impl Message, name: &'m str) -> Option<Cow<'m, [u8]>> {
    let mut values = message.header_values(name);
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut all = first.to_vec();
    for value in std::iter::once(second).chain(values) {
        all.extend_from_slice(b", ");
        all.extend_from_slice(value);
    }
    Some(Cow::Owned(all))
}

fn dictionary(field: &str, value: &[u8]) -> Result<Dictionary, VerifyError> {
    Parser::new(value)
        .with_version(Version::Rfc8941)
        .parse()
        .map_err(|err| VerifyError::malformed(format!("{field} does not parse: {err}")))
}

fn missing(detail: impl Into<String>) -> VerifyError {
    VerifyError::new(VerifyReason::MissingSignature, detail)
}

fn stale(detail: impl Into<String>) -> VerifyError {
    VerifyError::new(VerifyReason::StaleSignature, detail)
}

fn time_param(name: &str, value: &BareItem) -> Result<u64, VerifyError> {
    value
        .as_integer()
        .and_then(|t| u64::try_from(i64::from(t)).ok())
        .ok_or_else(|| VerifyError::malformed(format!("{name} must be a non-negative integer")))
}

fn text_param(name: &str, value: &BareItem) -> Result<String, VerifyError> {
    value
        .as_string()
        .map(|s| s.as_str().to_owned())
        .ok_or_else(|| VerifyError::malformed(format!("{name} must be a string")))
}

/// The covered components of a Signature-Input member; refuses parameters on identifiers,
/// unknown names and duplicates.
fn covered_components(member: &ListEntry) -> Result<Vec<Component>, VerifyError> {
    let ListEntry::InnerList(list) = member else {
        return Err(VerifyError::malformed(
            "the Signature-Input member is not an inner list",
        ));
    };
    let mut components = Vec::with_capacity(list.items.len());
    for item in &list.items {
        let Some(name) = item.bare_item.as_string() else {
            return Err(VerifyError::malformed(
                "a component identifier is not a string",
            ));
        };
        let name = name.as_str();
        if let Some((param, _)) = item.params.first() {
            return Err(VerifyError::malformed(format!(
                "component parameters are not supported (sf, bs, key, req, tr, name): \"{name}\";{}",
                param.as_str()
            )));
        }
        let component = Component::parse(name).map_err(|err| match err {
            ComponentError::Unsupported(detail) | ComponentError::Invalid(detail) => {
                VerifyError::malformed(detail)
            }
        })?;
        if components.contains(&component) {
            return Err(VerifyError::malformed(format!(
                "the component {name:?} is covered twice"
            )));
        }
        components.push(component);
    }
    Ok(components)
}

/// The signature parameters of a Signature-Input member, in their order; refuses unknown ones.
fn signature_params(member: &ListEntry) -> Result<SignatureParams, VerifyError> {
    let ListEntry::InnerList(list) = member else {
        return Err(VerifyError::malformed(
            "the Signature-Input member is not an inner list",
        ));
    };
    let mut params = Vec::with_capacity(list.params.len());
    for (name, value) in &list.params {
        let name = name.as_str();
        params.push(match name {
            "created" => Param::Created(time_param(name, value)?),
            "expires" => Param::Expires(time_param(name, value)?),
            "keyid" => Param::KeyId(text_param(name, value)?),
            "alg" => Param::Alg(text_param(name, value)?),
            "nonce" => Param::Nonce(text_param(name, value)?),
            "tag" => Param::Tag(text_param(name, value)?),
            other => {
                return Err(VerifyError::malformed(format!(
                    "the signature parameter {other:?} is not known"
                )))
            }
        });
    }
    Ok(SignatureParams { params })
}

impl RequestVerifier {
    /// A verifier over `keys` (distinct keyids), requiring `required` component names covered
    /// (`content-digest` only when there is a body); errors name what was refused.
    pub fn new(
        keys: Vec<VerifyingKey>,
        required: &[String],
        max_age_s: u64,
        clock_skew_s: u64,
        label: Option<&str>,
    ) -> Result<RequestVerifier, Vec<String>> {
        let mut errors = Vec::new();
        if keys.is_empty() {
            errors.push("keys: at least one key is needed".to_string());
        }
        let mut by_keyid = HashMap::with_capacity(keys.len());
        for (index, key) in keys.into_iter().enumerate() {
            let keyid = key.keyid().to_owned();
            if by_keyid.insert(keyid.clone(), key).is_some() {
                errors.push(format!("keys[{index}].keyid: duplicate keyid {keyid:?}"));
            }
        }
        let mut components = Vec::with_capacity(required.len());
        for (index, name) in required.iter().enumerate() {
            match Component::parse(name) {
                Ok(component) => components.push(component),
                Err(err) => errors.push(format!("required[{index}]: {}", err.detail())),
            }
        }
        let label = match label.map(KeyRef::from_str) {
            None => None,
            Some(Ok(key)) => Some(key.to_owned()),
            Some(Err(err)) => {
                errors.push(format!("label: not a structured-field key: {err}"));
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RequestVerifier {
            keys: by_keyid,
            required: components,
            max_age_s,
            clock_skew_s,
            label,
        })
    }

    /// A verifier from its settings; key errors read `keys[i].<field>: ...`.
    pub fn from_settings(settings: &VerifierSettings) -> Result<RequestVerifier, Vec<String>> {
        let mut errors = Vec::new();
        let mut keys = Vec::with_capacity(settings.keys.len());
        for (index, key) in settings.keys.iter().enumerate() {
            match VerifyingKey::from_settings(key) {
                Ok(key) => keys.push(key),
                Err(message) => errors.push(format!("keys[{index}].{message}")),
            }
        }
        let built = RequestVerifier::new(
            keys,
            &settings.required,
            settings.max_age_s,
            settings.clock_skew_s,
            settings.label.as_deref(),
        );
        match built {
            Ok(verifier) if errors.is_empty() => Ok(verifier),
            Ok(_) => Err(errors),
            Err(more) if errors.is_empty() => Err(more),
            // Key indexes shift once a key is refused; keep only the first list's word on keys.
            Err(more) => {
                errors.extend(more.into_iter().filter(|e| !e.starts_with("keys")));
                Err(errors)
            }
        }
    }

    /// The component names every signature must cover (`content-digest` only with a body).
    pub fn required(&self) -> impl Iterator<Item = &str> {
        self.required.iter().map(Component::name)
    }

    /// How old a signature may be, in seconds.
    pub fn max_age_s(&self) -> u64 {
        self.max_age_s
    }

    /// How far in the future `created` may be, in seconds.
    pub fn clock_skew_s(&self) -> u64 {
        self.clock_skew_s
    }

    /// The label checked; none: the first signature.
    pub fn label(&self) -> Option<&str> {
        self.label.as_ref().map(|label| label.as_str())
    }

    /// The signature with this verifier's label (or the first one) in `message`, parsed.
    fn parse(&self, message: &impl Message) -> Result<Parsed, VerifyError> {
        let inputs = joined(message, "signature-input")
            .ok_or_else(|| missing("the request has no Signature-Input field"))?;
        let signatures = joined(message, "signature")
            .ok_or_else(|| missing("the request has no Signature field"))?;
        let inputs = dictionary("signature-input", &inputs)?;
        let signatures = dictionary("signature", &signatures)?;
        let (label, member) = match &self.label {
            Some(label) => inputs.get_key_value(label.as_ref()).ok_or_else(|| {
                missing(format!(
                    "Signature-Input has no signature labelled {:?}",
                    label.as_str()
                ))
            })?,
            None => inputs
                .first()
                .ok_or_else(|| missing("Signature-Input holds no signature"))?,
        };
        let signature = signatures.get(label.as_ref()).ok_or_else(|| {
            missing(format!(
                "Signature has no signature labelled {:?}",
                label.as_str()
            ))
        })?;
        let signature = match signature {
            ListEntry::Item(item) => item.bare_item.as_byte_sequence(),
            ListEntry::InnerList(_) => None,
        }
        .ok_or_else(|| VerifyError::malformed("the Signature member is not a byte sequence"))?
        .to_vec();
        let components = covered_components(member)?;
        let params = signature_params(member)?;
        if params.created().is_none() {
            return Err(VerifyError::malformed("the created parameter is missing"));
        }
        if params.keyid().is_none() {
            return Err(VerifyError::malformed("the keyid parameter is missing"));
        }
        Ok(Parsed {
            label: label.as_str().to_owned(),
            components,
            params,
            signature,
        })
    }

    /// Verifies the signature of `message` (its body given apart) at `now_s`, recording its
    /// nonce in `nonces` only once everything else passed.
    pub fn verify(
        &self,
        message: &impl Message,
        body: &[u8],
        now_s: u64,
        nonces: &NonceStore,
    ) -> Result<VerifiedSignature, VerifyError> {
        let parsed = self.parse(message)?;
        let params = &parsed.params;
        let keyid = params.keyid().unwrap_or_default();
        let created = params.created().unwrap_or_default();

        let key = self.keys.get(keyid).ok_or_else(|| {
            VerifyError::new(
                VerifyReason::UnknownKey,
                format!("no key has keyid {keyid:?}"),
            )
        })?;
        let alg = key.alg().name();
        if let Some(given) = params.alg() {
            if given != alg {
                return Err(VerifyError::malformed(format!(
                    "alg {given:?} disagrees with key {keyid:?}, which is {alg}"
                )));
            }
        }

        let digest = Component::Field(CONTENT_DIGEST.to_owned());
        for required in &self.required {
            if body.is_empty() && *required == digest {
                continue;
            }
            if !parsed.components.contains(required) {
                return Err(VerifyError::new(
                    VerifyReason::MissingComponent,
                    format!("{:?} must be covered and is not", required.name()),
                ));
            }
        }

        if created > now_s.saturating_add(self.clock_skew_s) {
            return Err(stale(format!("created {}s in the future", created - now_s)));
        }
        if now_s > created.saturating_add(self.max_age_s) {
            return Err(stale(format!(
                "created {}s ago, more than max_age_s ({})",
                now_s - created,
                self.max_age_s
            )));
        }
        if let Some(expires) = params.expires() {
            if now_s > expires {
                return Err(stale(format!("expired {}s ago", now_s - expires)));
            }
        }

        let params_line = serialize_params(&parsed.components, params)
            .map_err(|err| VerifyError::malformed(format!("the signature parameters: {err}")))?;
        let base =
            signature_base(message, &parsed.components, &params_line).map_err(|err| match err {
                ValueError::Absent(detail) => {
                    VerifyError::new(VerifyReason::MissingComponent, detail)
                }
                ValueError::Unsignable(detail) => VerifyError::malformed(detail),
            })?;
        if !key.verify(&base, &parsed.signature) {
            return Err(VerifyError::new(
                VerifyReason::BadSignature,
                format!("the signature does not verify with key {keyid:?} ({alg})"),
            ));
        }

        let covers_digest = parsed.components.contains(&digest);
        if !body.is_empty() && !covers_digest {
            return Err(VerifyError::new(
                VerifyReason::DigestMismatch,
                "a request with a body must cover content-digest",
            ));
        }
        if covers_digest {
            // Covered and the base was built, so the field is present and printable ASCII.
            let field = joined(message, CONTENT_DIGEST).unwrap_or_default();
            let field = std::str::from_utf8(&field)
                .map_err(|_| VerifyError::malformed("content-digest is not text"))?;
            check_content_digest(field, body)?;
        }

        if let Some(nonce) = params.nonce() {
            let until_s = params
                .expires()
                .unwrap_or(u64::MAX)
                .min(created.saturating_add(self.max_age_s));
            if !nonces.check_and_record(nonce, until_s, now_s) {
                return Err(VerifyError::new(
                    VerifyReason::Replayed,
                    format!("the nonce {nonce:?} was seen before"),
                ));
            }
        }

        Ok(VerifiedSignature {
            label: parsed.label,
            keyid: keyid.to_owned(),
            alg,
            created,
            expires: params.expires(),
            nonce: params.nonce().map(str::to_owned),
            covered: parsed
                .components
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::base::tests::{test_request, TEST_REQUEST_BODY, TEST_REQUEST_HEADERS};
    use crate::signing::components::PairsRequest;
    use crate::signing::keys::tests::{ed25519_settings, hmac_settings, TEST_ED25519_SPKI};
    use crate::signing::sign::tests::{
        ed25519_signer, header_map, hmac_signer, pairs, B25_INPUT, B25_SIGNATURE, B26_INPUT,
        B26_SIGNATURE, RFC_CREATED,
    };
    use crate::signing::{Signer, SigningKey};

    const NOW_S: u64 = 1_700_000_000;
    const BODY: &[u8] = b"{\"amount\": 10}";

    fn verifier(keys: Vec<VerifyingKey>, required: &[&str]) -> RequestVerifier {
        let required: Vec<String> = required.iter().map(|s| s.to_string()).collect();
        RequestVerifier::new(keys, &required, 300, 5, None).unwrap()
    }

    fn gateway_verifier() -> RequestVerifier {
        let keys = vec![
            VerifyingKey::from_settings(&hmac_settings()).unwrap(),
            VerifyingKey::from_settings(&ed25519_settings()).unwrap(),
        ];
        let required = default_required();
        RequestVerifier::new(keys, &required, 300, 5, None).unwrap()
    }

    /// A request as the gateway forwards it, signed by `signer` at `created_s`.
    struct Signed {
        method: String,
        authority: String,
        path: String,
        query: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Signed {
        fn new(signer: &Signer, body: &[u8], created_s: u64, nonce: &str) -> Signed {
            let mut headers = header_map(&[
                ("host", "cell.internal"),
                ("content-type", "application/json"),
                ("x-request-id", "rid-1"),
                ("x-customer-id", "cust-9"),
                ("x-risk-level", "low"),
            ]);
            signer
                .sign(
                    "POST",
                    "cell.internal",
                    "/api/transfers",
                    "dry=1",
                    &mut headers,
                    body,
                    created_s,
                    nonce,
                )
                .unwrap();
            Signed {
                method: "POST".into(),
                authority: "cell.internal".into(),
                path: "/api/transfers".into(),
                query: "dry=1".into(),
                headers: pairs(&headers),
                body: body.to_vec(),
            }
        }

        fn header(&mut self, name: &str) -> &mut String {
            &mut self.headers.iter_mut().find(|(n, _)| n == name).unwrap().1
        }

        fn verify_with(
            &self,
            verifier: &RequestVerifier,
            now_s: u64,
            nonces: &NonceStore,
        ) -> Result<VerifiedSignature, VerifyError> {
            let headers: Vec<(&str, &str)> = self
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let message = PairsRequest {
                method: &self.method,
                scheme: "https",
                authority: &self.authority,
                path: &self.path,
                query: &self.query,
                headers: &headers,
            };
            verifier.verify(&message, &self.body, now_s, nonces)
        }

        fn verify(&self) -> Result<VerifiedSignature, VerifyError> {
            self.verify_with(&gateway_verifier(), NOW_S + 1, &NonceStore::new(100))
        }

        fn reason(&self) -> VerifyReason {
            self.verify().unwrap_err().reason
        }
    }

    fn rfc_message<'a>(headers: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut all = TEST_REQUEST_HEADERS.to_vec();
        all.extend_from_slice(headers);
        all
    }

    fn verify_rfc(
        keys: Vec<VerifyingKey>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<VerifiedSignature, VerifyError> {
        let message = PairsRequest {
            headers,
            ..test_request()
        };
        verifier(keys, &[]).verify(&message, body, RFC_CREATED + 10, &NonceStore::new(10))
    }

    #[test]
    fn accepts_rfc_9421_b_2_5() {
        let headers = rfc_message(&[("Signature-Input", B25_INPUT), ("Signature", B25_SIGNATURE)]);
        let key = VerifyingKey::from_settings(&hmac_settings()).unwrap();
        let verified = verify_rfc(vec![key], &headers, b"").unwrap();
        assert_eq!(verified.label, "sig-b25");
        assert_eq!(verified.keyid, "test-shared-secret");
        assert_eq!(verified.alg, "hmac-sha256");
        assert_eq!(verified.created, RFC_CREATED);
        assert_eq!(verified.expires, None);
        assert_eq!(verified.nonce, None);
        assert_eq!(verified.covered, ["date", "@authority", "content-type"]);
    }

    #[test]
    fn accepts_rfc_9421_b_2_6_from_the_public_key() {
        let headers = rfc_message(&[("Signature-Input", B26_INPUT), ("Signature", B26_SIGNATURE)]);
        let key = VerifyingKey::from_settings(&SigningKeySettings {
            pkcs8_b64: None,
            spki_b64: Some(TEST_ED25519_SPKI.into()),
            ..ed25519_settings()
        })
        .unwrap();
        let verified = verify_rfc(vec![key.clone()], &headers, b"").unwrap();
        assert_eq!(verified.alg, "ed25519");
        // The RFC's examples do not cover the body's digest, which this verifier demands.
        let err = verify_rfc(vec![key], &headers, TEST_REQUEST_BODY).unwrap_err();
        assert_eq!(err.reason, VerifyReason::DigestMismatch);
    }

    #[test]
    fn picks_the_configured_label_among_several() {
        let input = format!("{B25_INPUT}, {B26_INPUT}");
        let signature = format!("{B25_SIGNATURE}, {B26_SIGNATURE}");
        let headers = rfc_message(&[
            ("Signature-Input", input.as_str()),
            ("Signature", signature.as_str()),
        ]);
        let keys = vec![
            VerifyingKey::from_settings(&hmac_settings()).unwrap(),
            VerifyingKey::from_settings(&ed25519_settings()).unwrap(),
        ];
        let message = PairsRequest {
            headers: &headers,
            ..test_request()
        };
        let nonces = NonceStore::new(10);
        let first = verifier(keys.clone(), &[])
            .verify(&message, b"", RFC_CREATED, &nonces)
            .unwrap();
        assert_eq!(first.label, "sig-b25");
        let labelled = RequestVerifier::new(keys.clone(), &[], 300, 5, Some("sig-b26")).unwrap();
        let second = labelled
            .verify(&message, b"", RFC_CREATED, &nonces)
            .unwrap();
        assert_eq!(second.label, "sig-b26");
        let absent = RequestVerifier::new(keys, &[], 300, 5, Some("other")).unwrap();
        let err = absent
            .verify(&message, b"", RFC_CREATED, &nonces)
            .unwrap_err();
        assert_eq!(err.reason, VerifyReason::MissingSignature);
    }

    #[test]
    fn accepts_what_the_gateway_signs_with_either_key() {
        for signer in [hmac_signer(), ed25519_signer()] {
            let signed = Signed::new(&signer, BODY, NOW_S, "rid-1.a");
            let verified = signed.verify().unwrap();
            assert_eq!(verified.label, "cellgate");
            assert_eq!(verified.created, NOW_S);
            assert_eq!(verified.expires, Some(NOW_S + 60));
            assert_eq!(verified.nonce.as_deref(), Some("rid-1.a"));
            assert_eq!(
                verified.covered,
                [
                    "@method",
                    "@authority",
                    "@path",
                    "@query",
                    "content-digest",
                    "x-request-id",
                    "x-customer-id",
                    "x-risk-level"
                ]
            );
            let bodyless = Signed::new(&signer, b"", NOW_S, "rid-1.b");
            assert!(!bodyless
                .verify()
                .unwrap()
                .covered
                .contains(&"content-digest".to_string()));
        }
    }

    #[test]
    fn tampering_fails_with_its_reason() {
        let signed = || Signed::new(&hmac_signer(), BODY, NOW_S, "n");
        let mut method = signed();
        method.method = "PUT".into();
        assert_eq!(method.reason(), VerifyReason::BadSignature);
        let mut path = signed();
        path.path = "/api/transfers/../admin".into();
        assert_eq!(path.reason(), VerifyReason::BadSignature);
        let mut query = signed();
        query.query = "dry=0".into();
        assert_eq!(query.reason(), VerifyReason::BadSignature);
        let mut authority = signed();
        authority.authority = "other.cell".into();
        assert_eq!(authority.reason(), VerifyReason::BadSignature);
        let mut header = signed();
        *header.header("x-customer-id") = "cust-1".into();
        assert_eq!(header.reason(), VerifyReason::BadSignature);
        let mut added = signed();
        added
            .headers
            .push(("x-customer-id".into(), "cust-1".into()));
        assert_eq!(added.reason(), VerifyReason::BadSignature);
        let mut removed = signed();
        removed.headers.retain(|(n, _)| n != "x-risk-level");
        assert_eq!(removed.reason(), VerifyReason::MissingComponent);
        let mut body = signed();
        body.body = b"{\"amount\": 1000}".to_vec();
        assert_eq!(body.reason(), VerifyReason::DigestMismatch);
        let mut digest = signed();
        *digest.header("content-digest") = crate::signing::content_digest(
            b"{\"amount\": 1000}",
            crate::signing::DigestAlgs::SHA256,
        );
        assert_eq!(digest.reason(), VerifyReason::BadSignature);
        let mut signature = signed();
        let value = signature.header("signature");
        let flipped = if value.contains(":A") { ":B" } else { ":A" };
        *value = format!("cellgate={flipped}{}", &value["cellgate=:A".len()..]);
        assert_eq!(signature.reason(), VerifyReason::BadSignature);
        // Untouched, it passes.
        signed().verify().unwrap();
    }

    #[test]
    fn a_body_must_come_with_a_covered_digest() {
        let signer = hmac_signer();
        let mut smuggled = Signed::new(&signer, b"", NOW_S, "n");
        smuggled.body = b"{}".to_vec();
        // Required components are checked before the digest: the default requires it.
        assert_eq!(smuggled.reason(), VerifyReason::MissingComponent);
        // A verifier that does not require content-digest still demands it with a body.
        let keys = vec![VerifyingKey::from_settings(&hmac_settings()).unwrap()];
        let lax = verifier(keys, &[]);
        let err = smuggled
            .verify_with(&lax, NOW_S, &NonceStore::new(10))
            .unwrap_err();
        assert_eq!(err.reason, VerifyReason::DigestMismatch);
    }

    #[test]
    fn unknown_keys_and_rotation() {
        let other = SigningKey::from_settings(&SigningKeySettings {
            keyid: "next".into(),
            ..hmac_settings()
        })
        .unwrap();
        let next = Signer::new(other, "cellgate", 60, false, &[]).unwrap();
        let signed = Signed::new(&next, BODY, NOW_S, "n");
        let err = signed.verify().unwrap_err();
        assert_eq!(err.reason, VerifyReason::UnknownKey);
        assert!(err.detail.contains("\"next\""), "{}", err.detail);
        // Old and new keys at once: both signers are accepted during the rotation.
        let keys = vec![
            VerifyingKey::from_settings(&hmac_settings()).unwrap(),
            next.key().verifying_key(),
        ];
        let rotating = verifier(keys, &["@method"]);
        let nonces = NonceStore::new(10);
        signed.verify_with(&rotating, NOW_S, &nonces).unwrap();
        Signed::new(&hmac_signer(), BODY, NOW_S, "m")
            .verify_with(&rotating, NOW_S, &nonces)
            .unwrap();
    }

    #[test]
    fn a_key_of_another_algorithm_does_not_verify() {
        let signed = Signed::new(&ed25519_signer(), BODY, NOW_S, "n");
        // The same keyid bound to an HMAC secret: alg disagrees with the key.
        let wrong = vec![VerifyingKey::from_settings(&SigningKeySettings {
            keyid: "test-key-ed25519".into(),
            ..hmac_settings()
        })
        .unwrap()];
        let err = signed
            .verify_with(&verifier(wrong, &[]), NOW_S, &NonceStore::new(10))
            .unwrap_err();
        assert_eq!(err.reason, VerifyReason::MalformedSignature);
        assert!(err.detail.contains("alg"), "{}", err.detail);
        // Without an alg parameter the wrong key simply fails to verify.
        let no_alg = Signer::new(
            SigningKey::from_settings(&ed25519_settings()).unwrap(),
            "cellgate",
            60,
            false,
            &[],
        )
        .unwrap()
        .with_alg_param(false);
        let wrong = vec![VerifyingKey::from_settings(&SigningKeySettings {
            keyid: "test-key-ed25519".into(),
            ..hmac_settings()
        })
        .unwrap()];
        let err = Signed::new(&no_alg, BODY, NOW_S, "n")
            .verify_with(&verifier(wrong, &[]), NOW_S, &NonceStore::new(10))
            .unwrap_err();
        assert_eq!(err.reason, VerifyReason::BadSignature);
    }

    #[test]
    fn stale_future_and_expired_signatures() {
        let signed = Signed::new(&hmac_signer(), BODY, NOW_S, "n");
        let verifier = gateway_verifier();
        let at = |now_s| signed.verify_with(&verifier, now_s, &NonceStore::new(10));
        at(NOW_S).unwrap();
        at(NOW_S - 5).unwrap();
        at(NOW_S + 60).unwrap();
        let err = at(NOW_S - 6).unwrap_err();
        assert_eq!(err.reason, VerifyReason::StaleSignature);
        assert!(err.detail.contains("future"), "{}", err.detail);
        let err = at(NOW_S + 61).unwrap_err();
        assert_eq!(err.reason, VerifyReason::StaleSignature);
        assert!(err.detail.contains("expired"), "{}", err.detail);
        // Without expires, max_age_s bounds the age.
        let no_expiry = Signer::new(
            SigningKey::from_settings(&hmac_settings()).unwrap(),
            "cellgate",
            0,
            false,
            &["x-request-id".to_string()],
        )
        .unwrap();
        let signed = Signed::new(&no_expiry, BODY, NOW_S, "n");
        signed
            .verify_with(&verifier, NOW_S + 300, &NonceStore::new(10))
            .unwrap();
        let err = signed
            .verify_with(&verifier, NOW_S + 301, &NonceStore::new(10))
            .unwrap_err();
        assert_eq!(err.reason, VerifyReason::StaleSignature);
        assert!(err.detail.contains("max_age_s"), "{}", err.detail);
    }

    #[test]
    fn a_nonce_is_spent_once_and_only_by_a_request_that_passed() {
        let verifier = gateway_verifier();
        let nonces = NonceStore::new(10);
        let signed = Signed::new(&hmac_signer(), BODY, NOW_S, "rid-1.once");
        let mut tampered = Signed::new(&hmac_signer(), BODY, NOW_S, "rid-1.once");
        tampered.body = b"other".to_vec();
        assert_eq!(
            tampered
                .verify_with(&verifier, NOW_S, &nonces)
                .unwrap_err()
                .reason,
            VerifyReason::DigestMismatch
        );
        signed.verify_with(&verifier, NOW_S, &nonces).unwrap();
        let err = signed
            .verify_with(&verifier, NOW_S + 1, &nonces)
            .unwrap_err();
        assert_eq!(err.reason, VerifyReason::Replayed);
        assert!(err.detail.contains("rid-1.once"));
        // A signature without a nonce cannot be recognised again: it is accepted each time.
        let keys = vec![VerifyingKey::from_settings(&hmac_settings()).unwrap()];
        let no_nonce = Signed::new(&hmac_signer(), BODY, NOW_S, "");
        let lax = RequestVerifier::new(keys, &[], 300, 5, None).unwrap();
        no_nonce.verify_with(&lax, NOW_S, &nonces).unwrap();
        assert_eq!(
            no_nonce.verify_with(&lax, NOW_S, &nonces).unwrap().nonce,
            None
        );
    }

    #[test]
    fn required_components_must_be_covered() {
        let signed = Signed::new(&hmac_signer(), BODY, NOW_S, "n");
        let keys = vec![VerifyingKey::from_settings(&hmac_settings()).unwrap()];
        let strict = verifier(keys, &["@method", "x-step-up"]);
        let err = signed
            .verify_with(&strict, NOW_S, &NonceStore::new(10))
            .unwrap_err();
        assert_eq!(err.reason, VerifyReason::MissingComponent);
        assert!(err.detail.contains("x-step-up"), "{}", err.detail);
        // content-digest is required only with a body.
        let bodyless = Signed::new(&hmac_signer(), b"", NOW_S, "m");
        bodyless.verify().unwrap();
        let no_request_id = Signer::new(
            SigningKey::from_settings(&hmac_settings()).unwrap(),
            "cellgate",
            60,
            false,
            &[],
        )
        .unwrap();
        assert_eq!(
            Signed::new(&no_request_id, BODY, NOW_S, "n").reason(),
            VerifyReason::MissingComponent
        );
    }

    /// A Signature-Input / Signature pair over the RFC test request, for malformed variants.
    fn rfc_with(input: &str, signature: &str) -> Result<VerifiedSignature, VerifyError> {
        let headers = [
            ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("Content-Type", "application/json"),
            ("Signature-Input", input),
            ("Signature", signature),
        ];
        let message = PairsRequest {
            headers: &headers,
            ..test_request()
        };
        let keys = vec![VerifyingKey::from_settings(&hmac_settings()).unwrap()];
        verifier(keys, &[]).verify(&message, b"", RFC_CREATED, &NonceStore::new(10))
    }

    #[test]
    fn malformed_signatures_say_what_is_wrong() {
        let sig = B25_SIGNATURE;
        let cases: &[(&str, &str, &str)] = &[
            ("sig-b25=(\"date\" \"date\");created=1618884473;keyid=\"test-shared-secret\"", sig, "twice"),
            ("sig-b25=(\"date\";sf);created=1618884473;keyid=\"test-shared-secret\"", sig, "not supported"),
            ("sig-b25=(\"@query-param\";name=\"Pet\");created=1618884473;keyid=\"test-shared-secret\"", sig, "not supported"),
            ("sig-b25=(\"@status\");created=1618884473;keyid=\"test-shared-secret\"", sig, "not supported"),
            ("sig-b25=(\"Date\");created=1618884473;keyid=\"test-shared-secret\"", sig, "lowercase"),
            ("sig-b25=(date);created=1618884473;keyid=\"test-shared-secret\"", sig, "not a string"),
            ("sig-b25=(\"@signature-params\");created=1618884473;keyid=\"test-shared-secret\"", sig, "@signature-params"),
            ("sig-b25=(\"date\");keyid=\"test-shared-secret\"", sig, "created"),
            ("sig-b25=(\"date\");created=1618884473", sig, "keyid"),
            ("sig-b25=(\"date\");created=\"1618884473\";keyid=\"test-shared-secret\"", sig, "integer"),
            ("sig-b25=(\"date\");created=-1;keyid=\"test-shared-secret\"", sig, "non-negative"),
            ("sig-b25=(\"date\");created=1618884473;keyid=test", sig, "string"),
            ("sig-b25=(\"date\");created=1618884473;keyid=\"test-shared-secret\";foo=1", sig, "not known"),
            ("sig-b25=\"date\";created=1618884473;keyid=\"test-shared-secret\"", sig, "inner list"),
            ("sig-b25=(\"date\";created=1618884473", sig, "does not parse"),
            (B25_INPUT, "sig-b25=\"pxcQ\"", "byte sequence"),
            (B25_INPUT, "sig-b25=:not base64:", "does not parse"),
            (B25_INPUT, "sig-b25=(:AAAA:)", "byte sequence"),
        ];
        for (input, signature, detail) in cases {
            let err = rfc_with(input, signature).unwrap_err();
            assert_eq!(
                err.reason,
                VerifyReason::MalformedSignature,
                "{input} {signature}: {err}"
            );
            assert!(err.detail.contains(detail), "{input} {signature}: {err}");
        }
    }

    #[test]
    fn missing_signatures() {
        let none = PairsRequest {
            headers: TEST_REQUEST_HEADERS,
            ..test_request()
        };
        let keys = vec![VerifyingKey::from_settings(&hmac_settings()).unwrap()];
        let verifier = verifier(keys, &[]);
        let err = verifier
            .verify(&none, b"", RFC_CREATED, &NonceStore::new(1))
            .unwrap_err();
        assert_eq!(err.reason, VerifyReason::MissingSignature);
        let err = rfc_with(B25_INPUT, "other=:AAAA:").unwrap_err();
        assert_eq!(err.reason, VerifyReason::MissingSignature);
        let err = rfc_with("", "").unwrap_err();
        assert_eq!(err.reason, VerifyReason::MissingSignature);
        let only_input = [("Signature-Input", B25_INPUT)];
        let message = PairsRequest {
            headers: &only_input,
            ..test_request()
        };
        let err = verifier
            .verify(&message, b"", RFC_CREATED, &NonceStore::new(1))
            .unwrap_err();
        assert_eq!(err.reason, VerifyReason::MissingSignature);
    }

    #[test]
    fn split_signature_fields_are_joined() {
        let headers = rfc_message(&[
            ("Signature-Input", "other=();created=1;keyid=\"x\""),
            ("Signature-Input", B25_INPUT),
            ("Signature", "other=:AAAA:"),
            ("Signature", B25_SIGNATURE),
        ]);
        let message = PairsRequest {
            headers: &headers,
            ..test_request()
        };
        let keys = vec![VerifyingKey::from_settings(&hmac_settings()).unwrap()];
        let labelled = RequestVerifier::new(keys, &[], 300, 5, Some("sig-b25")).unwrap();
        labelled
            .verify(&message, b"", RFC_CREATED, &NonceStore::new(1))
            .unwrap();
    }

    #[test]
    fn garbage_and_truncations_never_panic() {
        let signed = Signed::new(&ed25519_signer(), BODY, NOW_S, "rid-1.p");
        let verifier = gateway_verifier();
        for field in ["signature-input", "signature", "content-digest"] {
            let original = signed
                .headers
                .iter()
                .find(|(n, _)| n == field)
                .unwrap()
                .1
                .clone();
            let mut variants: Vec<String> = (0..original.len())
                .map(|end| original[..end].to_string())
                .collect();
            for (index, _) in original.char_indices() {
                for garbage in [
                    "\"", "(", ")", ";", "=", ":", ",", " ", "\\", "*", "?1", "-9", "@",
                ] {
                    let mut mutated = original.clone();
                    mutated.replace_range(index..index + 1, garbage);
                    variants.push(mutated);
                }
            }
            for variant in variants {
                let mut copy = Signed::new(&ed25519_signer(), BODY, NOW_S, "rid-1.p");
                *copy.header(field) = variant.clone();
                let result = copy.verify_with(&verifier, NOW_S, &NonceStore::new(10));
                if variant != original {
                    assert!(
                        result.is_err() || field == "content-digest",
                        "{field}: {variant}"
                    );
                }
            }
        }
        for garbage in [
            &b"\xff\xfe"[..],
            b"\0",
            b"((((((((",
            b"a=(\"",
            b"=:",
            b"a=?2",
        ] {
            let text = String::from_utf8_lossy(garbage).into_owned();
            let mut copy = Signed::new(&ed25519_signer(), BODY, NOW_S, "rid-1.q");
            *copy.header("signature-input") = text;
            assert!(copy.verify().is_err());
        }
    }

    #[test]
    fn settings_build_a_verifier_and_name_their_errors() {
        let json = format!(
            r#"{{"keys": [{{"keyid": "a", "alg": "ed25519", "spki_b64": "{TEST_ED25519_SPKI}"}}]}}"#
        );
        let settings: VerifierSettings = serde_json::from_str(&json).unwrap();
        assert_eq!(settings.required, DEFAULT_REQUIRED);
        assert_eq!(settings.max_age_s, 300);
        assert_eq!(settings.clock_skew_s, 5);
        RequestVerifier::from_settings(&settings).unwrap();
        let json = r#"{"keys": [
            {"keyid": "a", "alg": "hmac-sha256", "secret_b64": "c2hvcnQ"},
            {"keyid": "b", "alg": "rsa-pss-sha512", "spki_b64": "x"}
        ], "required": ["@method", "Bad"], "label": "Not A Key"}"#;
        let settings: VerifierSettings = serde_json::from_str(json).unwrap();
        let errors = RequestVerifier::from_settings(&settings).unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("keys[0].secret_b64:"), "{errors:?}");
        assert!(errors[1].starts_with("keys[1].alg:"), "{errors:?}");
        assert!(errors[2].starts_with("required[1]:"), "{errors:?}");
        assert!(errors[3].starts_with("label:"), "{errors:?}");
        let key = || VerifyingKey::from_settings(&hmac_settings()).unwrap();
        let errors = RequestVerifier::new(vec![key(), key()], &[], 1, 1, None).unwrap_err();
        assert_eq!(
            errors,
            ["keys[1].keyid: duplicate keyid \"test-shared-secret\""]
        );
        let errors = RequestVerifier::new(vec![], &[], 1, 1, None).unwrap_err();
        assert_eq!(errors, ["keys: at least one key is needed"]);
    }
}
