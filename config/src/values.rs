//! Shapes and scalar values of declarations: one literal or a comma-separated list, booleans, integers with
//! ranges, marks, `min-max` ranges and bandwidths. Every parser takes the text exactly as written (no case
//! folding, no trimming inside a value) and explains a refusal with what is accepted instead.

use crate::ast::{Declaration, Literal, Value};
use crate::error::{ConfigError, ErrorKind};
use crate::source::Span;

/// One element of a list value, with the span of exactly its characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub text: String,
    pub span: Span,
}

/// An "invalid value for `key`" error at `span`.
pub(crate) fn invalid(key: &str, span: Span, reason: impl Into<String>) -> ConfigError {
    ConfigError::at(span, ErrorKind::InvalidValue { key: key.to_owned(), reason: reason.into() })
}

/// Refuses a `[...]` annotation on a declaration that has no use for one.
///
/// An annotation glued to the value (`veth[0-9]`) is almost always a glob class written without quotes:
/// `[` ends a word in dae's grammar, so the hint shows the quoted form.
pub(crate) fn no_annotation(key: &str, declaration: &Declaration) -> Result<(), ConfigError> {
    let Some(annotation) = &declaration.annotation else {
        return Ok(());
    };
    let error = invalid(key, annotation.span, "annotations `[...]` are not supported here");
    let glued = match &declaration.value {
        Value::Literals(literals) => literals.last().filter(|last| last.span.end == annotation.span.start),
        Value::Functions(_) => None,
    };
    Err(match glued {
        Some(word) => {
            let class: Vec<&str> = annotation.params.iter().map(|p| p.value.value.as_str()).collect();
            let pattern = format!("{}[{}]", word.value, class.join(","));
            error.with_hint(format!("hint: to write a pattern with `[...]`, quote it: '{pattern}'"))
        }
        None => error,
    })
}

/// The literals of a declaration that takes literals, not function calls.
pub(crate) fn literals<'d>(key: &str, declaration: &'d Declaration) -> Result<&'d [Literal], ConfigError> {
    no_annotation(key, declaration)?;
    match &declaration.value {
        Value::Literals(literals) => Ok(literals),
        Value::Functions(functions) => Err(invalid(key, functions[0].span, "expected a value, not a function call")),
    }
}

/// The value of a declaration that takes exactly one literal.
pub(crate) fn single<'d>(key: &str, declaration: &'d Declaration) -> Result<&'d Literal, ConfigError> {
    match literals(key, declaration)? {
        [one] => Ok(one),
        [_, second, ..] => Err(invalid(key, second.span, "expected one value, found a list")),
        [] => unreachable!("the parser never builds an empty literal list"),
    }
}

/// The elements of a list value: every literal split at `,` (as dae joins and re-splits them), trimmed.
/// Empty elements are kept so callers can report them.
pub(crate) fn pieces(key: &str, declaration: &Declaration) -> Result<Vec<Piece>, ConfigError> {
    let mut out = Vec::new();
    for literal in literals(key, declaration)? {
        let value_span = literal.value_span();
        let mut offset = 0;
        for part in literal.value.split(',') {
            let leading = part.len() - part.trim_start().len();
            let trimmed = part.trim();
            let start = offset + leading;
            out.push(Piece { text: trimmed.to_owned(), span: value_span.subspan(start, start + trimmed.len()) });
            offset += part.len() + 1;
        }
    }
    Ok(out)
}

/// `true` or `false`. dae also reads `1`/`0`/`y`/`n`/`yes`/`no` in any case; those are refused with the
/// spelling to use, so a file means the same to every reader.
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "y" | "yes" => Err(format!("write `true` instead of `{text}`")),
            "false" | "0" | "n" | "no" => Err(format!("write `false` instead of `{text}`")),
            _ => Err(format!("expected `true` or `false`, found `{text}`")),
        },
    }
}

/// A decimal integer in `min..=max`. Signs, spaces and other bases are refused.
pub(crate) fn parse_integer(text: &str, min: u64, max: u64) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a whole number from {min} to {max}, found `{text}`"));
    }
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is out of range; expected {min} to {max}")),
    }
}

