//! The node's link to Redis: one multiplexed connection (redis-rs's `ConnectionManager`, which
//! pipelines concurrent commands on it and reconnects after an I/O error), a short timeout on
//! every command, and whether Redis is taken to be down.
//!
//! After a failure Redis is taken to be down for `retry_ms`: meanwhile no request waits for
//! it, and each is answered as configured; the first request after that tries it again. Each
//! change between up and down is said once on stderr, and counted.

use super::RedisSettings;
use crate::runtime::runtime;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ClientTlsConfig, RedisError, TlsCertificates};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The limit of the exchange's bulk work (writing back, reloading, forgetting revocations).
pub const BULK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the link has seen, for the state report.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Commands that failed or timed out.
    pub errors: AtomicU64,
    /// Times Redis was taken to be down.
    pub outages: AtomicU64,
    /// Quota checks answered by the node's own limits while Redis was down.
    pub local_quota_checks: AtomicU64,
    /// Requests refused because their quota could not be checked in Redis.
    pub refused_quota_checks: AtomicU64,
    /// Requests refused without asking Redis: it had found the customer limited until later.
    pub limited_locally: AtomicU64,
    /// Events published to the other nodes, and received from them.
    pub published: AtomicU64,
    pub received: AtomicU64,
    /// Times this node wrote back what it knows and reloaded the shared revocations.
    pub resyncs: AtomicU64,
    /// Reloads of the shared revocations other nodes asked for (several asks at once: one).
    pub reloads: AtomicU64,
}

/// The connection and its health.
pub struct Link {
    pub client: Client,
    config: ConnectionManagerConfig,
    /// Made on first use, on the worker's runtime: a router built before granian forks its
    /// workers (to check the configuration) must not start the runtime there.
    manager: OnceLock<ConnectionManager>,
    /// The exchange's own connection, with the bulk limit: its write-backs and reloads neither
    /// wait behind nor hold up the requests' quota checks.
    bulk: OnceLock<ConnectionManager>,
    pub timeout: Duration,
    retry: Duration,
    /// The URL without its password, for messages.
    pub shown_url: String,
    epoch: Instant,
    /// Until when (ns since `epoch`) Redis is taken to be down; 0: up.
    down_until_ns: AtomicU64,
    down: AtomicBool,
    pub counters: LinkCounters,
}

impl Link {
    /// A link to `settings.url`, connected lazily (refused when the URL is not one redis-rs
    /// reads).
    pub fn open(settings: &RedisSettings) -> Result<Link, String> {
        let client = client(settings).map_err(|err| format!("redis: {err}"))?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(settings.retry_ms));
        Ok(Link {
            client,
            config,
            manager: OnceLock::new(),
            bulk: OnceLock::new(),
            timeout,
            retry: Duration::from_millis(settings.retry_ms),
            shown_url: shown(&settings.url),
            epoch: Instant::now(),
            down_until_ns: AtomicU64::new(0),
            down: AtomicBool::new(false),
            counters: LinkCounters::default(),
        })
    }

    /// A handle on the requests' connection for one command or pipeline.
    pub fn connection(&self) -> ConnectionManager {
        self.manager
            .get_or_init(|| self.manager_with(self.timeout))
            .clone()
    }

    /// A handle on the exchange's connection (commands limited to `BULK_TIMEOUT`).
    pub fn bulk_connection(&self) -> ConnectionManager {
        self.bulk
            .get_or_init(|| self.manager_with(BULK_TIMEOUT))
            .clone()
    }

    /// A connection made lazily on the worker's runtime, answering within `limit`.
    fn manager_with(&self, limit: Duration) -> ConnectionManager {
        let _entered = runtime().enter();
        let config = self.config.clone().set_response_timeout(Some(limit));
        // Only resubscription without a push sender can fail, which is not asked for.
        ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .expect("a connection manager without resubscription")
    }

    /// Whether Redis may be asked now (it is up, or its down time is over).
    pub fn available(&self) -> bool {
        let until = self.down_until_ns.load(Relaxed);
        until == 0 || self.elapsed_ns() >= until
    }

    /// Whether Redis is taken to be down.
    pub fn is_down(&self) -> bool {
        self.down.load(Relaxed)
    }

    /// Runs `command` under the link's timeout, marking Redis down when it fails and up when it
    /// answers.
    pub async fn run<T>(
        &self,
        command: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, String> {
        self.run_within(self.timeout, command).await
    }

    /// `run` with a limit of its own: for the exchange's bulk work (writing back and reloading
    /// every revocation), which a large set can make longer than a request's timeout; on
    /// [`Link::bulk_connection`].
    pub async fn run_within<T>(
        &self,
        limit: Duration,
        command: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, String> {
        let result = match tokio::time::timeout(limit, command).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
        };
        match &result {
            Ok(_) => self.answered(),
            Err(why) => self.failed(why),
        }
        result
    }

    /// Says that Redis answered.
    pub fn answered(&self) {
        if self.down.swap(false, Relaxed) {
            self.down_until_ns.store(0, Relaxed);
            eprintln!("cellgate state: Redis at {} answers again", self.shown_url);
        }
    }

    /// Says that a command failed: Redis is taken to be down for the retry interval.
    pub fn failed(&self, why: &str) {
        self.counters.errors.fetch_add(1, Relaxed);
        let until = self.elapsed_ns() + self.retry.as_nanos() as u64;
        self.down_until_ns.store(until.max(1), Relaxed);
        if !self.down.swap(true, Relaxed) {
            self.counters.outages.fetch_add(1, Relaxed);
            eprintln!(
                "cellgate state: Redis at {} is unreachable ({why}); asking again every {} ms",
                self.shown_url,
                self.retry.as_millis()
            );
        }
    }

    /// The retry interval.
    pub fn retry(&self) -> Duration {
        self.retry
    }

    fn elapsed_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// The client for `settings.url`: over TLS for `rediss://`, with the configured trust and
/// client certificate.
fn client(settings: &RedisSettings) -> Result<Client, RedisError> {
    let Some(tls) = &settings.tls else {
        return Client::open(settings.url.as_str());
    };
    let client_tls = match (&tls.cert_pem, &tls.key_pem) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: cert.as_bytes().to_vec(),
            client_key: key.as_bytes().to_vec(),
        }),
        _ => None,
    };
    let certificates = TlsCertificates {
        client_tls,
        root_cert: tls.ca_pem.as_ref().map(|ca| ca.as_bytes().to_vec()),
    };
    Client::build_with_tls(settings.url.as_str(), certificates)
}

/// `url` with any password replaced by `***`.
fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            shown("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(shown("redis://:secret@host:6379"), "redis://:***@host:6379");
        assert_eq!(
            shown("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }
}
