//! Parser for one `.dae` file: tokens to [`Section`]s, with error recovery.
//!
//! The grammar (dae's `dae_config.g4`) is a list of `name { ... }` sections whose bodies hold nested sections,
//! declarations, routing rules and bare literals. Bodies are parsed item by item; when an item fails, the
//! error is recorded and parsing resumes at the next line that can start an item (or at the `}` closing the
//! section), so one file yields all its independent errors instead of only the first.

mod grammar;
mod input;

use std::collections::HashSet;

use crate::ast::{Ident, Item, Section};
use crate::error::{ConfigError, ErrorKind};
use crate::lexer::{Token, TokenKind, lex};
use crate::source::{FileId, SourceFile, Span};
use input::{SyntaxError, Tokens};

/// The sections of one file and every error found in it.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub sections: Vec<Section>,
    pub errors: Vec<ConfigError>,
}

/// Parses the file `source`, whose id is `file`.
pub(crate) fn parse(file: FileId, source: &SourceFile) -> Parsed {
    let lexed = lex(file, source.text());
    let mut parser = Parser { tokens: &lexed.tokens, source, errors: Vec::new() };
    let sections = parser.top_level();

    // A parse error on a line with a lexical error, or a section left open by an unterminated comment, is an
    // echo of the lexical error: report only the cause.
    let lexical_lines: HashSet<usize> =
        lexed.errors.iter().filter_map(|e| e.span()).map(|span| source.line_index(span.start)).collect();
    let comment_ate_the_rest = lexed.errors.iter().any(|e| *e.kind() == ErrorKind::UnterminatedComment);
    let mut errors = lexed.errors;
    errors.extend(parser.errors.into_iter().filter(|e| {
        let echoes_line = e.span().is_some_and(|span| lexical_lines.contains(&source.line_index(span.start)));
        let echoes_comment = comment_ate_the_rest && matches!(e.kind(), ErrorKind::UnclosedSection { .. });
        !echoes_line && !echoes_comment
    }));
    errors.sort_by_key(|e| e.span().map(|span| span.start));
    Parsed { sections, errors }
}

struct Parser<'a> {
    tokens: &'a [Token<'a>],
    source: &'a SourceFile,
    errors: Vec<ConfigError>,
}

impl<'a> Parser<'a> {
    fn token(&self, at: usize) -> &'a Token<'a> {
        &self.tokens[at.min(self.tokens.len() - 1)]
    }

    fn kind(&self, at: usize) -> TokenKind {
        self.token(at).kind
    }

    fn line(&self, at: usize) -> usize {
        self.source.line_index(self.token(at).span.start)
    }

    fn top_level(&mut self) -> Vec<Section> {
        let mut sections = Vec::new();
        let mut at = 0;
        loop {
            match (self.kind(at), self.kind(at + 1)) {
                (TokenKind::Eof, _) => return sections,
                (TokenKind::Ident, TokenKind::LBrace) => {
                    let (section, next) = self.section(at);
                    sections.push(section);
                    at = next;
                }
                (TokenKind::RBrace, _) => {
                    self.errors.push(ConfigError::at(self.token(at).span, ErrorKind::StrayCloseBrace));
                    at += 1;
                }
                _ => {
                    let expected = SyntaxError { at, expected: vec!["a section such as `global {`"], custom: None };
                    self.report(expected);
                    at = self.skip_to_section(at);
                }
            }
        }
    }

    /// Index of the next `name {` outside any skipped braces, or of the end of file.
    fn skip_to_section(&self, from: usize) -> usize {
        let mut depth = 0usize;
        let mut at = from;
        loop {
            match self.kind(at) {
                TokenKind::LBrace => depth += 1,
                TokenKind::RBrace => depth = depth.saturating_sub(1),
                _ => {}
            }
            at += 1;
            let starts_section = self.kind(at) == TokenKind::Ident && self.kind(at + 1) == TokenKind::LBrace;
            if self.kind(at) == TokenKind::Eof || (depth == 0 && starts_section) {
                return at;
            }
        }
    }

    /// Parses `name { ... }` starting at `at` (the name) and returns it with the index after it.
    fn section(&mut self, at: usize) -> (Section, usize) {
        let name_token = self.token(at);
        let name = Ident { name: name_token.text.to_owned(), span: name_token.span };
        let open = self.token(at + 1).span;
        let (items, next, end) = self.body(at + 2, &name, open);
        let span = Span::new(name.span.file, name.span.start, end);
        (Section { name, items, span }, next)
    }

