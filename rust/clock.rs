//! The one clock everything time-dependent reads: the system's, or a manual one tests drive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in microseconds since the Unix epoch, from the system or from a test.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system's real-time clock.
    #[default]
    System,
    /// A clock that only moves when a test sets or advances it.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock starting at `start_us`.
    pub fn manual(start_us: u64) -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(start_us)))
    }

    /// The current time in microseconds since the epoch.
    #[inline]
    pub fn now_us(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }

    /// Sets a manual clock; a system clock ignores it and says so.
    pub fn set_us(&self, t_us: u64) -> bool {
        match self {
            Clock::System => false,
            Clock::Manual(t) => {
                t.store(t_us, Ordering::Relaxed);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_set() {
        let clock = Clock::manual(5_000_000);
        assert_eq!(clock.now_us(), 5_000_000);
        assert!(clock.set_us(7_000_000));
        assert_eq!(clock.clone().now_us(), 7_000_000);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(Clock::System.now_us() > 1_577_836_800_000_000);
        assert!(!Clock::System.set_us(1));
    }
}
