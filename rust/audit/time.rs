//! UTC times as records carry them: `2026-12-01T21:42:55.123456Z`, and segment hours.

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The record time of `us` microseconds since the epoch.
pub fn timestamp(us: u64) -> String {
    let s = us / 1_000_000;
    let (year, month, day) = civil((s / 86_400) as i64);
    let sod = s % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        us % 1_000_000
    )
}

/// The UTC hour of `us`, as segment names carry it: `20261201T21`.
pub fn hour_name(us: u64) -> String {
    let s = us / 1_000_000;
    let (year, month, day) = civil((s / 86_400) as i64);
    format!("{year:04}{month:02}{day:02}T{:02}", s % 86_400 / 3600)
}

/// The hour `us` falls in, as a number (hours since the epoch).
pub fn hour_of(us: u64) -> u64 {
    us / 3_600_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_microsecond_utc_times() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000Z");
        // 2026-12-01T21:42:55.123456Z
        assert_eq!(
            timestamp(1_796_161_375_123_456),
            "2026-12-01T21:42:55.123456Z"
        );
        assert_eq!(
            timestamp(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(hour_name(1_796_161_375_123_456), "20261201T21");
    }
}
