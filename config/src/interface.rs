//! Interface names and patterns for `lan_interface` and `wan_interface`.

use std::fmt;

use crate::glob::{Pattern, PatternError};
use crate::source::Span;

/// Longest interface name Linux accepts: `IFNAMSIZ` (16) minus the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

/// Why an interface name or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceError {
    /// Empty name, e.g. from `eth0,,eth1`.
    #[error("empty interface name")]
    Empty,
    /// A name longer than the kernel allows.
    #[error("interface name `{name}` is {len} bytes long; Linux allows at most {MAX_IFNAME_LEN}")]
    TooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A glob whose shortest match is already too long.
    #[error(
        "pattern `{pattern}` only matches names of {min_len} bytes or more, but Linux allows at most {MAX_IFNAME_LEN}"
    )]
    PatternTooLong {
        /// The pattern.
        pattern: String,
        /// The shortest name it can match.
        min_len: usize,
    },
    /// A character the kernel refuses in interface names.
    #[error("interface name `{name}` contains {what}, which Linux does not allow in interface names")]
    InvalidCharacter {
        /// The name.
        name: String,
        /// The character, described.
        what: &'static str,
    },
    /// `.` and `..` are refused by the kernel.
    #[error("`{0}` is not a valid interface name")]
    Reserved(String),
    /// A malformed glob.
    #[error("interface pattern `{pattern}` is malformed: {reason}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        reason: PatternError,
    },
}

/// One entry of `lan_interface` or `wan_interface`: an interface name or a Go `path.Match` glob such as
/// `eth*`, `wlan?`, `veth[0-9]`, `en[!o]*`.
///
/// Two patterns are equal when written the same; where they were written does not matter.
#[derive(Debug, Clone)]
pub struct InterfacePattern {
    text: String,
    pattern: Pattern,
    span: Option<Span>,
}

impl InterfacePattern {
    /// Parses a name or pattern, checking it against the kernel's rules for interface names (at most
    /// [`MAX_IFNAME_LEN`] bytes; no `/`, `:` or whitespace; not `.` or `..`).
    pub fn parse(text: &str) -> Result<Self, InterfaceError> {
        if text.is_empty() {
            return Err(InterfaceError::Empty);
        }
        if text == "." || text == ".." {
            return Err(InterfaceError::Reserved(text.to_owned()));
        }
        let bad = |what| InterfaceError::InvalidCharacter { name: text.to_owned(), what };
        if text.contains('/') {
            return Err(bad("`/`"));
        }
        if text.contains(':') {
            return Err(bad("`:`"));
        }
        if text.contains(char::is_whitespace) {
            return Err(bad("whitespace"));
        }
        let pattern =
            Pattern::new(text).map_err(|reason| InterfaceError::BadPattern { pattern: text.to_owned(), reason })?;
        match pattern.literal() {
            Some(name) if name.len() > MAX_IFNAME_LEN => {
                return Err(InterfaceError::TooLong { len: name.len(), name });
            }
            Some(_) => {}
            None if pattern.min_len() > MAX_IFNAME_LEN => {
                return Err(InterfaceError::PatternTooLong { pattern: text.to_owned(), min_len: pattern.min_len() });
            }
            None => {}
        }
        Ok(Self { text: text.to_owned(), pattern, span: None })
    }

    pub(crate) fn with_span(mut self, span: Span) -> Self {
        self.span = Some(span);
        self
    }

    /// True if `ifname` matches (Go `path.Match` semantics; a plain name matches only itself).
    pub fn matches(&self, ifname: &str) -> bool {
        self.pattern.matches(ifname)
    }

    /// True if this is a glob rather than one name.
    pub fn is_glob(&self) -> bool {
        self.pattern.is_glob()
    }

    /// The interface name, for a pattern that is not a glob (escapes removed).
    pub fn name(&self) -> Option<String> {
        self.pattern.literal()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Where the pattern was written, when it came from a file.
    pub fn span(&self) -> Option<Span> {
        self.span
    }
}

impl PartialEq for InterfacePattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for InterfacePattern {}

impl std::hash::Hash for InterfacePattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Display for InterfacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One entry of `wan_interface`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WanInterface {
    /// `auto`: every interface that holds a default route, found when the datapath starts.
    Auto,
    /// A name or glob.
    Pattern(InterfacePattern),
}

impl WanInterface {
    /// Parses `auto`, a name or a glob.
    pub fn parse(text: &str) -> Result<Self, InterfaceError> {
        if text == "auto" {
            return Ok(Self::Auto);
        }
        InterfacePattern::parse(text).map(Self::Pattern)
    }
}

impl fmt::Display for WanInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Pattern(pattern) => pattern.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_name_matches_only_itself() {
        let pattern = InterfacePattern::parse("eth0").unwrap();
        assert!(!pattern.is_glob());
        assert_eq!(pattern.name().as_deref(), Some("eth0"));
        assert!(pattern.matches("eth0"));
        assert!(!pattern.matches("eth01"));
    }

    #[test]
    fn globs_follow_go_path_match() {
        let pattern = InterfacePattern::parse("veth[0-9]*").unwrap();
        assert!(pattern.is_glob());
        assert_eq!(pattern.name(), None);
        assert!(pattern.matches("veth1abc"));
        assert!(!pattern.matches("vethx"));
        assert!(InterfacePattern::parse("en[!o]*").unwrap().matches("enp3s0"));
        assert!(!InterfacePattern::parse("en[!o]*").unwrap().matches("eno1"));
    }

    #[test]
    fn names_longer_than_ifnamsiz_minus_one_are_refused() {
        assert!(InterfacePattern::parse("a23456789012345").is_ok());
        assert_eq!(
            InterfacePattern::parse("a234567890123456"),
            Err(InterfaceError::TooLong { name: "a234567890123456".into(), len: 16 })
        );
        assert!(InterfacePattern::parse("[a-z][a-z][a-z][a-z][a-z]*").is_ok());
        assert!(matches!(
            InterfacePattern::parse("a234567890123456*"),
            Err(InterfaceError::PatternTooLong { min_len: 16, .. })
        ));
    }

    #[test]
    fn empty_reserved_and_invalid_characters_are_refused() {
        assert_eq!(InterfacePattern::parse(""), Err(InterfaceError::Empty));
        assert_eq!(InterfacePattern::parse(".."), Err(InterfaceError::Reserved("..".into())));
        assert!(matches!(InterfacePattern::parse("a/b"), Err(InterfaceError::InvalidCharacter { .. })));
        assert!(matches!(InterfacePattern::parse("a b"), Err(InterfaceError::InvalidCharacter { .. })));
        assert!(matches!(InterfacePattern::parse("eth[0"), Err(InterfaceError::BadPattern { .. })));
    }

    #[test]
    fn auto_is_a_wan_keyword() {
        assert_eq!(WanInterface::parse("auto"), Ok(WanInterface::Auto));
        assert!(matches!(WanInterface::parse("ppp0"), Ok(WanInterface::Pattern(p)) if p.as_str() == "ppp0"));
    }
}
