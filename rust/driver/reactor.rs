//! Readiness for one event loop: a mio poll whose descriptor the host loop watches.
//!
//! The host loop calls [`Reactor::turn`] when that descriptor is readable. A turn collects what
//! became ready without blocking and wakes the futures waiting on it: sockets (edge-triggered, so
//! an operation always tries the system call before it waits) and timers (one timerfd armed for
//! the earliest deadline).

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

const TIMER: Token = Token(usize::MAX);
const NUDGE: Token = Token(usize::MAX - 1);
const EVENTS_PER_TURN: usize = 256;

/// Who waits to read and to write one registered socket, and whether it may have bytes to read.
///
/// Readiness is edge-triggered: a socket is marked readable by an event and unmarked by the read
/// that drains it, so a read that would only say "nothing yet" is never attempted.
pub struct IoWaiters {
    pub read: RefCell<Option<Waker>>,
    pub write: RefCell<Option<Waker>>,
    pub readable: Cell<bool>,
    /// The peer closed its side: reads stay worth trying (they return the end of the stream).
    pub read_closed: Cell<bool>,
}

impl Default for IoWaiters {
    fn default() -> Self {
        IoWaiters {
            read: RefCell::new(None),
            write: RefCell::new(None),
            // Until the first event says otherwise, a read is worth trying.
            readable: Cell::new(true),
            read_closed: Cell::new(false),
        }
    }
}

impl IoWaiters {
    fn wake(&self, read: bool, write: bool) {
        if read {
            self.readable.set(true);
            if let Some(waker) = self.read.borrow_mut().take() {
                waker.wake();
            }
        }
        if write {
            if let Some(waker) = self.write.borrow_mut().take() {
                waker.wake();
            }
        }
    }
}

/// A timer's place in the reactor: its deadline and a sequence number that makes it unique.
pub type TimerKey = (Instant, u64);

/// The reactor of one event loop. Not `Send`: it lives on the loop's thread.
pub struct Reactor {
    poll: RefCell<Poll>,
    events: RefCell<Events>,
    sockets: RefCell<Vec<Option<Rc<IoWaiters>>>>,
    free_tokens: RefCell<Vec<usize>>,
    timers: RefCell<BTreeMap<TimerKey, Waker>>,
    next_timer: Cell<u64>,
    armed_for: Cell<Option<Instant>>,
    timerfd: OwnedFd,
    nudge: Arc<mio::Waker>,
}

