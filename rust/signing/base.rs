//! The signature base (RFC 9421 section 2.5): one line per covered component, then the
//! `"@signature-params"` line, serialised exactly as the Signature-Input member value.

use super::components::{Component, Message, ValueError};
use sfv::{KeyRef, ListSerializer, RefBareItem, StringRef};

/// One signature parameter (RFC 9421 section 2.3) this core reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Created(u64),
    Expires(u64),
    KeyId(String),
    Alg(String),
    Nonce(String),
    Tag(String),
}

impl Param {
    /// The parameter's name in Signature-Input.
    pub fn name(&self) -> &'static str {
        match self {
            Param::Created(_) => "created",
            Param::Expires(_) => "expires",
            Param::KeyId(_) => "keyid",
            Param::Alg(_) => "alg",
            Param::Nonce(_) => "nonce",
            Param::Tag(_) => "tag",
        }
    }
}

/// The signature parameters, in the order they were given or parsed (the order is signed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureParams {
    pub params: Vec<Param>,
}

impl SignatureParams {
    /// `created`, when given.
    pub fn created(&self) -> Option<u64> {
        self.params.iter().find_map(|p| match p {
            Param::Created(t) => Some(*t),
            _ => None,
        })
    }

    /// `expires`, when given.
    pub fn expires(&self) -> Option<u64> {
        self.params.iter().find_map(|p| match p {
            Param::Expires(t) => Some(*t),
            _ => None,
        })
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.params.iter().find_map(|p| match p {
            Param::KeyId(s) | Param::Alg(s) | Param::Nonce(s) | Param::Tag(s)
                if p.name() == name =>
            {
                Some(s.as_str())
            }
            _ => None,
        })
    }

    /// `keyid`, when given.
    pub fn keyid(&self) -> Option<&str> {
        self.text("keyid")
    }

    /// `alg`, when given.
    pub fn alg(&self) -> Option<&str> {
        self.text("alg")
    }

    /// `nonce`, when given.
    pub fn nonce(&self) -> Option<&str> {
        self.text("nonce")
    }

    /// `tag`, when given.
    pub fn tag(&self) -> Option<&str> {
        self.text("tag")
    }
}

/// Whether `value` can be an sf-string (printable ASCII, RFC 8941 section 3.3.3).
pub fn is_sf_string(value: &str) -> bool {
    value.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// Appends `value` as an sf-string; `value` must pass [`is_sf_string`].
pub fn write_sf_string(value: &str, out: &mut String) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Serialises the covered components and their parameters as the Signature-Input member value
/// (`("@method" "@path");created=1;keyid="k"`), with sfv.
pub fn serialize_params(
    components: &[Component],
    params: &SignatureParams,
) -> Result<String, String> {
    let bad = |what: &str, err: sfv::Error| format!("{what}: {err}");
    let mut out = String::with_capacity(64 + 24 * components.len());
    let mut list = ListSerializer::with_buffer(&mut out);
    {
        let mut inner = list.inner_list();
        for component in components {
            let name =
                StringRef::from_str(component.name()).map_err(|err| bad(component.name(), err))?;
            let _ = inner.bare_item(name);
        }
        let mut serialized = inner.finish();
        for param in &params.params {
            let key = KeyRef::from_str(param.name()).map_err(|err| bad(param.name(), err))?;
            let value: RefBareItem<'_> = match param {
                Param::Created(t) | Param::Expires(t) => RefBareItem::Integer(
                    sfv::Integer::try_from(*t).map_err(|err| bad(param.name(), err))?,
                ),
                Param::KeyId(s) | Param::Alg(s) | Param::Nonce(s) | Param::Tag(s) => {
                    RefBareItem::String(
                        StringRef::from_str(s).map_err(|err| bad(param.name(), err))?,
                    )
                }
            };
            serialized = serialized.parameter(key, value);
        }
    }
    let _ = list.finish();
    Ok(out)
}

/// Appends the signature base of `message` to `out`: a `"name": value` line per component,
/// then `"@signature-params": ` and `params_line` (the serialised parameters, as sent).
pub fn write_signature_base(
    message: &impl Message,
    components: &[Component],
    params_line: &str,
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    for component in components {
        write_line_start(component.name(), out);
        component.write_value(message, out)?;
        out.push(b'\n');
    }
    write_line_start("@signature-params", out);
    out.extend_from_slice(params_line.as_bytes());
    Ok(())
}

/// Appends `"name": ` (a component name never needs escaping: see [`Component::parse`]).
pub fn write_line_start(name: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\": ");
}

