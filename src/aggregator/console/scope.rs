//! Scope time, as Amazon Detective has it: every page looks at a window of whole UTC hours,
//! from 1 hour to 1 year, and compares it with a baseline (by default the 45 days before it).
//! The scope lives in the URL (`last=24h`, or `from=2026-12-01T00&to=2026-12-02T00`, and
//! `baseline=45d`) so every view can be linked and reloaded. Pure code: parsing, formatting
//! and the query string of links.

use serde::Deserialize;
use thiserror::Error;

use crate::model::{civil_from_days, days_from_civil, UnixNanos};

pub const HOUR_NS: u64 = 3_600_000_000_000;
const DAY_HOURS: u64 = 24;
/// The longest scope and baseline: a year.
pub const MAX_HOURS: u64 = 365 * DAY_HOURS;
pub const DEFAULT_LAST_HOURS: u64 = DAY_HOURS;
pub const DEFAULT_BASELINE_HOURS: u64 = 45 * DAY_HOURS;
/// The shortcuts the picker offers.
pub const SHORTCUTS: [(&str, u64); 4] = [("1h", 1), ("24h", 24), ("7d", 168), ("30d", 720)];

/// The scope parameters of a request, as they came (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ScopeParams {
    pub last: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub baseline: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScopeError {
    #[error("{field}: {value:?} is not a UTC hour like 2026-12-01T13 (or 2026-12-01T13:00Z)")]
    NotAnHour { field: &'static str, value: String },
    #[error("{field}: {value:?} is not a length like 6h, 24h, 7d or 30d")]
    NotALength { field: &'static str, value: String },
    #[error("{field}: {hours} hours is outside 1 hour to 1 year")]
    OutOfRange { field: &'static str, hours: u64 },
    #[error("from ({from}) must be before to ({to})")]
    Reversed { from: String, to: String },
    #[error("give both from and to, or last")]
    HalfOpen,
    #[error("give either last or from/to, not both")]
    Both,
}

/// A checked scope: `[start, end)` in unix ns, both on UTC hour boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeScope {
    pub start: UnixNanos,
    pub end: UnixNanos,
    /// Set when the scope is "the last N hours" (it moves with the clock on reload).
    pub last_hours: Option<u64>,
    pub baseline_hours: u64,
}

impl TimeScope {
    /// Parses the parameters at `now`. "last N" ends at the end of the current hour, so what
    /// happened a second ago is in scope.
    pub fn parse(params: &ScopeParams, now: UnixNanos) -> Result<TimeScope, ScopeError> {
        let baseline_hours = match params.baseline.as_deref().filter(|s| !s.is_empty()) {
            Some(b) => parse_length("baseline", b)?,
            None => DEFAULT_BASELINE_HOURS,
        };
        let from = params.from.as_deref().filter(|s| !s.is_empty());
        let to = params.to.as_deref().filter(|s| !s.is_empty());
        let last = params.last.as_deref().filter(|s| !s.is_empty());
        match (last, from, to) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ScopeError::Both),
            (None, Some(from), Some(to)) => {
                let start = parse_hour("from", from)?;
                let end = parse_hour("to", to)?;
                if start >= end {
                    return Err(ScopeError::Reversed {
                        from: from.into(),
                        to: to.into(),
                    });
                }
                let hours = (end - start) / HOUR_NS;
                check_range("from..to", hours)?;
                Ok(TimeScope {
                    start,
                    end,
                    last_hours: None,
                    baseline_hours,
                })
            }
            (None, Some(_), None) | (None, None, Some(_)) => Err(ScopeError::HalfOpen),
            (last, None, None) => {
                let hours = match last {
                    Some(l) => parse_length("last", l)?,
                    None => DEFAULT_LAST_HOURS,
                };
                let end = (now / HOUR_NS + 1) * HOUR_NS;
                Ok(TimeScope {
                    start: end.saturating_sub(hours * HOUR_NS),
                    end,
                    last_hours: Some(hours),
                    baseline_hours,
                })
            }
        }
    }

    /// The baseline: the `baseline_hours` before the scope.
    pub fn baseline_start(&self) -> UnixNanos {
        self.start.saturating_sub(self.baseline_hours * HOUR_NS)
    }

    /// The store's inclusive upper bound for the scope.
    pub fn until(&self) -> UnixNanos {
        self.end - 1
    }

    pub fn hours(&self) -> u64 {
        (self.end - self.start) / HOUR_NS
    }

    /// Whether the scope reaches the present (so live updates make sense).
    pub fn is_live(&self, now: UnixNanos) -> bool {
        self.end > now
    }

    /// The URL parameters that reproduce this scope.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut out = match self.last_hours {
            Some(h) => vec![("last", format_length(h))],
            None => vec![
                ("from", format_hour(self.start)),
                ("to", format_hour(self.end)),
            ],
        };
        if self.baseline_hours != DEFAULT_BASELINE_HOURS {
            out.push(("baseline", format_length(self.baseline_hours)));
        }
        out
    }

    /// The same window, fixed (a link that shows the same hours tomorrow).
    pub fn pinned(&self) -> TimeScope {
        TimeScope {
            last_hours: None,
            ..*self
        }
    }

    /// The same baseline over another span.
    pub fn with_last(&self, hours: u64) -> TimeScope {
        TimeScope {
            start: self.end.saturating_sub(hours * HOUR_NS),
            last_hours: Some(hours),
            ..*self
        }
    }

    pub fn label(&self) -> String {
        match self.last_hours {
            Some(h) => format!("last {}", format_length(h)),
            None => format!(
                "{} – {} UTC",
                format_hour(self.start).replace('T', " "),
                format_hour(self.end).replace('T', " ")
            ),
        }
    }
}

