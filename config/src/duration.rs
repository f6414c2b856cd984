//! Durations as Istio writes them: protobuf Duration strings (`1.5s`) and Go's
//! `time.ParseDuration` forms that Istio accepts too (`300ms`, `1m30s`, `1h`).

use std::time::Duration;

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
}

/// Parses `1s`, `0.5s`, `250ms`, `1m30s`, `2h`, `10us`, `100ns`. A bare `0` is zero.
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
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
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
}
