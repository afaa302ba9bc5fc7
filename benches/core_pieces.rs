//! The per-request cost of the core's pieces around the decision, without Python: the canonical
//! path, the ingress (path, client address, trace context from a header list), and request
//! signing with each algorithm; and the state every request reads (quota and revocation check),
//! in-process and in the node's shared-memory zone.
//!
//! Run: `cargo bench --bench core_pieces` (release; prints the median of 15 rounds per piece).

use _core::client_address::{ClientAddressing, ForwardedHeader};
use _core::ingress::{Arrival, Ingress};
use _core::signing::{Signer, SignerSettings};
use _core::target::{canonicalize, PathSettings};
use _core::trace::TraceIds;
use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use std::hint::black_box;
use std::time::Instant;

const ROUNDS: usize = 15;

/// The median nanoseconds per call of `f` over `ROUNDS` rounds of `calls` calls.
fn median_ns(calls: u32, mut f: impl FnMut()) -> f64 {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(calls)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn signer(key: serde_json::Value) -> Signer {
    let settings: SignerSettings = serde_json::from_value(serde_json::json!({
        "key": key,
        "components": ["@method", "@authority", "@path", "@query", "x-request-id", "x-cell-id",
                       "x-customer-id", "x-customer-tier", "x-step-up"],
        "headers": ["x-risk-level", "x-forwarded-for", "traceparent", "idempotency-key",
                    "content-type"],
    }))
    .expect("signer settings");
    Signer::from_settings(&settings).expect("signer")
}

/// The headers of a forwarded request as the gateway has set them before signing.
fn forwarded_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("accept", "application/json"),
        ("user-agent", "bench/1.0"),
        ("host", "127.0.0.1:9104"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "http"),
        ("x-cell-id", "hnw-us-east-1"),
        ("x-encryption-level", "maximum"),
        ("x-request-id", "5f0e6a3c9b1d4e2f8a7b6c5d4e3f2a1b"),
        ("x-customer-id", "c-hnw-us"),
        ("x-customer-tier", "hnw"),
        ("x-risk-level", "LOW"),
        ("x-step-up", "false"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ] {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

/// The quota and revocation checks of one request, in-process and in the zone.
fn state_pieces() {
    use _core::auth::{Revocations, StepUpProof, Verified};
    use _core::ratelimit::{Quota, QuotaSettings, RateLimiter};
    use _core::state::{
        Customer, QuotaStore, RevocationStore, StateKey, Zone, ZoneQuotas, ZoneRevocations,
        ZoneSizes,
    };
    use std::sync::Arc;

    let settings = QuotaSettings {
        requests: 1_000_000,
        period_s: 1,
        burst: 1_000_000,
    };
    let quota = Quota::new("bench", &settings, "bench").expect("quota");
    // Keyed once, as a verified token keeps its customer's key.
    let customers: Vec<(String, StateKey)> = (0..1000)
        .map(|i| format!("c-bench-{i}"))
        .map(|id| {
            let key = StateKey::of(&id);
            (id, key)
        })
        .collect();
    let path = format!(
        "{}/cellgate-bench-{}.zone",
        std::env::temp_dir().display(),
        std::process::id()
    );
    let zone = Arc::new(
        Zone::create(
            &path,
            ZoneSizes {
                revocation_slots: 65_536,
                quota_slots: 262_144,
                cell_slots: 16,
                worker_slots: 16,
            },
        )
        .expect("zone"),
    );
    let local: Box<dyn QuotaStore> = Box::new(RateLimiter::new());
    let shared: Box<dyn QuotaStore> = Box::new(ZoneQuotas::new(zone.clone()));
    let mut quota_ns = Vec::new();
    for store in [&local, &shared] {
        let mut i = 0usize;
        let mut now_us = 1_700_000_000_000_000u64;
        quota_ns.push(median_ns(1_000_000, || {
            i = (i + 1) % customers.len();
            now_us += 1;
            let (id, key) = &customers[i];
            let customer = Customer { id, key: *key };
            black_box(store.check(customer, &quota, now_us));
        }));
    }
    let verified = Verified {
        customer: "c-bench-1".into(),
        customer_key: StateKey::of("c-bench-1"),
        cache_until_s: u64::MAX,
        jti: Some("jti-bench-1".into()),
        jti_key: Some(StateKey::of("jti-bench-1")),
        issued_at_s: Some(1.0e9),
        step_up: StepUpProof::default(),
    };
    let mut revocation_ns = Vec::new();
    let stores: [Box<dyn RevocationStore>; 2] = [
        Box::new(Revocations::default()),
        Box::new(ZoneRevocations::new(zone.clone(), None)),
    ];
    for store in &stores {
        let empty = median_ns(2_000_000, || {
            black_box(store.check(black_box(&verified)).is_ok());
        });
        store.revoke_token("another-jti", u64::MAX, 0);
        store.revoke_customer("another-customer", 1.0, 0);
        let some = median_ns(1_000_000, || {
            black_box(store.check(black_box(&verified)).is_ok());
        });
        revocation_ns.push((empty, some));
    }
    std::fs::remove_file(&path).expect("removes the zone");
    println!(
        "quota check (GCRA), 1000 customers, in-process     {:>10.1}",
        quota_ns[0]
    );
    println!(
        "quota check (GCRA), 1000 customers, zone           {:>10.1}",
        quota_ns[1]
    );
    println!(
        "revocation check, nothing revoked, in-process      {:>10.1}",
        revocation_ns[0].0
    );
    println!(
        "revocation check, nothing revoked, zone            {:>10.1}",
        revocation_ns[1].0
    );
    println!(
        "revocation check, others revoked, in-process       {:>10.1}",
        revocation_ns[0].1
    );
    println!(
        "revocation check, others revoked, zone             {:>10.1}",
        revocation_ns[1].1
    );
}

fn main() {
    let paths = PathSettings::default();
    let canonical = median_ns(2_000_000, || {
        black_box(canonicalize(black_box("/api/accounts"), &paths).is_ok());
    });
    let normalised = median_ns(1_000_000, || {
        black_box(canonicalize(black_box("/api//./statements/../accounts"), &paths).is_ok());
    });
    let trace_ids = TraceIds::new();
    let addressing = ClientAddressing::default();
    let trusted =
        ClientAddressing::build(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor).expect("cidrs");
    let headers: Vec<(&str, &str)> = vec![
        ("host", "gateway:8080"),
        ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
    ];
    let arrival = |peer| Arrival {
        method: "GET",
        path: "/api/accounts",
        headers: &headers,
        peer,
        authorization: None,
        user_agent: None,
        absolute_form: false,
    };
    let ingress = median_ns(1_000_000, || {
        black_box(Ingress::read(
            &arrival("127.0.0.1:50000"),
            &paths,
            &addressing,
            &trace_ids,
        ));
    });
    let ingress_proxied = median_ns(1_000_000, || {
        black_box(Ingress::read(
            &arrival("10.0.0.1:50000"),
            &paths,
            &trusted,
            &trace_ids,
        ));
    });

    let hmac = signer(serde_json::json!({
        "keyid": "bench-hmac", "alg": "hmac-sha256",
        "secret_b64": "YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldC1iZW5jaC1zZWNyZXQ"
    }));
    let ed25519 = signer(serde_json::json!({
        "keyid": "bench-ed25519", "alg": "ed25519",
        "jwk": {"kty": "OKP", "crv": "Ed25519",
                "x": "ZjFyixNxB9AuWY3I-AeF046FkpvVnv1S1VCHB4hKRJc",
                "d": "Cq1cZtqePSADRJ-WRi1utiWTJ4aqpaG505QS48stbXg"}
    }));
    let body = vec![b'x'; 512];
    let sign = |signer: &Signer, body: &[u8]| {
        let mut headers = forwarded_headers();
        signer
            .sign(
                "POST",
                "127.0.0.1:9104",
                "/api/transfers",
                "dry=1",
                &mut headers,
                body,
                1_800_000_000,
                "5f0e6a3c9b1d4e2f8a7b6c5d4e3f2a1b",
            )
            .expect("signs");
        black_box(headers);
    };
    let headers_alone = median_ns(200_000, || {
        black_box(forwarded_headers());
    });
    let hmac_bodyless = median_ns(200_000, || sign(&hmac, b"")) - headers_alone;
    let hmac_body = median_ns(200_000, || sign(&hmac, &body)) - headers_alone;
    let ed_bodyless = median_ns(20_000, || sign(&ed25519, b"")) - headers_alone;
    let ed_body = median_ns(20_000, || sign(&ed25519, &body)) - headers_alone;

    println!("piece                                              median ns per call");
    println!("canonicalize, already canonical (/api/accounts)    {canonical:>10.1}");
    println!("canonicalize, to normalise (/api//./s/../accounts) {normalised:>10.1}");
    println!("ingress: path, client, trace (untrusted peer)      {ingress:>10.1}");
    println!("ingress: path, client, trace (trusted proxy, XFF)  {ingress_proxied:>10.1}");
    println!("sign hmac-sha256, no body                          {hmac_bodyless:>10.1}");
    println!("sign hmac-sha256, 512-byte body (+Content-Digest)  {hmac_body:>10.1}");
    println!("sign ed25519, no body                              {ed_bodyless:>10.1}");
    println!("sign ed25519, 512-byte body (+Content-Digest)      {ed_body:>10.1}");
    state_pieces();
}
