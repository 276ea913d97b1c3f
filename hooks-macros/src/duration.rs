//! Human durations for `timeout = "..."`: `"5s"`, `"250ms"`, `"1m30s"`, `"1.5s"`.
//!
//! Kept apart from `attr.rs` because it parses the inside of a string, not tokens.

use std::time::Duration;

/// The units a duration may use, with their length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("sec", 1_000_000_000),
    ("secs", 1_000_000_000),
    ("m", 60_000_000_000),
    ("min", 60_000_000_000),
    ("mins", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// What a duration looks like, for error messages.
pub(crate) const EXAMPLES: &str =
    "like \"5s\", \"250ms\", \"1m30s\" or \"1.5s\" (units: ns, us, ms, s, m, h)";

/// Parses a human duration: one or more `<number><unit>` parts (`"5s"`, `"5 s"`), optionally
/// separated by spaces, added up. A number may have a fractional part; the total is truncated to whole nanoseconds.
///
/// The error is a sentence that says what to write instead.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("the duration is empty; write one {EXAMPLES}"));
    }
    let mut rest = trimmed;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let after = after.trim_start();
        if number.is_empty() {
            return Err(format!(
                "expected a number at `{rest}` in \"{text}\"; write a duration {EXAMPLES}"
            ));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!(
                "`{number}` has no unit; write \"{number}s\" for seconds, or a duration {EXAMPLES}"
            ));
        }
        let Some(&(_, nanos_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!(
                "unknown unit `{unit}` in \"{text}\"; write a duration {EXAMPLES}"
            ));
        };
        total = total
            .checked_add(amount(number, nanos_per_unit, text)?)
            .ok_or_else(|| too_long(text))?;
        rest = after.trim_start();
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_long(text))?;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// `number` units of `nanos_per_unit` nanoseconds, truncated to whole nanoseconds.
fn amount(number: &str, nanos_per_unit: u128, text: &str) -> Result<u128, String> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || number.ends_with('.') {
        return Err(format!(
            "`{number}` is not a number in \"{text}\"; write a duration {EXAMPLES}"
        ));
    }
    let whole: u128 = whole.parse().map_err(|_| too_long(text))?;
    let mut nanos = whole
        .checked_mul(nanos_per_unit)
        .ok_or_else(|| too_long(text))?;
    // Each fractional digit is worth a tenth of the previous one; digits past nanosecond
    // precision add nothing.
    let mut place = nanos_per_unit;
    for digit in fraction.bytes() {
        place /= 10;
        nanos += u128::from(digit - b'0') * place;
    }
    Ok(nanos)
}

fn too_long(text: &str) -> String {
    format!("\"{text}\" is too long for a duration; write a duration {EXAMPLES}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_units() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse("3 secs"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("1min"), Ok(Duration::from_secs(60)));
    }

    #[test]
    fn compound_and_fractional() {
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse(" 1h 1m 1s 1ms "),
            Ok(Duration::from_millis(3_661_001))
        );
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0.25m"), Ok(Duration::from_secs(15)));
        assert_eq!(parse("0.0000000019s"), Ok(Duration::from_nanos(1)));
    }

    #[test]
    fn zero_is_a_duration_here() {
        // `attr.rs` rejects a zero timeout with its own message.
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn errors_say_what_to_write() {
        let err = parse("").unwrap_err();
        assert!(err.starts_with("the duration is empty"), "{err}");
        let err = parse("5").unwrap_err();
        assert!(err.starts_with("`5` has no unit; write \"5s\""), "{err}");
        let err = parse("5y").unwrap_err();
        assert!(err.starts_with("unknown unit `y` in \"5y\""), "{err}");
        let err = parse("s").unwrap_err();
        assert!(err.starts_with("expected a number at `s`"), "{err}");
        let err = parse("1.2.3s").unwrap_err();
        assert!(err.starts_with("`1.2.3` is not a number"), "{err}");
        let err = parse(".5s").unwrap_err();
        assert!(err.starts_with("`.5` is not a number"), "{err}");
        let err = parse("5s!").unwrap_err();
        assert!(err.starts_with("unknown unit `s!`"), "{err}");
        let err = parse("99999999999999999999999999h").unwrap_err();
        assert!(err.contains("is too long for a duration"), "{err}");
        let err = parse("999999999999999999999s").unwrap_err();
        assert!(err.contains("is too long for a duration"), "{err}");
        assert!(err.contains(EXAMPLES), "{err}");
    }
}
