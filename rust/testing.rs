//! Fixtures shared by the unit tests: a small topology, profiles and token maker.

use crate::clock::Clock;
use crate::router::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::io::Read;

pub const SECRET: &[u8] = b"unit-test-secret-unit-test-secret";

/// Two retail cells (capacity 100 and 300), a corporate US cell and a corporate EU cell.
pub const SETTINGS_JSON: &str = r#"{
  "jwt": {"issuer": "iss", "audience": "aud", "leeway_s": 5, "customer_claim": "sub",
          "require_exp": true, "cache_size": 1000, "cache_ttl_s": 60,
          "keys": [{"kid": "k1", "alg": "HS256",
                    "secret_b64": "dW5pdC10ZXN0LXNlY3JldC11bml0LXRlc3Qtc2VjcmV0"}]},
  "tiers": {"corporate": {"placement": "least_loaded"}, "retail": {"placement": "least_loaded"}},
  "cells": [
    {"id": "retail-a", "tier": "retail", "region": "us-east", "endpoint": "http://127.0.0.1:1",
     "capacity": 100, "certifications": [], "encryption": "standard", "signed": false},
    {"id": "retail-b", "tier": "retail", "region": "us-east", "endpoint": "http://127.0.0.1:2",
     "capacity": 300, "certifications": [], "encryption": "standard", "signed": false},
    {"id": "corp-us-1", "tier": "corporate", "region": "us-east", "endpoint": "http://127.0.0.1:3",
     "capacity": 100, "certifications": [], "encryption": "enhanced", "signed": false},
    {"id": "corp-eu-1", "tier": "corporate", "region": "eu-west", "endpoint": "http://127.0.0.1:4",
     "capacity": 100, "certifications": [], "encryption": "enhanced", "signed": false}
  ],
  "health": {"path": "/health", "interval_ms": 1000, "timeout_ms": 500, "rise": 2, "fall": 2},
  "forward": {"connect_timeout_ms": 1000, "request_timeout_ms": 5000, "pool_idle_timeout_ms": 30000,
              "pool_max_idle_per_cell": 64, "max_response_bytes": 1048576}
}"#;

pub const PROFILES_JSONL: &str = r#"{"customer_id": "retail-us", "tier": "retail", "region": "us-east"}
{"customer_id": "retail-eu", "tier": "retail", "region": "eu-west"}
{"customer_id": "corp-eu", "tier": "corporate", "region": "eu-west", "flags": ["EU_RESIDENT"]}"#;

/// A router over the fixture topology, on a manual clock at t = 1,000,000 s.
pub fn router() -> Router {
    let settings = serde_json::from_str(SETTINGS_JSON).unwrap();
    Router::build(
        settings,
        PROFILES_JSONL.as_bytes(),
        Clock::manual(1_000_000_000_000),
    )
    .unwrap()
}

/// An HS256 token for `customer`, valid around t = 1,000,000 s.
pub fn token(customer: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#);
    let claims = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"sub":"{customer}","iss":"iss","aud":"aud","exp":1000600}}"#
    ));
    let input = format!("{header}.{claims}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Reads from a test server's `stream` until `buf` holds a whole request head, and removes it
/// (bodies are not read); false when the peer closed or failed first.
pub fn read_request_head(stream: &mut impl Read, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            return true;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
