//! Kubernetes' and Go's time formats (RFC 3339 in UTC: metav1.Time, metav1.MicroTime), on the
//! `time` crate, shared by the simulated API server and the node agents.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// Seconds since the epoch, negative before it (certificates can say 1950).
pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

pub fn now_unix() -> i64 {
    unix_secs(SystemTime::now())
}

fn utc(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t).to_offset(UtcOffset::UTC)
}

/// `2025-03-01T12:00:00Z`: metav1.Time, and Go's `time.RFC3339` in UTC.
pub fn rfc3339(secs: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// `2025-03-01T12:00:00.123456Z`: metav1.MicroTime (Lease renewTime).
pub fn rfc3339_micro(t: SystemTime) -> String {
    utc(t)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        ))
        .unwrap_or_default()
}

pub fn now_rfc3339() -> String {
    rfc3339(now_unix())
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let secs = t.unix_timestamp();
    let base = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    Some(base + Duration::from_nanos(u64::from(t.nanosecond())))
}

/// Seconds since the epoch of an RFC 3339 time (fractions dropped).
pub fn parse_rfc3339_unix(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951782400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1767225599), "2025-12-31T23:59:59Z");
        let t = parse_rfc3339("2025-12-31T23:59:59Z").expect("parses");
        assert_eq!(unix_secs(t), 1767225599);
        let t = parse_rfc3339("2025-12-31T23:59:59.250000+01:00").expect("parses");
        assert_eq!(unix_secs(t), 1767225599 - 3600);
        assert_eq!(rfc3339_micro(t), "2025-12-31T22:59:59.250000Z");
        assert!(parse_rfc3339("yesterday").is_none());
        assert_eq!(
            parse_rfc3339_unix("2024-03-01T01:59:59+02:00"),
            Some(1_709_251_199)
        );
        assert_eq!(
            parse_rfc3339_unix("2024-02-29T23:59:59.123Z"),
            Some(1_709_251_199)
        );
    }
}
