//! Forwarding on the worker's tokio thread: hyper-util's pooled HTTP/1.1 client (its connection
//! pool, idle reaping and retry of requests a closed pooled connection never sent), one request
//! and its answer within the request timeout.

use super::answer::Answer;
use super::exchange::{read_answer, unreachable};
use crate::cells::Cell;
use crate::reason::{Reason, Refusal};
use crate::settings::ForwardSettings;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// The pooled client every forward of one router goes through.
pub struct CellClient {
    client: Client<HttpConnector, Full<Bytes>>,
    request_timeout: Duration,
    max_response_bytes: usize,
}

impl CellClient {
    /// A client with the configured connect timeout, pool size and idle timeout.
    pub fn new(settings: &ForwardSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(settings.pool_idle_timeout_ms))
            .pool_max_idle_per_host(settings.pool_max_idle_per_cell)
            .build(connector);
        CellClient {
            client,
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            max_response_bytes: settings.max_response_bytes,
        }
    }

    /// Sends `request` (origin-form) to `cell` and collects the answer, or says why not. Runs on
    /// the tokio runtime.
    pub async fn exchange(
        &self,
        cell: &Cell,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Answer, Refusal> {
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |target| target.as_str());
        *request.uri_mut() = format!("{}{target}", cell.origin)
            .parse()
            .map_err(|err| Refusal::new(Reason::Malformed, format!("request target: {err}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| unreachable(cell, format!("connection failed: {err}")))?;
            read_answer(cell, self.max_response_bytes, response).await
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Refusal::new(
                Reason::CellTimeout,
                format!(
                    "{}: no answer within {} ms",
                    cell.id,
                    self.request_timeout.as_millis()
                ),
            )),
        }
    }
}
