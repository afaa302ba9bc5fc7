//! The message as a signature reads it (RFC 9421 section 2): the component identifiers this
//! core supports, the [`Message`] view they are read from, and their canonical values.

use hyper::HeaderMap;

/// A request as its signature base reads it; implemented for a borrowed list of header pairs
/// and for hyper's `HeaderMap`, each with the derived parts beside it.
pub trait Message {
    /// The method, as sent (`POST`).
    fn method(&self) -> &str;
    /// The scheme (`https`); empty when not known, as on the gateway's side of a forward.
    fn scheme(&self) -> &str;
    /// The authority (`example.com`, `cell:8443`), as sent.
    fn authority(&self) -> &str;
    /// The path (`/foo`), without the query.
    fn path(&self) -> &str;
    /// The query without its `?`; empty when there is none.
    fn query(&self) -> &str;
    /// The value of every field line named `name` (lowercase), in the order they came.
    fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's;
}

/// A request whose headers are a borrowed list of `(name, value)` pairs (names in any case).
#[derive(Debug, Clone, Copy)]
pub struct PairsRequest<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

impl Message for PairsRequest<'_> {
    fn method(&self) -> &str {
        self.method
    }
    fn scheme(&self) -> &str {
        self.scheme
    }
    fn authority(&self) -> &str {
        self.authority
    }
    fn path(&self) -> &str {
        self.path
    }
    fn query(&self) -> &str {
        self.query
    }
    fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers
            .iter()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_bytes())
    }
}

/// A request whose headers are hyper's `HeaderMap`, as the gateway builds it to forward.
#[derive(Debug, Clone, Copy)]
pub struct HeaderMapRequest<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
}

impl Message for HeaderMapRequest<'_> {
    fn method(&self) -> &str {
        self.method
    }
    fn scheme(&self) -> &str {
        self.scheme
    }
    fn authority(&self) -> &str {
        self.authority
    }
    fn path(&self) -> &str {
        self.path
    }
    fn query(&self) -> &str {
        self.query
    }
    fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers
            .get_all(name)
            .into_iter()
            .map(|value| value.as_bytes())
    }
}

/// A covered component this core can sign and verify: the request's derived components and its
/// header fields (without `sf`, `bs`, `key`, `req` or `tr`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Component {
    Method,
    TargetUri,
    Authority,
    Scheme,
    RequestTarget,
    Path,
    Query,
    /// A header field, by its lowercase name.
    Field(String),
}

/// Why a component identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentError {
    /// A valid identifier this core does not implement (`@query-param`, `@status`, ...).
    Unsupported(String),
    /// Not a component identifier at all (an uppercase or empty field name, `@signature-params`).
    Invalid(String),
}

impl ComponentError {
    /// What was wrong, as a sentence.
    pub fn detail(&self) -> &str {
        match self {
            ComponentError::Unsupported(detail) | ComponentError::Invalid(detail) => detail,
        }
    }
}

/// Why a component's value could not be put in a signature base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// A covered header field the message does not have.
    Absent(String),
    /// A value with a line break, another control character or a non-ASCII byte.
    Unsignable(String),
}

/// Whether `byte` may appear in a header field name (RFC 9110 `tchar`, lowercase only).
fn is_lowercase_tchar(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether `name` is a lowercase header field name.
pub fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_lowercase_tchar)
}

impl Component {
    /// Parses a component name (the string of an identifier, without its parameters).
    pub fn parse(name: &str) -> Result<Component, ComponentError> {
        Ok(match name {
            "@method" => Component::Method,
            "@target-uri" => Component::TargetUri,
            "@authority" => Component::Authority,
            "@scheme" => Component::Scheme,
            "@request-target" => Component::RequestTarget,
            "@path" => Component::Path,
            "@query" => Component::Query,
            "@signature-params" => {
                return Err(ComponentError::Invalid(
                    "\"@signature-params\" cannot be a covered component".into(),
                ))
            }
            "@query-param" | "@status" => {
                return Err(ComponentError::Unsupported(format!(
                    "the derived component {name:?} is not supported"
                )))
            }
            derived if derived.starts_with('@') => {
                return Err(ComponentError::Invalid(format!(
                    "{derived:?} is not a derived component"
                )))
            }
            field if is_field_name(field) => Component::Field(field.to_owned()),
            field => {
                return Err(ComponentError::Invalid(format!(
                    "{field:?} is not a lowercase field name"
                )))
            }
        })
    }

    /// The component name as it appears, quoted, in Signature-Input and the signature base.
    pub fn name(&self) -> &str {
        match self {
            Component::Method => "@method",
            Component::TargetUri => "@target-uri",
            Component::Authority => "@authority",
            Component::Scheme => "@scheme",
            Component::RequestTarget => "@request-target",
            Component::Path => "@path",
            Component::Query => "@query",
            Component::Field(name) => name,
        }
    }

