//! Errors and warnings, and their rendering as `file:line:col: message` plus the source line and carets.

use std::fmt;
use std::sync::Arc;

use crate::source::{Location, SourceMap, Span};

/// How many errors are printed: the first one and ten more. Past that, errors tend to be echoes of earlier
/// ones and only push the first (the one to fix) off the screen.
pub const MAX_REPORTED_ERRORS: usize = 11;

/// What went wrong. The `Display` text is the message part of a rendered error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A character that starts no token of the language.
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    /// A quoted string with no closing quote.
    #[error("unterminated string: add the closing {quote}")]
    UnterminatedString {
        /// The quote character that opened the string.
        quote: char,
    },
    /// `/*` with no `*/`.
    #[error("unterminated comment: add the closing `*/`")]
    UnterminatedComment,
    /// The parser met a token that the grammar does not allow here.
    #[error("expected {expected}, found {found}")]
    Syntax {
        /// What the grammar allows, e.g. "`,` or `)`".
        expected: String,
        /// The token that was found, e.g. "`->`" or "end of file".
        found: String,
    },
    /// A `name {` with no matching `}`.
    #[error("`{name} {{` is never closed: expected `}}` before the end of the file")]
    UnclosedSection {
        /// The section name.
        name: String,
    },
    /// A `}` outside any section.
    #[error("unexpected `}}`: no section is open here")]
    StrayCloseBrace,
    /// `-> !outbound(...)`.
    #[error("an outbound cannot be negated with `!`")]
    NegatedOutbound,
    /// A top-level section dae does not know.
    #[error("unknown section `{name}`{}", did_you_mean(.suggestion))]
    UnknownSection {
        /// The name as written.
        name: String,
        /// The closest known section name, if one is close.
        suggestion: Option<String>,
    },
    /// A key that the section does not have.
    #[error("unknown key `{key}` in `{section}`{}", did_you_mean(.suggestion))]
    UnknownKey {
        /// The section path, e.g. `global` or `dns.routing`.
        section: String,
        /// The key as written.
        key: String,
        /// The closest known key, if one is close.
        suggestion: Option<String>,
    },
    /// A required section is absent from the entry file and its includes.
    #[error("{file}: section `{section}` is required but not provided; add `{section} {{ }}`")]
    MissingSection {
        /// The entry file.
        file: String,
        /// The missing section.
        section: &'static str,
    },
    /// A required key is absent.
    #[error("`{section}` requires `{key}`")]
    MissingKey {
        /// The section path.
        section: String,
        /// The missing key.
        key: &'static str,
    },
    /// A key that takes one value was given twice.
    #[error("`{section}.{key}` is set more than once")]
    DuplicateKey {
        /// The section path.
        section: String,
        /// The repeated key.
        key: String,
    },
    /// Two definitions share one name (groups, DNS upstreams).
    #[error("{what} `{name}` is defined more than once")]
    DuplicateName {
        /// What kind of thing, e.g. "group".
        what: &'static str,
        /// The repeated name.
        name: String,
    },
    /// A construct that the section cannot hold, e.g. a routing rule in `global`.
    #[error("{what} is not allowed in `{section}`; {expected}")]
    Misplaced {
        /// What was found, e.g. "a routing rule".
        what: &'static str,
        /// The section path.
        section: String,
        /// What the section holds instead.
        expected: String,
    },
    /// A value that does not type-check.
    #[error("invalid value for `{key}`: {reason}")]
    InvalidValue {
        /// The full key, e.g. `global.tproxy_port`.
        key: String,
        /// Why the value is refused and what is accepted.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read `{path}`: {message}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's reason.
        message: String,
    },
    /// An include path leaves the entry file's folder.
    #[error("include `{path}` is outside `{dir}`; included files must be in the folder of the entry file or below it")]
    IncludeEscapes {
        /// The include path as resolved.
        path: String,
        /// The entry file's folder.
        dir: String,
    },
    /// Files that include each other.
    #[error("circular include: {}", .cycle.join(" -> "))]
    IncludeCycle {
        /// The files of the cycle; the first is repeated at the end.
        cycle: Vec<String>,
    },
    /// The same file reached through two include paths.
    #[error("`{path}` is included more than once (first by `{first}`)")]
    IncludedTwice {
        /// The file.
        path: String,
        /// The file that included it first.
        first: String,
    },
    /// An include names a file without the `.dae` extension.
    #[error("included file `{path}` must have the `.dae` extension")]
    NotDaeFile {
        /// The file.
        path: String,
    },
    /// An include names (without glob characters) a file that does not exist.
    #[error("included file `{path}` does not exist")]
    IncludeNotFound {
        /// The file.
        path: String,
    },
    /// An include is not a valid glob.
    #[error("include `{pattern}` is not a valid pattern: {reason}")]
    BadIncludePattern {
        /// The include as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration file that others may read or the group may write.
    #[error(
        "permissions {mode:04o} for `{path}` are too open: the file must not be writable by its group nor accessible by others; \
         run `chmod 0640 {path}` or `chmod 0600 {path}`"
    )]
    PermissionsTooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A directory where a file was expected.
    #[error("`{path}` is a directory, not a configuration file")]
    IsDirectory {
        /// The path.
        path: String,
    },
    /// A routing function that does not exist.
    #[error("unknown function `{name}`{}", did_you_mean(.suggestion))]
    UnknownFunction {
        /// The name as written.
        name: String,
        /// The closest known function, if one is close.
        suggestion: Option<String>,
    },
    /// A `key:` that a routing function does not take.
    #[error("`{function}` does not take the key `{key}`{}", did_you_mean(.suggestion))]
    UnknownParamKey {
        /// The function, e.g. `domain`.
        function: String,
        /// The key as written.
        key: String,
        /// The closest key the function takes, if one is close.
        suggestion: Option<String>,
    },
    /// A value that a routing function or an outbound refuses.
    #[error("invalid value in `{function}(...)`: {reason}")]
    InvalidArgument {
        /// The function or outbound, e.g. `dip` or `direct`.
        function: String,
        /// Why the value is refused and what is accepted.
        reason: String,
    },
    /// An outbound that is neither built in nor a group of the `group` section.
    #[error(
        "outbound `{name}` is not defined: define it in section `group`, or use `direct` or `block`{}",
        did_you_mean(.suggestion)
    )]
    UnknownOutbound {
        /// The outbound as written.
        name: String,
        /// The closest defined outbound, if one is close.
        suggestion: Option<String>,
    },
    /// An `interface(...)` name that no configured interface of its zone matches.
    #[error("`{name}` is not a {zone} interface: {configured}")]
    UnconfiguredInterface {
        /// `LAN` or `WAN`.
        zone: &'static str,
        /// The interface name.
        name: String,
        /// What `lan_interface` / `wan_interface` hold, as a sentence.
        configured: String,
    },
    /// A geosite/geoip asset file or tag that cannot be used.
    #[error("{what}: {reason}")]
    Asset {
        /// What was asked for, e.g. "geosite `cn` in `geosite.dat`".
        what: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A DNS rule names an upstream that `dns.upstream` does not define.
    #[error(
        "DNS upstream `{name}` is not defined: define it in `dns {{ upstream {{ {name}: 'udp://...' }} }}`, or use `asis` or `reject`{}",
        did_you_mean(.suggestion)
    )]
    UnknownDnsUpstream {
        /// The name as written.
        name: String,
        /// The closest defined upstream, if one is close.
        suggestion: Option<String>,
    },
    /// Something dae offers that dae-rs does not implement yet (refused rather than silently ignored).
    #[error("{what}: {reason}")]
    NotImplemented {
        /// What was asked for, e.g. "upstream `h3dns`".
        what: String,
        /// What is missing and what to use instead.
        reason: String,
    },
    /// `include` in a configuration loaded with [`crate::load_str`].
    #[error(
        "`include` is not available for a configuration read from memory: there is no entry folder to resolve paths against; use `config::load` with a file"
    )]
    IncludeUnavailable,
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion.as_ref().map(|name| format!("; did you mean `{name}`?")).unwrap_or_default()
}

