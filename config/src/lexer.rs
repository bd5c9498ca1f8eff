//! Tokens of the `.dae` language, following the lexer rules of dae's ANTLR grammar (`dae_config.g4`):
//!
//! ```text
//! WHITESPACE   [ \t\r\n]+                         skipped
//! COMMENT      '/*' .*? '*/'  and  '#' to end of line   skipped
//! ID           [a-zA-Z_] SAFE*
//! NON_ID       [/\\^*.+0-9-] SAFE*
//! QUOTE_STRING '…' or "…", where \' (\") does not end the string
//! SAFE         the union of both head sets and [=@$!#%]
//! ```
//!
//! As in ANTLR, the longest match wins and ties go to the rule defined first (punctuation, then comments,
//! then `ID`, `NON_ID`). Two consequences users meet:
//! - `#` is a SAFE character, so inside a word (`a#b`, `0x800#x`) it is part of the token; it starts a comment
//!   only where a token could start (after whitespace or punctuation).
//! - `/` and `*` are SAFE too: `/*c*/` is a comment, but `/*c*/d` is one `NON_ID` token (it is longer).

use nom::branch::alt;
use nom::bytes::complete::{tag, take_until, take_while, take_while1};
use nom::character::complete::{char, satisfy};
use nom::combinator::{recognize, value};
use nom::sequence::pair;
use nom::{IResult, Parser};

use crate::error::{ConfigError, ErrorKind};
use crate::source::{FileId, Span};

/// Kinds of tokens. Words carry their text in [`Token::text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// `ID`: a word starting with a letter or `_`.
    Ident,
    /// `NON_ID`: a word starting with a digit or one of `/\^*.+-`.
    NonId,
    /// A quoted string, quotes included in the text.
    Quoted,
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Colon,
    Comma,
    Bang,
    Arrow,
    AndAnd,
    /// End of input; always the last token.
    Eof,
}

/// One token and the source bytes it covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'a> {
    pub kind: TokenKind,
    pub text: &'a str,
    pub span: Span,
}

impl Token<'_> {
    /// How the token is named in "expected …, found …" messages.
    pub fn describe(&self) -> String {
        /// Longer tokens (typically a whole link) are cut so the message stays on one line.
        const MAX_SHOWN_CHARS: usize = 40;
        match self.kind {
            TokenKind::Eof => "end of file".to_owned(),
            _ if self.text.chars().count() > MAX_SHOWN_CHARS => {
                let head: String = self.text.chars().take(MAX_SHOWN_CHARS).collect();
                format!("`{head}…`")
            }
            _ => format!("`{}`", self.text),
        }
    }
}

/// The tokens of one file (ending with [`TokenKind::Eof`]) and the lexical errors met on the way.
pub(crate) struct Lexed<'a> {
    pub tokens: Vec<Token<'a>>,
    pub errors: Vec<ConfigError>,
}

fn is_id_head(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_non_id_head(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '/' | '\\' | '^' | '*' | '.' | '+' | '-')
}

fn is_safe(c: char) -> bool {
    is_id_head(c) || is_non_id_head(c) || matches!(c, '=' | '@' | '$' | '!' | '#' | '%')
}

fn whitespace(input: &str) -> IResult<&str, &str> {
    take_while1(|c| matches!(c, ' ' | '\t' | '\r' | '\n')).parse(input)
}

fn line_comment(input: &str) -> IResult<&str, &str> {
    recognize(pair(char('#'), take_while(|c| c != '\n'))).parse(input)
}

fn block_comment(input: &str) -> IResult<&str, &str> {
    recognize((tag("/*"), take_until("*/"), tag("*/"))).parse(input)
}

fn ident(input: &str) -> IResult<&str, &str> {
    recognize(pair(satisfy(is_id_head), take_while(is_safe))).parse(input)
}

fn non_id(input: &str) -> IResult<&str, &str> {
    recognize(pair(satisfy(is_non_id_head), take_while(is_safe))).parse(input)
}

fn punctuation(input: &str) -> IResult<&str, TokenKind> {
    alt((
        value(TokenKind::Arrow, tag("->")),
        value(TokenKind::AndAnd, tag("&&")),
        value(TokenKind::LBrace, char('{')),
        value(TokenKind::RBrace, char('}')),
        value(TokenKind::LParen, char('(')),
        value(TokenKind::RParen, char(')')),
        value(TokenKind::LBracket, char('[')),
        value(TokenKind::RBracket, char(']')),
        value(TokenKind::Colon, char(':')),
        value(TokenKind::Comma, char(',')),
        value(TokenKind::Bang, char('!')),
    ))
    .parse(input)
}

