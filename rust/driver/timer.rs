//! Deadlines on the loop's [`Reactor`]: a future that gives up when its time is out.

use super::reactor::{Reactor, TimerKey};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// `future`, or `Err(TimedOut)` once `deadline` passes first.
pub struct Deadline<'r, F> {
    reactor: &'r Reactor,
    deadline: Instant,
    timer: Option<TimerKey>,
    future: Pin<Box<F>>,
}

/// The deadline passed before the future finished.
#[derive(Debug, PartialEq, Eq)]
pub struct TimedOut;

/// Runs `future` until `deadline`.
pub fn deadline<F: Future>(reactor: &Reactor, deadline: Instant, future: F) -> Deadline<'_, F> {
    Deadline {
        reactor,
        deadline,
        timer: None,
        future: Box::pin(future),
    }
}

impl<F: Future> Future for Deadline<'_, F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(value) = this.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(value));
        }
        if Instant::now() >= this.deadline {
            return Poll::Ready(Err(TimedOut));
        }
        if this.timer.is_none() {
            // Tasks keep one waker for life, so the one given here stays the right one.
            this.timer = Some(this.reactor.wake_at(this.deadline, cx.waker().clone()));
        }
        Poll::Pending
    }
}

impl<F> Drop for Deadline<'_, F> {
    fn drop(&mut self) {
        if let Some(key) = self.timer.take() {
            self.reactor.cancel(key);
        }
    }
}
