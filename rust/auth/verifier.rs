//! JWS compact verification (RFC 7515) and JWT claim checks (RFC 7519, RFC 8725).

use super::cache::TokenCache;
use super::claims::{ClaimsSeed, Header};
use super::keys::{KeyError, KeySet};
use super::revocations::Revocations;
use crate::reason::{Reason, Refusal};
use crate::settings::{JwtSettings, StepUpSettings};
use crate::state::{RevocationStore, StateKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeSeed;
use std::sync::Arc;

/// The longest token accepted, in bytes; larger ones are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// What a verified token established.
#[derive(Debug)]
pub struct Verified {
    /// The customer the token names.
    pub customer: Arc<str>,
    /// The first second at which this verification may no longer be reused.
    pub cache_until_s: u64,
    /// The customer's key in shared state, hashed once per token.
    pub customer_key: StateKey,
    /// The token's `jti`, for revocation.
    pub jti: Option<Arc<str>>,
    /// The jti's key in shared state.
    pub jti_key: Option<StateKey>,
    /// The token's `iat`, for "revoke every token issued before T".
    pub issued_at_s: Option<f64>,
    /// The step-up proof the token carries.
    pub step_up: StepUpProof,
}

/// The parts of step-up proof a token carries: whether its `amr` and `acr` meet the configured
/// requirement (decided once, at verification), and its `auth_time` (whose age changes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepUpProof {
    pub methods_ok: bool,
    pub auth_time_s: Option<f64>,
}

/// Verifies bearer tokens against the configured keys and claims.
pub struct Verifier {
    keys: KeySet,
    issuer: Option<String>,
    audience: Option<String>,
    typ: Option<String>,
    leeway_s: u64,
    customer_claim: String,
    require_exp: bool,
    /// `[state] max_token_lifetime_s`: the longest a token may be valid.
    max_lifetime_s: Option<u64>,
    cache_ttl_s: u64,
    step_up: StepUpSettings,
    cache: TokenCache,
    revocations: Arc<dyn RevocationStore>,
}

fn refuse(reason: Reason, detail: impl Into<String>) -> Refusal {
    Refusal::new(reason, detail)
}

impl Verifier {
    /// Builds a verifier; the key errors name each key's index in `settings.keys`.
    pub fn build(settings: &JwtSettings) -> Result<Self, Vec<KeyError>> {
        Ok(Verifier {
            keys: KeySet::build(&settings.keys)?,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            typ: settings.typ.clone(),
            leeway_s: settings.leeway_s,
            customer_claim: settings.customer_claim.clone(),
            require_exp: settings.require_exp,
            max_lifetime_s: None,
            cache_ttl_s: settings.cache_ttl_s,
            step_up: settings.step_up.clone(),
            cache: TokenCache::new(settings.cache_size),
            revocations: Arc::new(Revocations::default()),
        })
    }

    /// The revocation list, changed at run time.
    pub fn revocations(&self) -> &dyn RevocationStore {
        &*self.revocations
    }

    /// Consults `revocations` from now on (the configured store: this worker's or the node's).
    pub fn use_revocations(&mut self, revocations: Arc<dyn RevocationStore>) {
        self.revocations = revocations;
    }

    /// Refuses tokens valid for longer than `max_lifetime_s` (`exp - iat` plus leeway), and,
    /// with a limit, tokens without `iat` or `exp`.
    pub fn limit_token_lifetime(&mut self, max_lifetime_s: Option<u64>) {
        self.max_lifetime_s = max_lifetime_s;
    }

    /// Whether `verified` proves step-up authentication at `now_s` (what `step_up` judges,
    /// without saying what is missing); false when no step-up proof is configured.
    pub fn proves_step_up(&self, verified: &Verified, now_s: u64) -> bool {
        let required = &self.step_up;
        let configured =
            required.amr.is_some() || !required.acr.is_empty() || required.max_age_s.is_some();
        let methods_ok =
            verified.step_up.methods_ok || (required.amr.is_none() && required.acr.is_empty());
        let fresh = required.max_age_s.is_none_or(|max_age| {
            verified
                .step_up
                .auth_time_s
                .is_some_and(|t| now_s as f64 - t <= max_age as f64)
        });
        configured && methods_ok && fresh
    }