/// A secondary location attached to an error, e.g. where a duplicated key was first set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// What the location shows.
    pub message: String,
    /// The location.
    pub span: Span,
}

/// One error: what went wrong, where, and optionally how to fix it.
///
/// The details live behind one allocation so `Result<_, ConfigError>` stays one pointer wide on the
/// happy path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(Box<Details>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Details {
    kind: ErrorKind,
    span: Option<Span>,
    hint: Option<String>,
    note: Option<Note>,
}

impl ConfigError {
    /// An error at `span`, or about a whole file or the configuration as a whole when `span` is `None`.
    pub fn new(kind: ErrorKind, span: Option<Span>) -> Self {
        Self(Box::new(Details { kind, span, hint: None, note: None }))
    }

    /// An error at `span`.
    pub fn at(span: Span, kind: ErrorKind) -> Self {
        Self::new(kind, Some(span))
    }

    /// An error with no source location.
    pub fn global(kind: ErrorKind) -> Self {
        Self::new(kind, None)
    }

    /// Adds advice, printed under the caret line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }

    /// Adds a secondary location.
    pub fn with_note(mut self, message: impl Into<String>, span: Span) -> Self {
        self.0.note = Some(Note { message: message.into(), span });
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// Where; `None` for errors about a whole file (unreadable, too open) or the configuration as a whole.
    pub fn span(&self) -> Option<Span> {
        self.0.span
    }

    /// Advice, one or more lines.
    pub fn hint(&self) -> Option<&str> {
        self.0.hint.as_deref()
    }

    /// A second location that explains the error.
    pub fn note(&self) -> Option<&Note> {
        self.0.note.as_ref()
    }

    /// Renders this error as `file:line:col: message`, the source line, a caret line, then hint and note.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = String::new();
        match self.span() {
            Some(span) => {
                out.push_str(&format!("{}: {}\n", sources.location(span), self.kind()));
                out.push_str(&caret_lines(sources, span));
            }
            None => out.push_str(&format!("{}\n", self.kind())),
        }
        if let Some(hint) = self.hint() {
            for line in hint.lines() {
                out.push_str(line);
                out.push('\n');
            }
        }
        if let Some(note) = self.note() {
            out.push_str(&format!("note: {} at {}\n", note.message, sources.location(note.span)));
        }
        out.pop();
        out
    }
}

