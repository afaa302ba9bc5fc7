//! A connector whose whole connection, TLS handshake included, must be made within the cell's
//! connect timeout. Without it only the TCP connection was bounded: a cell that accepted TCP
//! and then stalled the handshake used up the request's whole deadline and ended as a timeout
//! (never retried, though nothing had been sent) instead of a failed connect.

use hyper::Uri;
use std::error::Error;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

type BoxError = Box<dyn Error + Send + Sync>;

/// `inner`, each connection made within `limit` or failed as timed out.
#[derive(Clone)]
pub struct ConnectWithin<C> {
    inner: C,
    limit: Duration,
}

impl<C> ConnectWithin<C> {
    pub fn new(inner: C, limit: Duration) -> Self {
        ConnectWithin { inner, limit }
    }
}

impl<C> Service<Uri> for ConnectWithin<C>
where
    C: Service<Uri>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {} ms", limit.as_millis()),
                )
                .into()),
            }
        })
    }
}
