//! One request to a cell and its answer, within the request timeout.

use super::answer::{answer_headers, Answer};
use super::pool::Pools;
use crate::cells::Cell;
use crate::driver::timer::{deadline, TimedOut};
use crate::reason::{Reason, Refusal};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use std::time::Instant;

/// How many times a request refused unsent by a pooled connection the cell had closed goes out
/// again on another connection. Nothing of it reached the cell, so this is safe for any method.
const UNSENT_RETRIES: usize = 2;

/// Sends `request` to `cell` and collects the answer, or says why not.
pub async fn exchange(
    pools: &Pools,
    cell: &Cell,
    request: Request<Full<Bytes>>,
) -> Result<Answer, Refusal> {
    let until = Instant::now() + pools.request_timeout;
    match deadline(pools.reactor(), until, send(pools, cell, request)).await {
        Ok(result) => result,
        Err(TimedOut) => Err(Refusal::new(
            Reason::CellTimeout,
            format!(
                "{}: no answer within {} ms",
                cell.id,
                pools.request_timeout.as_millis()
            ),
        )),
    }
}

/// 502 cell_unreachable for `cell`, saying what failed.
pub fn unreachable(cell: &Cell, what: impl std::fmt::Display) -> Refusal {
    Refusal::new(Reason::CellUnreachable, format!("{}: {what}", cell.id))
}

async fn send(
    pools: &Pools,
    cell: &Cell,
    mut request: Request<Full<Bytes>>,
) -> Result<Answer, Refusal> {
    for _ in 0..=UNSENT_RETRIES {
        let mut sender = match pools.take_idle(cell) {
            Some(sender) => sender,
            None => pools
                .connect(cell)
                .await
                .map_err(|err| unreachable(cell, err))?,
        };
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => {
                let answer = read_answer(cell, pools.max_response_bytes, response).await?;
                pools.put_back(cell, sender);
                return Ok(answer);
            }
            Err(mut err) => match err.take_message() {
                Some(unsent) => request = unsent,
                None => {
                    return Err(unreachable(
                        cell,
                        format!("connection failed: {}", err.into_error()),
                    ))
                }
            },
        }
    }
    Err(unreachable(
        cell,
        "connections kept closing before the request could be sent",
    ))
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
    use crate::driver::executor::Executor;
    use crate::driver::reactor::Reactor;
    use crate::settings::ForwardSettings;
    use std::cell::RefCell;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

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

    struct Driver {
        reactor: Rc<Reactor>,
        executor: Rc<Executor>,
        pools: Rc<Pools>,
    }

    impl Driver {
        fn new(request_timeout_ms: u64, max_response_bytes: usize) -> Self {
            let reactor = Rc::new(Reactor::new().unwrap());
            let executor = Rc::new(Executor::default());
            let settings = ForwardSettings {
                connect_timeout_ms: 500,
                request_timeout_ms,
                pool_idle_timeout_ms: 30_000,
                pool_max_idle_per_cell: 4,
                max_response_bytes,
                trusted_proxies: Vec::new(),
                forwarded_header: Default::default(),
                transport: Default::default(),
            };
            let pools = Rc::new(Pools::new(reactor.clone(), executor.clone(), &settings));
            Driver {
                reactor,
                executor,
                pools,
            }
        }

        /// Runs one exchange to completion the way the event loop would: wait for the reactor's
        /// descriptor, turn, run.
        fn exchange(&self, cell: &Rc<Cell>) -> Result<Answer, Refusal> {
            // What the loop does whenever the descriptor is readable: a cell's close is noticed.
            self.reactor.turn().unwrap();
            self.executor.run();
            let result = Rc::new(RefCell::new(None));
            let (pools, cell, out) = (self.pools.clone(), cell.clone(), result.clone());
            self.executor.spawn(async move {
                let request = Request::get("/api/x")
                    .header("host", cell.authority.as_str())
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                *out.borrow_mut() = Some(exchange(&pools, &cell, request).await);
            });
            let give_up = Instant::now() + Duration::from_secs(10);
            loop {
                self.executor.run();
                if let Some(done) = result.borrow_mut().take() {
                    return done;
                }
                assert!(Instant::now() < give_up, "the exchange never finished");
                let mut fd = libc::pollfd {
                    fd: self.reactor.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one live pollfd.
                unsafe { libc::poll(&mut fd, 1, 100) };
                self.reactor.turn().unwrap();
            }
        }
    }

    #[test]
    fn answers_and_reuses_the_connection() {
        let (port, connections) = server(|_| Reply::Answer(OK));
        let driver = Driver::new(2000, 1 << 20);
        let cell = Rc::new(cell(port));
        for _ in 0..3 {
            let answer = driver.exchange(&cell).unwrap();
            assert_eq!(answer.status, 200);
            assert_eq!(&answer.body[..], b"hello cells");
            let names: Vec<&str> = answer.headers.iter().map(|(n, _)| n.as_str()).collect();
            assert!(names.contains(&"x-cell") && !names.contains(&"connection"));
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        assert_eq!(driver.pools.idle_count(&cell), 1);
        assert_eq!(
            driver.reactor.timers_pending(),
            0,
            "deadlines are cancelled"
        );
    }

    #[test]
    fn a_closed_idle_connection_is_replaced_without_losing_the_request() {
        // Each connection answers once and closes: the pooled one is dead by the next request.
        let (port, connections) = server(|_| Reply::AnswerAndClose(OK));
        let driver = Driver::new(2000, 1 << 20);
        let cell = Rc::new(cell(port));
        assert_eq!(driver.exchange(&cell).unwrap().status, 200);
        thread::sleep(Duration::from_millis(50));
        assert_eq!(driver.exchange(&cell).unwrap().status, 200);
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn refusals_say_what_went_wrong() {
        let driver = Driver::new(300, 8);
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = driver.exchange(&Rc::new(cell(dead_port))).unwrap_err();
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
        let timed_out = driver.exchange(&Rc::new(cell(silent))).unwrap_err();
        assert_eq!(
            timed_out.reason,
            Reason::CellTimeout,
            "{}",
            timed_out.detail
        );
        assert!(started.elapsed() < Duration::from_millis(1500));

        let (big, _) = server(|_| Reply::Answer(OK));
        let too_large = driver.exchange(&Rc::new(cell(big))).unwrap_err();
        assert_eq!(too_large.reason, Reason::ResponseTooLarge);

        // Taken, then dropped unanswered: the request may have been acted on, so it is not sent
        // again; the client hears that the cell was unreachable.
        let (hang_up, connections) = server(|_| Reply::Close);
        let dropped = driver.exchange(&Rc::new(cell(hang_up))).unwrap_err();
        assert_eq!(dropped.reason, Reason::CellUnreachable);
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }
}