fn check_range(field: &'static str, hours: u64) -> Result<u64, ScopeError> {
    if (1..=MAX_HOURS).contains(&hours) {
        Ok(hours)
    } else {
        Err(ScopeError::OutOfRange { field, hours })
    }
}

/// `6h`, `24h`, `7d`, `2w`, `1y` → hours.
pub fn parse_length(field: &'static str, s: &str) -> Result<u64, ScopeError> {
    let bad = || ScopeError::NotALength {
        field,
        value: s.chars().take(40).collect(),
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    if number.is_empty() || number.len() > 6 {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let per = match unit {
        "h" => 1,
        "d" => DAY_HOURS,
        "w" => 7 * DAY_HOURS,
        "y" => 365 * DAY_HOURS,
        _ => return Err(bad()),
    };
    check_range(field, n * per)
}

/// Hours as the shortest exact length (up to two days in hours: "24h" reads as a day).
pub fn format_length(hours: u64) -> String {
    if hours % (365 * DAY_HOURS) == 0 {
        format!("{}y", hours / (365 * DAY_HOURS))
    } else if hours % DAY_HOURS == 0 && hours > 2 * DAY_HOURS {
        format!("{}d", hours / DAY_HOURS)
    } else {
        format!("{hours}h")
    }
}

/// `2026-12-01T13`, `2026-12-01T13:00`, `…:00Z`, `…:00:00Z` → unix ns; minutes and seconds
/// must be zero (scopes are whole hours).
pub fn parse_hour(field: &'static str, s: &str) -> Result<UnixNanos, ScopeError> {
    let bad = || ScopeError::NotAnHour {
        field,
        value: s.chars().take(40).collect(),
    };
    let t = s.strip_suffix('Z').unwrap_or(s);
    let t = t
        .strip_suffix(":00:00")
        .or_else(|| t.strip_suffix(":00"))
        .unwrap_or(t);
    let b = t.as_bytes();
    if b.len() != 13 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, ScopeError> {
        let part = &t[r];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (year, month, day, hour) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
    {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    Ok((days as u64 * 24 + hour as u64) * HOUR_NS)
}

/// `2026-12-01T13` for the hour holding `ns`.
pub fn format_hour(ns: UnixNanos) -> String {
    let (y, m, d, hh, _, _) = civil(ns);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}")
}

/// `2026-12-01 13:04:05Z`.
pub fn format_time(ns: UnixNanos) -> String {
    let (y, m, d, hh, mm, ss) = civil(ns);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}Z")
}

fn civil(ns: UnixNanos) -> (i64, i64, i64, u64, u64, u64) {
    let secs = ns / 1_000_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    (y, m, d, rest / 3600, rest % 3600 / 60, rest % 60)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-06 18:54:03 UTC.
    const NOW: u64 = 1_796_583_243_000_000_000;

    fn params(pairs: &[(&str, &str)]) -> ScopeParams {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        };
        ScopeParams {
            last: get("last"),
            from: get("from"),
            to: get("to"),
            baseline: get("baseline"),
        }
    }

    #[test]
    fn hours_parse_and_format_in_utc() {
        assert_eq!(format_time(NOW), "2026-12-06 18:54:03Z");
        let h = parse_hour("from", "2026-12-06T18").expect("hour");
        assert_eq!(format_hour(h), "2026-12-06T18");
        assert_eq!(h, NOW / HOUR_NS * HOUR_NS);
        for same in [
            "2026-12-06T18:00",
            "2026-12-06T18:00Z",
            "2026-12-06T18:00:00Z",
        ] {
            assert_eq!(parse_hour("from", same), Ok(h), "{same}");
        }
        assert_eq!(
            format_hour(parse_hour("to", "2024-02-29T00").expect("leap")),
            "2024-02-29T00"
        );
        assert_eq!(parse_hour("to", "1970-01-01T00"), Ok(0));
        for bad in [
            "2026-12-06T18:30",
            "2026-12-06",
            "2026-13-01T00",
            "2025-02-29T00",
            "2026-12-06T24",
            "2026-12-06T1x",
            "+026-12-06T18",
            "2026-12-06T18:00:01Z",
            "<script>",
        ] {
            assert!(
                matches!(parse_hour("from", bad), Err(ScopeError::NotAnHour { .. })),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn the_default_is_the_last_24_hours_to_the_end_of_this_hour_with_a_45_day_baseline() {
        let s = TimeScope::parse(&ScopeParams::default(), NOW).expect("scope");
        assert_eq!(format_hour(s.end), "2026-12-06T19");
        assert_eq!(format_hour(s.start), "2026-12-05T19");
        assert_eq!(s.hours(), 24);
        assert!(s.is_live(NOW));
        assert_eq!(format_hour(s.baseline_start()), "2026-10-21T19");
        assert_eq!(s.params(), vec![("last", "24h".to_string())]);
        assert_eq!(s.label(), "last 24h");
    }

    #[test]
    fn shortcuts_fixed_windows_and_baselines_round_trip_through_the_url() {
        for (name, hours) in SHORTCUTS {
            let s = TimeScope::parse(&params(&[("last", name)]), NOW).expect(name);
            assert_eq!(s.hours(), hours);
            let again = TimeScope::parse(
                &params(
                    &s.params()
                        .iter()
                        .map(|(k, v)| (*k, v.as_str()))
                        .collect::<Vec<_>>(),
                ),
                NOW,
            )
            .expect("again");
            assert_eq!(again, s, "{name}");
        }
        let fixed = TimeScope::parse(
            &params(&[
                ("from", "2026-11-01T00"),
                ("to", "2026-11-03T12"),
                ("baseline", "7d"),
            ]),
            NOW,
        )
        .expect("fixed");
        assert_eq!((fixed.hours(), fixed.baseline_hours), (60, 168));
        assert!(!fixed.is_live(NOW));
        assert_eq!(
            fixed.params(),
            vec![
                ("from", "2026-11-01T00".to_string()),
                ("to", "2026-11-03T12".to_string()),
                ("baseline", "7d".to_string())
            ]
        );
        assert_eq!(fixed.label(), "2026-11-01 00 – 2026-11-03 12 UTC");
        // Pinning a moving scope keeps its hours.
        let live = TimeScope::parse(&params(&[("last", "7d")]), NOW).expect("7d");
        let pinned = live.pinned();
        assert_eq!(
            (pinned.start, pinned.end, pinned.last_hours),
            (live.start, live.end, None)
        );
    }

    #[test]
    fn scopes_outside_an_hour_to_a_year_or_malformed_are_refused_with_the_reason() {
        let err =
            |pairs: &[(&str, &str)]| TimeScope::parse(&params(pairs), NOW).expect_err("refused");
        assert_eq!(
            err(&[("last", "366d")]),
            ScopeError::OutOfRange {
                field: "last",
                hours: 366 * 24
            }
        );
        assert!(TimeScope::parse(&params(&[("last", "1y")]), NOW).is_ok());
        assert!(matches!(
            err(&[("last", "0h")]),
            ScopeError::OutOfRange { .. }
        ));
        assert!(matches!(
            err(&[("last", "30m")]),
            ScopeError::NotALength { .. }
        ));
        assert!(matches!(
            err(&[("last", "h")]),
            ScopeError::NotALength { .. }
        ));
        assert!(matches!(
            err(&[("last", "99999999999h")]),
            ScopeError::NotALength { .. }
        ));
        assert!(matches!(
            err(&[("baseline", "-1d")]),
            ScopeError::NotALength { .. }
        ));
        assert_eq!(err(&[("from", "2026-11-01T00")]), ScopeError::HalfOpen);
        assert_eq!(
            err(&[
                ("last", "1h"),
                ("from", "2026-11-01T00"),
                ("to", "2026-11-02T00")
            ]),
            ScopeError::Both
        );
        assert!(matches!(
            err(&[("from", "2026-11-02T00"), ("to", "2026-11-02T00")]),
            ScopeError::Reversed { .. }
        ));
        assert!(matches!(
            err(&[("from", "2020-01-01T00"), ("to", "2026-01-01T00")]),
            ScopeError::OutOfRange { .. }
        ));
        // The message names the field and quotes the value (escaped when shown).
        let message = err(&[("from", "<b>x"), ("to", "2026-11-02T00")]).to_string();
        assert!(message.starts_with("from: \"<b>x\""), "{message}");
    }
}
