//! A single-threaded executor whose tasks are polled when the event loop calls in.

use std::cell::RefCell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// Tasks woken since the last run, by slot and generation.
#[derive(Default)]
struct ReadyQueue {
    ids: Mutex<Vec<(usize, u32)>>,
}

impl ReadyQueue {
    fn push(&self, id: (usize, u32)) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.push(id);
        }
    }

    fn take(&self, into: &mut Vec<(usize, u32)>) {
        if let Ok(mut ids) = self.ids.lock() {
            std::mem::swap(&mut *ids, into);
        }
    }
}

/// Wakes one task: queues it once until it is polled again.
struct TaskWaker {
    id: (usize, u32),
    queued: AtomicBool,
    ready: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.push(self.id);
        }
    }
}

struct Slot {
    generation: u32,
    task: Option<Task>,
    waker: Option<Arc<TaskWaker>>,
}

/// The tasks of one event loop. Not `Send`: it lives and runs on the loop's thread.
#[derive(Default)]
pub struct Executor {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    ready: Arc<ReadyQueue>,
    live: std::cell::Cell<usize>,
}

impl Executor {
    /// Adds `future` as a task; it is first polled by the next [`Executor::run`].
    pub fn spawn(&self, future: impl Future<Output = ()> + 'static) {
        let mut slots = self.slots.borrow_mut();
        let index = match self.free.borrow_mut().pop() {
            Some(index) => index,
            None => {
                slots.push(Slot {
                    generation: 0,
                    task: None,
                    waker: None,
                });
                slots.len() - 1
            }
        };
        let slot = &mut slots[index];
        let waker = Arc::new(TaskWaker {
            id: (index, slot.generation),
            queued: AtomicBool::new(false),
            ready: self.ready.clone(),
        });
        waker.wake_by_ref();
        slot.task = Some(Box::pin(future));
        slot.waker = Some(waker);
        self.live.set(self.live.get() + 1);
    }

    /// How many tasks are alive.
    pub fn len(&self) -> usize {
        self.live.get()
    }

    /// Whether no task is alive.
    pub fn is_empty(&self) -> bool {
        self.live.get() == 0
    }

    /// Drops every task, as when the loop that drives them is gone.
    pub fn clear(&self) {
        let tasks: Vec<Task> = {
            let mut slots = self.slots.borrow_mut();
            slots
                .iter_mut()
                .filter_map(|slot| slot.task.take())
                .collect()
        };
        self.live.set(0);
        drop(tasks);
    }

    /// Polls every woken task until none is left woken. A task that panics is dropped (its
    /// guards answer for it); the panic goes no further.
    pub fn run(&self) {
        let mut batch = Vec::new();
        loop {
            self.ready.take(&mut batch);
            if batch.is_empty() {
                return;
            }
            for id in batch.drain(..) {
                self.poll_one(id);
            }
        }
    }

    fn poll_one(&self, (index, generation): (usize, u32)) {
        let (mut task, waker) = {
            let mut slots = self.slots.borrow_mut();
            let Some(slot) = slots.get_mut(index) else {
                return;
            };
            if slot.generation != generation {
                return;
            }
            let (Some(task), Some(waker)) = (slot.task.take(), slot.waker.clone()) else {
                return;
            };
            (task, waker)
        };
        waker.queued.store(false, Ordering::Release);
        let as_waker = Waker::from(waker);
        let mut cx = Context::from_waker(&as_waker);
        let polled = catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(&mut cx)));
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[index];
        match polled {
            Ok(Poll::Pending) => slot.task = Some(task),
            Ok(Poll::Ready(())) | Err(_) => {
                slot.generation = slot.generation.wrapping_add(1);
                slot.waker = None;
                drop(slots);
                // Dropped after the borrow ends: a task's guards may spawn or wake others.
                drop(task);
                self.free.borrow_mut().push(index);
                self.live.set(self.live.get() - 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// Pending until `flag` is set, then ready; keeps the waker it was last polled with.
    struct Gate {
        open: Rc<std::cell::Cell<bool>>,
        waker: Rc<RefCell<Option<Waker>>>,
    }

    impl Future for Gate {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.open.get() {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn runs_tasks_to_completion_when_woken() {
        let executor = Executor::default();
        let open = Rc::new(std::cell::Cell::new(false));
        let waker = Rc::new(RefCell::new(None));
        let done = Rc::new(std::cell::Cell::new(false));
        let gate = Gate {
            open: open.clone(),
            waker: waker.clone(),
        };
        let flag = done.clone();
        executor.spawn(async move {
            gate.await;
            flag.set(true);
        });
        executor.run();
        assert!(!done.get());
        assert_eq!(executor.len(), 1);
        open.set(true);
        executor.run();
        assert!(!done.get(), "not polled again until woken");
        waker.borrow_mut().take().unwrap().wake();
        executor.run();
        assert!(done.get());
        assert!(executor.is_empty());
    }

    #[test]
    fn a_panicking_task_is_dropped_and_the_rest_run() {
        let executor = Executor::default();
        let done = Rc::new(std::cell::Cell::new(0));
        let flag = done.clone();
        executor.spawn(async { panic!("boom") });
        executor.spawn(async move { flag.set(flag.get() + 1) });
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        executor.run();
        std::panic::set_hook(hook);
        assert_eq!(done.get(), 1);
        assert!(executor.is_empty());
    }

    #[test]
    fn tasks_may_spawn_tasks_and_stale_wakes_are_ignored() {
        let executor = Rc::new(Executor::default());
        let count = Rc::new(std::cell::Cell::new(0));
        let (inner_exec, inner_count) = (executor.clone(), count.clone());
        executor.spawn(async move {
            let c = inner_count.clone();
            inner_exec.spawn(async move { c.set(c.get() + 10) });
            inner_count.set(inner_count.get() + 1);
        });
        executor.run();
        assert_eq!(count.get(), 11);
        // A wake for a finished task's old slot does nothing to its next occupant.
        executor.ready.push((0, 0));
        executor.run();
        assert!(executor.is_empty());
    }
}
