//! Keep-alive connections to each cell, owned by one event loop and driven by its reactor.

use crate::cells::Cell;
use crate::driver::executor::Executor;
use crate::driver::reactor::Reactor;
use crate::driver::stream::LoopStream;
use crate::driver::timer::deadline;
use crate::settings::ForwardSettings;
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// One connection's request handle.
pub type Sender = http1::SendRequest<Full<Bytes>>;

/// How long a cell's resolved addresses are reused before its host name is looked up again.
const RESOLVED_FOR: Duration = Duration::from_secs(30);

struct Idle {
    sender: Sender,
    since: Instant,
}

struct Resolved {
    authority: String,
    addrs: Vec<SocketAddr>,
    at: Instant,
    next: usize,
}

#[derive(Default)]
struct CellPool {
    idle: Vec<Idle>,
    resolved: Option<Resolved>,
}

/// The connections of one event loop to every cell, by the cell's index.
pub struct Pools {
    reactor: Rc<Reactor>,
    executor: Rc<Executor>,
    cells: RefCell<Vec<CellPool>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    pub request_timeout: Duration,
    pub max_response_bytes: usize,
}

impl Pools {
    /// Empty pools whose connections run on `reactor` and `executor`.
    pub fn new(reactor: Rc<Reactor>, executor: Rc<Executor>, settings: &ForwardSettings) -> Self {
        Pools {
            reactor,
            executor,
            cells: RefCell::new(Vec::new()),
            connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
            idle_timeout: Duration::from_millis(settings.pool_idle_timeout_ms),
            max_idle: settings.pool_max_idle_per_cell,
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            max_response_bytes: settings.max_response_bytes,
        }
    }

    /// The reactor the connections wait on.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    fn with_pool<T>(&self, cell: &Cell, f: impl FnOnce(&mut CellPool) -> T) -> T {
        let mut cells = self.cells.borrow_mut();
        if cells.len() <= cell.index {
            cells.resize_with(cell.index + 1, CellPool::default);
        }
        f(&mut cells[cell.index])
    }

    /// The most recently used idle connection to `cell` that is still open and fresh.
    pub fn take_idle(&self, cell: &Cell) -> Option<Sender> {
        let now = Instant::now();
        self.with_pool(cell, |pool| {
            while let Some(idle) = pool.idle.pop() {
                if !idle.sender.is_closed() && now.duration_since(idle.since) < self.idle_timeout {
                    return Some(idle.sender);
                }
            }
            None
        })
    }

    /// Returns a connection after a complete exchange; past the idle limit it is closed.
    pub fn put_back(&self, cell: &Cell, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        self.with_pool(cell, |pool| {
            if pool.idle.len() < self.max_idle {
                pool.idle.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        });
    }

    /// How many idle connections wait for `cell`.
    pub fn idle_count(&self, cell: &Cell) -> usize {
        self.with_pool(cell, |pool| pool.idle.len())
    }

    fn address(&self, cell: &Cell) -> Result<SocketAddr, String> {
        let now = Instant::now();
        self.with_pool(cell, |pool| {
            let stale = pool.resolved.as_ref().is_none_or(|r| {
                r.authority != cell.authority || now.duration_since(r.at) >= RESOLVED_FOR
            });
            if stale {
                let addrs: Vec<SocketAddr> = cell
                    .authority
                    .to_socket_addrs()
                    .map_err(|err| format!("cannot resolve {}: {err}", cell.authority))?
                    .collect();
                if addrs.is_empty() {
                    return Err(format!("{} resolves to no address", cell.authority));
                }
                pool.resolved = Some(Resolved {
                    authority: cell.authority.clone(),
                    addrs,
                    at: now,
                    next: 0,
                });
            }
            let resolved = pool.resolved.as_mut().ok_or("no address")?;
            let addr = resolved.addrs[resolved.next % resolved.addrs.len()];
            resolved.next = resolved.next.wrapping_add(1);
            Ok(addr)
        })
    }

    /// Opens a new connection to `cell` within the connect timeout; its driver runs as a task.
    pub async fn connect(&self, cell: &Cell) -> Result<Sender, String> {
        let addr = self.address(cell)?;
        let mut stream = LoopStream::connect(&self.reactor, addr)
            .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
        let until = Instant::now() + self.connect_timeout;
        match deadline(&self.reactor, until, stream.connected()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(format!("cannot connect to {addr}: {err}")),
            Err(_) => {
                return Err(format!(
                    "cannot connect to {addr} within {} ms",
                    self.connect_timeout.as_millis()
                ))
            }
        }
        let (sender, connection) = http1::handshake(stream)
            .await
            .map_err(|err| format!("handshake with {addr}: {err}"))?;
        self.executor.spawn(async move {
            // Ends when the cell or the pool closes the connection; the socket goes with it.
            let _ = connection.await;
        });
        Ok(sender)
    }
}