/// Length of the quoted string at the start of `input` (which starts with `quote`), or `None` if unterminated.
fn quoted_len(input: &str, quote: char) -> Option<usize> {
    let mut chars = input.char_indices().skip(1);
    while let Some((at, c)) = chars.next() {
        if c == '\\' && input[at + 1..].starts_with(quote) {
            chars.next();
        } else if c == quote {
            return Some(at + 1);
        }
    }
    None
}

/// What the lexer does with the bytes at the current position.
enum Step {
    Skip(usize),
    Token(TokenKind, usize),
    Error(ErrorKind, usize, Option<&'static str>),
    /// An error, plus a token of this kind and length standing in for what the user meant, so the parser
    /// does not report the same mistake again.
    Recovered(ErrorKind, TokenKind, usize),
}

fn step(input: &str) -> Step {
    let len = |rest: &str| input.len() - rest.len();
    if let Ok((rest, _)) = whitespace(input) {
        return Step::Skip(len(rest));
    }
    if let Ok((rest, _)) = line_comment(input) {
        return Step::Skip(len(rest));
    }
    if let Ok((rest, kind)) = punctuation(input) {
        // `->` beats the one-character NON_ID `-`; no other punctuation overlaps a word.
        return Step::Token(kind, len(rest));
    }
    if input.starts_with("/*") {
        let word = non_id(input).map_or(0, |(rest, _)| len(rest));
        return match block_comment(input) {
            Ok((rest, _)) if len(rest) >= word => Step::Skip(len(rest)),
            Ok(_) => Step::Token(TokenKind::NonId, word),
            // A bare `/*` with no `*/` is a comment the user forgot to close; `/*.dae` is a word.
            Err(_) if word == 2 => Step::Error(ErrorKind::UnterminatedComment, input.len(), None),
            Err(_) => Step::Token(TokenKind::NonId, word),
        };
    }
    if let Ok((rest, _)) = ident(input) {
        return Step::Token(TokenKind::Ident, len(rest));
    }
    if let Ok((rest, _)) = non_id(input) {
        return Step::Token(TokenKind::NonId, len(rest));
    }
    let first = input.chars().next().expect("step is called on non-empty input");
    if first == '\'' || first == '"' {
        return match quoted_len(input, first) {
            Some(n) => Step::Token(TokenKind::Quoted, n),
            // Take the rest of the line as the string so the next lines are still checked.
            None => Step::Recovered(
                ErrorKind::UnterminatedString { quote: first },
                TokenKind::Quoted,
                input.find('\n').unwrap_or(input.len()),
            ),
        };
    }
    let hint = match first {
        '&' => Some("hint: the AND operator is `&&`"),
        '|' => Some(
            "hint: dae has no OR operator: list alternatives in one function, `domain(a, b)`, or write one rule each",
        ),
        ';' => Some("hint: declarations end at the end of the line; remove the `;`"),
        _ => None,
    };
    Step::Error(ErrorKind::UnexpectedChar(first), first.len_utf8(), hint)
}

/// Splits `source` into tokens. Characters that start no token are reported and skipped, so one bad
/// character yields one error rather than a cascade.
pub(crate) fn lex(file: FileId, source: &str) -> Lexed<'_> {
    let mut tokens = Vec::new();
    let mut errors = Vec::new();
    let mut at = 0;
    while at < source.len() {
        match step(&source[at..]) {
            Step::Skip(n) => at += n,
            Step::Token(kind, n) => {
                tokens.push(Token { kind, text: &source[at..at + n], span: Span::new(file, at, at + n) });
                at += n;
            }
            Step::Recovered(kind, token_kind, n) => {
                errors.push(ConfigError::at(Span::new(file, at, at + 1), kind));
                tokens.push(Token { kind: token_kind, text: &source[at..at + n], span: Span::new(file, at, at + n) });
                at += n;
            }
            Step::Error(kind, n, hint) => {
                let width = match kind {
                    ErrorKind::UnexpectedChar(c) => c.len_utf8(),
                    // `/*`
                    _ => 2,
                };
                let mut error = ConfigError::at(Span::new(file, at, at + width), kind);
                if let Some(hint) = hint {
                    error = error.with_hint(hint);
                }
                errors.push(error);
                at += n;
            }
        }
    }
    tokens.push(Token { kind: TokenKind::Eof, text: "", span: Span::new(file, source.len(), source.len()) });
    Lexed { tokens, errors }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceMap;

