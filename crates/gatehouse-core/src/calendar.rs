//! Calendar arithmetic shared by the recording paths, the review's times, the CLI's tables
//! and the statement log's dates: one day-number conversion each way and one formatter of
//! record times, without a date crate (PostgreSQL's timestamps reach years beyond what
//! `time`/`chrono` represent).

/// `(year, month, day)` of a Unix day number (proleptic Gregorian; Hinnant's algorithm).
/// Year 0 is 1 BC. Exact for any day an `i64` count of microseconds can name.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Unix day number of a date (proleptic Gregorian; Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// How a record time is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeStyle {
    /// `2026-11-24 16:38:00` (UTC): for people (the review TUI).
    Plain,
    /// `2026-11-24T16:38:00Z`: RFC 3339, for tables that tools read too (the CLI).
    Rfc3339,
}

/// A record time (Unix milliseconds, UTC), to the second.
pub fn format_time(millis: i64, style: TimeStyle) -> String {
    let secs = millis.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    match style {
        TimeStyle::Plain => format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}"),
        TimeStyle::Rfc3339 => format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_times() {
        let t = 1_764_002_280_999; // 2025-11-24 16:38:00.999
        assert_eq!(format_time(t, TimeStyle::Plain), "2025-11-24 16:38:00");
        assert_eq!(format_time(t, TimeStyle::Rfc3339), "2025-11-24T16:38:00Z");
        assert_eq!(format_time(0, TimeStyle::Rfc3339), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(-1, TimeStyle::Plain), "1969-12-31 23:59:59");
        for days in [-719_163, -1, 0, 19_782, 20_780, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
    }

    #[test]
    fn day_numbers() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-719_162), (1, 1, 1));
        assert_eq!(civil_from_days(-719_163), (0, 12, 31));
    }
}
