//! Unix seconds as calendar dates and times (UTC), for webhook events and the web UI.

/// A moment in UTC, split into its calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    /// Year.
    pub year: i64,
    /// Month, 1 to 12.
    pub month: i64,
    /// Day of the month, from 1.
    pub day: i64,
    /// Hour, 0 to 23.
    pub hour: u64,
    /// Minute.
    pub minute: u64,
    /// Second.
    pub second: u64,
}

impl CivilTime {
    /// The moment `secs` after 1970-01-01T00:00:00Z.
    pub fn of_unix(secs: u64) -> CivilTime {
        let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
        // Days since 1970-01-01 to a date of the proleptic Gregorian calendar (Howard
        // Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        CivilTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day: doy - (153 * mp + 2) / 5 + 1,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `YYYY-MM-DD HH:MM UTC`, as people read it.
    pub fn to_minute(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute
        )
    }
}

#[cfg(test)]
mod tests {
    use super::CivilTime;

    #[test]
    fn unix_seconds_read_as_calendar_dates() {
        assert_eq!(CivilTime::of_unix(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            CivilTime::of_unix(951_782_400).to_minute(),
            "2000-02-29 00:00 UTC"
        );
        assert_eq!(
            CivilTime::of_unix(1_796_169_600 + 3_723).rfc3339(),
            "2026-12-02T01:02:03Z"
        );
    }
}
