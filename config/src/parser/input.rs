//! The token stream as a nom input, and the parser's error type.

use nom::error::{ErrorKind as NomErrorKind, ParseError};
use nom::{IResult, Input, Needed};

use crate::lexer::{Token, TokenKind};

/// A window `pos..end` over the tokens of one file. The full slice is kept so lookahead past the window still
/// finds the final [`TokenKind::Eof`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tokens<'a> {
    all: &'a [Token<'a>],
    pos: usize,
    end: usize,
}

impl<'a> Tokens<'a> {
    /// The tokens from index `pos` to the end; `all` must end with [`TokenKind::Eof`].
    pub fn new(all: &'a [Token<'a>], pos: usize) -> Self {
        debug_assert!(all.last().is_some_and(|t| t.kind == TokenKind::Eof));
        Self { all, pos, end: all.len() }
    }

    /// Index of the first token of the window in the file's token list.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The token `n` places ahead; the final end-of-file token when past the end.
    pub fn peek(&self, n: usize) -> &'a Token<'a> {
        let last = self.all.len() - 1;
        &self.all[(self.pos + n).min(last)]
    }

    fn window(&self) -> &'a [Token<'a>] {
        &self.all[self.pos..self.end]
    }
}

impl<'a> Input for Tokens<'a> {
    type Item = &'a Token<'a>;
    type Iter = std::slice::Iter<'a, Token<'a>>;
    type IterIndices = std::iter::Enumerate<Self::Iter>;

    fn input_len(&self) -> usize {
        self.end - self.pos
    }

    fn take(&self, index: usize) -> Self {
        assert!(index <= self.input_len(), "take past the end of the tokens");
        Self { end: self.pos + index, ..*self }
    }

    fn take_from(&self, index: usize) -> Self {
        assert!(index <= self.input_len(), "take_from past the end of the tokens");
        Self { pos: self.pos + index, ..*self }
    }

    fn take_split(&self, index: usize) -> (Self, Self) {
        (self.take_from(index), self.take(index))
    }

    fn position<P>(&self, predicate: P) -> Option<usize>
    where
        P: Fn(Self::Item) -> bool,
    {
        self.window().iter().position(predicate)
    }

    fn iter_elements(&self) -> Self::Iter {
        self.window().iter()
    }

    fn iter_indices(&self) -> Self::IterIndices {
        self.window().iter().enumerate()
    }

    fn slice_index(&self, count: usize) -> Result<usize, Needed> {
        let len = self.input_len();
        if count <= len { Ok(count) } else { Err(Needed::new(count - len)) }
    }
}

/// Why the grammar rejected the token at index `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// Index of the offending token.
    pub at: usize,
    /// What would have been accepted there, e.g. "`)`" (merged across alternatives).
    pub expected: Vec<&'static str>,
    /// A specific message that replaces "expected …, found …".
    pub custom: Option<crate::error::ErrorKind>,
}

impl SyntaxError {
    pub fn expected(input: &Tokens<'_>, what: &'static str) -> Self {
        Self { at: input.pos(), expected: vec![what], custom: None }
    }

    pub fn expected_any(input: &Tokens<'_>, what: &[&'static str]) -> Self {
        Self { at: input.pos(), expected: what.to_vec(), custom: None }
    }

    /// "`a`", "`a` or `b`", "`a`, `b` or `c`".
    pub fn expected_text(&self) -> String {
        match self.expected.as_slice() {
            [] => "something else".to_owned(),
            [one] => (*one).to_owned(),
            [init @ .., last] => format!("{} or {last}", init.join(", ")),
        }
    }
}

impl<'a> ParseError<Tokens<'a>> for SyntaxError {
    fn from_error_kind(input: Tokens<'a>, _kind: NomErrorKind) -> Self {
        Self { at: input.pos(), expected: Vec::new(), custom: None }
    }

    fn append(_input: Tokens<'a>, _kind: NomErrorKind, other: Self) -> Self {
        other
    }

    /// Keeps the error that got furthest; at the same token, merges what each alternative expected.
    fn or(mut self, other: Self) -> Self {
        if other.at > self.at || (other.at == self.at && self.custom.is_none() && other.custom.is_some()) {
            return other;
        }
        if other.at == self.at {
            for what in other.expected {
                if !self.expected.contains(&what) {
                    self.expected.push(what);
                }
            }
        }
        self
    }
}

/// Result of a parser over tokens.
pub(crate) type PResult<'a, O> = IResult<Tokens<'a>, O, SyntaxError>;

/// A parser that accepts one token of kind `kind`, described as `what` in errors.
pub(crate) fn token<'a>(kind: TokenKind, what: &'static str) -> impl Fn(Tokens<'a>) -> PResult<'a, &'a Token<'a>> {
    move |input: Tokens<'a>| {
        let next = input.peek(0);
        if next.kind == kind {
            Ok((input.take_from(1), next))
        } else {
            Err(nom::Err::Error(SyntaxError::expected(&input, what)))
        }
    }
}