    /// Parses items from `at` up to the matching `}`. Returns the items, the index after `}` and the byte
    /// offset where the section ends.
    fn body(&mut self, mut at: usize, name: &Ident, open: Span) -> (Vec<Item>, usize, usize) {
        let mut items = Vec::new();
        loop {
            let token = self.token(at);
            match (token.kind, self.kind(at + 1)) {
                (TokenKind::RBrace, _) => return (items, at + 1, token.span.end),
                (TokenKind::Eof, _) => {
                    self.errors.push(ConfigError::at(
                        name.span.to(open),
                        ErrorKind::UnclosedSection { name: name.name.clone() },
                    ));
                    return (items, at, token.span.start);
                }
                (TokenKind::Ident, TokenKind::LBrace) => {
                    let (section, next) = self.section(at);
                    items.push(Item::Section(section));
                    at = next;
                }
                _ => match grammar::item(Tokens::new(self.tokens, at)) {
                    Ok((rest, item)) => {
                        items.push(item);
                        at = rest.pos();
                    }
                    Err(nom::Err::Error(error) | nom::Err::Failure(error)) => {
                        let error_at = error.at;
                        self.report(error);
                        at = self.recover(at, error_at);
                    }
                    Err(nom::Err::Incomplete(_)) => {
                        unreachable!("token parsers never ask for more input")
                    }
                },
            }
        }
    }

    /// Where to resume after an item that started at `start` failed at `error_at`: the first token after the
    /// error's line that can start an item (outside brackets opened by the broken item), or the `}` closing
    /// the current section, or the end of file.
    fn recover(&self, start: usize, error_at: usize) -> usize {
        let error_line = self.line(error_at);
        let (mut brackets, mut braces) = (0usize, 0usize);
        let mut at = start;
        loop {
            let kind = self.kind(at);
            if at >= error_at {
                let closes_section = kind == TokenKind::RBrace && braces == 0;
                let next_line = at > error_at
                    && braces == 0
                    && self.line(at) > error_line
                    && (brackets == 0 || self.starts_item(at));
                if kind == TokenKind::Eof || closes_section || next_line {
                    return at;
                }
            }
            match kind {
                TokenKind::LParen | TokenKind::LBracket => brackets += 1,
                TokenKind::RParen | TokenKind::RBracket => brackets = brackets.saturating_sub(1),
                TokenKind::LBrace => braces += 1,
                TokenKind::RBrace => braces = braces.saturating_sub(1),
                _ => {}
            }
            at += 1;
        }
    }

    /// Does the token at `at` look like the start of a declaration, rule or section?
    fn starts_item(&self, at: usize) -> bool {
        self.kind(at) == TokenKind::Bang
            || (self.kind(at) == TokenKind::Ident
                && matches!(self.kind(at + 1), TokenKind::Colon | TokenKind::LParen | TokenKind::LBrace))
    }

    fn report(&mut self, error: SyntaxError) {
        let token = self.token(error.at);
        let kind = error
            .custom
            .clone()
            .unwrap_or_else(|| ErrorKind::Syntax { expected: error.expected_text(), found: token.describe() });
        let mut report = ConfigError::at(token.span, kind);
        if let Some(hint) = self.colon_hint(error.at).or_else(|| self.bracket_hint(error.at)) {
            report = report.with_hint(hint);
        }
        self.errors.push(report);
    }

    /// Advice for a broken `[...]` glued to a word on the same line, e.g. `veth[!0]`: `[` ends a word and opens
    /// an annotation, so a glob class must be quoted.
    fn bracket_hint(&self, at: usize) -> Option<String> {
        let line = self.line(at);
        let bracket =
            (1..=at).rev().take_while(|&i| self.line(i) == line).find(|&i| self.kind(i) == TokenKind::LBracket)?;
        let word = self.token(bracket - 1);
        if !matches!(word.kind, TokenKind::Ident | TokenKind::NonId) || word.span.end != self.token(bracket).span.start
        {
            return None;
        }
        let text = self.source.text();
        let end = text[word.span.start..]
            .find(|c: char| c.is_whitespace() || c == ',')
            .map_or(text.len(), |n| word.span.start + n);
        let pattern = &text[word.span.start..end];
        Some(format!("hint: to write a pattern with `[...]`, quote it: '{pattern}'"))
    }

    /// Advice for `word:` where `word` is a `NON_ID` (it starts with a digit or one of `/\\^*.+-`), which the
    /// grammar never accepts as a key, so the `:` after it is unexpected.
    ///
    /// For `123.com:60` this is dae's hint (`pkg/config_parser/error.go`): quoting the whole word makes it one
    /// value. Otherwise the word was meant as a key and needs another name.
    fn colon_hint(&self, at: usize) -> Option<String> {
        let colon = self.token(at);
        let word_token = self.tokens.get(at.checked_sub(1)?)?;
        if colon.kind != TokenKind::Colon
            || word_token.kind != TokenKind::NonId
            || word_token.span.end != colon.span.start
        {
            return None;
        }
        let text = self.source.text();
        let start = word_token.span.start;
        let end =
            text[start..].find(|c: char| c.is_whitespace() || "{}()[],".contains(c)).map_or(text.len(), |n| start + n);
        let word = &text[start..end];
        let digit_domain = word.starts_with(|c: char| c.is_ascii_digit()) && word.contains('.');
        if digit_domain && !word.contains(['\'', '"']) {
            return Some(format!(
                "hint: domains or keys starting with a digit must be enclosed in quotes\n  change: {word}\n  to:     '{word}'"
            ));
        }
        Some(format!("hint: `{}` cannot be a key: keys start with a letter or `_`", word_token.text))
    }
}

#[cfg(test)]
mod tests;
