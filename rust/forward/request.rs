//! The request as it leaves for a cell.

use super::headers::{connection_tokens, is_not_forwarded};
use crate::cells::Cell;
use crate::client_address::forwarded_for;
use crate::reason::{Reason, Refusal};
use crate::router::Route;
use crate::trace::bounded_tracestate;
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::http::uri::{Parts, PathAndQuery, Scheme};
use hyper::{HeaderMap, Method, Request, Uri};
use std::borrow::Cow;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_CELL_ID: HeaderName = HeaderName::from_static("x-cell-id");
const X_ENCRYPTION_LEVEL: HeaderName = HeaderName::from_static("x-encryption-level");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_CUSTOMER_ID: HeaderName = HeaderName::from_static("x-customer-id");
const X_CUSTOMER_TIER: HeaderName = HeaderName::from_static("x-customer-tier");
const X_RISK_LEVEL: HeaderName = HeaderName::from_static("x-risk-level");
const X_STEP_UP: HeaderName = HeaderName::from_static("x-step-up");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// The headers the gateway sets on every forwarded request.
const ROUTING_HEADERS: usize = 14;

/// What the client sent, borrowed, as it goes on to a cell.
pub struct Outbound<'a> {
    pub method: &'a str,
    /// The canonical path in its wire form (`CanonicalPath::wire`).
    pub path: &'a str,
    /// The query as the client sent it, without `?`.
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Bytes,
    /// How the client reached the gateway (`http` or `https`), for X-Forwarded-Proto.
    pub scheme: &'a str,
}

/// The request as it goes to `route`'s cell (its body the client's bytes, not copied): origin-form target, hop-by-hop headers and every
/// header the gateway vouches for dropped from what the client sent, then the gateway's own set:
/// routing (`X-Cell-ID`, `X-Request-ID`, ...), identity (`X-Customer-ID`, `X-Customer-Tier`,
/// `X-Risk-Level`, `X-Step-Up`), `X-Forwarded-*` and trace context. The bearer token stays
/// behind unless the cell asks for it.
pub fn build_request(
    route: &Route,
    tier: &str,
    outbound: Outbound<'_>,
    request_id: &str,
) -> Result<Request<Bytes>, Refusal> {
    let cell = route.cell();
    let bad = |detail: String| Refusal::new(Reason::Malformed, detail);
    let method = Method::from_bytes(outbound.method.as_bytes())
        .map_err(|_| bad(format!("method {:?} is not valid", outbound.method)))?;
    let target = match outbound.query {
        "" => Cow::Borrowed(outbound.path),
        query => Cow::Owned(format!("{}?{query}", outbound.path)),
    };
    // A second handle on the body (a reference count, not a copy), for the signer.
    let body = outbound.body.clone();
    let target =
        PathAndQuery::try_from(&*target).map_err(|err| bad(format!("request target: {err}")))?;
    let mut request = Request::builder()
        .method(method)
        .uri(cell_uri(cell, target))
        .body(outbound.body)
        .map_err(|err| bad(format!("request target: {err}")))?;
    let headers = request.headers_mut();
    headers.reserve(outbound.headers.len() + ROUTING_HEADERS);
    let tokens = connection_tokens(outbound.headers.iter().copied());
    let trusted_peer = !route.via.is_empty();
    let mut proto = None;
    let mut host = None;
    let mut forwarded_host = None;
    for &(name, value) in outbound.headers {
        if name.eq_ignore_ascii_case("host") {
            host.get_or_insert(value);
        }
        if trusted_peer {
            if name.eq_ignore_ascii_case("x-forwarded-proto") {
                proto.get_or_insert(value);
            } else if name.eq_ignore_ascii_case("x-forwarded-host") {
                forwarded_host.get_or_insert(value);
            }
        }
        if is_not_forwarded(name, &tokens)
            || (!cell.forward_bearer_token && name.eq_ignore_ascii_case("authorization"))
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    headers.insert(HOST, cell.host_header.clone());
    set(
        headers,
        X_FORWARDED_FOR,
        &forwarded_for(route.client, &route.via),
    );
    set(headers, X_FORWARDED_PROTO, proto.unwrap_or(outbound.scheme));
    if let Some(host) = forwarded_host.or(host) {
        set(headers, X_FORWARDED_HOST, host);
    }
    headers.insert(X_CELL_ID, cell.id_header.clone());
    headers.insert(
        X_ENCRYPTION_LEVEL,
        HeaderValue::from_static(cell.encryption.name()),
    );
    set(headers, X_REQUEST_ID, request_id);
    set(headers, X_CUSTOMER_ID, &route.customer);
    set(headers, X_CUSTOMER_TIER, tier);
    if let Some(risk) = &route.risk {
        headers.insert(
            X_RISK_LEVEL,
            HeaderValue::from_static(risk.level().as_str()),
        );
    }
    headers.insert(
        X_STEP_UP,
        HeaderValue::from_static(if route.step_up { "true" } else { "false" }),
    );
    if let Some(trace) = &route.trace {
        set(headers, TRACEPARENT, &trace.traceparent());
        let client_state = outbound
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("tracestate"))
            .map(|&(_, value)| value);
        if let Some(state) = trace
            .continued
            .then(|| bounded_tracestate(client_state))
            .flatten()
        {
            set(headers, TRACESTATE, &state);
        }
    }
    if let Some(signer) = &cell.signer {
        // The request id is unique and unpredictable: the signature's nonce.
        let now_s = route.started_us / 1_000_000;
        signer
            .sign(
                outbound.method,
                &cell.authority,
                outbound.path,
                outbound.query,
                headers,
                &body,
                now_s,
                request_id,
            )
            .map_err(|err| {
                Refusal::new(
                    Reason::Internal,
                    format!("cannot sign the request for {}: {err}", cell.id),
                )
            })?;
    }
    Ok(request)
}

