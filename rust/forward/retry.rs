//! Retries that never apply a payment twice: a forward that failed goes to the next eligible
//! cell only when that is safe, within the request's one deadline.
//!
//! Safe means: the request provably never left the gateway (no connection could be made), or it
//! is replayable (GET, HEAD, OPTIONS, PUT, DELETE, or any request carrying an `Idempotency-Key`,
//! draft-ietf-httpapi-idempotency-key-header) and the cell either ended the connection before
//! any byte of an answer or answered a configured status (503). A POST or PATCH without a key
//! that may have reached a cell is never sent again, as nginx never passes a sent POST to the
//! next server. A POST or PATCH with a key that may have reached a cell goes again only to that
//! cell: no other cell can recognise its key. A pooled connection the cell had closed before the
//! request was written is retried inside hyper-util's client, on a fresh connection, and counts
//! against no breaker.

use super::answer::Answer;
use super::client::{CellClient, Failed};
use super::request::cell_uri;
use crate::cells::Cell;
use crate::reason::{Reason, Refusal};
use crate::router::{Outcome, Route, Router};
use crate::settings::TimeoutCountsAs;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{HeaderMap, Method, Request, Uri};
use serde::Deserialize;
use std::hash::BuildHasher;
use std::time::Duration;
use tokio::time::Instant;

const X_CELL_ID: HeaderName = HeaderName::from_static("x-cell-id");
const X_ENCRYPTION_LEVEL: HeaderName = HeaderName::from_static("x-encryption-level");
const SIGNATURE: HeaderName = HeaderName::from_static("signature");
const SIGNATURE_INPUT: HeaderName = HeaderName::from_static("signature-input");

/// How failed forwards are retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// At most this many retries after the first attempt.
    pub retries: u32,
    /// Answers that count as failed and are retried (for replayable requests).
    pub on_status: Vec<u16>,
    /// The first backoff; each next one doubles, up to `backoff_max_ms`; each is jittered.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            retries: 2,
            on_status: vec![503],
            backoff_base_ms: 25,
            backoff_max_ms: 250,
        }
    }
}

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Whether the method itself makes a repeat harmless (RFC 9110 section 9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Whether a request may be sent again after it may have reached a cell.
pub fn is_replayable(method: &Method, headers: &HeaderMap) -> bool {
    is_idempotent(method) || headers.contains_key(IDEMPOTENCY_KEY)
}

/// The jittered backoff before retry number `retry` (1 for the first): a uniformly random share
/// between half and all of `base * 2^(retry-1)`, capped at `max`.
fn backoff(settings: &RetrySettings, retry: u32) -> Duration {
    let full_ms = settings
        .backoff_base_ms
        .saturating_mul(1 << (retry.saturating_sub(1)).min(16))
        .min(settings.backoff_max_ms);
    // RandomState is seeded afresh for each value: enough randomness to spread retries.
    let random = std::collections::hash_map::RandomState::new().hash_one(retry);
    let jitter_ms = if full_ms == 0 {
        0
    } else {
        random % (full_ms / 2 + 1)
    };
    Duration::from_millis(full_ms - jitter_ms)
}

/// What one attempt's result means for the request.
enum Verdict {
    /// The client gets this result.
    Final,
    /// Try the next cell (if one is eligible and time is left), else the client gets this.
    Retry,
}

/// Sends `request` on `route`, retrying on the next eligible cell where that is safe; feeds
/// every attempt's outcome to its cell's breaker. Returns the client's answer, how many
/// attempts were made and the index of the cell tried last.
pub async fn forward(
    core: &Router,
    client: &CellClient,
    mut route: Route,
    request: Request<Bytes>,
    request_id: &str,
) -> (Result<Answer, Refusal>, u32, usize) {
    let settings = &core.forward_settings().retry;
    let until = Instant::now() + client.request_timeout();
    let (parts, body) = request.into_parts();
    let replayable = is_replayable(&parts.method, &parts.headers);
    // A POST or PATCH replayable only by its key: once it may have reached a cell, only that
    // cell can recognise the key, so it is never sent to another.
    let keyed_only = replayable && !is_idempotent(&parts.method);
    let timeout_is_slow = core.forward_settings().timeout_counts_as == TimeoutCountsAs::Slow;
    let mut pinned = false;
    let (method, mut uri, mut headers) = (parts.method, parts.uri, parts.headers);
    let mut tried: Vec<usize> = Vec::new();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = attempts > settings.retries;
        let request = match last {
            // No attempt comes after the last: its headers are moved, not copied.
            true => assemble(&method, &uri, std::mem::take(&mut headers), &body),
            false => assemble(&method, &uri, headers.clone(), &body),
        };
        let cell = route.cell().clone();
        let result = client.attempt(&cell, request, until).await;
        let (outcome, verdict) = judge(&result, replayable, settings, timeout_is_slow);
        tried.push(cell.index);
        pinned |= keyed_only && !matches!(result, Err(Failed::NotSent(_)));
        let next = match verdict {
            Verdict::Retry if !last && Instant::now() < until => match pinned {
                true => core.reroute_to(&route).ok(),
                false => core.reroute(&route, &tried).ok(),
            },
            _ => None,
        };
        core.report(route, outcome);
        let Some(next) = next else {
            return (result.map_err(Failed::into_refusal), attempts, cell.index);
        };
        let pause = backoff(settings, attempts);
        if Instant::now() + pause >= until {
            drop(next);
            return (result.map_err(Failed::into_refusal), attempts, cell.index);
        }
        tokio::time::sleep(pause).await;
        if let Err(refusal) = retarget(
            &mut headers,
            &method,
            &mut uri,
            &body,
            &cell,
            next.cell(),
            {
                let now_s = core.clock().now_us() / 1_000_000;
                (now_s, format!("{request_id}.{attempts}"))
            },
        ) {
            drop(next);
            return (Err(refusal), attempts, cell.index);
        }
        route = next;
    }
}

