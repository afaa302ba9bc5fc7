//! The request as it leaves for a cell.

use super::headers::{connection_tokens, is_not_forwarded};
use crate::cells::Cell;
use crate::reason::{Reason, Refusal};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{HeaderMap, Method, Request};
use std::fmt::Display;
use std::net::IpAddr;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_CELL_ID: HeaderName = HeaderName::from_static("x-cell-id");
const X_ENCRYPTION_LEVEL: HeaderName = HeaderName::from_static("x-encryption-level");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The headers the gateway sets on every forwarded request.
const ROUTING_HEADERS: usize = 5;

/// What the client sent, borrowed, as it goes on to a cell.
pub struct Outbound<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Bytes,
}

/// The request as it goes to `cell`: origin-form target, hop-by-hop headers dropped, routing
/// headers set by the gateway alone (`client`, the client's address when known, ends
/// X-Forwarded-For).
pub fn build_request(
    cell: &Cell,
    outbound: Outbound<'_>,
    request_id: &str,
    client: Option<IpAddr>,
) -> Result<Request<Full<Bytes>>, Refusal> {
    let bad = |detail: String| Refusal::new(Reason::Malformed, detail);
    let method = Method::from_bytes(outbound.method.as_bytes())
        .map_err(|_| bad(format!("method {:?} is not valid", outbound.method)))?;
    let mut request = Request::builder()
        .method(method)
        .uri(outbound.path_and_query)
        .body(Full::new(outbound.body))
        .map_err(|err| bad(format!("request target: {err}")))?;
    let headers = request.headers_mut();
    headers.reserve(outbound.headers.len() + ROUTING_HEADERS);
    let tokens = connection_tokens(outbound.headers.iter().copied());
    let mut forwarded_for: Option<String> = None;
    for &(name, value) in outbound.headers {
        if is_not_forwarded(name, &tokens) {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = Some(match forwarded_for {
                Some(list) => format!("{list}, {value}"),
                None => value.to_owned(),
            });
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    let client: &dyn Display = match &client {
        Some(ip) => ip,
        None => &"unknown",
    };
    let forwarded_for = match forwarded_for {
        Some(list) => format!("{list}, {client}"),
        None => client.to_string(),
    };
    headers.insert(HOST, cell.host_header.clone());
    set(headers, X_FORWARDED_FOR, &forwarded_for);
    headers.insert(X_CELL_ID, cell.id_header.clone());
    headers.insert(
        X_ENCRYPTION_LEVEL,
        HeaderValue::from_static(cell.encryption.name()),
    );
    set(headers, X_REQUEST_ID, request_id);
    Ok(request)
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::router;

    fn outbound<'a>(headers: &'a [(&'a str, &'a str)]) -> Outbound<'a> {
        Outbound {
            method: "POST",
            path_and_query: "/api/transfers?x=1",
            headers,
            body: Bytes::from_static(b"{}"),
        }
    }

    fn build(cell: &Cell, outbound: Outbound<'_>) -> Result<Request<Full<Bytes>>, Refusal> {
        build_request(cell, outbound, "rid", Some(IpAddr::from([10, 0, 0, 9])))
    }

    #[test]
    fn strips_hop_by_hop_and_sets_routing_headers() {
        let router = router();
        let cell = router.cells().get("corp-eu-1").unwrap();
        let request = build(
            cell,
            outbound(&[
                ("Connection", "keep-alive, X-Secret-Hop"),
                ("X-Secret-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Proxy-Authorization", "Basic x"),
                ("X-Cell-ID", "spoofed"),
                ("X-Forwarded-For", "1.2.3.4"),
                ("Accept", "application/json"),
                ("Accept", "text/plain"),
            ]),
        )
        .unwrap();
        let h = request.headers();
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "te",
            "proxy-authorization",
        ] {
            assert!(h.get(gone).is_none(), "{gone} was forwarded");
        }
        assert_eq!(h["x-cell-id"], "corp-eu-1");
        assert_eq!(h["x-encryption-level"], "enhanced");
        assert_eq!(h["x-request-id"], "rid");
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["host"], "127.0.0.1:4");
        assert_eq!(h.get_all("accept").iter().count(), 2);
        assert_eq!(request.uri().to_string(), "/api/transfers?x=1");
    }

    #[test]
    fn a_bad_method_is_refused_not_panicked() {
        let router = router();
        let cell = router.cells().get("corp-eu-1").unwrap();
        let mut bad = outbound(&[]);
        bad.method = "BAD METHOD";
        assert_eq!(build(cell, bad).unwrap_err().reason, Reason::Malformed);
    }
}
