//! The process's I/O runtime: one tokio runtime, started on first use (after any fork).

use std::sync::OnceLock;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The environment variable that sets how many I/O threads the runtime runs (default 1).
pub const IO_THREADS_ENV: &str = "CELLGATE_IO_THREADS";

/// The shared runtime, built the first time it is needed.
pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let threads = std::env::var(IO_THREADS_ENV)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(1);
        Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("cellgate-io")
            .enable_all()
            .build()
            .unwrap_or_else(|err| {
                // Without a runtime nothing can be forwarded; say so loudly rather than limp on.
                eprintln!("cellgate: cannot start the I/O runtime: {err}");
                std::process::abort()
            })
    })
}