    fn kinds_and_texts(source: &str) -> Vec<(TokenKind, &str)> {
        let mut map = SourceMap::new();
        let id = map.add("t.dae", "");
        let lexed = lex(id, source);
        assert!(lexed.errors.is_empty(), "unexpected errors: {:?}", lexed.errors);
        lexed.tokens.iter().map(|t| (t.kind, t.text)).collect()
    }

    fn errors(source: &str) -> Vec<ErrorKind> {
        let mut map = SourceMap::new();
        let id = map.add("t.dae", "");
        lex(id, source).errors.into_iter().map(|e| e.kind().clone()).collect()
    }

    use TokenKind::*;

    #[test]
    fn hash_inside_a_word_is_part_of_the_word() {
        assert_eq!(kinds_and_texts("a#b"), [(Ident, "a#b"), (Eof, "")]);
        assert_eq!(kinds_and_texts("0x800#x"), [(NonId, "0x800#x"), (Eof, "")]);
    }

    #[test]
    fn hash_where_a_token_could_start_is_a_comment() {
        assert_eq!(kinds_and_texts("a #b\nc"), [(Ident, "a"), (Ident, "c"), (Eof, "")]);
        assert_eq!(kinds_and_texts("f(x)#c"), [(Ident, "f"), (LParen, "("), (Ident, "x"), (RParen, ")"), (Eof, "")]);
        assert_eq!(kinds_and_texts("'q'#c"), [(Quoted, "'q'"), (Eof, "")]);
    }

    #[test]
    fn block_comment_wins_ties_but_a_longer_word_wins_over_it() {
        assert_eq!(kinds_and_texts("/* c */ a"), [(Ident, "a"), (Eof, "")]);
        assert_eq!(kinds_and_texts("/*c*/"), [(Eof, "")]);
        assert_eq!(kinds_and_texts("/*c*/d"), [(NonId, "/*c*/d"), (Eof, "")]);
        assert_eq!(kinds_and_texts("a/*b*/"), [(Ident, "a/*b*/"), (Eof, "")]);
        assert_eq!(kinds_and_texts("/*.dae"), [(NonId, "/*.dae"), (Eof, "")]);
    }

    #[test]
    fn words_split_by_head_character() {
        assert_eq!(
            kinds_and_texts("systemd-resolved 224.0.0.0/3 -1 domain++ config.d/*.dae"),
            [
                (Ident, "systemd-resolved"),
                (NonId, "224.0.0.0/3"),
                (NonId, "-1"),
                (Ident, "domain++"),
                (Ident, "config.d/*.dae"),
                (Eof, "")
            ]
        );
    }

    #[test]
    fn arrow_and_bang_are_punctuation_at_token_start_only() {
        assert_eq!(
            kinds_and_texts("!f(a)->b a!b"),
            [
                (Bang, "!"),
                (Ident, "f"),
                (LParen, "("),
                (Ident, "a"),
                (RParen, ")"),
                (Arrow, "->"),
                (Ident, "b"),
                (Ident, "a!b"),
                (Eof, "")
            ]
        );
    }

    #[test]
    fn quoted_strings_keep_escaped_quotes_and_newlines() {
        assert_eq!(kinds_and_texts(r"'a\'b' "), [(Quoted, r"'a\'b'"), (Eof, "")]);
        assert_eq!(kinds_and_texts("\"x'\ny\""), [(Quoted, "\"x'\ny\""), (Eof, "")]);
    }

    #[test]
    fn colon_and_brackets_end_words() {
        assert_eq!(
            kinds_and_texts("k:[a]"),
            [(Ident, "k"), (Colon, ":"), (LBracket, "["), (Ident, "a"), (RBracket, "]"), (Eof, "")]
        );
    }

    #[test]
    fn bad_characters_are_reported_and_skipped() {
        assert_eq!(errors("a ; b"), [ErrorKind::UnexpectedChar(';')]);
        assert_eq!(errors("f(a) & g(b)"), [ErrorKind::UnexpectedChar('&')]);
        assert_eq!(errors("x 'open\ny"), [ErrorKind::UnterminatedString { quote: '\'' }]);
        assert_eq!(errors("x /* open"), [ErrorKind::UnterminatedComment]);
    }
}
