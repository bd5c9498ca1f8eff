//! Source files, byte spans and line/column lookup.
//!
//! Every AST node carries a [`Span`]: a byte range plus the [`FileId`] of the file it was read from. The
//! [`SourceMap`] owns the text of every file that took part in a load, so errors found later (for example
//! while lowering routing rules) can still be printed as `file:line:col` with the offending line.

use std::fmt;

/// Identifies one file inside a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(u32);

/// A byte range `start..end` inside one source file.
///
/// Offsets always fall on UTF-8 character boundaries of the file's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    /// The file the bytes belong to.
    pub file: FileId,
    /// Offset of the first byte.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
}

impl Span {
    /// A span of `start..end` in `file`.
    pub const fn new(file: FileId, start: usize, end: usize) -> Self {
        Self { file, start, end }
    }

    /// The smallest span that covers both `self` and `other`, which must belong to the same file.
    pub fn to(self, other: Span) -> Span {
        debug_assert_eq!(self.file, other.file, "spans of different files cannot be joined");
        Span::new(self.file, self.start.min(other.start), self.end.max(other.end))
    }

    /// The part of this span from `from` to `to`, both relative to `self.start`.
    pub fn subspan(self, from: usize, to: usize) -> Span {
        debug_assert!(from <= to && self.start + to <= self.end, "subspan out of range");
        Span::new(self.file, self.start + from, self.start + to)
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when the span covers no byte (for example the end of a file).
    pub const fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// A human-readable position: file name, 1-based line and 1-based column.
///
/// Columns count characters, not bytes, so they match what an editor shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name as it was given to the loader (entry file) or derived from an include.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// The text of one configuration file and the offsets where its lines start.
#[derive(Debug)]
pub struct SourceFile {
    name: String,
    text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    fn new(name: String, text: String) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(at, _)| at + 1)).collect();
        Self { name, text, line_starts }
    }

    /// The name used in messages: the path as given for the entry file, the joined path for includes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full text of the file.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 0-based index of the line containing byte `offset` (offsets past the end map to the last line).
    pub fn line_index(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset) - 1
    }

    /// 1-based line and character column of byte `offset`.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_index(offset);
        let column = self.text[self.line_starts[line]..offset].chars().count() + 1;
        (line + 1, column)
    }

    /// Byte offset where 0-based line `line` starts.
    pub fn line_start(&self, line: usize) -> usize {
        self.line_starts[line]
    }

    /// Text of 0-based line `line`, without its line terminator.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line];
        let end = self.line_starts.get(line + 1).map_or(self.text.len(), |&next| next - 1);
        self.text[start..end].trim_end_matches('\r')
    }
}

/// All files read for one configuration: the entry file first, then its includes in load order.
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file and returns its id.
    pub(crate) fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).expect("fewer than 2^32 configuration files"));
        self.files.push(SourceFile::new(name.into(), text.into()));
        id
    }

    /// The file with id `id`.
    ///
    /// # Panics
    /// If `id` was issued by another map.
    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// Every file, in the order it was read.
    pub fn files(&self) -> impl Iterator<Item = &SourceFile> {
        self.files.iter()
    }

    /// `file:line:col` of the start of `span`.
    pub fn location(&self, span: Span) -> Location {
        let file = self.file(span.file);
        let (line, column) = file.line_column(span.start);
        Location { file: file.name.clone(), line, column }
    }

    /// The source text covered by `span`.
    pub fn text(&self, span: Span) -> &str {
        &self.file(span.file).text[span.start..span.end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_characters_from_one() {
        let mut map = SourceMap::new();
        let id = map.add("a.dae", "global {\n  é: x\n}\n");
        let x = map.file(id).text().find('x').unwrap();
        let location = map.location(Span::new(id, x, x + 1));
        assert_eq!(location.to_string(), "a.dae:2:6");
    }

    #[test]
    fn line_text_drops_carriage_return_and_newline() {
        let mut map = SourceMap::new();
        let id = map.add("a.dae", "one\r\ntwo");
        let file = map.file(id);
        assert_eq!(file.line_text(0), "one");
        assert_eq!(file.line_text(1), "two");
        assert_eq!(file.line_index(file.text().len()), 1);
    }
}
