//! Forwarding to cells: the request as it leaves, the pooled client it travels through (with the
//! exchange's deadline), the answer as it returns, the health checker's probes, and TLS to
//! `https://` cells.

pub mod answer;
pub mod client;
pub mod connect;
pub mod dns;
pub mod headers;
pub mod probe;
pub mod request;
pub mod retry;
pub mod tls;

pub use answer::Answer;
pub use request::Outbound;