    /// Whether `verified` proves step-up authentication at `now_s` (decided by
    /// `proves_step_up`); otherwise what is missing.
    /// With no step-up requirement configured, nothing proves it.
    pub fn step_up(&self, verified: &Verified, now_s: u64) -> Result<(), String> {
        if self.proves_step_up(verified, now_s) {
            return Ok(());
        }
        let required = &self.step_up;
        if required.amr.is_none() && required.acr.is_empty() && required.max_age_s.is_none() {
            return Err("no step-up proof is configured for this gateway".into());
        }
        let mut missing = Vec::new();
        if !verified.step_up.methods_ok {
            if let Some(amr) = &required.amr {
                missing.push(format!("amr including {amr:?}"));
            }
            if !required.acr.is_empty() {
                missing.push(format!("acr one of {:?}", required.acr));
            }
        }
        if let Some(max_age) = required.max_age_s {
            let fresh = verified
                .step_up
                .auth_time_s
                .is_some_and(|t| now_s as f64 - t <= max_age as f64);
            if !fresh {
                missing.push(format!("auth_time within the last {max_age} s"));
            }
        }
        Err(format!("re-authenticate with {}", missing.join(", ")))
    }

    /// The verified-token cache.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Verifies an `Authorization` header value at `now_s` (seconds since the epoch).
    pub fn verify_header(
        &self,
        authorization: Option<&str>,
        now_s: u64,
    ) -> Result<Arc<Verified>, Refusal> {
        let Some(value) = authorization else {
            return Err(refuse(Reason::MissingToken, "no Authorization header"));
        };
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(refuse(
                    Reason::Malformed,
                    "Authorization is not of the form 'Bearer <token>'",
                ))
            }
        };
        self.verify(token, now_s)
    }

    /// Verifies a compact JWS token, answering from the cache when it can.
    /// Revocations apply to cached tokens too.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Arc<Verified>, Refusal> {
        let verified = match self.cache.get(token, now_s) {
            Some(verified) => verified,
            None => {
                let verified = Arc::new(self.verify_uncached(token, now_s)?);
                self.cache.insert(token, verified.clone(), now_s);
                verified
            }
        };
        self.revocations.check(&verified)?;
        Ok(verified)
    }

    fn verify_uncached(&self, token: &str, now_s: u64) -> Result<Verified, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refuse(
                Reason::Malformed,
                format!("token longer than {MAX_TOKEN_BYTES} bytes"),
            ));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refuse(
                Reason::Malformed,
                "a JWS compact token has exactly three dot-separated parts",
            ));
        };
        let header_json = decode_part(header_b64, "header")?;
        let header: Header = serde_json::from_slice(&header_json)
            .map_err(|err| refuse(Reason::Malformed, format!("header: {err}")))?;
        if header.has_crit {
            return Err(refuse(
                Reason::Malformed,
                "header: critical extensions are not supported",
            ));
        }
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(refuse(Reason::AlgNotAllowed, "alg none is never accepted"));
        }
        if let Some(expected) = &self.typ {
            match &header.typ {
                Some(typ) if same_media_type(typ, expected) => {}
                Some(typ) => {
                    return Err(refuse(
                        Reason::WrongType,
                        format!("typ {typ:?} is not {expected:?}"),
                    ))
                }
                None => {
                    return Err(refuse(
                        Reason::WrongType,
                        format!("no typ, {expected:?} is required"),
                    ))
                }
            }
        }
        let key = self
            .keys
            .find(header.kid.as_deref())
            .ok_or_else(|| match &header.kid {
                Some(kid) => refuse(Reason::UnknownKid, format!("no key with kid {kid:?}")),
                None => refuse(
                    Reason::UnknownKid,
                    "the token has no kid and several keys are configured",
                ),
            })?;
        if key.alg != header.alg {
            return Err(refuse(
                Reason::AlgNotAllowed,
                format!("key allows {}, token uses {}", key.alg, header.alg),
            ));
        }
        let signature = decode_part(signature_b64, "signature")?;
        let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        if !key.verify(signing_input, &signature) {
            return Err(refuse(Reason::BadSignature, "signature does not verify"));
        }
        let payload = decode_part(payload_b64, "payload")?;
        let mut deserializer = serde_json::Deserializer::from_slice(&payload);
        let claims = ClaimsSeed {
            customer_claim: &self.customer_claim,
        }
        .deserialize(&mut deserializer)
        .and_then(|claims| deserializer.end().map(|()| claims))
        .map_err(|err| refuse(Reason::Malformed, format!("claims: {err}")))?;

        let now = now_s as f64;
        let leeway = self.leeway_s as f64;
        match claims.exp {
            Some(exp) if now >= exp + leeway => {
                return Err(refuse(
                    Reason::Expired,
                    format!("expired at {exp}, now {now_s}, leeway {}s", self.leeway_s),
                ))
            }
            None if self.require_exp => {
                return Err(refuse(Reason::Malformed, "claims: exp is required"))
            }
            _ => {}
        }
        if let Some(max_s) = self.max_lifetime_s {
            // A customer cut-off is forgotten `max_s` after its time: no token accepted may
            // outlive that, or one issued before the cut-off would be accepted again.
            let (Some(iat), Some(exp)) = (claims.iat, claims.exp) else {
                return Err(refuse(
                    Reason::Malformed,
                    "claims: iat and exp are required ([state] max_token_lifetime_s is set)",
                ));
            };
            if exp - iat + leeway > max_s as f64 {
                return Err(refuse(
                    Reason::Malformed,
                    format!(
                        "claims: valid for {} s (exp - iat, leeway {} s included), longer than \
                         [state] max_token_lifetime_s = {max_s}",
                        exp - iat + leeway,
                        self.leeway_s
                    ),
                ));
            }
        }
        if let Some(nbf) = claims.nbf {
            if now + leeway < nbf {
                return Err(refuse(
                    Reason::NotYetValid,
                    format!(
                        "not valid before {nbf}, now {now_s}, leeway {}s",
                        self.leeway_s
                    ),
                ));
            }
        }
        if let Some(iat) = claims.iat {
            if now + leeway < iat {
                return Err(refuse(
                    Reason::NotYetValid,
                    format!(
                        "issued in the future ({iat}), now {now_s}, leeway {}s",
                        self.leeway_s
                    ),
                ));
            }
        }
        if let Some(issuer) = &self.issuer {
            if claims.iss.as_deref() != Some(issuer.as_str()) {
                return Err(refuse(
                    Reason::WrongIssuer,
                    format!(
                        "iss {:?} is not {issuer:?}",
                        claims.iss.as_deref().unwrap_or("")
                    ),
                ));
            }
        }
        if let Some(audience) = &self.audience {
            if !claims
                .aud
                .as_ref()
                .is_some_and(|aud| aud.contains(audience))
            {
                return Err(refuse(
                    Reason::WrongAudience,
                    format!("aud does not include {audience:?}"),
                ));
            }
        }
        let customer = match claims.customer {
            Some(customer) if !customer.is_empty() => customer,
            _ if claims.customer_not_string => {
                return Err(refuse(
                    Reason::MissingCustomer,
                    format!("claim {:?} is not a string", self.customer_claim),
                ))
            }
            _ => {
                return Err(refuse(
                    Reason::MissingCustomer,
                    format!("claim {:?} is missing or empty", self.customer_claim),
                ))
            }
        };
        let cache_until_s = match claims.exp {
            Some(exp) => (exp + leeway).ceil() as u64,
            None => now_s + self.cache_ttl_s,
        };
        let amr_ok = self.step_up.amr.as_ref().is_none_or(|wanted| {
            claims
                .amr
                .as_ref()
                .is_some_and(|methods| methods.iter().any(|m| m == wanted))
        });
        let acr_ok = self.step_up.acr.is_empty()
            || claims
                .acr
                .as_ref()
                .is_some_and(|acr| self.step_up.acr.iter().any(|a| a == acr));
        Ok(Verified {
            customer_key: StateKey::of(&customer),
            customer: Arc::from(customer.as_ref()),
            cache_until_s,
            jti_key: claims.jti.as_deref().map(StateKey::of),
            jti: claims.jti.map(|jti| Arc::from(jti.as_ref())),
            issued_at_s: claims.iat,
            step_up: StepUpProof {
                methods_ok: amr_ok && acr_ok,
                auth_time_s: claims.auth_time,
            },
        })
    }
}

