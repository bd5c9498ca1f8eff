//! Durations written as Go's `time.ParseDuration` reads them, which is what dae accepts: a sequence of decimal
//! numbers, each with an optional fraction and a unit, e.g. `30s`, `1m30s`, `500ms`, `1.5h`, `2h45m`. Units
//! are `ns`, `us` (also `µs`, `μs`), `ms`, `s`, `m`, `h`. A lone `0` needs no unit.

use std::time::Duration;

/// Go's limit: a duration is an `int64` count of nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty text.
    #[error("empty duration")]
    Empty,
    /// A number without a unit (other than a lone `0`).
    #[error("`{0}` has a number without a unit; add one of ns, us, ms, s, m, h (e.g. `30s`)")]
    MissingUnit(String),
    /// A unit dae does not know.
    #[error("unknown unit `{unit}` in `{text}`; use one of ns, us, ms, s, m, h")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit found.
        unit: String,
    },
    /// Not a number where one was expected.
    #[error("`{0}` is not a duration; write a number and a unit, e.g. `30s` or `1m30s`")]
    Malformed(String),
    /// Larger than Go can represent (about 292 years).
    #[error("`{0}` is too long; the maximum is about 292 years")]
    Overflow(String),
    /// A negative duration where only non-negative ones make sense.
    #[error("`{0}` is negative; this setting needs a duration of zero or more")]
    Negative(String),
}

/// A duration that may be negative, e.g. the `add_latency: -500ms` annotation of a group filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedDuration {
    /// True for a negative duration (never true for zero).
    pub negative: bool,
    /// The absolute value.
    pub magnitude: Duration,
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration, sign allowed.
pub fn parse_signed_duration(text: &str) -> Result<SignedDuration, DurationError> {
    let (negative, mut rest) = match text.as_bytes().first() {
        None => return Err(DurationError::Empty),
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        Some(_) => (false, text),
    };
    if rest == "0" {
        return Ok(SignedDuration { negative: false, magnitude: Duration::ZERO });
    }
    if rest.is_empty() {
        return Err(DurationError::Malformed(text.to_owned()));
    }
    let overflow = || DurationError::Overflow(text.to_owned());
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let integer_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let integer = &rest[..integer_len];
        rest = &rest[integer_len..];
        let fraction = match rest.strip_prefix('.') {
            Some(after_dot) => {
                let len = after_dot.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_dot.len());
                rest = &after_dot[len..];
                &after_dot[..len]
            }
            None => "",
        };
        if integer.is_empty() && fraction.is_empty() {
            return Err(DurationError::Malformed(text.to_owned()));
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(text.to_owned()));
        }
        let scale = unit_nanos(unit)
            .ok_or_else(|| DurationError::UnknownUnit { text: text.to_owned(), unit: unit.to_owned() })?;
        let mut nanos: u128 = 0;
        for digit in integer.bytes() {
            nanos = nanos
                .checked_mul(10)
                .and_then(|n| n.checked_add(u128::from(digit - b'0')))
                .filter(|&n| n <= MAX_NANOS)
                .ok_or_else(overflow)?;
        }
        nanos = nanos.checked_mul(scale).ok_or_else(overflow)?;
        // Fractions are truncated to whole nanoseconds, as Go does.
        let mut place = scale;
        for digit in fraction.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * place;
        }
        total = total.checked_add(nanos).filter(|&n| n <= MAX_NANOS).ok_or_else(overflow)?;
    }
    let magnitude = Duration::from_nanos(u64::try_from(total).map_err(|_| overflow())?);
    Ok(SignedDuration { negative: negative && !magnitude.is_zero(), magnitude })
}

/// Parses a Go duration that must not be negative.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let parsed = parse_signed_duration(text)?;
    if parsed.negative {
        return Err(DurationError::Negative(text.to_owned()));
    }
    Ok(parsed.magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_compound_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("2h45m"), Ok(Duration::from_secs(9900)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
    }

    #[test]
    fn fractions_and_zero() {
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("-0"), Ok(Duration::ZERO));
    }

    #[test]
    fn sign_is_kept_by_the_signed_parser_and_refused_by_the_plain_one() {
        assert_eq!(
            parse_signed_duration("-500ms"),
            Ok(SignedDuration { negative: true, magnitude: Duration::from_millis(500) })
        );
        assert_eq!(parse_duration("+1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("-1s"), Err(DurationError::Negative("-1s".into())));
    }

    #[test]
    fn malformed_durations_say_why() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("30"), Err(DurationError::MissingUnit("30".into())));
        assert_eq!(parse_duration("1m30"), Err(DurationError::MissingUnit("1m30".into())));
        assert_eq!(parse_duration("3d"), Err(DurationError::UnknownUnit { text: "3d".into(), unit: "d".into() }));
        assert_eq!(parse_duration("s"), Err(DurationError::Malformed("s".into())));
        assert_eq!(parse_duration("."), Err(DurationError::Malformed(".".into())));
        assert_eq!(parse_duration("-"), Err(DurationError::Malformed("-".into())));
    }

    #[test]
    fn overflow_past_go_int64_nanoseconds_is_refused() {
        assert!(parse_duration("2562047h").is_ok());
        assert_eq!(parse_duration("2562048h"), Err(DurationError::Overflow("2562048h".into())));
        assert_eq!(
            parse_duration("99999999999999999999999s"),
            Err(DurationError::Overflow("99999999999999999999999s".into()))
        );
    }
}