impl Reactor {
    /// A reactor with its poll, its timerfd and its nudge (a wake-up with nothing behind it).
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        // SAFETY: timerfd_create returns a new descriptor we own, or -1.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is valid and owned by nobody else.
        let timerfd = unsafe { OwnedFd::from_raw_fd(fd) };
        poll.registry().register(
            &mut SourceFd(&timerfd.as_raw_fd()),
            TIMER,
            Interest::READABLE,
        )?;
        let nudge = Arc::new(mio::Waker::new(poll.registry(), NUDGE)?);
        Ok(Reactor {
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(EVENTS_PER_TURN)),
            sockets: RefCell::new(Vec::new()),
            free_tokens: RefCell::new(Vec::new()),
            timers: RefCell::new(BTreeMap::new()),
            next_timer: Cell::new(0),
            armed_for: Cell::new(None),
            timerfd,
            nudge,
        })
    }

    /// The descriptor the host loop watches for readability.
    pub fn fd(&self) -> RawFd {
        self.poll.borrow().as_raw_fd()
    }

    /// Makes the descriptor readable so the host loop calls [`Reactor::turn`] soon.
    pub fn nudge(&self) {
        // A failed nudge leaves a wake-up to the next socket or timer event.
        let _ = self.nudge.wake();
    }

    /// The nudge, for another thread: waking it makes the descriptor readable.
    pub fn remote_nudge(&self) -> Arc<mio::Waker> {
        self.nudge.clone()
    }

    /// Registers a socket for read and write readiness; returns its token and waiters.
    pub fn register(
        &self,
        source: &mut impl mio::event::Source,
    ) -> io::Result<(Token, Rc<IoWaiters>)> {
        let waiters = Rc::new(IoWaiters::default());
        let mut sockets = self.sockets.borrow_mut();
        let index = match self.free_tokens.borrow_mut().pop() {
            Some(index) => index,
            None => {
                sockets.push(None);
                sockets.len() - 1
            }
        };
        let token = Token(index);
        if let Err(err) = self.registry(|registry| {
            registry.register(source, token, Interest::READABLE | Interest::WRITABLE)
        }) {
            self.free_tokens.borrow_mut().push(index);
            return Err(err);
        }
        sockets[index] = Some(waiters.clone());
        Ok((token, waiters))
    }

    /// Forgets a socket registered with `token`.
    pub fn deregister(&self, source: &mut impl mio::event::Source, token: Token) {
        // Closing the socket removes it from the poll as well; a failure here changes nothing.
        let _ = self.registry(|registry| registry.deregister(source));
        if let Some(slot) = self.sockets.borrow_mut().get_mut(token.0) {
            *slot = None;
            self.free_tokens.borrow_mut().push(token.0);
        }
    }

    fn registry<T>(&self, f: impl FnOnce(&Registry) -> io::Result<T>) -> io::Result<T> {
        f(self.poll.borrow().registry())
    }

    /// Wakes `waker` at `deadline` (or at the next turn, if it has passed), unless cancelled.
    pub fn wake_at(&self, deadline: Instant, waker: Waker) -> TimerKey {
        let key = (deadline, self.next_timer.get());
        self.next_timer.set(key.1.wrapping_add(1));
        self.timers.borrow_mut().insert(key, waker);
        if self.armed_for.get().is_none_or(|armed| deadline < armed) {
            self.arm(deadline);
        }
        key
    }

    /// Forgets a timer that is no longer needed.
    pub fn cancel(&self, key: TimerKey) {
        self.timers.borrow_mut().remove(&key);
    }

    fn arm(&self, deadline: Instant) {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_micros(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and a live itimerspec; the old value is not asked for.
        unsafe { libc::timerfd_settime(self.timerfd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        self.armed_for.set(Some(deadline));
    }

    /// Collects what is ready, without blocking, and wakes whoever waits for it.
    pub fn turn(&self) -> io::Result<()> {
        let mut timer_fired = false;
        {
            let mut events = self.events.borrow_mut();
            loop {
                match self
                    .poll
                    .borrow_mut()
                    .poll(&mut events, Some(Duration::ZERO))
                {
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    other => other?,
                }
                break;
            }
            let sockets = self.sockets.borrow();
            for event in events.iter() {
                match event.token() {
                    TIMER => timer_fired = true,
                    NUDGE => {}
                    Token(index) => {
                        if let Some(Some(waiters)) = sockets.get(index) {
                            let failed = event.is_error();
                            if failed || event.is_read_closed() {
                                waiters.read_closed.set(true);
                            }
                            let read = failed || event.is_readable() || event.is_read_closed();
                            let write = failed || event.is_writable() || event.is_write_closed();
                            waiters.wake(read, write);
                        }
                    }
                }
            }
        }
        if timer_fired {
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN is fine.
            unsafe { libc::read(self.timerfd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
            self.armed_for.set(None);
        }
        self.fire_timers();
        Ok(())
    }

    fn fire_timers(&self) {
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut timers = self.timers.borrow_mut();
            while let Some(entry) = timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            match timers.first_key_value() {
                Some((&(next, _), _)) => {
                    if self
                        .armed_for
                        .get()
                        .is_none_or(|armed| armed > next || armed <= now)
                    {
                        self.arm(next);
                    }
                }
                None => self.armed_for.set(None),
            }
        }
        due.into_iter().for_each(Waker::wake);
    }

    /// How many timers are waiting.
    pub fn timers_pending(&self) -> usize {
        self.timers.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wait_readable(reactor: &Reactor, timeout_ms: i32) -> bool {
        let mut fd = libc::pollfd {
            fd: reactor.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut fd, 1, timeout_ms) == 1 }
    }

    #[test]
    fn a_timer_makes_the_descriptor_readable_and_wakes_once_due() {
        let reactor = Reactor::new().unwrap();
        let count = Arc::new(Count::default());
        let started = Instant::now();
        reactor.wake_at(
            started + Duration::from_millis(30),
            Waker::from(count.clone()),
        );
        let cancelled = reactor.wake_at(
            started + Duration::from_millis(10),
            Waker::from(count.clone()),
        );
        reactor.cancel(cancelled);
        assert_eq!(reactor.timers_pending(), 1);
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(wait_readable(&reactor, 1000), "the timer never fired");
            reactor.turn().unwrap();
        }
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(reactor.timers_pending(), 0);
    }

    #[test]
    fn a_nudge_makes_the_descriptor_readable_until_the_next_turn() {
        let reactor = Reactor::new().unwrap();
        assert!(!wait_readable(&reactor, 0));
        reactor.nudge();
        assert!(wait_readable(&reactor, 1000));
        reactor.turn().unwrap();
        assert!(!wait_readable(&reactor, 0));
    }
}
