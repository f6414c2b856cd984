//! Durations as Istio writes them: protobuf Duration strings (`1.5s`) and Go's
//! `time.ParseDuration` forms that Istio accepts too (`300ms`, `1m30s`, `1h`).

use std::time::Duration;

/// The longest duration a protobuf `Duration` holds (10,000 years), Istio's limit.
/// Anything longer is a mistake, and would overflow when added to an instant.
pub const MAX: Duration = Duration::from_secs(315_576_000_000);

/// The shortest timeout or interval Istio accepts where a duration must be positive.
pub const MIN_POSITIVE: Duration = Duration::from_millis(1);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty string.
    #[error("empty duration")]
    Empty,
    /// Not `<number><unit>...`.
    #[error("invalid duration {0:?}: expected a number and a unit (h, m, s, ms, us, ns), e.g. 1.5s or 300ms")]
    Invalid(String),
    /// Negative durations are meaningless here.
    #[error("negative duration {0:?}")]
    Negative(String),
    /// Longer than `MAX`.
    #[error("duration {0:?} is longer than 315576000000s (10,000 years), the most a protobuf Duration holds")]
    TooLong(String),
    /// Shorter than `MIN_POSITIVE` where a positive duration is required.
    #[error("duration {0:?} must be at least 1ms")]
    TooShort(String),
    /// Istio takes these durations in whole milliseconds.
    #[error("duration {0:?}: only durations to ms precision are supported")]
    SubMillisecond(String),
}

/// Parses `1s`, `0.5s`, `250ms`, `1m30s`, `2h`, `10us`, `100ns`, up to `MAX`. A bare
/// `0` is zero.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(text.to_string()));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::Invalid(text.to_string());
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        if number_len == 0 {
            return Err(invalid());
        }
        let value: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(invalid()),
        };
        total += value * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    if total > MAX.as_secs_f64() {
        return Err(DurationError::TooLong(text.to_string()));
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

/// Parses a duration Istio requires to be positive (at least `MIN_POSITIVE`) and
/// in whole milliseconds (agent `ValidateDuration`): timeouts and intervals where
/// zero would mean "at once" rather than "never".
pub fn parse_positive(text: &str) -> Result<Duration, DurationError> {
    let d = parse(text)?;
    if d < MIN_POSITIVE {
        return Err(DurationError::TooShort(text.to_string()));
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(DurationError::SubMillisecond(text.to_string()));
    }
    Ok(d)
}

/// Parses a duration that is either zero (Istio's "disabled", returned as `None`)
/// or at least `MIN_POSITIVE`.
pub fn parse_optional(text: &str) -> Result<Option<Duration>, DurationError> {
    match parse(text)? {
        d if d.is_zero() => Ok(None),
        d if d < MIN_POSITIVE => Err(DurationError::TooShort(text.to_string())),
        d => Ok(Some(d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_istio_and_go_forms() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("1s", ms(1000)),
            ("0.5s", ms(500)),
            ("250ms", ms(250)),
            ("1m30s", ms(90_000)),
            ("2h", ms(7_200_000)),
            ("1.5s", ms(1500)),
            ("0", Duration::ZERO),
            ("10us", Duration::from_micros(10)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_istio_refuses() {
        for text in ["", "5", "s", "1x", "1.2.3s", "ms10"] {
            assert!(parse(text).is_err(), "{text} should be refused");
        }
        assert!(matches!(parse("-1s"), Err(DurationError::Negative(_))));
    }

    #[test]
    fn refuses_more_than_a_protobuf_duration_holds() {
        assert_eq!(parse("315576000000s"), Ok(MAX));
        assert_eq!(parse("87660000h"), Ok(Duration::from_secs(315_576_000_000)));
        for text in [
            "9223372036854775807s",
            "315576000001s",
            "87660001h",
            "99999999999999999999999h",
        ] {
            assert!(matches!(parse(text), Err(DurationError::TooLong(_))), "{text}");
        }
        let err = parse("9223372036854775807s").expect_err("too long");
        assert!(err.to_string().contains("315576000000s"), "{err}");
    }

    #[test]
    fn positive_and_optional_durations() {
        assert_eq!(parse_positive("1ms"), Ok(Duration::from_millis(1)));
        for text in ["0", "0s", "999us", "1ns"] {
            assert!(
                matches!(parse_positive(text), Err(DurationError::TooShort(_))),
                "{text}"
            );
        }
        assert_eq!(parse_optional("0s"), Ok(None));
        assert_eq!(parse_optional("2s"), Ok(Some(Duration::from_secs(2))));
        assert!(matches!(parse_optional("500us"), Err(DurationError::TooShort(_))));
        assert!(matches!(
            parse_positive("1000000000000s"),
            Err(DurationError::TooLong(_))
        ));
    }
}