    /// Appends this component's canonical value in `message` to `out` (RFC 9421 sections 2.1,
    /// 2.2); refuses an absent header and a value that cannot be signed.
    pub fn write_value(&self, message: &impl Message, out: &mut Vec<u8>) -> Result<(), ValueError> {
        let start = out.len();
        match self {
            Component::Method => out.extend_from_slice(message.method().as_bytes()),
            Component::TargetUri => {
                out.extend_from_slice(message.scheme().as_bytes());
                out.extend_from_slice(b"://");
                out.extend_from_slice(message.authority().as_bytes());
                write_request_target(message, out);
            }
            Component::Authority => write_authority(message.scheme(), message.authority(), out),
            Component::Scheme => {
                out.extend(message.scheme().bytes().map(|b| b.to_ascii_lowercase()))
            }
            Component::RequestTarget => write_request_target(message, out),
            Component::Path => write_path(message.path(), out),
            Component::Query => {
                out.push(b'?');
                out.extend_from_slice(message.query().as_bytes());
            }
            Component::Field(name) => {
                let mut lines = 0;
                for value in message.header_values(name) {
                    if lines > 0 {
                        out.extend_from_slice(b", ");
                    }
                    out.extend_from_slice(trim_ows(value));
                    lines += 1;
                }
                if lines == 0 {
                    return Err(ValueError::Absent(format!(
                        "the covered header {name:?} is absent"
                    )));
                }
            }
        }
        // HTAB may sit inside a field value; nothing else outside printable ASCII may.
        if out[start..]
            .iter()
            .any(|&b| !(b == b'\t' || (b' '..=b'~').contains(&b)))
        {
            out.truncate(start);
            return Err(ValueError::Unsignable(format!(
                "the value of {:?} has a control character or a non-ASCII byte",
                self.name()
            )));
        }
        Ok(())
    }
}

/// `value` without leading and trailing spaces and tabs (RFC 9110 OWS).
fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

fn write_path(path: &str, out: &mut Vec<u8>) {
    if path.is_empty() {
        out.push(b'/');
    } else {
        out.extend_from_slice(path.as_bytes());
    }
}

fn write_request_target(message: &impl Message, out: &mut Vec<u8>) {
    write_path(message.path(), out);
    let query = message.query();
    if !query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
}

