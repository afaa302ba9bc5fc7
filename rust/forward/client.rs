//! Forwarding on the worker's tokio thread: hyper-util's pooled HTTP/1.1 client (its connection
//! pool, idle reaping and retry of requests a closed pooled connection never sent), over TLS
//! (hyper-rustls) to an `https://` cell, one request and its answer within the request timeout.

use super::answer::{answer_headers, Answer};
use super::connect::ConnectWithin;
use super::dns::CachingResolver;
use super::tls::{tls_error, CellTls};
use crate::cells::Cell;
use crate::reason::{Reason, Refusal};
use crate::settings::ForwardSettings;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;
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

/// hyper-util's pooled HTTP/1.1 client to one cell (or, plain, to several), its host names
/// resolved by a [`CachingResolver`]: plain HTTP exactly as before TLS existed, or TLS through
/// hyper-rustls (a connection is only pooled once its handshake is done).
#[derive(Clone)]
pub enum PooledClient {
    Plain(Client<HttpConnector<CachingResolver>, Full<Bytes>>),
    Tls(Client<ConnectWithin<HttpsConnector<HttpConnector<CachingResolver>>>, Full<Bytes>>),
}

impl PooledClient {
    /// Sends `request` (its URI absolute) on a pooled connection or a new one.
    #[inline]
    pub fn request(&self, request: Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            PooledClient::Plain(client) => client.request(request),
            PooledClient::Tls(client) => client.request(request),
        }
    }
}

