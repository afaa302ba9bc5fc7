//! `Signer`: signs a request as it leaves for a cell (RFC 9421), with its body's Content-Digest
//! (RFC 9530). It runs once per forwarded request, so it writes the signature base into one
//! reused buffer and the fields directly, without a structured-field round trip.

use super::base::{is_sf_string, write_line_start, write_sf_string};
use super::components::{Component, HeaderMapRequest, ValueError};
use super::digest::{write_content_digest, DigestAlgs};
use super::errors::SignError;
use super::keys::{SigningKey, SigningKeySettings};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Request};
use serde::Deserialize;
use std::cell::Cell;
use std::fmt::Write;

const CONTENT_DIGEST: HeaderName = HeaderName::from_static("content-digest");
const SIGNATURE_INPUT: HeaderName = HeaderName::from_static("signature-input");
const SIGNATURE: HeaderName = HeaderName::from_static("signature");

/// The label the gateway signs under unless configured otherwise.
pub const DEFAULT_LABEL: &str = "cellgate";
/// How long a signature is valid by default, in seconds.
pub const DEFAULT_TTL_S: u64 = 60;
/// What every signature covers by default, before the digest and the optional headers.
pub const DEFAULT_COMPONENTS: [&str; 4] = ["@method", "@authority", "@path", "@query"];
/// The headers the gateway vouches for, covered when a forwarded request has them.
pub const GATEWAY_HEADERS: [&str; 7] = [
    "x-request-id",
    "x-cell-id",
    "x-customer-id",
    "x-customer-tier",
    "x-risk-level",
    "x-step-up",
    "traceparent",
];
/// A reused base buffer that grew past this is dropped rather than kept per thread.
const MAX_KEPT_BASE_BYTES: usize = 64 * 1024;

fn default_label() -> String {
    DEFAULT_LABEL.to_owned()
}

fn default_ttl_s() -> u64 {
    DEFAULT_TTL_S
}

fn default_components() -> Vec<String> {
    DEFAULT_COMPONENTS.iter().map(|s| s.to_string()).collect()
}

fn default_true() -> bool {
    true
}

/// How the gateway signs what it forwards.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerSettings {
    /// The key that signs.
    pub key: SigningKeySettings,
    /// The Signature-Input / Signature member label.
    #[serde(default = "default_label")]
    pub label: String,
    /// `expires` is `created + ttl_s`; 0 leaves `expires` out.
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
    /// Whether Content-Digest carries sha-512 beside sha-256.
    #[serde(default)]
    pub digest_sha512: bool,
    /// Header fields covered when the request has them (names in any case).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Components every signature covers, in order; a header named here must be present.
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Whether the `alg` parameter is sent.
    #[serde(default = "default_true")]
    pub include_alg: bool,
}

/// Signs requests with one key under one label.
#[derive(Debug)]
pub struct Signer {
    key: SigningKey,
    label: String,
    ttl_s: u64,
    include_alg: bool,
    digest: DigestAlgs,
    /// Always covered, in order.
    components: Vec<Component>,
    /// Covered when present, after the digest.
    optional: Vec<Component>,
    digest_component: Component,
    /// The Signature-Input length without the nonce, to allocate it once.
    input_capacity: usize,
}

thread_local! {
    static BASE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `build` with this thread's signature base buffer, cleared, and keeps it for the next.
fn with_base_buffer<R>(build: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut base = BASE.try_with(Cell::take).unwrap_or_default();
    base.clear();
    let result = build(&mut base);
    if base.capacity() <= MAX_KEPT_BASE_BYTES {
        let _ = BASE.try_with(|cell| cell.set(base));
    }
    result
}

/// Why a name cannot be covered by the signer, if it cannot.
fn refused_name(component: &Component) -> Option<&'static str> {
    match component.name() {
        "content-digest" => Some("content-digest is covered by itself whenever there is a body"),
        "signature" | "signature-input" => Some("a signature cannot cover its own fields"),
        _ => None,
    }
}

