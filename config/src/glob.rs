//! Shell-style patterns with the semantics of Go's `path.Match`, which dae uses for interface names and (via
//! `filepath.Glob`) for include paths:
//!
//! ```text
//! *        any sequence of characters other than '/'
//! ?        any single character other than '/'
//! [class]  one character in the class: ranges `a-z`, single characters, `\x` escapes
//! [^class] one character not in the class; `[!class]` is accepted as a synonym (Go reads `!` as a member)
//! \c       the character c
//! ```
//!
//! Patterns are compiled once, so a malformed pattern is a configuration error rather than a silent
//! never-match as in Go (where `path.Match` returns `ErrBadPattern` only when matching reaches it).

/// Why a pattern is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// `[` without `]`.
    #[error("`[` is never closed with `]`")]
    UnclosedClass,
    /// `[]` or `[^]`.
    #[error("`[]` matches nothing; list at least one character")]
    EmptyClass,
    /// A range whose end is below its start, e.g. `[z-a]`.
    #[error("range `{0}-{1}` is empty; write the lower bound first")]
    EmptyRange(char, char),
    /// A `\` at the end of the pattern.
    #[error("`\\` at the end escapes nothing")]
    TrailingEscape,
    /// An unescaped `-` or `]` where a class member was expected.
    #[error("`{0}` must be escaped as `\\{0}` here")]
    UnescapedInClass(char),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Char(char),
    AnyChar,
    AnySequence,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    pieces: Vec<Piece>,
}

/// True if `text` contains a character that makes it a pattern rather than a plain name (Go's `hasMeta`).
pub(crate) fn has_meta(text: &str) -> bool {
    text.contains(['*', '?', '[', '\\'])
}

fn class_char(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, PatternError> {
    match chars.next() {
        None => Err(PatternError::UnclosedClass),
        Some('\\') => chars.next().ok_or(PatternError::UnclosedClass),
        Some(c @ ('-' | ']')) => Err(PatternError::UnescapedInClass(c)),
        Some(c) => Ok(c),
    }
}

impl Pattern {
    /// Compiles `text`.
    pub fn new(text: &str) -> Result<Self, PatternError> {
        let mut pieces = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let piece = match c {
                '*' => {
                    if pieces.last() == Some(&Piece::AnySequence) {
                        continue;
                    }
                    Piece::AnySequence
                }
                '?' => Piece::AnyChar,
                '\\' => Piece::Char(chars.next().ok_or(PatternError::TrailingEscape)?),
                '[' => {
                    let negated = chars.next_if(|&c| c == '^' || c == '!').is_some();
                    let mut ranges = Vec::new();
                    loop {
                        if chars.next_if_eq(&']').is_some() {
                            if ranges.is_empty() {
                                return Err(PatternError::EmptyClass);
                            }
                            break;
                        }
                        let low = class_char(&mut chars)?;
                        let high = if chars.next_if_eq(&'-').is_some() { class_char(&mut chars)? } else { low };
                        if high < low {
                            return Err(PatternError::EmptyRange(low, high));
                        }
                        ranges.push((low, high));
                    }
                    Piece::Class { negated, ranges }
                }
                c => Piece::Char(c),
            };
            pieces.push(piece);
        }
        Ok(Self { pieces })
    }

    /// True if the pattern has a wildcard or class (a pattern made only of characters and escapes matches
    /// exactly one name).
    pub fn is_glob(&self) -> bool {
        self.pieces.iter().any(|piece| !matches!(piece, Piece::Char(_)))
    }

    /// The one name matched by a pattern without wildcards (escapes removed), or `None` for a glob.
    pub fn literal(&self) -> Option<String> {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Char(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// The fewest bytes a matching name can have.
    pub fn min_len(&self) -> usize {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Char(c) => c.len_utf8(),
                Piece::AnySequence => 0,
                Piece::AnyChar | Piece::Class { .. } => 1,
            })
            .sum()
    }

    /// True if `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        match_from(&self.pieces, &name)
    }
}

fn match_from(pieces: &[Piece], name: &[char]) -> bool {
    let Some((piece, rest)) = pieces.split_first() else {
        return name.is_empty();
    };
    match piece {
        Piece::AnySequence => {
            // Try every split point; `*` stops at the first '/'.
            let limit = name.iter().position(|&c| c == '/').unwrap_or(name.len());
            (0..=limit).any(|skip| match_from(rest, &name[skip..]))
        }
        _ => {
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let accepted = match piece {
                Piece::Char(expected) => c == *expected,
                Piece::AnyChar => c != '/',
                Piece::Class { negated, ranges } => {
                    ranges.iter().any(|&(low, high)| (low..=high).contains(&c)) != *negated
                }
                Piece::AnySequence => unreachable!("handled above"),
            };
            accepted && match_from(rest, name_rest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        Pattern::new(pattern).expect("valid pattern").matches(name)
    }

    #[test]
    fn star_matches_any_run_including_empty() {
        assert!(matches("eth*", "eth"));
        assert!(matches("eth*", "eth0"));
        assert!(matches("*0", "veth0"));
        assert!(matches("e*h*", "eth0"));
        assert!(!matches("eth*", "wlan0"));
        assert!(!matches("a*", "a/b"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(matches("eth?", "eth0"));
        assert!(!matches("eth?", "eth"));
        assert!(!matches("eth?", "eth10"));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(matches("wlan[0-9]", "wlan3"));
        assert!(!matches("wlan[0-9]", "wlanx"));
        assert!(matches("[a-cx]", "x"));
        assert!(matches("eth[^0]", "eth1"));
        assert!(!matches("eth[^0]", "eth0"));
        assert!(matches("eth[!0]", "eth1"));
        assert!(!matches("eth[!0]", "eth0"));
    }

    #[test]
    fn escapes_make_metacharacters_literal() {
        assert!(matches(r"a\*", "a*"));
        assert!(!matches(r"a\*", "ab"));
        assert!(matches(r"[\]]", "]"));
        let pattern = Pattern::new(r"eth\0").unwrap();
        assert!(!pattern.is_glob());
        assert_eq!(pattern.literal().as_deref(), Some("eth0"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        assert_eq!(Pattern::new("eth[0-9"), Err(PatternError::UnclosedClass));
        assert_eq!(Pattern::new("eth[]"), Err(PatternError::EmptyClass));
        assert_eq!(Pattern::new("eth[^]"), Err(PatternError::EmptyClass));
        assert_eq!(Pattern::new("[z-a]"), Err(PatternError::EmptyRange('z', 'a')));
        assert_eq!(Pattern::new("eth\\"), Err(PatternError::TrailingEscape));
        assert_eq!(Pattern::new("[-a]"), Err(PatternError::UnescapedInClass('-')));
    }

    #[test]
    fn is_glob_and_min_len() {
        assert!(Pattern::new("eth*").unwrap().is_glob());
        assert!(!Pattern::new("eth0").unwrap().is_glob());
        assert_eq!(Pattern::new("e?h[0-9]*").unwrap().min_len(), 4);
    }
}