/// The absolute URI of `target` at `cell`, as the pooled client needs it (it writes the
/// origin-form target on the wire; the scheme picks TLS); made of parts parsed once.
pub fn cell_uri(cell: &Cell, target: PathAndQuery) -> Uri {
    let mut parts = Parts::default();
    parts.scheme = Some(match cell.tls {
        Some(_) => Scheme::HTTPS,
        None => Scheme::HTTP,
    });
    parts.authority = Some(cell.uri_authority.clone());
    parts.path_and_query = Some(target);
    // Every part is present and already valid.
    Uri::from_parts(parts).unwrap_or_default()
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{client_address, RequestFacts};
    use crate::testing::{router, token};

    fn outbound<'a>(headers: &'a [(&'a str, &'a str)]) -> Outbound<'a> {
        Outbound {
            method: "POST",
            path: "/api/transfers",
            query: "x=1",
            headers,
            body: Bytes::from_static(b"{}"),
            scheme: "https",
        }
    }

    fn route(customer: &str) -> Route {
        let auth = format!("Bearer {}", token(customer));
        let mut route = router()
            .decide(&RequestFacts {
                method: "POST",
                path: "/api/transfers",
                authorization: Some(&auth),
                client: client_address("10.0.0.9"),
                user_agent: None,
            })
            .unwrap();
        route.trace = Some(crate::trace::TraceIds::new().context(None));
        route
    }

    fn build(route: &Route, outbound: Outbound<'_>) -> Result<Request<Bytes>, Refusal> {
        build_request(route, "corporate", outbound, "rid")
    }

    #[test]
    fn strips_hop_by_hop_and_sets_routing_headers() {
        let route = route("corp-eu");
        let request = build(
            &route,
            outbound(&[
                ("Connection", "keep-alive, X-Secret-Hop"),
                ("X-Secret-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Proxy-Authorization", "Basic x"),
                ("X-Cell-ID", "spoofed"),
                ("X-Forwarded-For", "1.2.3.4"),
                ("Host", "gateway.example"),
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
        assert_eq!(
            h["x-forwarded-for"], "10.0.0.9",
            "the client's own entry is dropped"
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "gateway.example");
        assert_eq!(h["host"], "127.0.0.1:4");
        assert_eq!(h.get_all("accept").iter().count(), 2);
        assert_eq!(
            request.uri().path_and_query().unwrap(),
            "/api/transfers?x=1"
        );
        assert_eq!(request.uri().authority().unwrap(), "127.0.0.1:4");
    }

    #[test]
    fn the_cell_learns_what_the_gateway_verified_and_never_the_token() {
        let route = route("corp-eu");
        let request = build(
            &route,
            outbound(&[
                ("Authorization", "Bearer secret-token"),
                ("x-customer-id", "someone-else"),
                ("X-CUSTOMER-TIER", "hnw"),
                ("X-Risk-Level", "low"),
                ("x-step-up", "true"),
                ("X-Real-IP", "1.1.1.1"),
                ("Forwarded", "for=1.1.1.1"),
                ("Signature", "sig=:AAAA:"),
                ("Signature-Input", "sig=()"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("tracestate", "vendor=1"),
            ]),
        )
        .unwrap();
        let h = request.headers();
        for gone in [
            "authorization",
            "x-real-ip",
            "forwarded",
            "signature",
            "signature-input",
            "tracestate",
        ] {
            assert!(h.get(gone).is_none(), "{gone} was forwarded");
        }
        assert_eq!(h["x-customer-id"], "corp-eu");
        assert_eq!(h.get_all("x-customer-id").iter().count(), 1);
        assert_eq!(h["x-customer-tier"], "corporate");
        assert_eq!(h["x-step-up"], "false");
        assert!(h.get("x-risk-level").is_none(), "no risk model, no level");
        let traceparent = h["traceparent"].to_str().unwrap();
        assert_eq!(
            traceparent,
            route.trace.unwrap().traceparent(),
            "the gateway's own trace, not the client's"
        );
    }

    #[test]
    fn a_cell_may_ask_for_the_bearer_token() {
        let router = router();
        let auth = format!("Bearer {}", token("corp-eu"));
        let route = router
            .decide(&RequestFacts {
                method: "GET",
                path: "/",
                authorization: Some(&auth),
                client: None,
                user_agent: None,
            })
            .unwrap();
        // The fixture's cells keep the default: the token stays behind.
        assert!(!route.cell().forward_bearer_token);
        let request = build(&route, outbound(&[("Authorization", "Bearer t")])).unwrap();
        assert!(request.headers().get("authorization").is_none());
        assert_eq!(request.headers()["x-forwarded-for"], "unknown");
    }

    #[test]
    fn a_bad_method_is_refused_not_panicked() {
        let route = route("corp-eu");
        let mut bad = outbound(&[]);
        bad.method = "BAD METHOD";
        assert_eq!(build(&route, bad).unwrap_err().reason, Reason::Malformed);
    }
}
