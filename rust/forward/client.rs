//! Forwarding on the worker's tokio thread: hyper-util's pooled HTTP/1.1 client (its connection
//! pool, idle reaping and retry of requests a closed pooled connection never sent), one request
//! and its answer within the request timeout.

use super::answer::{answer_headers, Answer};
use super::dns::CachingResolver;
use crate::cells::Cell;
use crate::reason::{Reason, Refusal};
use crate::settings::ForwardSettings;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

/// The pooled clients every forward of one router goes through, one per cell (each with the
/// cell's connect and idle timeouts).
pub struct CellClient {
    clients: Vec<PooledClient>,
    /// For a cell without a client of its own (none in a router's table).
    default_client: PooledClient,
    request_timeout: Duration,
    max_response_bytes: usize,
}

/// hyper-util's pooled HTTP/1.1 client, its host names resolved by a [`CachingResolver`].
pub type PooledClient = Client<HttpConnector<CachingResolver>, Full<Bytes>>;

/// A pooled client with `connect` and `pool_idle` timeouts, keeping at most `max_idle` idle
/// connections per cell, resolving names through `resolver` (its answers shared by clones).
pub fn pooled_client(
    resolver: &CachingResolver,
    connect: Duration,
    pool_idle: Duration,
    max_idle: usize,
) -> PooledClient {
    let mut connector = HttpConnector::new_with_resolver(resolver.clone());
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool_idle)
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

impl CellClient {
    /// Clients for `cells`, each with its cell's timeouts, and `[forward]`'s pool size.
    pub fn new(settings: &ForwardSettings, cells: &[Arc<Cell>]) -> Self {
        let ms = Duration::from_millis;
        let max_idle = settings.pool_max_idle_per_cell;
        let resolver = CachingResolver::new();
        let clients = cells
            .iter()
            .map(|cell| {
                let timeouts = &cell.timeouts;
                pooled_client(&resolver, timeouts.connect, timeouts.pool_idle, max_idle)
            })
            .collect();
        CellClient {
            clients,
            default_client: pooled_client(
                &resolver,
                ms(settings.connect_timeout_ms),
                ms(settings.pool_idle_timeout_ms),
                max_idle,
            ),
            request_timeout: ms(settings.request_timeout_ms),
            max_response_bytes: settings.max_response_bytes,
        }
    }

    /// How long a request may take, retries included.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// One attempt: `request` (its URI absolute, `request::cell_uri`) to `cell`, its whole
    /// answer by `until`; a failure says whether
    /// the request can have reached the cell.
    pub async fn attempt(
        &self,
        cell: &Cell,
        request: Request<Full<Bytes>>,
        until: tokio::time::Instant,
    ) -> Result<Answer, Failed> {
        let client = self.clients.get(cell.index).unwrap_or(&self.default_client);
        let started = tokio::time::Instant::now();
        // Each deadline with the limit that sets it, for the client's detail.
        let (until, total) = match started + cell.timeouts.total < until {
            true => (started + cell.timeouts.total, cell.timeouts.total),
            false => (until, self.request_timeout),
        };
        let (first_byte_until, first_byte) = match cell.timeouts.first_byte {
            Some(first_byte) if started + first_byte < until => (started + first_byte, first_byte),
            _ => (until, total),
        };
        let timed_out = |what: &str, limit: Duration| {
            Failed::Other(Refusal::new(
                Reason::CellTimeout,
                format!("{}: no {what} within {} ms", cell.id, limit.as_millis()),
            ))
        };
        let response =
            match tokio::time::timeout_at(first_byte_until, client.request(request)).await {
                Ok(response) => response.map_err(|err| Failed::of(cell, &err))?,
                Err(_) if first_byte_until < until => {
                    return Err(timed_out("first byte of an answer", first_byte))
                }
                Err(_) => return Err(timed_out("answer", total)),
            };
        match tokio::time::timeout_at(until, read_answer(cell, self.max_response_bytes, response))
            .await
        {
            Ok(result) => result.map_err(Failed::Other),
            Err(_) => Err(timed_out("answer", total)),
        }
    }
}

/// Why an attempt failed, by what it tells about the request's fate.
#[derive(Debug)]
pub enum Failed {
    /// No connection could be made: the request provably never left the gateway.
    NotSent(Refusal),
    /// The request was written (or may have been), and the connection ended before any byte of
    /// an answer: the cell may have acted on it.
    NoAnswer(Refusal),
    /// Anything else: a timeout, an answer too large or cut short.
    Other(Refusal),
}

