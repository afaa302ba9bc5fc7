//! Forwarding to cells: the request as it leaves, the pooled connections it travels on, the
//! exchange with its deadline, and the answer as it returns.

pub mod answer;
pub mod client;
pub mod exchange;
pub mod headers;
pub mod pool;
pub mod probe;
pub mod request;

pub use answer::Answer;
pub use request::Outbound;
