//! The worker's I/O runtime: one tokio thread that forwards requests to cells and runs the
//! health checker, started on first use (after granian forks its workers).
//!
//! A current-thread runtime driven by a thread of its own: tasks spawned from the event loop's
//! thread wake it through its I/O driver, and it never hands work to another thread.

use std::sync::OnceLock;
use tokio::runtime::{Builder, Handle};

static RUNTIME: OnceLock<Handle> = OnceLock::new();

/// The shared runtime's handle, built (and its thread started) the first time it is needed.
pub fn runtime() -> &'static Handle {
    RUNTIME.get_or_init(|| {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|err| {
                // Without a runtime nothing is forwarded; say so loudly rather than limp on.
                eprintln!("cellgate: cannot start the I/O runtime: {err}");
                std::process::abort()
            });
        let handle = runtime.handle().clone();
        let started = std::thread::Builder::new()
            .name("cellgate-io".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()));
        if let Err(err) = started {
            eprintln!("cellgate: cannot start the I/O thread: {err}");
            std::process::abort()
        }
        handle
    })
}
