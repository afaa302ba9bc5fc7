//! The health checker's HTTP client: pooled keep-alive GETs on the background I/O runtime.

use super::client::{pooled_client, PooledClient};
use super::dns::CachingResolver;
use crate::settings::ForwardSettings;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use std::time::Duration;

/// Asks cells' health endpoints, off the event loops that serve requests.
pub struct ProbeClient {
    client: PooledClient,
}

impl ProbeClient {
    /// A client with the configured connect timeout and pool idle timeout.
    pub fn new(settings: &ForwardSettings) -> Self {
        let ms = Duration::from_millis;
        ProbeClient {
            client: pooled_client(
                &CachingResolver::new(),
                ms(settings.connect_timeout_ms),
                ms(settings.pool_idle_timeout_ms),
                1,
            ),
        }
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