/// The authority lowercased, without the scheme's default port (RFC 9110 section 4.2.3). When
/// the scheme is not known, either default port is dropped, so the two sides agree whenever the
/// port is the default of the scheme actually used.
fn write_authority(scheme: &str, authority: &str, out: &mut Vec<u8>) {
    let is = |name: &str| scheme.is_empty() || scheme.eq_ignore_ascii_case(name);
    let host = match authority.rsplit_once(':') {
        Some((host, "80")) if is("http") => host,
        Some((host, "443")) if is("https") => host,
        _ => authority,
    };
    out.extend(host.bytes().map(|b| b.to_ascii_lowercase()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    /// RFC 9421 appendix B.2's test-request.
    const TEST_REQUEST_HEADERS: &[(&str, &str)] = &[
        ("Host", "example.com"),
        ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
        ("Content-Type", "application/json"),
        (
            "Content-Digest",
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
        ),
        ("Content-Length", "18"),
    ];

    fn test_request() -> PairsRequest<'static> {
        PairsRequest {
            method: "POST",
            scheme: "https",
            authority: "example.com",
            path: "/foo",
            query: "param=Value&Pet=dog",
            headers: TEST_REQUEST_HEADERS,
        }
    }

    fn value(component: &str, message: &impl Message) -> Result<String, ValueError> {
        let mut out = Vec::new();
        Component::parse(component)
            .unwrap()
            .write_value(message, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn derived_components_of_the_rfc_test_request() {
        let request = test_request();
        assert_eq!(value("@method", &request).unwrap(), "POST");
        assert_eq!(
            value("@target-uri", &request).unwrap(),
            "https://example.com/foo?param=Value&Pet=dog"
        );
        assert_eq!(value("@authority", &request).unwrap(), "example.com");
        assert_eq!(value("@scheme", &request).unwrap(), "https");
        assert_eq!(
            value("@request-target", &request).unwrap(),
            "/foo?param=Value&Pet=dog"
        );
        assert_eq!(value("@path", &request).unwrap(), "/foo");
        assert_eq!(value("@query", &request).unwrap(), "?param=Value&Pet=dog");
        assert_eq!(value("content-length", &request).unwrap(), "18");
        assert_eq!(
            value("date", &request).unwrap(),
            "Tue, 20 Apr 2021 02:07:55 GMT"
        );
    }

    #[test]
    fn empty_query_and_path() {
        let request = PairsRequest {
            path: "",
            query: "",
            ..test_request()
        };
        assert_eq!(value("@query", &request).unwrap(), "?");
        assert_eq!(value("@path", &request).unwrap(), "/");
        assert_eq!(value("@request-target", &request).unwrap(), "/");
        assert_eq!(
            value("@target-uri", &request).unwrap(),
            "https://example.com/"
        );
    }

    #[test]
    fn authority_is_lowercased_without_its_default_port() {
        let with = |scheme, authority| {
            value(
                "@authority",
                &PairsRequest {
                    scheme,
                    authority,
                    ..test_request()
                },
            )
            .unwrap()
        };
        assert_eq!(with("https", "Example.COM"), "example.com");
        assert_eq!(with("https", "example.com:443"), "example.com");
        assert_eq!(with("http", "example.com:80"), "example.com");
        assert_eq!(with("http", "example.com:443"), "example.com:443");
        assert_eq!(with("https", "example.com:8443"), "example.com:8443");
        assert_eq!(with("", "cell:443"), "cell");
        assert_eq!(with("", "cell:80"), "cell");
        assert_eq!(with("", "127.0.0.1:4"), "127.0.0.1:4");
        assert_eq!(with("https", "[::1]:443"), "[::1]");
    }

    #[test]
    fn header_values_are_trimmed_and_joined_in_order() {
        let headers = [
            ("X-Multi", " one "),
            ("Other", "x"),
            ("x-multi", "\ttwo,  three\t"),
            ("X-MULTI", ""),
        ];
        let request = PairsRequest {
            headers: &headers,
            ..test_request()
        };
        assert_eq!(value("x-multi", &request).unwrap(), "one, two,  three, ");
        assert_eq!(
            value("x-absent", &request).unwrap_err(),
            ValueError::Absent("the covered header \"x-absent\" is absent".into())
        );
    }

    #[test]
    fn header_map_reads_the_same_values() {
        let mut map = HeaderMap::new();
        map.append("x-multi", HeaderValue::from_static("one"));
        map.append("x-multi", HeaderValue::from_static("two"));
        map.append(
            "date",
            HeaderValue::from_static("Tue, 20 Apr 2021 02:07:55 GMT"),
        );
        let request = HeaderMapRequest {
            method: "GET",
            scheme: "",
            authority: "Cell.Internal:443",
            path: "/a",
            query: "",
            headers: &map,
        };
        assert_eq!(value("x-multi", &request).unwrap(), "one, two");
        assert_eq!(value("@authority", &request).unwrap(), "cell.internal");
        assert_eq!(value("@query", &request).unwrap(), "?");
        assert!(matches!(
            value("x-absent", &request),
            Err(ValueError::Absent(_))
        ));
    }

    #[test]
    fn unsignable_values_are_refused() {
        for bad in ["a\nb", "a\rb", "caf\u{e9}", "nul\0", "del\u{7f}", "end\n"] {
            let headers = [("x-bad", bad)];
            let request = PairsRequest {
                headers: &headers,
                ..test_request()
            };
            assert!(
                matches!(value("x-bad", &request), Err(ValueError::Unsignable(_))),
                "{bad:?}"
            );
        }
        let injected = PairsRequest {
            path: "/foo\n\"@method\": GET",
            ..test_request()
        };
        assert!(matches!(
            value("@path", &injected),
            Err(ValueError::Unsignable(_))
        ));
        let tab = [("x-tab", "a\tb")];
        let request = PairsRequest {
            headers: &tab,
            ..test_request()
        };
        assert_eq!(value("x-tab", &request).unwrap(), "a\tb");
    }

    #[test]
    fn identifiers_are_parsed_strictly() {
        assert_eq!(
            Component::parse("content-type").unwrap(),
            Component::Field("content-type".into())
        );
        for unsupported in ["@query-param", "@status"] {
            assert!(matches!(
                Component::parse(unsupported),
                Err(ComponentError::Unsupported(_))
            ));
        }
        for invalid in [
            "",
            "@",
            "@unknown",
            "@signature-params",
            "Content-Type",
            "a b",
            "a\"b",
            "x:y",
        ] {
            assert!(
                matches!(Component::parse(invalid), Err(ComponentError::Invalid(_))),
                "{invalid:?}"
            );
        }
        for component in [
            "@method",
            "@target-uri",
            "@authority",
            "@scheme",
            "@request-target",
            "@path",
            "@query",
            "x-request-id",
        ] {
            assert_eq!(Component::parse(component).unwrap().name(), component);
        }
    }
}
