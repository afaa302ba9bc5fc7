//! A cell's answer as it goes back to the client.

use super::headers::{connection_tokens, is_not_forwarded};
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;

/// A cell's answer, ready to hand to the client.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// The cell's response headers less those that describe its connection or framing.
pub fn answer_headers(headers: HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
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
