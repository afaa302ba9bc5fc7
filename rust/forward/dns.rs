//! Cell host names resolved off the event loop (hyper-util's `GaiResolver` runs `getaddrinfo` on
//! a blocking thread), each answer kept for a while: successes for `ttl`, failures for a short
//! `failure_ttl`, so that a name that does not resolve costs one lookup per interval rather than
//! one per request, and only its own cell's requests fail (the health checks take it out).

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower_service::Service;

/// How long a resolved name is reused.
pub const RESOLVED_TTL: Duration = Duration::from_secs(30);
/// How long a failed lookup is remembered before the name is tried again.
pub const FAILED_TTL: Duration = Duration::from_secs(2);

/// One lookup's answer: the addresses, or why there are none.
type Answer = Result<Vec<SocketAddr>, String>;

/// A resolver that remembers answers (`R`: the one that asks, `GaiResolver` in the gateway).
#[derive(Clone)]
pub struct CachingResolver<R = GaiResolver> {
    inner: R,
    cache: Arc<Mutex<HashMap<String, (Instant, Answer)>>>,
    ttl: Duration,
    failure_ttl: Duration,
}

impl CachingResolver {
    /// The gateway's resolver: `getaddrinfo` on a blocking thread, answers kept.
    pub fn new() -> Self {
        Self::with(GaiResolver::new(), RESOLVED_TTL, FAILED_TTL)
    }
}

impl Default for CachingResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> CachingResolver<R> {
    /// A resolver asking `inner`, keeping successes for `ttl` and failures for `failure_ttl`.
    pub fn with(inner: R, ttl: Duration, failure_ttl: Duration) -> Self {
        CachingResolver {
            inner,
            cache: Arc::new(Mutex::new(HashMap::new())),
            ttl,
            failure_ttl,
        }
    }

    fn cached(&self, name: &str) -> Option<Answer> {
        let cache = self.cache.lock().ok()?;
        let (at, answer) = cache.get(name)?;
        let ttl = match answer {
            Ok(_) => self.ttl,
            Err(_) => self.failure_ttl,
        };
        (at.elapsed() < ttl).then(|| answer.clone())
    }
}

fn into_response(answer: Answer) -> Result<std::vec::IntoIter<SocketAddr>, io::Error> {
    answer
        .map(Vec::into_iter)
        .map_err(|message| io::Error::new(io::ErrorKind::NotFound, message))
}

impl<R, A> Service<Name> for CachingResolver<R>
where
    R: Service<Name, Response = A> + Clone + Send + 'static,
    R::Error: std::fmt::Display,
    R::Future: Send,
    A: Iterator<Item = SocketAddr>,
{
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        if let Some(answer) = self.cached(name.as_str()) {
            return Box::pin(std::future::ready(into_response(answer)));
        }
        let mut inner = self.inner.clone();
        let cache = self.cache.clone();
        Box::pin(async move {
            let key = name.as_str().to_owned();
            let answer: Answer = match inner.call(name).await {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    match addrs.is_empty() {
                        true => Err(format!("{key} resolves to no address")),
                        false => Ok(addrs),
                    }
                }
                Err(err) => Err(format!("cannot resolve {key}: {err}")),
            };
            if let Ok(mut cache) = cache.lock() {
                cache.insert(key, (Instant::now(), answer.clone()));
            }
            into_response(answer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A resolver that knows `known` and counts how often it is asked.
    #[derive(Clone)]
    struct Fake {
        asked: Arc<AtomicUsize>,
    }

    impl Service<Name> for Fake {
        type Response = std::vec::IntoIter<SocketAddr>;
        type Error = io::Error;
        type Future = std::future::Ready<Result<Self::Response, io::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, name: Name) -> Self::Future {
            self.asked.fetch_add(1, Ordering::SeqCst);
            std::future::ready(match name.as_str() {
                "cell.internal" => Ok(vec!["127.0.0.1:9101".parse().unwrap()].into_iter()),
                _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
            })
        }
    }

    fn resolve(
        resolver: &mut CachingResolver<Fake>,
        name: &str,
    ) -> Result<Vec<SocketAddr>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(resolver.call(Name::from_str(name).unwrap()))
            .map(Iterator::collect)
            .map_err(|err| err.to_string())
    }

    #[test]
    fn answers_are_kept_and_failures_kept_briefly() {
        let asked = Arc::new(AtomicUsize::new(0));
        let fake = Fake {
            asked: asked.clone(),
        };
        let mut resolver =
            CachingResolver::with(fake, Duration::from_secs(60), Duration::from_millis(50));
        for _ in 0..3 {
            assert_eq!(
                resolve(&mut resolver, "cell.internal").unwrap(),
                ["127.0.0.1:9101".parse::<SocketAddr>().unwrap()]
            );
        }
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "one lookup for three requests"
        );
        for _ in 0..3 {
            let failed = resolve(&mut resolver, "gone.internal").unwrap_err();
            assert!(failed.contains("cannot resolve gone.internal"), "{failed}");
        }
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "a failure is remembered too"
        );
        std::thread::sleep(Duration::from_millis(60));
        let _ = resolve(&mut resolver, "gone.internal");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            3,
            "and tried again once it is stale"
        );
        assert!(resolve(&mut resolver, "cell.internal").is_ok());
        assert_eq!(asked.load(Ordering::SeqCst), 3);
    }
}
