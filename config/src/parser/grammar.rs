//! nom parsers for everything inside a section body except nested sections (which need error recovery and
//! are handled in `parser/mod.rs`):
//!
//! ```text
//! declaration  : ID ':' (functions | literals) annotation?
//! annotation   : '[' params ']'
//! routingRule  : functions '->' outbound
//! outbound     : ID '(' params ')' | ID | NON_ID
//! functions    : function ('&&' function)*
//! function     : '!'? ID '(' params ')'
//! params       : (param (',' param)*)?
//! param        : ID ':' literal | literal
//! literals     : literal (',' literal)*
//! literal      : QUOTE_STRING | ID | NON_ID
//! ```
//!
//! Alternatives are chosen by looking at most two tokens ahead; once a construct is recognised (`key:`,
//! `name(`, `!`) the rest is parsed under `cut`, so an error is reported where the construct breaks rather
//! than where another alternative happened to fail.

use nom::combinator::{cut, opt};
use nom::multi::many0;
use nom::sequence::preceded;
use nom::{Input, Parser};

use super::input::{PResult, SyntaxError, Tokens, token};
use crate::ast::{
    Annotation, Call, Declaration, Function, Ident, Item, Literal, LiteralKind, Param, RoutingRule, Value,
};
use crate::error::ErrorKind;
use crate::lexer::{Token, TokenKind};

const LITERAL: &str = "a value";
const KEY: &str = "a key";
const FUNCTION_NAME: &str = "a function name";
const OUTBOUND: &str = "an outbound";

fn literal_from(token: &Token<'_>) -> Literal {
    let (value, kind) = match token.kind {
        TokenKind::Ident => (token.text, LiteralKind::Ident),
        TokenKind::NonId => (token.text, LiteralKind::Bare),
        TokenKind::Quoted => {
            let quote = token.text.chars().next().expect("a quoted token has its opening quote");
            let inner = &token.text[1..];
            // An unterminated string (already reported by the lexer) has no closing quote to strip.
            let inner = inner.strip_suffix(quote).unwrap_or(inner);
            let kind = if quote == '\'' { LiteralKind::SingleQuoted } else { LiteralKind::DoubleQuoted };
            (inner, kind)
        }
        other => unreachable!("{other:?} is not a literal token"),
    };
    Literal { value: value.to_owned(), kind, span: token.span }
}

fn ident_from(token: &Token<'_>) -> Ident {
    Ident { name: token.text.to_owned(), span: token.span }
}

fn is_literal_start(kind: TokenKind) -> bool {
    matches!(kind, TokenKind::Ident | TokenKind::NonId | TokenKind::Quoted)
}

/// Lookahead: does a function call (`!f(` or `f(`) start here?
fn at_function(input: &Tokens<'_>) -> bool {
    input.peek(0).kind == TokenKind::Bang
        || (input.peek(0).kind == TokenKind::Ident && input.peek(1).kind == TokenKind::LParen)
}

