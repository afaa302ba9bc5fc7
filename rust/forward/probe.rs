//! The health checker's HTTP client: pooled keep-alive GETs on the background I/O runtime.

use crate::settings::ForwardSettings;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Asks cells' health endpoints, off the event loops that serve requests.
pub struct ProbeClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl ProbeClient {
    /// A client with the configured connect timeout and pool idle timeout.
    pub fn new(settings: &ForwardSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(settings.pool_idle_timeout_ms))
            .pool_max_idle_per_host(1)
            .build(connector);
        ProbeClient { client }
    }

    /// Asks `url` with a GET and says whether it answered 2xx within `timeout`.
    pub async fn probe(&self, url: &str, timeout: Duration) -> bool {
        let Ok(request) = Request::get(url).body(Full::new(Bytes::new())) else {
            return false;
        };
        let exchange = async {
            let response = self.client.request(request).await.ok()?;
            let ok = response.status().is_success();
            response.into_body().collect().await.ok()?;
            Some(ok)
        };
        matches!(
            tokio::time::timeout(timeout, exchange).await,
            Ok(Some(true))
        )
    }
}
