//! RFC 3339 timestamps in UTC, as admin output and access logs print them, without
//! a date-time dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's
/// civil_from_days, proleptic Gregorian).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn format(unix: i64, millis: Option<u32>) -> String {
    let (year, month, day) = civil(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    let fraction = millis.map_or_else(String::new, |m| format!(".{m:03}"));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `2025-01-31T12:00:00Z` for seconds since the epoch.
pub fn seconds(unix: i64) -> String {
    format(unix, None)
}

/// `2025-01-31T12:00:00.123Z` for a point in time.
pub fn millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format(
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Some(since.subsec_millis()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(seconds(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(seconds(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(seconds(-1), "1969-12-31T23:59:59Z");
        assert_eq!(millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_482_160_123);
        assert_eq!(millis(t), "2026-11-24T01:02:40.123Z");
    }
}