/// Whether two `typ` values name one media type: case-insensitively, and with `application/`
/// understood before a value without a `/` (RFC 7515 section 4.1.9).
fn same_media_type(a: &str, b: &str) -> bool {
    fn full(typ: &str) -> impl Iterator<Item = u8> + '_ {
        let prefix: &[u8] = if typ.contains('/') {
            b""
        } else {
            b"application/"
        };
        prefix
            .iter()
            .chain(typ.as_bytes())
            .map(u8::to_ascii_lowercase)
    }
    full(a).eq(full(b))
}

fn decode_part(part: &str, name: &str) -> Result<Vec<u8>, Refusal> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|err| refuse(Reason::Malformed, format!("{name}: not base64url: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::KeySettings;
    use ring::hmac;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn settings() -> JwtSettings {
        JwtSettings {
            issuer: Some("iss-a".into()),
            audience: Some("aud-a".into()),
            typ: None,
            leeway_s: 10,
            customer_claim: "sub".into(),
            require_exp: true,
            cache_size: 100,
            cache_ttl_s: 60,
            step_up: StepUpSettings::default(),
            keys: vec![KeySettings {
                kid: "k1".into(),
                alg: "HS256".into(),
                secret_b64: Some(URL_SAFE_NO_PAD.encode(SECRET)),
                ..KeySettings::default()
            }],
        }
    }

    trait StepUpFixture {
        fn jwt_step_up(&mut self, amr: Option<&str>, acr: &[&str], max_age_s: Option<u64>);
    }

    impl StepUpFixture for JwtSettings {
        fn jwt_step_up(&mut self, amr: Option<&str>, acr: &[&str], max_age_s: Option<u64>) {
            self.step_up = StepUpSettings {
                amr: amr.map(str::to_owned),
                acr: acr.iter().map(|a| a.to_string()).collect(),
                max_age_s,
            };
        }
    }

    fn sign(header: &str, claims: &str, secret: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn token(claims: &str) -> String {
        sign(r#"{"alg":"HS256","kid":"k1"}"#, claims, SECRET)
    }

    fn reason(verifier: &Verifier, token: &str, now: u64) -> Reason {
        verifier.verify(token, now).unwrap_err().reason
    }

    const GOOD: &str = r#"{"sub":"c-1","iss":"iss-a","aud":"aud-a","exp":1000,"nbf":100}"#;

    #[test]
    fn accepts_a_good_token_and_caches_it() {
        let verifier = Verifier::build(&settings()).unwrap();
        let verified = verifier.verify(&token(GOOD), 500).unwrap();
        assert_eq!(&*verified.customer, "c-1");
        assert_eq!(verified.cache_until_s, 1010);
        assert_eq!(verifier.cache().len(), 1);
    }

    #[test]
    fn claim_checks_have_their_reasons() {
        let v = Verifier::build(&settings()).unwrap();
        assert_eq!(reason(&v, &token(GOOD), 1010), Reason::Expired);
        assert_eq!(reason(&v, &token(GOOD), 89), Reason::NotYetValid);
        let wrong_iss = GOOD.replace("iss-a", "iss-b");
        assert_eq!(reason(&v, &token(&wrong_iss), 500), Reason::WrongIssuer);
        let wrong_aud = GOOD.replace(r#""aud-a""#, r#"["x","y"]"#);
        assert_eq!(reason(&v, &token(&wrong_aud), 500), Reason::WrongAudience);
        let no_sub = GOOD.replace(r#""sub":"c-1","#, "");
        assert_eq!(reason(&v, &token(&no_sub), 500), Reason::MissingCustomer);
        let num_sub = GOOD.replace(r#""c-1""#, "42");
        assert_eq!(reason(&v, &token(&num_sub), 500), Reason::MissingCustomer);
        let no_exp = GOOD.replace(r#""exp":1000,"#, "");
        assert_eq!(reason(&v, &token(&no_exp), 500), Reason::Malformed);
    }

    #[test]
    fn with_a_lifetime_limit_tokens_must_say_when_they_were_issued_and_not_outlive_it() {
        let mut v = Verifier::build(&settings()).unwrap();
        v.limit_token_lifetime(Some(900));
        // exp - iat + leeway: 800 + 10 fits in 900; 900 + 10 does not.
        let fits = GOOD.replace(r#""nbf":100"#, r#""nbf":100,"iat":200"#);
        assert!(v.verify(&token(&fits), 500).is_ok());
        let too_long = GOOD.replace(r#""nbf":100"#, r#""nbf":100,"iat":100"#);
        let refusal = v.verify(&token(&too_long), 500).unwrap_err();
        assert_eq!(refusal.reason, Reason::Malformed);
        assert!(
            refusal.detail.contains("max_token_lifetime_s = 900"),
            "{}",
            refusal.detail
        );
        // Without iat a cut-off could not tell when the token was issued, nor how long it lives.
        assert_eq!(reason(&v, &token(GOOD), 500), Reason::Malformed);
        v.limit_token_lifetime(None);
        assert!(v.verify(&token(GOOD), 500).is_ok());
    }

    #[test]
    fn audience_may_be_a_list() {
        let v = Verifier::build(&settings()).unwrap();
        let many = GOOD.replace(r#""aud-a""#, r#"["x","aud-a"]"#);
        assert!(v.verify(&token(&many), 500).is_ok());
    }

    #[test]
    fn header_attacks_are_refused() {
        let v = Verifier::build(&settings()).unwrap();
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode(GOOD)
        );
        assert_eq!(reason(&v, &none, 500), Reason::AlgNotAllowed);
        let hs512 = sign(r#"{"alg":"HS512","kid":"k1"}"#, GOOD, SECRET);
        assert_eq!(reason(&v, &hs512, 500), Reason::AlgNotAllowed);
        let other_kid = sign(r#"{"alg":"HS256","kid":"k2"}"#, GOOD, SECRET);
        assert_eq!(reason(&v, &other_kid, 500), Reason::UnknownKid);
        let crit = sign(r#"{"alg":"HS256","kid":"k1","crit":["x"]}"#, GOOD, SECRET);
        assert_eq!(reason(&v, &crit, 500), Reason::Malformed);
        let wrong_key = sign(r#"{"alg":"HS256","kid":"k1"}"#, GOOD, &[7u8; 32]);
        assert_eq!(reason(&v, &wrong_key, 500), Reason::BadSignature);
    }

    #[test]
    fn the_header_must_be_an_object_with_one_alg() {
        let v = Verifier::build(&settings()).unwrap();
        for header in [
            r#"["HS256","k1"]"#,
            r#"{"kid":"k1"}"#,
            r#"{"alg":"HS256","alg":"HS256","kid":"k1"}"#,
            r#"{"alg":"HS256","kid":"k1","crit":null}"#,
        ] {
            let forged = sign(header, GOOD, SECRET);
            assert_eq!(reason(&v, &forged, 500), Reason::Malformed, "{header}");
        }
    }

    #[test]
    fn typ_compares_as_a_media_type() {
        assert!(same_media_type("at+jwt", "at+jwt"));
        assert!(same_media_type("at+JWT", "application/AT+jwt"));
        assert!(same_media_type("application/at+jwt", "at+jwt"));
        assert!(!same_media_type("jwt", "at+jwt"));
        assert!(!same_media_type("text/at+jwt", "at+jwt"));
        assert!(same_media_type("", "application/"));
    }

    #[test]
    fn a_required_typ_must_be_given_and_match() {
        let mut s = settings();
        s.typ = Some("at+jwt".into());
        let v = Verifier::build(&s).unwrap();
        for header in [
            r#"{"alg":"HS256","kid":"k1","typ":"at+jwt"}"#,
            r#"{"typ":"application/at+jwt","alg":"HS256","kid":"k1"}"#,
            r#"{"alg":"HS256","kid":"k1","typ":"AT+JWT"}"#,
        ] {
            assert!(
                v.verify(&sign(header, GOOD, SECRET), 500).is_ok(),
                "{header}"
            );
        }
        for header in [
            r#"{"alg":"HS256","kid":"k1"}"#,
            r#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#,
            r#"{"alg":"HS256","kid":"k1","typ":"text/at+jwt"}"#,
        ] {
            let refusal = v.verify(&sign(header, GOOD, SECRET), 500).unwrap_err();
            assert_eq!(refusal.reason, Reason::WrongType, "{header}");
        }
        // A typ that is not a string is malformed, whether or not one is required.
        let plain = Verifier::build(&settings()).unwrap();
        for v in [&v, &plain] {
            for header in [
                r#"{"alg":"HS256","kid":"k1","typ":7}"#,
                r#"{"alg":"HS256","kid":"k1","typ":null}"#,
            ] {
                assert_eq!(
                    reason(v, &sign(header, GOOD, SECRET), 500),
                    Reason::Malformed
                );
            }
        }
        // Without a required typ, any string typ is accepted.
        let any = sign(r#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#, GOOD, SECRET);
        assert!(plain.verify(&any, 500).is_ok());
    }

    #[test]
    fn a_member_named_twice_is_malformed_and_named() {
        let v = Verifier::build(&settings()).unwrap();
        let detail = |tok: &str| {
            let refusal = v.verify(tok, 500).unwrap_err();
            assert_eq!(refusal.reason, Reason::Malformed, "{}", refusal.detail);
            refusal.detail
        };
        for (header, name) in [
            (r#"{"alg":"HS256","kid":"k1","alg":"HS256"}"#, "alg"),
            (r#"{"alg":"HS256","kid":"k1","kid":"k1"}"#, "kid"),
            (r#"{"alg":"HS256","kid":null,"kid":"k1"}"#, "kid"),
            (
                r#"{"alg":"HS256","kid":"k1","typ":"JWT","typ":"JWT"}"#,
                "typ",
            ),
            (r#"{"alg":"HS256","kid":"k1","foo":1,"foo":1}"#, "foo"),
            (r#"{"alg":"HS256","kid":"k1","jwk":{"k":"a","k":"b"}}"#, "k"),
        ] {
            let got = detail(&sign(header, GOOD, SECRET));
            assert!(
                got.starts_with(&format!("header: duplicate member {name:?}")),
                "{got}"
            );
        }
        let claims = GOOD.trim_end_matches('}');
        for (extra, name) in [
            (r#","sub":"c-2""#, "sub"),
            (r#","exp":1000"#, "exp"),
            (r#","foo":1,"foo":2"#, "foo"),
            (r#","nested":{"a":1,"a":1}"#, "a"),
            (r#","list":[{"b":[{"c":1,"c":2}]}]"#, "c"),
        ] {
            let got = detail(&token(&format!("{claims}{extra}}}")));
            assert!(
                got.starts_with(&format!("claims: duplicate member {name:?}")),
                "{got}"
            );
        }
        // The customer claim, when unregistered, is still walked for repeats.
        let mut s = settings();
        s.customer_claim = "cust".into();
        let v = Verifier::build(&s).unwrap();
        let nested = format!(r#"{claims},"cust":{{"id":"c-1","id":"c-2"}}}}"#);
        assert_eq!(reason(&v, &token(&nested), 500), Reason::Malformed);
        let plain = format!(r#"{claims},"cust":{{"id":"c-1"}}}}"#);
        assert_eq!(reason(&v, &token(&plain), 500), Reason::MissingCustomer);
        let named = format!(r#"{claims},"cust":"c-7"}}"#);
        assert_eq!(&*v.verify(&token(&named), 500).unwrap().customer, "c-7");
        // One name in two objects is no repeat.
        let v = Verifier::build(&settings()).unwrap();
        let apart = format!(r#"{claims},"x":{{"sub":1}},"y":[{{"sub":2}},{{"sub":3}}]}}"#);
        assert!(v.verify(&token(&apart), 500).is_ok());
    }

    #[test]
    fn a_registered_claim_naming_the_customer_is_still_checked() {
        let mut s = settings();
        s.customer_claim = "iss".into();
        let v = Verifier::build(&s).unwrap();
        assert_eq!(&*v.verify(&token(GOOD), 500).unwrap().customer, "iss-a");
        let wrong_iss = GOOD.replace("iss-a", "iss-b");
        assert_eq!(reason(&v, &token(&wrong_iss), 500), Reason::WrongIssuer);
        s.customer_claim = "exp".into();
        let v = Verifier::build(&s).unwrap();
        assert_eq!(reason(&v, &token(GOOD), 500), Reason::MissingCustomer);
        for claim in ["jti", "acr"] {
            s.customer_claim = claim.into();
            let v = Verifier::build(&s).unwrap();
            let named = GOOD.replace(r#""nbf":100"#, &format!(r#""nbf":100,"{claim}":"c-9""#));
            assert_eq!(&*v.verify(&token(&named), 500).unwrap().customer, "c-9");
        }
        assert_eq!(reason(&v, &token(GOOD), 2000), Reason::Expired);
    }

    #[test]
    fn iat_in_the_future_is_not_yet_valid() {
        let v = Verifier::build(&settings()).unwrap();
        let future = GOOD.replace(r#""nbf":100"#, r#""nbf":100,"iat":541"#);
        assert_eq!(reason(&v, &token(&future), 500), Reason::NotYetValid);
        let within_leeway = GOOD.replace(r#""nbf":100"#, r#""nbf":100,"iat":510"#);
        assert!(v.verify(&token(&within_leeway), 500).is_ok());
        let not_a_number = GOOD.replace(r#""nbf":100"#, r#""nbf":100,"iat":"soon""#);
        assert_eq!(reason(&v, &token(&not_a_number), 500), Reason::Malformed);
    }

    #[test]
    fn revocations_apply_to_cached_tokens_too() {
        let v = Verifier::build(&settings()).unwrap();
        let with_jti = GOOD.replace(r#""nbf":100"#, r#""nbf":100,"jti":"t-1","iat":200"#);
        let tok = token(&with_jti);
        assert!(v.verify(&tok, 500).is_ok());
        v.revocations().revoke_token("t-1", 1010, 500);
        assert_eq!(reason(&v, &tok, 500), Reason::TokenRevoked);
        // Once forgotten (after the token's expiry), the list stays small.
        v.revocations().revoke_token("t-2", 2000, 1011);
        assert_eq!(v.revocations().counts().tokens, 1);

        let fresh = GOOD.replace(r#""nbf":100"#, r#""nbf":100,"iat":300"#);
        let no_iat = token(GOOD);
        assert!(v.verify(&token(&fresh), 500).is_ok());
        v.revocations().revoke_customer("c-1", 250.0, 500);
        assert_eq!(
            reason(&v, &token(&with_jti.replace("t-1", "t-9")), 500),
            Reason::TokenRevoked
        );
        assert!(
            v.verify(&token(&fresh), 500).is_ok(),
            "issued after the cut-off"
        );
        assert_eq!(reason(&v, &no_iat, 500), Reason::TokenRevoked);
        assert!(v.revocations().lift_customer("c-1", 500));
        assert!(v.verify(&no_iat, 500).is_ok());
    }

    #[test]
    fn step_up_needs_every_configured_part() {
        let mut s = settings();
        let plain = Verifier::build(&s).unwrap();
        let verified = plain.verify(&token(GOOD), 500).unwrap();
        assert!(plain
            .step_up(&verified, 500)
            .unwrap_err()
            .contains("no step-up proof"));

        s.jwt_step_up(Some("mfa"), &["gold"], Some(300));
        let v = Verifier::build(&s).unwrap();
        let proof = |extra: &str| {
            let claims = GOOD.replace(r#""nbf":100"#, &format!(r#""nbf":100,{extra}"#));
            v.verify(&token(&claims), 500).unwrap()
        };
        let full = proof(r#""amr":["pwd","mfa"],"acr":"gold","auth_time":400"#);
        assert_eq!(v.step_up(&full, 500), Ok(()));
        let stale = v.step_up(&full, 701).unwrap_err();
        assert!(stale.contains("auth_time within the last 300 s"), "{stale}");
        let no_mfa = proof(r#""amr":["pwd"],"acr":"gold","auth_time":400"#);
        assert!(v
            .step_up(&no_mfa, 500)
            .unwrap_err()
            .contains("amr including \"mfa\""));
        let bad_acr = proof(r#""amr":["mfa"],"acr":"silver","auth_time":400"#);
        assert!(v.step_up(&bad_acr, 500).is_err());
        let no_time = proof(r#""amr":["mfa"],"acr":"gold""#);
        assert!(v.step_up(&no_time, 500).is_err());
    }

    #[test]
    fn structural_damage_is_malformed() {
        let v = Verifier::build(&settings()).unwrap();
        let good = token(GOOD);
        let truncated = reason(&v, &good[..good.len() - 5], 500);
        assert!(matches!(
            truncated,
            Reason::Malformed | Reason::BadSignature
        ));
        let unsigned = &good[..=good.rfind('.').unwrap()];
        assert_eq!(reason(&v, unsigned, 500), Reason::BadSignature);
        assert_eq!(reason(&v, "a.b", 500), Reason::Malformed);
        assert_eq!(reason(&v, "a.b.c.d", 500), Reason::Malformed);
        assert_eq!(reason(&v, "!!.??.**", 500), Reason::Malformed);
        assert_eq!(reason(&v, &"a".repeat(9000), 500), Reason::Malformed);
        let not_json = sign(r#"{"alg":"HS256","kid":"k1"}"#, "not json", SECRET);
        assert_eq!(reason(&v, &not_json, 500), Reason::Malformed);
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let v = Verifier::build(&settings()).unwrap();
        let good = token(GOOD);
        let parts: Vec<&str> = good.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(GOOD.replace("c-1", "c-2"));
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(reason(&v, &tampered, 500), Reason::BadSignature);
    }

    #[test]
    fn authorization_header_forms() {
        let v = Verifier::build(&settings()).unwrap();
        assert_eq!(
            v.verify_header(None, 500).unwrap_err().reason,
            Reason::MissingToken
        );
        let basic = v.verify_header(Some("Basic abc"), 500).unwrap_err();
        assert_eq!(basic.reason, Reason::Malformed);
        let bearer = format!("bearer {}", token(GOOD));
        assert!(v.verify_header(Some(&bearer), 500).is_ok());
    }

    #[test]
    fn short_secrets_and_unknown_algs_are_refused() {
        let mut s = settings();
        s.keys[0].secret_b64 = Some(URL_SAFE_NO_PAD.encode(b"short"));
        s.keys.push(KeySettings {
            kid: "k2".into(),
            alg: "none".into(),
            ..KeySettings::default()
        });
        let errors = Verifier::build(&s).err().unwrap();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].index, 0);
        assert!(errors[1].message.starts_with("alg:"));
    }
}
