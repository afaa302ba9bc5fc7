//! The background runtime: one tokio thread for the health checker, started on first use (after
//! any fork). Requests never run here: they are forwarded on the event loop's thread.

use std::sync::OnceLock;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The shared runtime, built the first time it is needed.
pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cellgate-health")
            .enable_all()
            .build()
            .unwrap_or_else(|err| {
                // Without a runtime no cell is ever checked; say so loudly rather than limp on.
                eprintln!("cellgate: cannot start the health-check runtime: {err}");
                std::process::abort()
            })
    })
}