/// A 32-bit firewall mark: hexadecimal with `0x` (`0x800`) or decimal (`100` is one hundred, also with a
/// leading zero).
pub(crate) fn parse_mark(text: &str) -> Result<u32, String> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    let well_formed = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
    if !well_formed {
        return Err(format!("expected a mark in hexadecimal (`0x800`) or decimal (`2048`), found `{text}`"));
    }
    u32::from_str_radix(digits, radix).map_err(|_| format!("mark `{text}` does not fit in 32 bits"))
}

/// An inclusive range `min-max` of whole numbers, or a single number `n` meaning `n-n`.
pub(crate) fn parse_range(text: &str, limit: u64) -> Result<(u64, u64), String> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let low =
        parse_integer(low, 0, limit).map_err(|_| format!("expected `min-max` such as `10-20`, found `{text}`"))?;
    let high =
        parse_integer(high, 0, limit).map_err(|_| format!("expected `min-max` such as `10-20`, found `{text}`"))?;
    if low > high {
        return Err(format!("range `{text}` is empty; write the smaller number first"));
    }
    Ok((low, high))
}

/// A bandwidth as Hysteria and dae write it: a whole number, optional spaces, and an optional unit (any case)
/// `bps`/`b`, `kbps`/`kb`/`k`, `mbps`/`mb`/`m`, `gbps`/`gb`/`g`, `tbps`/`tb`/`t`. Returns bits per second;
/// `0` means unlimited.
pub(crate) fn parse_bandwidth(text: &str) -> Result<u64, String> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let bad = || format!("expected a bandwidth such as `100 mbps`, `20mb` or `0`, found `{text}`");
    if number.is_empty() {
        return Err(bad());
    }
    let scale: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" | "bps" => 1,
        "k" | "kb" | "kbps" => 1_000,
        "m" | "mb" | "mbps" => 1_000_000,
        "g" | "gb" | "gbps" => 1_000_000_000,
        "t" | "tb" | "tbps" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("bandwidth `{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_exactly_true_or_false() {
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert_eq!(parse_bool("yes"), Err("write `true` instead of `yes`".into()));
        assert_eq!(parse_bool("TRUE"), Err("write `true` instead of `TRUE`".into()));
        assert_eq!(parse_bool("0"), Err("write `false` instead of `0`".into()));
        assert!(parse_bool("maybe").unwrap_err().contains("expected `true` or `false`"));
    }

    #[test]
    fn marks_are_hex_with_prefix_or_decimal() {
        assert_eq!(parse_mark("0x800"), Ok(0x800));
        assert_eq!(parse_mark("0X1f"), Ok(0x1f));
        assert_eq!(parse_mark("100"), Ok(100));
        assert_eq!(parse_mark("0100"), Ok(100));
        assert_eq!(parse_mark("0xffffffff"), Ok(u32::MAX));
        assert!(parse_mark("0x1_0000_0000").is_err());
        assert!(parse_mark("0x100000000").unwrap_err().contains("32 bits"));
        assert!(parse_mark("0x").is_err());
        assert!(parse_mark("-1").is_err());
        assert!(parse_mark("1e3").is_err());
    }

    #[test]
    fn integers_are_range_checked_and_decimal_only() {
        assert_eq!(parse_integer("12345", 1, 65535), Ok(12345));
        assert!(parse_integer("0", 1, 65535).unwrap_err().contains("out of range"));
        assert!(parse_integer("65536", 1, 65535).unwrap_err().contains("out of range"));
        assert!(parse_integer("+1", 1, 65535).is_err());
        assert!(parse_integer("0x10", 1, 65535).is_err());
        assert!(parse_integer("99999999999999999999999", 0, u64::MAX).is_err());
    }

    #[test]
    fn ranges_and_bandwidths() {
        assert_eq!(parse_range("50-100", 65535), Ok((50, 100)));
        assert_eq!(parse_range("7", 65535), Ok((7, 7)));
        assert!(parse_range("20-10", 65535).unwrap_err().contains("empty"));
        assert!(parse_range("a-b", 65535).is_err());
        assert_eq!(parse_bandwidth("0"), Ok(0));
        assert_eq!(parse_bandwidth("100 mbps"), Ok(100_000_000));
        assert_eq!(parse_bandwidth("20MB"), Ok(20_000_000));
        assert_eq!(parse_bandwidth("1g"), Ok(1_000_000_000));
        assert!(parse_bandwidth("fast").is_err());
        assert!(parse_bandwidth("100 parsecs").is_err());
        assert!(parse_bandwidth("99999999999 tbps").unwrap_err().contains("too large"));
    }
}