impl Failed {
    fn of(cell: &Cell, err: &hyper_util::client::legacy::Error) -> Self {
        let refusal = unreachable(cell, format!("connection failed: {err}"));
        if err.is_connect() {
            Failed::NotSent(refusal)
        } else {
            Failed::NoAnswer(refusal)
        }
    }

    /// The refusal the client hears.
    pub fn into_refusal(self) -> Refusal {
        match self {
            Failed::NotSent(refusal) | Failed::NoAnswer(refusal) | Failed::Other(refusal) => {
                refusal
            }
        }
    }
}

/// 502 cell_unreachable for `cell`, saying what failed.
pub fn unreachable(cell: &Cell, what: impl std::fmt::Display) -> Refusal {
    Refusal::new(Reason::CellUnreachable, format!("{}: {what}", cell.id))
}

/// The whole answer of `response`, at most `max_response_bytes` of body (else 502).
pub async fn read_answer(
    cell: &Cell,
    max_response_bytes: usize,
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<Answer, Refusal> {
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, max_response_bytes)
        .collect()
        .await
        .map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                Refusal::new(
                    Reason::ResponseTooLarge,
                    format!("{}: answer over {max_response_bytes} bytes", cell.id),
                )
            } else {
                unreachable(cell, format!("body: {err}"))
            }
        })?
        .to_bytes();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: answer_headers(parts.headers),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::{CellLoad, CellTimeouts, Encryption};
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nx-cell: a\r\nconnection: keep-alive\r\n\r\nhello cells";

    /// What a test server does with the n-th request of a connection.
    enum Reply {
        Answer(&'static [u8]),
        AnswerAndClose(&'static [u8]),
        Close,
    }

    /// A loopback server: `answer` is called for each request head read on each connection.
    /// Returns the port and the count of connections accepted.
    fn server(answer: fn(usize) -> Reply) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    let mut served = 0;
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        buf.drain(..end);
                        let (reply, close) = match answer(served) {
                            Reply::Answer(reply) => (reply, false),
                            Reply::AnswerAndClose(reply) => (reply, true),
                            Reply::Close => return,
                        };
                        if stream.write_all(reply).is_err() || close {
                            return;
                        }
                        served += 1;
                    }
                });
            }
        });
        (port, connections)
    }

    fn cell_with(port: u16, timeouts: CellTimeouts) -> Cell {
        Cell {
            index: 0,
            id: Arc::from("test-cell"),
            tier: 0,
            region: 0,
            capacity: 10,
            max_in_flight: 1024,
            certifications: vec![],
            encryption: Encryption::Standard,
            signed: false,
            forward_bearer_token: false,
            signer: None,
            timeouts,
            origin: format!("http://127.0.0.1:{port}"),
            authority: format!("127.0.0.1:{port}"),
            uri_authority: format!("127.0.0.1:{port}").parse().unwrap(),
            host_header: hyper::header::HeaderValue::from_str(&format!("127.0.0.1:{port}"))
                .unwrap(),
            id_header: hyper::header::HeaderValue::from_static("test-cell"),
            load: CellLoad::new(),
            breaker: crate::breaker::Breaker::new(&Default::default()).unwrap(),
        }
    }

    /// A client on its own single-thread runtime, as the worker's tokio thread would run it.
    struct Harness {
        runtime: tokio::runtime::Runtime,
        client: CellClient,
        timeouts: CellTimeouts,
    }

    impl Harness {
        fn new(request_timeout_ms: u64, max_response_bytes: usize) -> Self {
            let settings = ForwardSettings {
                connect_timeout_ms: 500,
                first_byte_timeout_ms: None,
                request_timeout_ms,
                timeout_counts_as: Default::default(),
                pool_idle_timeout_ms: 30_000,
                pool_max_idle_per_cell: 4,
                max_response_bytes,
                trusted_proxies: Vec::new(),
                forwarded_header: Default::default(),
                retry: Default::default(),
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            Harness {
                runtime,
                client: CellClient::new(&settings, &[]),
                timeouts: CellTimeouts {
                    connect: Duration::from_millis(500),
                    first_byte: None,
                    total: Duration::from_millis(request_timeout_ms),
                    pool_idle: Duration::from_secs(30),
                },
            }
        }

        /// A cell at `port` with the harness's timeouts.
        fn cell(&self, port: u16) -> Cell {
            cell_with(port, self.timeouts)
        }

        fn exchange(&self, cell: &Cell) -> Result<Answer, Refusal> {
            let request = Request::get(format!("{}/api/x", cell.origin))
                .header("host", cell.authority.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap();
            let until = tokio::time::Instant::now() + self.client.request_timeout();
            self.runtime
                .block_on(async { self.client.attempt(cell, request, until).await })
                .map_err(Failed::into_refusal)
        }
    }

    #[test]
    fn answers_and_reuses_the_connection() {
        let (port, connections) = server(|_| Reply::Answer(OK));
        let harness = Harness::new(2000, 1 << 20);
        let cell = harness.cell(port);
        for _ in 0..3 {
            let answer = harness.exchange(&cell).unwrap();
            assert_eq!(answer.status, 200);
            assert_eq!(&answer.body[..], b"hello cells");
            let names: Vec<&str> = answer.headers.iter().map(|(n, _)| n.as_str()).collect();
            assert!(names.contains(&"x-cell") && !names.contains(&"connection"));
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_closed_idle_connection_is_replaced_without_losing_the_request() {
        // Each connection answers once and closes: the pooled one is dead by the next request.
        let (port, connections) = server(|_| Reply::AnswerAndClose(OK));
        let harness = Harness::new(2000, 1 << 20);
        let cell = harness.cell(port);
        assert_eq!(harness.exchange(&cell).unwrap().status, 200);
        // The worker's I/O thread runs all the time: here the runtime runs while we wait, so the
        // pooled connection sees the cell's close.
        harness
            .runtime
            .block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        assert_eq!(harness.exchange(&cell).unwrap().status, 200);
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn refusals_say_what_went_wrong() {
        let harness = Harness::new(300, 8);
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = harness.exchange(&harness.cell(dead_port)).unwrap_err();
        assert_eq!(
            refused.reason,
            Reason::CellUnreachable,
            "{}",
            refused.detail
        );

        let (silent, _) = server(|_| {
            thread::sleep(Duration::from_secs(2));
            Reply::Close
        });
        let started = Instant::now();
        let timed_out = harness.exchange(&harness.cell(silent)).unwrap_err();
        assert_eq!(
            timed_out.reason,
            Reason::CellTimeout,
            "{}",
            timed_out.detail
        );
        assert!(started.elapsed() < Duration::from_millis(1500));

        let (big, _) = server(|_| Reply::Answer(OK));
        let too_large = harness.exchange(&harness.cell(big)).unwrap_err();
        assert_eq!(too_large.reason, Reason::ResponseTooLarge);

        // Taken, then dropped unanswered: the request may have been acted on, so it is not sent
        // again; the client hears that the cell was unreachable.
        let (hang_up, connections) = server(|_| Reply::Close);
        let dropped = harness.exchange(&harness.cell(hang_up)).unwrap_err();
        assert_eq!(dropped.reason, Reason::CellUnreachable);
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_cell_slow_to_start_its_answer_meets_the_first_byte_timeout() {
        let (slow, _) = server(|_| {
            thread::sleep(Duration::from_millis(600));
            Reply::Answer(OK)
        });
        let harness = Harness::new(5_000, 1 << 20);
        let cell = cell_with(
            slow,
            CellTimeouts {
                first_byte: Some(Duration::from_millis(150)),
                ..harness.timeouts
            },
        );
        let started = Instant::now();
        let refusal = harness.exchange(&cell).unwrap_err();
        assert_eq!(refusal.reason, Reason::CellTimeout);
        assert!(
            refusal
                .detail
                .contains("no first byte of an answer within 150 ms"),
            "{}",
            refusal.detail
        );
        assert!(started.elapsed() < Duration::from_millis(500));
        // The cell's own total timeout, shorter than the request's, holds too.
        let short = cell_with(
            slow,
            CellTimeouts {
                total: Duration::from_millis(200),
                ..harness.timeouts
            },
        );
        let refusal = harness.exchange(&short).unwrap_err();
        assert!(
            refusal.detail.contains("no answer within 200 ms"),
            "{}",
            refusal.detail
        );
    }
}