/// A pooled client with `connect` and `pool_idle` timeouts, keeping at most `max_idle` idle
/// connections per cell, resolving names through `resolver` (its answers shared by clones);
/// with `tls`, every connection is TLS (the connect timeout bounds the TCP connection and the
/// handshake together).
pub fn pooled_client(
    resolver: &CachingResolver,
    connect: Duration,
    pool_idle: Duration,
    max_idle: usize,
    tls: Option<&CellTls>,
) -> PooledClient {
    let mut connector = HttpConnector::new_with_resolver(resolver.clone());
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect));
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(pool_idle)
        .pool_max_idle_per_host(max_idle);
    let Some(tls) = tls else {
        return PooledClient::Plain(builder.build(connector));
    };
    // The TLS connector below checks the scheme; the TCP connector must let https:// through.
    connector.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(ClientConfig::clone(&tls.config))
        .https_only()
        .with_server_name_resolver(FixedServerNameResolver::new(tls.server_name.clone()))
        .enable_http1()
        .wrap_connector(connector);
    PooledClient::Tls(builder.build(ConnectWithin::new(https, connect)))
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
                let tls = cell.tls.as_ref();
                pooled_client(
                    &resolver,
                    timeouts.connect,
                    timeouts.pool_idle,
                    max_idle,
                    tls,
                )
            })
            .collect();
        CellClient {
            clients,
            default_client: pooled_client(
                &resolver,
                ms(settings.connect_timeout_ms),
                ms(settings.pool_idle_timeout_ms),
                max_idle,
                None,
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
        let refusal = unreachable(cell, describe(err));
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

/// What went wrong with a connection, for the problem answer: a TLS failure says so (the
/// handshake, the certificate the cell showed or refused), anything else names its innermost
/// cause (`connection refused`, a name that does not resolve).
fn describe(err: &hyper_util::client::legacy::Error) -> String {
    if let Some(tls) = tls_error(err) {
        return format!("TLS failed: {tls}");
    }
    let mut innermost: &dyn std::error::Error = err;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    match std::ptr::addr_eq(innermost, err) {
        true => format!("connection failed: {err}"),
        false => format!("connection failed: {err}: {innermost}"),
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
    use crate::testing::read_request_head;
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
        serve_with(answer, |stream| Some(Box::new(stream)))
    }

    /// A loopback TLS server with `config`; a connection whose handshake fails is dropped.
    fn tls_server(
        config: Arc<rustls::ServerConfig>,
        answer: fn(usize) -> Reply,
    ) -> (u16, Arc<AtomicUsize>) {
        serve_with(answer, move |stream| {
            let mut tls = rustls::StreamOwned::new(
                rustls::ServerConnection::new(config.clone()).ok()?,
                stream,
            );
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).ok()?;
            }
            Some(Box::new(tls))
        })
    }

    trait Stream: Read + Write + Send {}
    impl<S: Read + Write + Send> Stream for S {}

    /// Accepts connections, each wrapped by `wrap` (none: dropped), answering with `answer`.
    fn serve_with(
        answer: fn(usize) -> Reply,
        wrap: impl Fn(std::net::TcpStream) -> Option<Box<dyn Stream>> + Send + Sync + 'static,
    ) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let wrap = Arc::new(wrap);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let wrap = wrap.clone();
                thread::spawn(move || {
                    if let Some(stream) = wrap(stream) {
                        answer_requests(stream, answer);
                    }
                });
            }
        });
        (port, connections)
    }

    fn answer_requests(mut stream: Box<dyn Stream>, answer: fn(usize) -> Reply) {
        let mut served = 0;
        let mut buf = Vec::new();
        loop {
            if !read_request_head(&mut stream, &mut buf) {
                return;
            }
            let (reply, close) = match answer(served) {
                Reply::Answer(reply) => (reply, false),
                Reply::AnswerAndClose(reply) => (reply, true),
                Reply::Close => return,
            };
            if stream.write_all(reply).is_err() || stream.flush().is_err() || close {
                return;
            }
            served += 1;
        }
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
            tls: None,
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
        settings: ForwardSettings,
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
                settings: settings.clone(),
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

    /// The test cell's server configuration: its certificate for 127.0.0.1, TLS 1.2 and 1.3 or
    /// `versions`, and with `client_ca` a client certificate it must chain to.
    fn cell_tls(
        client_ca: Option<&str>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = vec![CertificateDer::from_pem_slice(fixture("cell.pem").as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(fixture("cell.key").as_bytes()).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(CertificateDer::from_pem_slice(fixture(ca).as_bytes()).unwrap())
                    .unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.into(),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        Arc::new(builder.with_single_cert(chain, key).unwrap())
    }

    /// A cell at `https://127.0.0.1:port` with the TLS client settings `settings`, and a harness
    /// whose client is built for it.
    fn tls_harness(port: u16, settings: &TlsSettings) -> (Harness, Cell) {
        let mut harness = Harness::new(2000, 1 << 20);
        let mut cell = harness.cell(port);
        cell.tls = Some(CellTls::build(settings, "127.0.0.1").unwrap());
        cell.origin = format!("https://127.0.0.1:{port}");
        let settings = harness.settings.clone();
        harness.client = CellClient::new(&settings, &[Arc::new(cell_clone(&cell))]);
        (harness, cell)
    }

    /// The same cell, for a client table (which keeps its own `Arc`s).
    fn cell_clone(cell: &Cell) -> Cell {
        let mut copy = cell_with(0, cell.timeouts);
        copy.tls = cell.tls.clone();
        copy.origin = cell.origin.clone();
        copy
    }

    use super::super::tls::tests::{fixture, mtls_settings};
    use super::super::tls::TlsSettings;

    #[test]
    fn an_mtls_cell_answers_on_one_pooled_connection() {
        let (port, connections) =
            tls_server(cell_tls(Some("ca.pem"), rustls::DEFAULT_VERSIONS), |_| {
                Reply::Answer(OK)
            });
        let (harness, cell) = tls_harness(port, &mtls_settings());
        for _ in 0..3 {
            let answer = harness.exchange(&cell).unwrap();
            assert_eq!(
                (answer.status, &answer.body[..]),
                (200, &b"hello cells"[..])
            );
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "one handshake, then pooled"
        );
    }

    #[test]
    fn a_cell_that_stalls_the_handshake_was_never_sent_the_request() {
        // It accepts TCP and then says nothing: the connect timeout (500 ms here) bounds the
        // handshake too, and the attempt fails as a connect failure, not a slow answer.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            let held: Vec<_> = listener.incoming().take(4).collect();
            thread::sleep(Duration::from_secs(5));
            drop(held);
        });
        let (harness, cell) = tls_harness(port, &mtls_settings());
        let request = Request::get(format!("{}/api/x", cell.origin))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let started = Instant::now();
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        let failed = harness
            .runtime
            .block_on(harness.client.attempt(&cell, request, until))
            .unwrap_err();
        let Failed::NotSent(refusal) = failed else {
            panic!("a stalled handshake sent nothing: {failed:?}");
        };
        assert_eq!(refusal.reason, Reason::CellUnreachable);
        assert!(
            refusal.detail.contains("no connection within 500 ms"),
            "{}",
            refusal.detail
        );
        assert!(started.elapsed() < Duration::from_millis(1500));
    }

    #[test]
    fn a_cell_whose_certificate_the_ca_did_not_sign_was_never_sent_the_request() {
        let (port, _) = tls_server(cell_tls(None, rustls::DEFAULT_VERSIONS), |_| {
            Reply::Answer(OK)
        });
        let wrong_ca = TlsSettings {
            ca_pem: fixture("other-ca.pem"),
            ..mtls_settings()
        };
        let (harness, cell) = tls_harness(port, &wrong_ca);
        let request = Request::get(format!("{}/api/x", cell.origin))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        let failed = harness
            .runtime
            .block_on(harness.client.attempt(&cell, request, until))
            .unwrap_err();
        let Failed::NotSent(refusal) = failed else {
            panic!("a failed handshake sends nothing: {failed:?}");
        };
        assert_eq!(refusal.reason, Reason::CellUnreachable);
        assert!(
            refusal
                .detail
                .starts_with("test-cell: TLS failed: invalid peer certificate"),
            "{}",
            refusal.detail
        );
    }

    #[test]
    fn a_cell_that_requires_a_client_certificate_refuses_a_gateway_without_one() {
        let (port, _) = tls_server(cell_tls(Some("ca.pem"), rustls::DEFAULT_VERSIONS), |_| {
            Reply::Answer(OK)
        });
        let anonymous = TlsSettings {
            cert_pem: None,
            key_pem: None,
            ..mtls_settings()
        };
        let (harness, cell) = tls_harness(port, &anonymous);
        let refusal = harness.exchange(&cell).unwrap_err();
        assert_eq!(refusal.reason, Reason::CellUnreachable);
        assert!(refusal.detail.contains("TLS failed"), "{}", refusal.detail);
    }

    #[test]
    fn a_minimum_of_tls_1_3_refuses_a_cell_that_speaks_only_1_2() {
        let (port, _) = tls_server(cell_tls(None, &[&rustls::version::TLS12]), |_| {
            Reply::Answer(OK)
        });
        let (harness, cell) = tls_harness(port, &mtls_settings());
        assert_eq!(
            harness.exchange(&cell).unwrap().status,
            200,
            "1.2 is allowed by default"
        );
        let strict = TlsSettings {
            min_version: super::super::tls::MinVersion::Tls13,
            ..mtls_settings()
        };
        let (harness, cell) = tls_harness(port, &strict);
        let refusal = harness.exchange(&cell).unwrap_err();
        assert!(refusal.detail.contains("TLS failed"), "{}", refusal.detail);
    }
}