/// The outcome an attempt feeds to its cell's breaker, and whether to try another cell.
fn judge(
    result: &Result<Answer, Failed>,
    replayable: bool,
    settings: &RetrySettings,
    timeout_is_slow: bool,
) -> (Outcome, Verdict) {
    match result {
        Ok(answer) => {
            let outcome = match answer.status < 500 {
                true => Outcome::Success,
                false => Outcome::Failure,
            };
            let verdict = match replayable && settings.on_status.contains(&answer.status) {
                true => Verdict::Retry,
                false => Verdict::Final,
            };
            (outcome, verdict)
        }
        Err(Failed::NotSent(_)) => (Outcome::Failure, Verdict::Retry),
        // A slow call, by its duration, for the breaker's slow-call rule.
        Err(Failed::Other(refusal)) if timeout_is_slow && refusal.reason == Reason::CellTimeout => {
            (Outcome::Success, Verdict::Final)
        }
        Err(Failed::NoAnswer(_)) if replayable => (Outcome::Failure, Verdict::Retry),
        Err(_) => (Outcome::Failure, Verdict::Final),
    }
}

/// One attempt's request.
fn assemble(method: &Method, uri: &Uri, headers: HeaderMap, body: &Bytes) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body.clone()));
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers;
    request
}

/// The URI and headers of a request for `from` made into those for `to`: its authority, Host, X-Cell-ID and
/// encryption level, the bearer token dropped unless `to` takes it, and the signature made
/// again with `to`'s key (with `nonce`) or dropped when `to` is not signed.
fn retarget(
    headers: &mut HeaderMap,
    method: &Method,
    uri: &mut Uri,
    body: &Bytes,
    from: &Cell,
    to: &Cell,
    (now_s, nonce): (u64, String),
) -> Result<(), Refusal> {
    if let Some(target) = uri.path_and_query().cloned() {
        *uri = cell_uri(to, target);
    }
    headers.insert(HOST, to.host_header.clone());
    headers.insert(X_CELL_ID, to.id_header.clone());
    headers.insert(
        X_ENCRYPTION_LEVEL,
        HeaderValue::from_static(to.encryption.name()),
    );
    if from.forward_bearer_token && !to.forward_bearer_token {
        headers.remove(hyper::header::AUTHORIZATION);
    }
    headers.remove(SIGNATURE);
    headers.remove(SIGNATURE_INPUT);
    if let Some(signer) = &to.signer {
        signer
            .sign(
                method.as_str(),
                &to.authority,
                uri.path(),
                uri.query().unwrap_or(""),
                headers,
                body,
                now_s,
                &nonce,
            )
            .map_err(|err| {
                Refusal::new(
                    Reason::Internal,
                    format!("cannot sign the request for {}: {err}", to.id),
                )
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::forward::request::{build_request, Outbound};
    use crate::router::{client_address, RequestFacts};
    use crate::settings::CoreSettings;
    use crate::testing::{read_request_head, token, PROFILES_JSONL, SETTINGS_JSON};
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;

    /// What a test cell does with each request it reads.
    #[derive(Clone, Copy)]
    enum Cell {
        Answers(u16),
        /// Reads the request and closes without a byte of answer.
        HangsUp,
        /// Hangs up on its first request, then answers 200.
        HangsUpOnce,
        /// Nobody listens on the port.
        Gone,
    }

    /// A loopback cell; returns its port and how many requests it read.
    fn cell(behaviour: Cell) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        if let Cell::Gone = behaviour {
            return (port, requests);
        }
        let count = requests.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let count = count.clone();
                thread::spawn(move || {
                    let mut buf = Vec::new();
                    loop {
                        if !read_request_head(&mut stream, &mut buf) {
                            return;
                        }
                        let seen = count.fetch_add(1, Ordering::SeqCst);
                        let status = match behaviour {
                            Cell::Answers(status) => status,
                            Cell::HangsUpOnce if seen > 0 => 200,
                            _ => return,
                        };
                        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok");
                        if stream.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, requests)
    }

    /// A router whose two retail cells are `first` and `second` (the corporate cells gone).
    fn two_cells(first: u16, second: u16) -> Router {
        let mut settings: CoreSettings = serde_json::from_str(SETTINGS_JSON).unwrap();
        let gone = cell(Cell::Gone).0;
        for (cell, port) in settings.cells.iter_mut().zip([first, second, gone, gone]) {
            cell.endpoint = format!("http://127.0.0.1:{port}");
            cell.capacity = 100;
        }
        settings.forward.retry.backoff_base_ms = 1;
        Router::build(
            settings,
            PROFILES_JSONL.as_bytes(),
            Clock::manual(1_000_000_000_000),
        )
        .unwrap()
    }

    /// Forwards one request of `method` (with `key` as Idempotency-Key) for a retail customer,
    /// its first attempt on the cell named `first`.
    fn send(
        router: &Router,
        method: &str,
        key: Option<&str>,
        first: &str,
    ) -> (Result<u16, Reason>, u32) {
        let auth = format!("Bearer {}", token("retail-us"));
        let facts = RequestFacts {
            method,
            path: "/api/transfers",
            authorization: Some(&auth),
            client: client_address("10.0.0.9"),
            user_agent: None,
        };
        // Least-loaded placement: hold decisions until the wanted cell is the one chosen.
        let mut held = Vec::new();
        let route = loop {
            let route = router.decide(&facts).unwrap();
            if &*route.cell().id == first {
                break route;
            }
            held.push(route);
        };
        drop(held);
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let outbound = Outbound {
            method,
            path: "/api/transfers",
            query: "",
            headers: &headers,
            body: Bytes::from_static(b"{}"),
            scheme: "http",
        };
        let request = build_request(&route, "retail", outbound, "rid").unwrap();
        let client = CellClient::new(router.forward_settings(), router.cells().all());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (result, attempts, _) =
            runtime.block_on(forward(router, &client, route, request, "rid"));
        (result.map(|a| a.status).map_err(|r| r.reason), attempts)
    }

    #[test]
    fn a_cell_that_cannot_be_reached_is_passed_over_for_any_method() {
        let (good, good_requests) = cell(Cell::Answers(200));
        let (gone, _) = cell(Cell::Gone);
        let router = two_cells(gone, good);
        // Nothing left the gateway: even a POST without a key is safe to send on.
        assert_eq!(send(&router, "POST", None, "retail-a"), (Ok(200), 2));
        assert_eq!(good_requests.load(Ordering::SeqCst), 1);
        assert!(router.cells().all().iter().all(|c| c.load.in_flight() == 0));
    }

    #[test]
    fn a_post_that_may_have_arrived_is_never_sent_again_without_a_key() {
        let (hangs_up, hung_up_on) = cell(Cell::HangsUp);
        let (good, good_requests) = cell(Cell::Answers(200));
        let router = two_cells(hangs_up, good);
        assert_eq!(
            send(&router, "POST", None, "retail-a"),
            (Err(Reason::CellUnreachable), 1)
        );
        assert_eq!(hung_up_on.load(Ordering::SeqCst), 1);
        assert_eq!(good_requests.load(Ordering::SeqCst), 0, "not sent twice");
        // With an Idempotency-Key only the cell that may have it can tell a repeat: it goes
        // again to that cell alone, never to the next.
        assert_eq!(
            send(&router, "POST", Some("k-1"), "retail-a"),
            (Err(Reason::CellUnreachable), 3)
        );
        assert_eq!(hung_up_on.load(Ordering::SeqCst), 4);
        assert_eq!(
            good_requests.load(Ordering::SeqCst),
            0,
            "never to another cell"
        );
        // A GET is replayable as it is, anywhere.
        assert_eq!(send(&router, "GET", None, "retail-a"), (Ok(200), 2));
        assert_eq!(good_requests.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_keyed_post_is_sent_again_to_the_cell_that_may_have_it() {
        let (flaky, flaky_requests) = cell(Cell::HangsUpOnce);
        let (other, other_requests) = cell(Cell::Answers(200));
        let router = two_cells(flaky, other);
        assert_eq!(send(&router, "POST", Some("k-2"), "retail-a"), (Ok(200), 2));
        assert_eq!(flaky_requests.load(Ordering::SeqCst), 2);
        assert_eq!(other_requests.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_503_is_retried_only_for_replayable_requests() {
        let (busy, busy_requests) = cell(Cell::Answers(503));
        let (good, _) = cell(Cell::Answers(200));
        let router = two_cells(busy, good);
        assert_eq!(send(&router, "GET", None, "retail-a"), (Ok(200), 2));
        assert_eq!(send(&router, "POST", None, "retail-a"), (Ok(503), 1));
        assert_eq!(busy_requests.load(Ordering::SeqCst), 2);
        let (other_busy, _) = cell(Cell::Answers(503));
        let both_busy = two_cells(busy, other_busy);
        // Both retail cells busy: the third and last attempt goes to the region's fallback (a
        // cell that is gone), and the last attempt's result is the client's.
        assert_eq!(
            send(&both_busy, "PUT", None, "retail-a"),
            (Err(Reason::CellUnreachable), 3)
        );
    }

    #[test]
    fn cells_named_by_host_name_are_resolved_and_reached() {
        let (good, good_requests) = cell(Cell::Answers(200));
        let mut settings: CoreSettings = serde_json::from_str(SETTINGS_JSON).unwrap();
        // localhost resolves from the hosts file: no lookup leaves the machine.
        settings.cells[0].endpoint = format!("http://localhost:{good}");
        let router = Router::build(
            settings,
            PROFILES_JSONL.as_bytes(),
            Clock::manual(1_000_000_000_000),
        )
        .unwrap();
        for _ in 0..3 {
            assert_eq!(send(&router, "GET", None, "retail-a"), (Ok(200), 1));
        }
        assert_eq!(good_requests.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_500_is_the_clients_answer() {
        let (broken, _) = cell(Cell::Answers(500));
        let (good, good_requests) = cell(Cell::Answers(200));
        let router = two_cells(broken, good);
        assert_eq!(send(&router, "GET", None, "retail-a"), (Ok(500), 1));
        assert_eq!(good_requests.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn backoff_doubles_within_its_bounds() {
        let settings = RetrySettings::default();
        for retry in 1..=6 {
            let full = (25u64 << (retry - 1)).min(250);
            let pause = backoff(&settings, retry).as_millis() as u64;
            assert!(
                (full / 2..=full).contains(&pause),
                "retry {retry}: {pause} ms"
            );
        }
    }

    #[test]
    fn a_timeout_counts_as_configured() {
        let settings = RetrySettings::default();
        let timed_out = || Err(Failed::Other(Refusal::new(Reason::CellTimeout, "slow")));
        assert!(matches!(
            judge(&timed_out(), true, &settings, false),
            (Outcome::Failure, Verdict::Final)
        ));
        assert!(matches!(
            judge(&timed_out(), true, &settings, true),
            (Outcome::Success, Verdict::Final)
        ));
    }
}