/// The signature base of `message` (see [`write_signature_base`]).
pub fn signature_base(
    message: &impl Message,
    components: &[Component],
    params_line: &str,
) -> Result<Vec<u8>, ValueError> {
    let mut out = Vec::with_capacity(256 + params_line.len());
    write_signature_base(message, components, params_line, &mut out)?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::signing::components::PairsRequest;

    /// RFC 9421 appendix B.2's test-request.
    pub(crate) const TEST_REQUEST_HEADERS: &[(&str, &str)] = &[
        ("Host", "example.com"),
        ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
        ("Content-Type", "application/json"),
        (
            "Content-Digest",
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
        ),
        ("Content-Length", "18"),
    ];
    pub(crate) const TEST_REQUEST_BODY: &[u8] = b"{\"hello\": \"world\"}";

    pub(crate) fn test_request() -> PairsRequest<'static> {
        PairsRequest {
            method: "POST",
            scheme: "https",
            authority: "example.com",
            path: "/foo",
            query: "param=Value&Pet=dog",
            headers: TEST_REQUEST_HEADERS,
        }
    }

    fn components(names: &[&str]) -> Vec<Component> {
        names.iter().map(|n| Component::parse(n).unwrap()).collect()
    }

    /// RFC 9421 appendix B.2.5's signature base, byte for byte.
    pub(crate) const B25_BASE: &str = concat!(
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
        "\"@authority\": example.com\n",
        "\"content-type\": application/json\n",
        "\"@signature-params\": (\"date\" \"@authority\" \"content-type\")",
        ";created=1618884473;keyid=\"test-shared-secret\""
    );

    /// RFC 9421 appendix B.2.6's signature base, byte for byte.
    pub(crate) const B26_BASE: &str = concat!(
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
        "\"@method\": POST\n",
        "\"@path\": /foo\n",
        "\"@authority\": example.com\n",
        "\"content-type\": application/json\n",
        "\"content-length\": 18\n",
        "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" ",
        "\"content-type\" \"content-length\");created=1618884473",
        ";keyid=\"test-key-ed25519\""
    );

    fn created_keyid(keyid: &str) -> SignatureParams {
        SignatureParams {
            params: vec![Param::Created(1618884473), Param::KeyId(keyid.into())],
        }
    }

    #[test]
    fn reproduces_rfc_9421_b_2_5() {
        let covered = components(&["date", "@authority", "content-type"]);
        let line = serialize_params(&covered, &created_keyid("test-shared-secret")).unwrap();
        let base = signature_base(&test_request(), &covered, &line).unwrap();
        assert_eq!(String::from_utf8(base).unwrap(), B25_BASE);
    }

    #[test]
    fn reproduces_rfc_9421_b_2_6() {
        let covered = components(&[
            "date",
            "@method",
            "@path",
            "@authority",
            "content-type",
            "content-length",
        ]);
        let line = serialize_params(&covered, &created_keyid("test-key-ed25519")).unwrap();
        let base = signature_base(&test_request(), &covered, &line).unwrap();
        assert_eq!(String::from_utf8(base).unwrap(), B26_BASE);
    }

    #[test]
    fn reproduces_the_rfc_9421_b_2_1_params_line() {
        // B.2.1 covers nothing: the base is the parameters line alone.
        let params = SignatureParams {
            params: vec![
                Param::Created(1618884473),
                Param::KeyId("test-key-rsa-pss".into()),
                Param::Nonce("b3k2pp5k7z-50gnwp.yemd".into()),
            ],
        };
        let line = serialize_params(&[], &params).unwrap();
        let base = signature_base(&test_request(), &[], &line).unwrap();
        assert_eq!(
            String::from_utf8(base).unwrap(),
            concat!(
                "\"@signature-params\": ();created=1618884473;keyid=\"test-key-rsa-pss\"",
                ";nonce=\"b3k2pp5k7z-50gnwp.yemd\""
            )
        );
    }

    #[test]
    fn params_keep_their_order_and_strings_are_escaped() {
        let params = SignatureParams {
            params: vec![
                Param::Nonce("a\"b\\c".into()),
                Param::Tag("t".into()),
                Param::Alg("ed25519".into()),
                Param::Expires(20),
                Param::KeyId("k".into()),
                Param::Created(10),
            ],
        };
        let line = serialize_params(&components(&["@method"]), &params).unwrap();
        assert_eq!(
            line,
            "(\"@method\");nonce=\"a\\\"b\\\\c\";tag=\"t\";alg=\"ed25519\";expires=20;keyid=\"k\";created=10"
        );
        let mut direct = String::new();
        write_sf_string("a\"b\\c", &mut direct);
        assert_eq!(direct, "\"a\\\"b\\\\c\"");
        assert_eq!(params.created(), Some(10));
        assert_eq!(params.expires(), Some(20));
        assert_eq!(params.keyid(), Some("k"));
        assert_eq!(params.alg(), Some("ed25519"));
        assert_eq!(params.nonce(), Some("a\"b\\c"));
        assert_eq!(params.tag(), Some("t"));
    }

    #[test]
    fn unserialisable_params_are_errors_not_panics() {
        let params = SignatureParams {
            params: vec![Param::Nonce("line\nbreak".into())],
        };
        assert!(serialize_params(&[], &params).is_err());
        let params = SignatureParams {
            params: vec![Param::Created(u64::MAX)],
        };
        assert!(serialize_params(&[], &params).is_err());
        assert!(!is_sf_string("caf\u{e9}"));
        assert!(is_sf_string("ok \"quoted\" \\"));
    }

    #[test]
    fn an_absent_covered_header_fails_the_base() {
        let covered = components(&["x-absent"]);
        assert!(matches!(
            signature_base(&test_request(), &covered, "()"),
            Err(ValueError::Absent(_))
        ));
    }
}
