//! The health checker's HTTP client: pooled keep-alive GETs on the background I/O runtime, over
//! TLS to an `https://` cell.

use super::client::{pooled_client, PooledClient};
use super::dns::CachingResolver;
use crate::cells::Cell;
use crate::settings::ForwardSettings;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use std::sync::Arc;
use std::time::Duration;

/// Asks cells' health endpoints, off the event loops that serve requests.
pub struct ProbeClient {
    /// The client of every plain cell.
    plain: PooledClient,
    /// A TLS cell's own client (its CA, client certificate and server name), by cell index.
    tls: Vec<Option<PooledClient>>,
}

impl ProbeClient {
    /// Clients with the configured connect timeout and pool idle timeout, one shared by the
    /// plain cells and one for each TLS cell of `cells`.
    pub fn new(settings: &ForwardSettings, cells: &[Arc<Cell>]) -> Self {
        let ms = Duration::from_millis;
        let (connect, pool_idle) = (
            ms(settings.connect_timeout_ms),
            ms(settings.pool_idle_timeout_ms),
        );
        let resolver = CachingResolver::new();
        let tls = cells
            .iter()
            .map(|cell| {
                let tls = cell.tls.as_ref()?;
                Some(pooled_client(&resolver, connect, pool_idle, 1, Some(tls)))
            })
            .collect();
        ProbeClient {
            plain: pooled_client(&resolver, connect, pool_idle, 1, None),
            tls,
        }
    }

    /// Asks `url` of `cell` with a GET and says whether it answered 2xx within `timeout`.
    pub async fn probe(&self, cell: &Cell, url: &str, timeout: Duration) -> bool {
        let Ok(request) = Request::get(url).body(Full::new(Bytes::new())) else {
            return false;
        };
        let client = match self.tls.get(cell.index) {
            Some(Some(tls)) => tls,
            _ => &self.plain,
        };
        let exchange = async {
            let response = client.request(request).await.ok()?;
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
