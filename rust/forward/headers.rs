//! Which headers cross the gateway: hop-by-hop ones (RFC 9110 section 7.6.1) never do.

/// Headers that describe one connection, never forwarded (RFC 9110 section 7.6.1), plus the
/// framing, routing, identity, forwarding, trace and signature headers the gateway sets itself:
/// a client's own value of any of these never reaches a cell.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "x-cell-id",
    "x-encryption-level",
    "x-request-id",
    "x-customer-id",
    "x-customer-tier",
    "x-risk-level",
    "x-step-up",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
    "traceparent",
    "tracestate",
    "signature",
    "signature-input",
];

/// Whether `name` stays behind: hop-by-hop, listed by `Connection`, or set by the gateway.
pub fn is_not_forwarded(name: &str, connection_tokens: &[String]) -> bool {
    NOT_FORWARDED.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection_tokens
            .iter()
            .any(|t| name.eq_ignore_ascii_case(t))
}

/// The header names a `Connection` header lists, which are hop-by-hop too.
pub fn connection_tokens<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    headers
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}
