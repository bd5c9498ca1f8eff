//! The syntax tree of a `.dae` file, as written, with a [`Span`] on every node.
//!
//! Nothing here is interpreted: a routing rule keeps its function names, negations, keyed and unkeyed
//! parameters and its outbound exactly as the user wrote them, so a later pass can lower them into a rule IR
//! and still point errors at the right column.
//!
//! Quoted values keep their inner text unchanged (dae does not unescape `\'` either).

use crate::source::Span;

/// A name as written: a section name, a key, a function name, an outbound name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// The text.
    pub name: String,
    /// Where it was written.
    pub span: Span,
}

/// How a literal was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralKind {
    /// A word starting with a letter or `_` (`ID` in dae's grammar).
    Ident,
    /// A word starting with a digit or one of `/\^*.+-` (`NON_ID`), e.g. `30s`, `0x800`, `224.0.0.0/3`.
    Bare,
    /// Between single quotes.
    SingleQuoted,
    /// Between double quotes.
    DoubleQuoted,
}

/// A value: a bare word or a quoted string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    /// The text without quotes.
    pub value: String,
    /// How it was written.
    pub kind: LiteralKind,
    /// The whole token, quotes included.
    pub span: Span,
}

impl Literal {
    /// True when the literal was quoted.
    pub fn is_quoted(&self) -> bool {
        matches!(self.kind, LiteralKind::SingleQuoted | LiteralKind::DoubleQuoted)
    }

    /// The span of [`Literal::value`], i.e. without the quotes. Byte `i` of the value is byte
    /// `value_span().start + i` of the file.
    pub fn value_span(&self) -> Span {
        if self.is_quoted() { Span::new(self.span.file, self.span.start + 1, self.span.end - 1) } else { self.span }
    }
}

/// A parameter of a function or annotation: `key: value` or just `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The key, when written (`geosite` in `domain(geosite: cn)`).
    pub key: Option<Ident>,
    /// The value.
    pub value: Literal,
    /// From the key (or value) to the end of the value.
    pub span: Span,
}

/// A function call in a condition or declaration: `!name(params)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// True when preceded by `!`.
    pub negated: bool,
    /// The function name.
    pub name: Ident,
    /// Parameters in order; may be empty (`f()`).
    pub params: Vec<Param>,
    /// From `!` (or the name) to `)`.
    pub span: Span,
}

/// A name with optional parameters, as used for outbounds and group policies: `direct`, `direct(mark: 0x800)`,
/// `fixed(0)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The name.
    pub name: Ident,
    /// Parameters; empty when written without parentheses.
    pub params: Vec<Param>,
    /// The whole call.
    pub span: Span,
}

/// The right-hand side of a declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `a, b, 'c'`: one or more literals separated by commas.
    Literals(Vec<Literal>),
    /// `f(a) && !g(b)`: one or more function calls joined by `&&`.
    Functions(Vec<Function>),
}

/// `key: value [annotation]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    /// The key.
    pub key: Ident,
    /// The value.
    pub value: Value,
    /// The parameters of a trailing `[key: value, ...]`, e.g. `[add_latency: -500ms]`.
    pub annotation: Option<Annotation>,
    /// From the key to the end of the value or annotation.
    pub span: Span,
}

/// `[key: value, ...]` after a declaration's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// The parameters.
    pub params: Vec<Param>,
    /// From `[` to `]`.
    pub span: Span,
}

/// `f(a) && !g(b) -> outbound`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingRule {
    /// The conditions, all of which must hold.
    pub conditions: Vec<Function>,
    /// Where matching traffic goes.
    pub outbound: Call,
    /// The whole rule.
    pub span: Span,
}

/// One entry of a section body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A nested section, e.g. a group.
    Section(Section),
    /// `key: value`.
    Declaration(Declaration),
    /// `conditions -> outbound`.
    Rule(RoutingRule),
    /// A value on its own, e.g. an include path or a link without a tag.
    Literal(Literal),
}

impl Item {
    /// The span of the item.
    pub fn span(&self) -> Span {
        match self {
            Item::Section(section) => section.span,
            Item::Declaration(declaration) => declaration.span,
            Item::Rule(rule) => rule.span,
            Item::Literal(literal) => literal.span,
        }
    }
}

/// `name { items }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name before `{`.
    pub name: Ident,
    /// The body, in source order (after include merging: entry file first, then includes in order).
    pub items: Vec<Item>,
    /// From the name to `}` (of the first occurrence, when merged).
    pub span: Span,
}