impl Signer {
    /// A signer with `key` under `label`, `expires` `ttl_s` after `created` (0: none), sha-512
    /// in Content-Digest when `digest_sha512`, covering `headers` (any case) when present
    /// beside the default components. Errors name what was refused.
    pub fn new(
        key: SigningKey,
        label: &str,
        ttl_s: u64,
        digest_sha512: bool,
        headers: &[String],
    ) -> Result<Signer, Vec<String>> {
        let mut errors = Vec::new();
        if sfv::KeyRef::from_str(label).is_err() {
            errors.push(format!(
                "label: {label:?} is not a structured-field key (lowercase letters, digits, _-.*)"
            ));
        }
        let mut optional: Vec<Component> = Vec::with_capacity(headers.len());
        for (index, name) in headers.iter().enumerate() {
            match Component::parse(&name.to_ascii_lowercase()) {
                Ok(component @ Component::Field(_)) => {
                    if let Some(why) = refused_name(&component) {
                        errors.push(format!("headers[{index}]: {why}"));
                    } else if optional.contains(&component) {
                        errors.push(format!("headers[{index}]: {name:?} is listed twice"));
                    } else {
                        optional.push(component);
                    }
                }
                Ok(_) => errors.push(format!(
                    "headers[{index}]: {name:?} is a derived component, not a header"
                )),
                Err(err) => errors.push(format!("headers[{index}]: {}", err.detail())),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut signer = Signer {
            key,
            label: label.to_owned(),
            ttl_s,
            include_alg: true,
            digest: DigestAlgs {
                sha256: true,
                sha512: digest_sha512,
            },
            components: Vec::new(),
            optional,
            digest_component: Component::Field("content-digest".into()),
            input_capacity: 0,
        };
        signer.set_components(&default_components())?;
        Ok(signer)
    }

    /// Replaces the components every signature covers (in order; a header named here must be
    /// present when signing).
    pub fn with_components(mut self, names: &[String]) -> Result<Signer, Vec<String>> {
        self.set_components(names)?;
        Ok(self)
    }

    /// Whether the `alg` parameter is sent (it is by default).
    pub fn with_alg_param(mut self, include_alg: bool) -> Signer {
        self.include_alg = include_alg;
        self.input_capacity = self.measure_input();
        self
    }

    fn set_components(&mut self, names: &[String]) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let mut components: Vec<Component> = Vec::with_capacity(names.len());
        for (index, name) in names.iter().enumerate() {
            match Component::parse(name) {
                Ok(component) => {
                    if let Some(why) = refused_name(&component) {
                        errors.push(format!("components[{index}]: {why}"));
                    } else if components.contains(&component) || self.optional.contains(&component)
                    {
                        errors.push(format!("components[{index}]: {name:?} is covered twice"));
                    } else {
                        components.push(component);
                    }
                }
                Err(err) => errors.push(format!("components[{index}]: {}", err.detail())),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        self.components = components;
        self.input_capacity = self.measure_input();
        Ok(())
    }

    fn measure_input(&self) -> usize {
        let ids: usize = self
            .components
            .iter()
            .chain(&self.optional)
            .chain([&self.digest_component])
            .map(|c| c.name().len() + 3)
            .sum();
        // `label=(ids);created=N;expires=N;keyid="...";alg="...";nonce=""`, escapes allowed for.
        self.label.len() + ids + 110 + 2 * self.key.keyid().len()
    }

    /// Builds a signer from its settings; key errors read `key.<field>: ...`.
    pub fn from_settings(settings: &SignerSettings) -> Result<Signer, Vec<String>> {
        let key =
            SigningKey::from_settings(&settings.key).map_err(|err| vec![format!("key.{err}")])?;
        Signer::new(
            key,
            &settings.label,
            settings.ttl_s,
            settings.digest_sha512,
            &settings.headers,
        )?
        .with_components(&settings.components)
        .map(|signer| signer.with_alg_param(settings.include_alg))
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The label signatures are made under.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Signs a request: sets `content-digest` when `body` is not empty (and drops a stale one
    /// when it is), then `signature-input` and `signature`, replacing any already there.
    /// Covers the configured components, `content-digest` with a body, then each configured
    /// header present (one whose value cannot be signed is removed, never sent unsigned); the
    /// parameters are `created` (`now_s`), `expires`, `keyid`, `alg` and `nonce` (left out when
    /// empty; the caller makes it unique).
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        &self,
        method: &str,
        authority: &str,
        path: &str,
        query: &str,
        headers: &mut HeaderMap,
        body: &[u8],
        now_s: u64,
        nonce: &str,
    ) -> Result<(), SignError> {
        if !is_sf_string(nonce) {
            return Err(SignError::new("the nonce must be printable ASCII"));
        }
        if body.is_empty() {
            headers.remove(CONTENT_DIGEST);
        } else {
            let mut digest = String::with_capacity(if self.digest.sha512 { 150 } else { 56 });
            write_content_digest(body, self.digest, &mut digest);
            let digest = HeaderValue::try_from(digest)
                .map_err(|_| SignError::new("content-digest is not a field value"))?;
            headers.insert(CONTENT_DIGEST, digest);
        }

        let mut input = String::with_capacity(self.input_capacity + nonce.len() * 2);
        input.push_str(&self.label);
        input.push_str("=(");
        let mut unsignable: Vec<&str> = Vec::new();
        let signature = with_base_buffer(|base| -> Result<String, SignError> {
            let message = HeaderMapRequest {
                method,
                scheme: "",
                authority,
                path,
                query,
                headers,
            };
            let cover = |component: &Component, input: &mut String, base: &mut Vec<u8>| {
                let line = base.len();
                write_line_start(component.name(), base);
                let written = component.write_value(&message, base);
                if written.is_ok() {
                    base.push(b'\n');
                    if !input.ends_with('(') {
                        input.push(' ');
                    }
                    input.push('"');
                    input.push_str(component.name());
                    input.push('"');
                } else {
                    base.truncate(line);
                }
                written
            };
            for component in &self.components {
                cover(component, &mut input, base).map_err(|err| match err {
                    ValueError::Absent(detail) | ValueError::Unsignable(detail) => {
                        SignError::new(detail)
                    }
                })?;
            }
            if !body.is_empty() {
                cover(&self.digest_component, &mut input, base)
                    .map_err(|_| SignError::new("content-digest could not be covered"))?;
            }
            for component in &self.optional {
                if let Err(ValueError::Unsignable(_)) = cover(component, &mut input, base) {
                    unsignable.push(component.name());
                }
            }
            input.push(')');
            let _ = write!(input, ";created={now_s}");
            if self.ttl_s > 0 {
                let _ = write!(input, ";expires={}", now_s.saturating_add(self.ttl_s));
            }
            input.push_str(";keyid=");
            write_sf_string(self.key.keyid(), &mut input);
            if self.include_alg {
                input.push_str(";alg=\"");
                input.push_str(self.key.alg().name());
                input.push('"');
            }
            if !nonce.is_empty() {
                input.push_str(";nonce=");
                write_sf_string(nonce, &mut input);
            }
            write_line_start("@signature-params", base);
            base.extend_from_slice(&input.as_bytes()[self.label.len() + 1..]);

            let mut signature = String::with_capacity(self.label.len() + 92);
            signature.push_str(&self.label);
            signature.push_str("=:");
            self.key.sign_b64_into(base, &mut signature);
            signature.push(':');
            Ok(signature)
        })?;
        for name in unsignable {
            headers.remove(name);
        }
        let input = HeaderValue::try_from(input)
            .map_err(|_| SignError::new("signature-input is not a field value"))?;
        let signature = HeaderValue::try_from(signature)
            .map_err(|_| SignError::new("signature is not a field value"))?;
        headers.insert(SIGNATURE_INPUT, input);
        headers.insert(SIGNATURE, signature);
        Ok(())
    }

    /// Signs a hyper request being built: method, path and query from its URI, `authority` as
    /// the cell will see it (its Host); see [`Signer::sign`].
    pub fn sign_request<B>(
        &self,
        request: &mut Request<B>,
        authority: &str,
        body: &[u8],
        now_s: u64,
        nonce: &str,
    ) -> Result<(), SignError> {
        let method = request.method().clone();
        let uri = request.uri().clone();
        self.sign(
            method.as_str(),
            authority,
            uri.path(),
            uri.query().unwrap_or(""),
            request.headers_mut(),
            body,
            now_s,
            nonce,
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::signing::base::tests::{B25_BASE, B26_BASE, TEST_REQUEST_HEADERS};
    use crate::signing::base::{serialize_params, SignatureParams};
    use crate::signing::keys::tests::{ed25519_settings, hmac_settings};
    use crate::signing::keys::Algorithm;
    use crate::signing::{Param, VerifyingKey};
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use sfv::{Dictionary, ListEntry, Parser};

    pub(crate) const B25_INPUT: &str =
        "sig-b25=(\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\"";
    pub(crate) const B25_SIGNATURE: &str = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:";
    pub(crate) const B26_INPUT: &str = concat!(
        "sig-b26=(\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\")",
        ";created=1618884473;keyid=\"test-key-ed25519\""
    );
    pub(crate) const B26_SIGNATURE: &str = concat!(
        "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1",
        "u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
    );
    pub(crate) const RFC_CREATED: u64 = 1618884473;

    pub(crate) fn gateway_headers() -> Vec<String> {
        GATEWAY_HEADERS.iter().map(|s| s.to_string()).collect()
    }

    pub(crate) fn hmac_signer() -> Signer {
        let key = SigningKey::from_settings(&hmac_settings()).unwrap();
        Signer::new(key, "cellgate", 60, false, &gateway_headers()).unwrap()
    }

    pub(crate) fn ed25519_signer() -> Signer {
        let key = SigningKey::from_settings(&ed25519_settings()).unwrap();
        Signer::new(key, "cellgate", 60, true, &gateway_headers()).unwrap()
    }

    pub(crate) fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    pub(crate) fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
        map.iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap().to_owned()))
            .collect()
    }

    fn rfc_signer(settings: &SigningKeySettings, label: &str, components: &[&str]) -> Signer {
        let key = SigningKey::from_settings(settings).unwrap();
        let components: Vec<String> = components.iter().map(|s| s.to_string()).collect();
        Signer::new(key, label, 0, false, &[])
            .unwrap()
            .with_components(&components)
            .unwrap()
            .with_alg_param(false)
    }

    fn sign_rfc(signer: &Signer) -> HeaderMap {
        let mut headers = header_map(TEST_REQUEST_HEADERS);
        signer
            .sign(
                "POST",
                "example.com",
                "/foo",
                "param=Value&Pet=dog",
                &mut headers,
                b"",
                RFC_CREATED,
                "",
            )
            .unwrap();
        headers
    }

    #[test]
    fn reproduces_rfc_9421_b_2_5_through_the_signer() {
        let signer = rfc_signer(
            &hmac_settings(),
            "sig-b25",
            &["date", "@authority", "content-type"],
        );
        let headers = sign_rfc(&signer);
        assert_eq!(headers["signature-input"], B25_INPUT);
        assert_eq!(headers["signature"], B25_SIGNATURE);
    }

    #[test]
    fn reproduces_rfc_9421_b_2_6_through_the_signer() {
        let signer = rfc_signer(
            &ed25519_settings(),
            "sig-b26",
            &[
                "date",
                "@method",
                "@path",
                "@authority",
                "content-type",
                "content-length",
            ],
        );
        let headers = sign_rfc(&signer);
        assert_eq!(headers["signature-input"], B26_INPUT);
        assert_eq!(headers["signature"], B26_SIGNATURE);
    }

    #[test]
    fn the_rfc_keys_sign_the_rfc_bases_to_the_rfc_signatures() {
        let ed25519 = SigningKey::from_settings(&ed25519_settings()).unwrap();
        let expected = B26_SIGNATURE
            .trim_start_matches("sig-b26=:")
            .trim_end_matches(':');
        assert_eq!(STANDARD.encode(ed25519.sign(B26_BASE.as_bytes())), expected);
        let hmac = SigningKey::from_settings(&hmac_settings()).unwrap();
        let expected = B25_SIGNATURE
            .trim_start_matches("sig-b25=:")
            .trim_end_matches(':');
        assert_eq!(STANDARD.encode(hmac.sign(B25_BASE.as_bytes())), expected);
    }

    fn gateway_request() -> HeaderMap {
        header_map(&[
            ("host", "cell.internal:8443"),
            ("content-type", "application/json"),
            ("x-request-id", "rid-1"),
            ("x-cell-id", "hnw-us-east-1"),
            ("x-customer-id", "cust-9"),
            ("accept", "application/json"),
        ])
    }

    #[test]
    fn the_gateway_profile_covers_what_is_present() {
        let mut headers = gateway_request();
        hmac_signer()
            .sign(
                "POST",
                "cell.internal:8443",
                "/api/transfers",
                "dry=1",
                &mut headers,
                b"{\"amount\": 10}",
                1_700_000_000,
                "rid-1.abc",
            )
            .unwrap();
        assert_eq!(
            headers["signature-input"],
            concat!(
                "cellgate=(\"@method\" \"@authority\" \"@path\" \"@query\" \"content-digest\" ",
                "\"x-request-id\" \"x-cell-id\" \"x-customer-id\");created=1700000000",
                ";expires=1700000060;keyid=\"test-shared-secret\";alg=\"hmac-sha256\"",
                ";nonce=\"rid-1.abc\""
            )
        );
        assert_eq!(
            headers["content-digest"],
            crate::signing::content_digest(b"{\"amount\": 10}", DigestAlgs::SHA256)
        );
        let signature = headers["signature"].to_str().unwrap();
        assert!(signature.starts_with("cellgate=:") && signature.ends_with(':'));
    }

    #[test]
    fn the_direct_params_line_is_what_sfv_serialises() {
        let mut headers = gateway_request();
        headers.append("x-step-up", HeaderValue::from_static("mfa"));
        ed25519_signer()
            .sign(
                "GET",
                "cell",
                "/a",
                "",
                &mut headers,
                b"",
                5,
                "quote\"and\\slash",
            )
            .unwrap();
        let input = headers["signature-input"].to_str().unwrap();
        let parsed: Dictionary = Parser::new(input).parse().unwrap();
        let Some(ListEntry::InnerList(list)) = parsed.get("cellgate") else {
            panic!("no inner list in {input}");
        };
        let components: Vec<Component> = list
            .items
            .iter()
            .map(|item| Component::parse(item.bare_item.as_string().unwrap().as_str()).unwrap())
            .collect();
        assert_eq!(
            components.iter().map(Component::name).collect::<Vec<_>>(),
            [
                "@method",
                "@authority",
                "@path",
                "@query",
                "x-request-id",
                "x-cell-id",
                "x-customer-id",
                "x-step-up"
            ]
        );
        let params = SignatureParams {
            params: vec![
                Param::Created(5),
                Param::Expires(65),
                Param::KeyId("test-key-ed25519".into()),
                Param::Alg("ed25519".into()),
                Param::Nonce("quote\"and\\slash".into()),
            ],
        };
        let sfv_line = serialize_params(&components, &params).unwrap();
        assert_eq!(&input["cellgate=".len()..], sfv_line);
    }

    #[test]
    fn no_body_no_digest_and_a_stale_one_is_dropped() {
        let mut headers = gateway_request();
        headers.insert(CONTENT_DIGEST, HeaderValue::from_static("sha-256=:AAAA:"));
        hmac_signer()
            .sign("GET", "cell", "/a", "", &mut headers, b"", 1, "n")
            .unwrap();
        assert!(headers.get("content-digest").is_none());
        assert!(!headers["signature-input"]
            .to_str()
            .unwrap()
            .contains("content-digest"));
    }

    #[test]
    fn sha512_is_added_when_configured() {
        let mut headers = gateway_request();
        ed25519_signer()
            .sign("PUT", "cell", "/a", "", &mut headers, b"x", 1, "n")
            .unwrap();
        let digest = headers["content-digest"].to_str().unwrap();
        assert!(digest.starts_with("sha-256=:") && digest.contains(", sha-512=:"));
    }

    #[test]
    fn existing_signature_fields_are_replaced() {
        let mut headers = gateway_request();
        headers.append(
            "signature-input",
            HeaderValue::from_static("evil=();created=1"),
        );
        headers.append("signature", HeaderValue::from_static("evil=:AAAA:"));
        hmac_signer()
            .sign("GET", "cell", "/a", "", &mut headers, b"", 1, "n")
            .unwrap();
        assert_eq!(headers.get_all("signature-input").iter().count(), 1);
        assert_eq!(headers.get_all("signature").iter().count(), 1);
        assert!(headers["signature"]
            .to_str()
            .unwrap()
            .starts_with("cellgate="));
    }

    #[test]
    fn an_unsignable_optional_header_is_removed_not_sent_unsigned() {
        let mut headers = gateway_request();
        headers.insert(
            "traceparent",
            HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
        );
        hmac_signer()
            .sign("GET", "cell", "/a", "", &mut headers, b"", 1, "n")
            .unwrap();
        assert!(headers.get("traceparent").is_none());
        assert!(!headers["signature-input"]
            .to_str()
            .unwrap()
            .contains("traceparent"));
    }

    #[test]
    fn what_cannot_be_signed_is_an_error() {
        let mut headers = gateway_request();
        let err = hmac_signer()
            .sign("GET", "cell", "/a", "", &mut headers, b"", 1, "new\nline")
            .unwrap_err();
        assert!(err.detail.contains("nonce"), "{err}");
        let err = hmac_signer()
            .sign("GET", "cell", "/a\u{7f}", "", &mut headers, b"", 1, "n")
            .unwrap_err();
        assert!(err.detail.contains("@path"), "{err}");
        let signer = rfc_signer(&hmac_settings(), "sig", &["date"]);
        let err = signer
            .sign("GET", "cell", "/a", "", &mut headers, b"", 1, "n")
            .unwrap_err();
        assert!(err.detail.contains("absent"), "{err}");
        assert!(headers.get("signature").is_none());
    }

    #[test]
    fn settings_are_checked_with_every_error_named() {
        let key = || SigningKey::from_settings(&hmac_settings()).unwrap();
        let headers: Vec<String> = [
            "X-Request-Id",
            "@method",
            "content-digest",
            "x-request-id",
            "Bad Name",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let errors = Signer::new(key(), "Bad", 60, false, &headers).unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].starts_with("label:"));
        assert!(errors[1].starts_with("headers[1]:") && errors[1].contains("derived"));
        assert!(errors[2].starts_with("headers[2]:") && errors[2].contains("content-digest"));
        assert!(errors[3].starts_with("headers[3]:") && errors[3].contains("twice"));
        assert!(errors[4].starts_with("headers[4]:"));
        let components: Vec<String> = ["@method", "@method", "signature"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let errors = Signer::new(key(), "ok", 60, false, &[])
            .unwrap()
            .with_components(&components)
            .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        let json = r#"{"key": {"keyid": "k", "alg": "hmac-sha256", "secret_b64": "c2hvcnQ"}}"#;
        let settings: SignerSettings = serde_json::from_str(json).unwrap();
        assert_eq!(settings.label, "cellgate");
        assert_eq!(settings.ttl_s, 60);
        assert_eq!(
            Signer::from_settings(&settings).unwrap_err(),
            ["key.secret_b64: an hmac-sha256 key must be at least 32 bytes, got 5"]
        );
        let json = r#"{"key": {"keyid": "k", "alg": "ed25519"}, "lable": "x"}"#;
        assert!(serde_json::from_str::<SignerSettings>(json).is_err());
    }

    #[test]
    fn from_settings_builds_the_gateway_signer() {
        let settings = SignerSettings {
            key: ed25519_settings(),
            label: "gw".into(),
            ttl_s: 30,
            digest_sha512: false,
            headers: gateway_headers(),
            components: default_components(),
            include_alg: true,
        };
        let signer = Signer::from_settings(&settings).unwrap();
        assert_eq!(signer.label(), "gw");
        assert_eq!(signer.key().alg(), Algorithm::Ed25519);
        let verifying: VerifyingKey = signer.key().verifying_key();
        assert_eq!(verifying.keyid(), "test-key-ed25519");
    }

    #[test]
    fn signs_a_hyper_request_in_place() {
        let mut request = Request::builder()
            .method("POST")
            .uri("/api/pay?x=1")
            .header("x-request-id", "r")
            .body(())
            .unwrap();
        hmac_signer()
            .sign_request(&mut request, "cell:80", b"{}", 10, "r.1")
            .unwrap();
        let input = request.headers()["signature-input"].to_str().unwrap();
        assert!(input.starts_with(
            "cellgate=(\"@method\" \"@authority\" \"@path\" \"@query\" \"content-digest\" \"x-request-id\")"
        ));
        assert!(request.headers().contains_key("content-digest"));
    }
}
