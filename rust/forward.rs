//! Forwarding to cells over a pooled keep-alive HTTP/1.1 client.

use crate::cells::Cell;
use crate::reason::{Reason, Refusal};
use crate::settings::ForwardSettings;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Headers that describe one connection, never forwarded (RFC 9110 section 7.6.1), plus the
/// framing and routing headers the gateway sets itself.
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
];

/// A request as it leaves for a cell.
pub struct Outbound {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub request_id: String,
    pub client_ip: String,
}

/// A cell's answer, ready to hand to the client.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// The pooled client to every cell; one keep-alive pool per cell origin.
pub struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    request_timeout: Duration,
    max_response_bytes: usize,
}

fn is_not_forwarded(name: &str, connection_tokens: &[String]) -> bool {
    NOT_FORWARDED.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection_tokens
            .iter()
            .any(|t| name.eq_ignore_ascii_case(t))
}

/// The header names a `Connection` header lists, which are hop-by-hop too.
fn connection_tokens<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    headers
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

impl Forwarder {
    /// A forwarder with the configured timeouts and pool size.
    pub fn new(settings: &ForwardSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(settings.pool_idle_timeout_ms))
            .pool_max_idle_per_host(settings.pool_max_idle_per_cell)
            .build(connector);
        Forwarder {
            client,
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            max_response_bytes: settings.max_response_bytes,
        }
    }

    fn build_request(
        &self,
        cell: &Cell,
        outbound: Outbound,
    ) -> Result<Request<Full<Bytes>>, Refusal> {
        let bad = |detail: String| Refusal::new(Reason::Malformed, detail);
        let method = Method::from_bytes(outbound.method.as_bytes())
            .map_err(|_| bad(format!("method {:?} is not valid", outbound.method)))?;
        let uri = format!("{}{}", cell.origin, outbound.path_and_query);
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
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

    /// Sends `outbound` to `cell` and collects its answer, or says why that failed.
    pub async fn send(&self, cell: &Cell, outbound: Outbound) -> Result<Answer, Refusal> {
        let request = self.build_request(cell, outbound)?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|err| {
                let what = if err.is_connect() {
                    "cannot connect"
                } else {
                    "connection failed"
                };
                Refusal::new(
                    Reason::CellUnreachable,
                    format!("{}: {what}: {err}", cell.id),
                )
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|err| {
                    if err.is::<http_body_util::LengthLimitError>() {
                        Refusal::new(
                            Reason::ResponseTooLarge,
                            format!("{}: answer over {} bytes", cell.id, self.max_response_bytes),
                        )
                    } else {
                        Refusal::new(Reason::CellUnreachable, format!("{}: body: {err}", cell.id))
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status.as_u16(),
                headers: answer_headers(parts.headers),
                body,
            })
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Refusal::new(
                Reason::CellTimeout,
                format!(
                    "{}: no answer within {} ms",
                    cell.id,
                    self.request_timeout.as_millis()
                ),
            )),
        }
    }

    /// Asks `url` with a GET and says whether it answered 2xx within `timeout`.
    pub async fn probe(&self, url: &str, timeout: Duration) -> bool {
        let Ok(request) = Request::get(url).body(Full::new(Bytes::new())) else {
            return false;
        };
        let exchange = async {
            let response = self.client.request(request).await.ok()?;
            let ok = response.status().is_success();
            response.into_body().collect().await.ok()?;
            Some(ok)
        };
        matches!(
            tokio::time::timeout(timeout, exchange).await,
            Ok(Some(true))
        )
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// The cell's response headers less those that describe its connection or framing.
fn answer_headers(headers: HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let tokens = connection_tokens(
        headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))),
    );
    let mut kept = Vec::with_capacity(headers.len());
    let mut last_name: Option<HeaderName> = None;
    for (name, value) in headers {
        // HeaderMap yields a name only on the first of its repeated values.
        let name = match name {
            Some(name) => {
                last_name = Some(name.clone());
                name
            }
            None => match &last_name {
                Some(name) => name.clone(),
                None => continue,
            },
        };
        if !is_not_forwarded(name.as_str(), &tokens) {
            kept.push((name, value));
        }
    }
    kept
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
        let forwarder = Forwarder::new(router.forward_settings());
        let cell = router.cells().get("corp-eu-1").unwrap();
        let request = forwarder
            .build_request(
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
        assert_eq!(
            request.uri().to_string(),
            "http://127.0.0.1:4/api/transfers?x=1"
        );
    }

    #[test]
    fn a_bad_method_is_refused_not_panicked() {
        let router = router();
        let forwarder = Forwarder::new(router.forward_settings());
        let cell = router.cells().get("corp-eu-1").unwrap();
        let mut bad = outbound(&[]);
        bad.method = "BAD METHOD".into();
        assert_eq!(
            forwarder.build_request(cell, bad).unwrap_err().reason,
            Reason::Malformed
        );
    }

    #[test]
    fn answer_keeps_repeated_headers_and_drops_framing() {
        let mut headers = HeaderMap::new();
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let kept = answer_headers(headers);
        let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.iter().filter(|n| **n == "set-cookie").count(), 2);
        assert!(!names.contains(&"transfer-encoding"));
        assert!(names.contains(&"content-type"));
    }
}
