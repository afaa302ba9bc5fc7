//! Active health checks: each cell is probed on an interval and flips only after `rise`
//! consecutive successes or `fall` consecutive failures, as HAProxy's checks do. With the
//! node's zone, one worker (the probe lease's holder) probes for every worker.

use crate::cells::Cell;
use crate::forward::probe::ProbeClient;
use crate::settings::HealthSettings;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Consecutive results of one cell's checks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Streak {
    successes: u32,
    failures: u32,
}

impl Streak {
    /// Records one check; returns the new health when the streak flips it, else `None`.
    pub fn record(
        &mut self,
        ok: bool,
        healthy_now: bool,
        settings: &HealthSettings,
    ) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            (!healthy_now && self.successes >= settings.rise).then_some(true)
        } else {
            self.failures += 1;
            self.successes = 0;
            (healthy_now && self.failures >= settings.fall).then_some(false)
        }
    }
}

/// A running health checker; dropping the handle stops it.
pub struct HealthChecker {
    stop: Arc<AtomicBool>,
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl HealthChecker {
    /// Starts probing each of `cells` on the I/O runtime, one task per cell.
    pub fn start(
        cells: Vec<Arc<Cell>>,
        probes: Arc<ProbeClient>,
        settings: HealthSettings,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        for cell in cells {
            let (stop, probes, settings) = (stop.clone(), probes.clone(), settings.clone());
            crate::runtime::runtime().spawn(async move {
                let url = format!("{}{}", cell.origin, settings.path);
                let timeout = Duration::from_millis(settings.timeout_ms.max(1));
                let mut ticker =
                    tokio::time::interval(Duration::from_millis(settings.interval_ms.max(10)));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut streak = Streak::default();
                // One worker of a node probes for all (the zone's lease); it lapses after three
                // missed rounds, and another worker takes over.
                let lease_s = (3 * settings.interval_ms).div_ceil(1000).max(2);
                while !stop.load(Ordering::Relaxed) {
                    ticker.tick().await;
                    let now_s = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    if !cell.load.may_probe(now_s, lease_s) {
                        streak = Streak::default();
                        continue;
                    }
                    let ok = probes.probe(&cell, &url, timeout).await;
                    if let Some(healthy) = streak.record(ok, cell.load.healthy(), &settings) {
                        cell.load.set_healthy(healthy);
                    }
                }
            });
        }
        HealthChecker { stop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HealthSettings {
        HealthSettings {
            path: "/health".into(),
            interval_ms: 10,
            timeout_ms: 10,
            rise: 2,
            fall: 3,
        }
    }

    #[test]
    fn flips_down_after_fall_failures_and_up_after_rise_successes() {
        let s = settings();
        let mut streak = Streak::default();
        assert_eq!(streak.record(false, true, &s), None);
        assert_eq!(streak.record(false, true, &s), None);
        assert_eq!(streak.record(false, true, &s), Some(false));
        assert_eq!(streak.record(true, false, &s), None);
        assert_eq!(streak.record(false, false, &s), None);
        assert_eq!(streak.record(true, false, &s), None);
        assert_eq!(streak.record(true, false, &s), Some(true));
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let s = settings();
        let mut streak = Streak::default();
        streak.record(false, true, &s);
        streak.record(false, true, &s);
        streak.record(true, true, &s);
        assert_eq!(streak.record(false, true, &s), None);
    }
}
