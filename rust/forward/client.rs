//! Forwarding on the worker's tokio thread: hyper-util's pooled HTTP/1.1 client (its connection
//! pool, idle reaping and retry of requests a closed pooled connection never sent), one request
//! and its answer within the request timeout.

use super::answer::{answer_headers, Answer};
use crate::cells::Cell;
use crate::reason::{Reason, Refusal};
use crate::settings::ForwardSettings;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// The pooled client every forward of one router goes through.
pub struct CellClient {
    client: Client<HttpConnector, Full<Bytes>>,
    request_timeout: Duration,
    max_response_bytes: usize,
}

/// hyper-util's pooled HTTP/1.1 client with the configured connect timeout and pool idle
/// timeout, keeping at most `max_idle` idle connections per cell.
pub fn pooled_client(
    settings: &ForwardSettings,
    max_idle: usize,
) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(settings.pool_idle_timeout_ms))
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

impl CellClient {
    /// A client with the configured connect timeout, pool size and idle timeout.
    pub fn new(settings: &ForwardSettings) -> Self {
        CellClient {
            client: pooled_client(settings, settings.pool_max_idle_per_cell),
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            max_response_bytes: settings.max_response_bytes,
        }
    }

    /// How long a request may take, retries included.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Sends `request` (origin-form) to `cell` and collects the answer, or says why not. Runs on
    /// the tokio runtime.
    pub async fn exchange(
        &self,
        cell: &Cell,
        request: Request<Full<Bytes>>,
    ) -> Result<Answer, Refusal> {
        let until = tokio::time::Instant::now() + self.request_timeout;
        self.attempt(cell, request, until)
            .await
            .map_err(Failed::into_refusal)
    }

    /// One attempt: `request` to `cell`, its whole answer by `until`; a failure says whether
    /// the request can have reached the cell.
    pub async fn attempt(
        &self,
        cell: &Cell,
        mut request: Request<Full<Bytes>>,
        until: tokio::time::Instant,
    ) -> Result<Answer, Failed> {
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |target| target.as_str());
        *request.uri_mut() = format!("{}{target}", cell.origin).parse().map_err(|err| {
            Failed::Other(Refusal::new(
                Reason::Malformed,
                format!("request target: {err}"),
            ))
        })?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| Failed::of(cell, &err))?;
            read_answer(cell, self.max_response_bytes, response)
                .await
                .map_err(Failed::Other)
        };
        match tokio::time::timeout_at(until, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failed::Other(Refusal::new(
                Reason::CellTimeout,
                format!(
                    "{}: no answer within {} ms",
                    cell.id,
                    self.request_timeout.as_millis()
                ),
            ))),
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
    use crate::cells::{CellLoad, Encryption};
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

    fn cell(port: u16) -> Cell {
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
            origin: format!("http://127.0.0.1:{port}"),
            authority: format!("127.0.0.1:{port}"),
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
    }

    impl Harness {
        fn new(request_timeout_ms: u64, max_response_bytes: usize) -> Self {
            let settings = ForwardSettings {
                connect_timeout_ms: 500,
                request_timeout_ms,
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
                client: CellClient::new(&settings),
            }
        }

        fn exchange(&self, cell: &Cell) -> Result<Answer, Refusal> {
            let request = Request::get("/api/x")
                .header("host", cell.authority.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap();
            self.runtime.block_on(self.client.exchange(cell, request))
        }
    }

    #[test]
    fn answers_and_reuses_the_connection() {
        let (port, connections) = server(|_| Reply::Answer(OK));
        let harness = Harness::new(2000, 1 << 20);
        let cell = cell(port);
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
        let cell = cell(port);
        assert_eq!(harness.exchange(&cell).unwrap().status, 200);
        thread::sleep(Duration::from_millis(50));
        assert_eq!(harness.exchange(&cell).unwrap().status, 200);
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn refusals_say_what_went_wrong() {
        let harness = Harness::new(300, 8);
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = harness.exchange(&cell(dead_port)).unwrap_err();
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
        let timed_out = harness.exchange(&cell(silent)).unwrap_err();
        assert_eq!(
            timed_out.reason,
            Reason::CellTimeout,
            "{}",
            timed_out.detail
        );
        assert!(started.elapsed() < Duration::from_millis(1500));

        let (big, _) = server(|_| Reply::Answer(OK));
        let too_large = harness.exchange(&cell(big)).unwrap_err();
        assert_eq!(too_large.reason, Reason::ResponseTooLarge);

        // Taken, then dropped unanswered: the request may have been acted on, so it is not sent
        // again; the client hears that the cell was unreachable.
        let (hang_up, connections) = server(|_| Reply::Close);
        let dropped = harness.exchange(&cell(hang_up)).unwrap_err();
        assert_eq!(dropped.reason, Reason::CellUnreachable);
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }
}