fn literal(input: Tokens<'_>) -> PResult<'_, Literal> {
    let next = input.peek(0);
    if is_literal_start(next.kind) {
        Ok((input.take_from(1), literal_from(next)))
    } else {
        Err(nom::Err::Error(SyntaxError::expected(&input, LITERAL)))
    }
}

fn ident<'a>(what: &'static str) -> impl Fn(Tokens<'a>) -> PResult<'a, Ident> {
    move |input: Tokens<'a>| token(TokenKind::Ident, what)(input).map(|(rest, t)| (rest, ident_from(t)))
}

fn param(input: Tokens<'_>) -> PResult<'_, Param> {
    if input.peek(0).kind == TokenKind::Ident && input.peek(1).kind == TokenKind::Colon {
        let (input, key) = ident(KEY)(input)?;
        let (input, _) = token(TokenKind::Colon, "`:`")(input)?;
        let (input, value) = cut(literal).parse(input)?;
        let span = key.span.to(value.span);
        return Ok((input, Param { key: Some(key), value, span }));
    }
    let (input, value) = literal(input)?;
    let span = value.span;
    Ok((input, Param { key: None, value, span }))
}

/// `(param (',' param)*)?` followed by `close`; a separator must be followed by a parameter.
fn params_until<'a>(
    close: TokenKind,
    close_text: &'static str,
) -> impl Fn(Tokens<'a>) -> PResult<'a, (Vec<Param>, &'a Token<'a>)> {
    move |input: Tokens<'a>| {
        if input.peek(0).kind == close {
            let (input, closing) = token(close, close_text)(input)?;
            return Ok((input, (Vec::new(), closing)));
        }
        let (input, first) = match param(input) {
            Ok(done) => done,
            Err(nom::Err::Error(_)) => {
                return Err(nom::Err::Failure(SyntaxError::expected_any(&input, &["a parameter", close_text])));
            }
            Err(other) => return Err(other),
        };
        let (input, rest) = many0(preceded(token(TokenKind::Comma, "`,`"), cut(param))).parse(input)?;
        let (input, closing) = match token(close, close_text)(input) {
            Ok(done) => done,
            Err(_) => {
                return Err(nom::Err::Failure(SyntaxError::expected_any(&input, &["`,`", close_text])));
            }
        };
        let mut params = Vec::with_capacity(rest.len() + 1);
        params.push(first);
        params.extend(rest);
        Ok((input, (params, closing)))
    }
}

fn function(input: Tokens<'_>) -> PResult<'_, Function> {
    let start = input.peek(0).span;
    let (input, bang) = opt(token(TokenKind::Bang, "`!`")).parse(input)?;
    let (input, name) =
        if bang.is_some() { cut(ident(FUNCTION_NAME)).parse(input)? } else { ident(FUNCTION_NAME)(input)? };
    let (input, _) = cut(token(TokenKind::LParen, "`(`")).parse(input)?;
    let (input, (params, closing)) = params_until(TokenKind::RParen, "`)`")(input)?;
    Ok((input, Function { negated: bang.is_some(), name, params, span: start.to(closing.span) }))
}

/// `function ('&&' function)*`.
fn functions(input: Tokens<'_>) -> PResult<'_, Vec<Function>> {
    let (input, first) = function(input)?;
    let (input, rest) = many0(preceded(token(TokenKind::AndAnd, "`&&`"), cut(function))).parse(input)?;
    let mut all = Vec::with_capacity(rest.len() + 1);
    all.push(first);
    all.extend(rest);
    Ok((input, all))
}

/// `literal (',' literal)*`.
fn literals(input: Tokens<'_>) -> PResult<'_, Vec<Literal>> {
    let (input, first) = literal(input)?;
    let (input, rest) = many0(preceded(token(TokenKind::Comma, "`,`"), cut(literal))).parse(input)?;
    let mut all = Vec::with_capacity(rest.len() + 1);
    all.push(first);
    all.extend(rest);
    Ok((input, all))
}

fn value(input: Tokens<'_>) -> PResult<'_, Value> {
    if at_function(&input) {
        let (input, functions) = functions(input)?;
        Ok((input, Value::Functions(functions)))
    } else if is_literal_start(input.peek(0).kind) {
        let (input, literals) = literals(input)?;
        Ok((input, Value::Literals(literals)))
    } else {
        Err(nom::Err::Failure(SyntaxError::expected(&input, LITERAL)))
    }
}

fn annotation(input: Tokens<'_>) -> PResult<'_, Annotation> {
    let (input, open) = token(TokenKind::LBracket, "`[`")(input)?;
    let (input, (params, closing)) = params_until(TokenKind::RBracket, "`]`")(input)?;
    Ok((input, Annotation { params, span: open.span.to(closing.span) }))
}

fn declaration(input: Tokens<'_>) -> PResult<'_, Declaration> {
    let (input, key) = ident(KEY)(input)?;
    let (input, _) = token(TokenKind::Colon, "`:`")(input)?;
    let (input, value) = cut(value).parse(input)?;
    let (input, annotation) = opt(annotation).parse(input)?;
    let end = annotation.as_ref().map_or_else(|| value_span_end(&value), |a| a.span.end);
    let span = crate::source::Span::new(key.span.file, key.span.start, end);
    Ok((input, Declaration { key, value, annotation, span }))
}

fn value_span_end(value: &Value) -> usize {
    match value {
        Value::Literals(literals) => literals.last().map_or(0, |l| l.span.end),
        Value::Functions(functions) => functions.last().map_or(0, |f| f.span.end),
    }
}

fn outbound(input: Tokens<'_>) -> PResult<'_, Call> {
    let next = input.peek(0);
    match next.kind {
        TokenKind::Bang => Err(nom::Err::Failure(SyntaxError {
            custom: Some(ErrorKind::NegatedOutbound),
            ..SyntaxError::expected(&input, OUTBOUND)
        })),
        TokenKind::Ident if input.peek(1).kind == TokenKind::LParen => {
            let (input, function) = function(input)?;
            Ok((input, Call { name: function.name, params: function.params, span: function.span }))
        }
        TokenKind::Ident | TokenKind::NonId => {
            Ok((input.take_from(1), Call { name: ident_from(next), params: Vec::new(), span: next.span }))
        }
        _ => Err(nom::Err::Failure(SyntaxError::expected(&input, OUTBOUND))),
    }
}

fn routing_rule(input: Tokens<'_>) -> PResult<'_, RoutingRule> {
    let (input, conditions) = functions(input)?;
    if input.peek(0).kind != TokenKind::Arrow {
        return Err(nom::Err::Failure(SyntaxError::expected_any(&input, &["`&&`", "`->`"])));
    }
    let (input, _) = token(TokenKind::Arrow, "`->`")(input)?;
    let (input, outbound) = outbound(input)?;
    let span = conditions[0].span.to(outbound.span);
    Ok((input, RoutingRule { conditions, outbound, span }))
}

/// What a section body can hold besides nested sections.
pub(crate) const ITEM: &str = "a declaration `key: value`, a rule `f(...) -> outbound`, a value or a section";

/// One body item that is not a nested section: a declaration, a routing rule or a literal.
pub(crate) fn item(input: Tokens<'_>) -> PResult<'_, Item> {
    match (input.peek(0).kind, input.peek(1).kind) {
        (TokenKind::Ident, TokenKind::Colon) => {
            let (input, declaration) = declaration(input)?;
            Ok((input, Item::Declaration(declaration)))
        }
        (TokenKind::Bang, _) | (TokenKind::Ident, TokenKind::LParen) => {
            let (input, rule) = routing_rule(input)?;
            Ok((input, Item::Rule(rule)))
        }
        (kind, _) if is_literal_start(kind) => {
            let (input, literal) = literal(input)?;
            Ok((input, Item::Literal(literal)))
        }
        _ => Err(nom::Err::Error(SyntaxError::expected(&input, ITEM))),
    }
}
