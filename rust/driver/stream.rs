//! A TCP connection whose readiness comes from the loop's [`Reactor`], for hyper to drive.

use super::reactor::{IoWaiters, Reactor};
use hyper::rt::{Read, ReadBufCursor, Write};
use mio::net::TcpStream;
use mio::Token;
use std::io::{self, IoSlice, Write as _};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A non-blocking TCP connection registered with a reactor. Reads and writes assume it is
/// established: await [`LoopStream::connected`] first.
pub struct LoopStream {
    io: TcpStream,
    token: Token,
    waiters: Rc<IoWaiters>,
    reactor: Rc<Reactor>,
    connected: bool,
}

fn park(slot: &std::cell::RefCell<Option<Waker>>, cx: &Context<'_>) {
    let mut slot = slot.borrow_mut();
    match &*slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

impl LoopStream {
    /// Starts connecting to `addr` (TCP_NODELAY); await [`LoopStream::connected`] before use.
    pub fn connect(reactor: &Rc<Reactor>, addr: SocketAddr) -> io::Result<Self> {
        let mut io = TcpStream::connect(addr)?;
        io.set_nodelay(true)?;
        let (token, waiters) = reactor.register(&mut io)?;
        Ok(LoopStream {
            io,
            token,
            waiters,
            reactor: reactor.clone(),
            connected: false,
        })
    }

    /// Ready once the connection is established, or with the reason it could not be.
    pub fn poll_connected(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.connected {
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = self.io.take_error()? {
            return Poll::Ready(Err(err));
        }
        match self.io.peer_addr() {
            Ok(_) => {
                self.connected = true;
                Poll::Ready(Ok(()))
            }
            Err(err)
                if err.kind() == io::ErrorKind::NotConnected
                    || err.raw_os_error() == Some(libc::EINPROGRESS) =>
            {
                park(&self.waiters.write, cx);
                Poll::Pending
            }
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    /// Waits until the connection is established.
    pub async fn connected(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_connected(cx)).await
    }

    fn poll_io<T>(
        &mut self,
        cx: &mut Context<'_>,
        reading: bool,
        mut op: impl FnMut(&mut TcpStream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            match op(&mut self.io) {
                Ok(value) => return Poll::Ready(Ok(value)),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    let slot = if reading {
                        &self.waiters.read
                    } else {
                        &self.waiters.write
                    };
                    park(slot, cx);
                    return Poll::Pending;
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl Drop for LoopStream {
    fn drop(&mut self) {
        self.reactor.deregister(&mut self.io, self.token);
    }
}

impl Read for LoopStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.waiters.readable.get() && !this.waiters.read_closed.get() {
            park(&this.waiters.read, cx);
            return Poll::Pending;
        }
        // SAFETY: read(2) only writes initialized bytes into the unfilled part of the buffer, and
        // the cursor advances by exactly the count it reports.
        let unfilled = unsafe { buf.as_mut() };
        let (ptr, len) = (unfilled.as_mut_ptr(), unfilled.len());
        let fd = this.io.as_raw_fd();
        let read = this.poll_io(cx, true, |_| {
            // SAFETY: ptr/len describe the cursor's unfilled bytes, live for this call.
            let n = unsafe { libc::read(fd, ptr.cast(), len) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match read {
            Poll::Ready(Ok(n)) => {
                // A short read drained the socket; the next bytes bring a new edge. End of stream
                // (0) stays readable so every later read sees it too.
                if n > 0 && n < len {
                    this.waiters.readable.set(false);
                }
                // SAFETY: read(2) initialized exactly n bytes of the unfilled part.
                unsafe { buf.advance(n) };
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                this.waiters.readable.set(false);
                Poll::Pending
            }
        }
    }
}

impl Write for LoopStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_io(cx, false, |io| io.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_io(cx, false, |io| io.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = match self.io.shutdown(Shutdown::Write) {
            Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        };
        Poll::Ready(result)
    }
}
