//! The Python-facing wrappers: every pyclass and exception lives here; the rest is pure Rust.

pub mod bridge;
pub mod clock;
pub mod decision;
pub mod errors;
pub mod profiles;
pub mod router;
pub mod signing;
pub mod tls;
pub mod zone;
