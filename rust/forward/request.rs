//! The request as it leaves for a cell.

use super::headers::{connection_tokens, is_not_forwarded};
use crate::cells::Cell;
use crate::reason::{Reason, Refusal};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request};

/// A request as it leaves for a cell.
pub struct Outbound {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub request_id: String,
    pub client_ip: String,
}

/// The request as it goes to `cell`: origin-form target, hop-by-hop headers dropped, routing
/// headers set by the gateway alone.
pub fn build_request(cell: &Cell, outbound: Outbound) -> Result<Request<Full<Bytes>>, Refusal> {
    let bad = |detail: String| Refusal::new(Reason::Malformed, detail);
    let method = Method::from_bytes(outbound.method.as_bytes())
        .map_err(|_| bad(format!("method {:?} is not valid", outbound.method)))?;
    let mut request = Request::builder()
        .method(method)
        .uri(outbound.path_and_query.as_str())
        .body(Full::new(outbound.body))
        .map_err(|err| bad(format!("request target: {err}")))?;
    let headers = request.headers_mut();
    let tokens = connection_tokens(
        outbound
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    let mut forwarded_for: Option<String> = None;
    for (name, value) in &outbound.headers {
        if is_not_forwarded(name, &tokens) {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = Some(match forwarded_for {
                Some(list) => format!("{list}, {value}"),
                None => value.clone(),
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
    let forwarded_for = match forwarded_for {
        Some(list) => format!("{list}, {}", outbound.client_ip),
        None => outbound.client_ip,
    };
    set(headers, "host", &cell.authority);
    set(headers, "x-forwarded-for", &forwarded_for);
    set(headers, "x-cell-id", &cell.id);
    set(headers, "x-encryption-level", cell.encryption.name());
    set(headers, "x-request-id", &outbound.request_id);
    Ok(request)
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::router;

    fn outbound(headers: &[(&str, &str)]) -> Outbound {
        Outbound {
            method: "POST".into(),
            path_and_query: "/api/transfers?x=1".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Bytes::from_static(b"{}"),
            request_id: "rid".into(),
            client_ip: "10.0.0.9".into(),
        }
    }

    #[test]
    fn strips_hop_by_hop_and_sets_routing_headers() {
        let router = router();
        let cell = router.cells().get("corp-eu-1").unwrap();
        let request = build_request(
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
        bad.method = "BAD METHOD".into();
        assert_eq!(
            build_request(cell, bad).unwrap_err().reason,
            Reason::Malformed
        );
    }
}