/// The source line of `span.start` and a line of `^` under the span (clipped to that line; one `^` when empty).
fn caret_lines(sources: &SourceMap, span: Span) -> String {
    let file = sources.file(span.file);
    let start = span.start.min(file.text().len());
    let line = file.line_index(start);
    let text = file.line_text(line);
    let line_start = file.line_start(line);
    let before = &file.text()[line_start..start];
    // Tabs are copied so the carets line up in any terminal tab width.
    let indent: String = before.chars().map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
    let end = span.end.clamp(start, line_start + text.len());
    let width = file.text()[start..end].chars().count().max(1);
    format!("{text}\n{indent}{}\n", "^".repeat(width))
}

/// Every error of a failed load, with the sources needed to print them.
///
/// `Display` prints the first [`MAX_REPORTED_ERRORS`] errors, one block each, separated by blank lines, and a
/// count of the rest.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
    sources: Arc<SourceMap>,
}

impl ConfigErrors {
    /// Wraps a non-empty list of errors.
    pub(crate) fn new(errors: Vec<ConfigError>, sources: Arc<SourceMap>) -> Self {
        debug_assert!(!errors.is_empty(), "a failed load has at least one error");
        Self { errors, sources }
    }

    /// Both lists, in file order (they point into the same sources).
    pub(crate) fn merged(mut self, other: ConfigErrors) -> Self {
        self.errors.extend(other.errors);
        crate::config::sort_errors(&mut self.errors);
        self
    }

    /// All errors, including those past [`MAX_REPORTED_ERRORS`] that `Display` leaves out.
    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    /// The files the errors point into.
    pub fn sources(&self) -> &SourceMap {
        &self.sources
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.errors.len().min(MAX_REPORTED_ERRORS);
        for (index, error) in self.errors[..shown].iter().enumerate() {
            if index > 0 {
                f.write_str("\n\n")?;
            }
            f.write_str(&error.render(&self.sources))?;
        }
        let hidden = self.errors.len() - shown;
        if hidden > 0 {
            write!(f, "\n\n{hidden} more error{} not shown", if hidden == 1 { "" } else { "s" })?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Something accepted but worth telling the user, e.g. a recognised key that has no effect yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What to tell the user.
    pub message: String,
    /// Where, when the warning is about a place in a file.
    pub location: Option<Location>,
    /// The same place as a span, for tools that want to underline it.
    pub span: Option<Span>,
}

impl Warning {
    pub(crate) fn at(sources: &SourceMap, span: Span, message: impl Into<String>) -> Self {
        Self { message: message.into(), location: Some(sources.location(span)), span: Some(span) }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{location}: warning: {}", self.message),
            None => write!(f, "warning: {}", self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_file(text: &str) -> (Arc<SourceMap>, crate::source::FileId) {
        let mut map = SourceMap::new();
        let id = map.add("t.dae", text);
        (Arc::new(map), id)
    }

    #[test]
    fn carets_span_the_token_and_keep_tabs_for_alignment() {
        let (map, id) = one_file("global {\n\tlan: x\n}\n");
        let start = map.file(id).text().find("lan").unwrap();
        let error = ConfigError::at(
            Span::new(id, start, start + 3),
            ErrorKind::UnknownKey { section: "global".into(), key: "lan".into(), suggestion: None },
        );
        assert_eq!(error.render(&map), "t.dae:2:2: unknown key `lan` in `global`\n\tlan: x\n\t^^^");
    }

    #[test]
    fn empty_span_gets_one_caret() {
        let (map, id) = one_file("a");
        let error = ConfigError::at(Span::new(id, 1, 1), ErrorKind::UnterminatedComment);
        assert_eq!(error.render(&map), "t.dae:1:2: unterminated comment: add the closing `*/`\na\n ^");
    }

    #[test]
    fn display_shows_eleven_errors_and_counts_the_rest() {
        let (map, id) = one_file("x\n");
        let errors = (0..13).map(|_| ConfigError::at(Span::new(id, 0, 1), ErrorKind::StrayCloseBrace)).collect();
        let rendered = ConfigErrors::new(errors, map).to_string();
        assert_eq!(rendered.matches("unexpected `}`").count(), MAX_REPORTED_ERRORS);
        assert!(rendered.ends_with("\n\n2 more errors not shown"), "{rendered}");
    }

    #[test]
    fn warning_display_starts_with_location() {
        let (map, id) = one_file("global {\n  mptcp: true\n}\n");
        let start = map.file(id).text().find("mptcp").unwrap();
        let warning = Warning::at(&map, Span::new(id, start, start + 5), "no effect");
        assert_eq!(warning.to_string(), "t.dae:2:3: warning: no effect");
    }
}
