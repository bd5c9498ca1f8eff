//! Reading the entry file and, depth first, the files its `include { ... }` sections name.
//!
//! Rules, as in dae (`config/config_merger.go`, `common/utils.go`):
//! - include paths (globs allowed, Go `filepath.Glob` semantics) are relative to the **entry** file's folder,
//!   also inside included files, and must stay inside that folder (checked lexically, like dae, so symlinked
//!   files are followed);
//! - a glob keeps only `.dae` files and skips folders; a plain path must name an existing `.dae` file
//!   (dae silently ignores a missing one; here it is an error);
//! - every file must not be group-writable nor accessible by others (`mode & 0o037 == 0`);
//! - a file reached twice is refused: through its own includes it is a cycle (the error names the cycle),
//!   through two branches it would duplicate its rules;
//! - sections of included files are merged after the including file's (see [`crate::config`]).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::ast::{Item, Literal, Section};
use crate::error::{ConfigError, ErrorKind, Warning};
use crate::glob::{Pattern, has_meta};
use crate::parser;
use crate::source::{SourceMap, Span};

/// Permission bits a configuration file must not have: group write and execute, and anything for others.
/// Configurations hold proxy credentials; dae refuses such files with the advice to use 0640 or 0600.
const TOO_OPEN_MODE_BITS: u32 = 0o037;

/// Everything read for one entry file.
pub(crate) struct Tree {
    pub sources: SourceMap,
    /// Top-level sections of every file, the including file before its includes, unmerged.
    pub sections: Vec<Section>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
}

/// Reads `entry` and everything it includes.
pub(crate) fn load_tree(entry: &Path) -> Tree {
    let entry_dir = entry.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut loader = Loader {
        entry_dir_absolute: absolute_clean(&entry_dir),
        entry_dir,
        tree: Tree { sources: SourceMap::new(), sections: Vec::new(), errors: Vec::new(), warnings: Vec::new() },
        stack: Vec::new(),
        loaded: HashMap::new(),
    };
    loader.visit(entry, None);
    loader.tree
}

struct Loader {
    /// The entry file's folder as given, to build the names of included files.
    entry_dir: PathBuf,
    /// The same folder, absolute and without `.`/`..`, for the escape check.
    entry_dir_absolute: PathBuf,
    tree: Tree,
    /// Files being read, outermost first: canonical path and display name.
    stack: Vec<(PathBuf, String)>,
    /// Every file read so far (canonical path) and the file that included it.
    loaded: HashMap<PathBuf, String>,
}

impl Loader {
    fn error(&mut self, span: Option<Span>, kind: ErrorKind) {
        self.tree.errors.push(ConfigError::new(kind, span));
    }

    /// Reads, parses and follows the includes of `path`, which was named at `from` (`None` for the entry).
    fn visit(&mut self, path: &Path, from: Option<Span>) {
        let name = path.display().to_string();
        let canonical = match fs::canonicalize(path) {
            Ok(canonical) => canonical,
            Err(error) => {
                return self.error(from, ErrorKind::Io { path: name, message: error.to_string() });
            }
        };
        if let Some(at) = self.stack.iter().position(|(file, _)| *file == canonical) {
            let mut cycle: Vec<String> = self.stack[at..].iter().map(|(_, name)| name.clone()).collect();
            cycle.push(name);
            return self.error(from, ErrorKind::IncludeCycle { cycle });
        }
        if let Some(first) = self.loaded.get(&canonical) {
            let first = first.clone();
            return self.error(from, ErrorKind::IncludedTwice { path: name, first });
        }
        let Some(text) = self.read(path, &name, from) else {
            return;
        };
        let includer = self.stack.last().map_or_else(|| name.clone(), |(_, includer)| includer.clone());
        self.loaded.insert(canonical.clone(), includer);

        let id = self.tree.sources.add(name.clone(), text);
        let parsed = parser::parse(id, self.tree.sources.file(id));
        self.tree.errors.extend(parsed.errors);
        let includes: Vec<Item> = parsed
            .sections
            .iter()
            .filter(|section| section.name.name == "include")
            .flat_map(|section| section.items.iter().cloned())
            .collect();
        self.tree.sections.extend(parsed.sections);

        self.stack.push((canonical, name));
        for item in includes {
            match item {
                Item::Literal(literal) => {
                    for file in self.resolve(&literal) {
                        self.visit(&file, Some(literal.span));
                    }
                }
                other => {
                    let what = match other {
                        Item::Declaration(_) => "a declaration",
                        Item::Rule(_) => "a routing rule",
                        Item::Section(_) => "a section",
                        Item::Literal(_) => unreachable!("handled above"),
                    };
                    let expected = "it holds file paths or globs, e.g. `config.d/*.dae`".to_owned();
                    self.error(
                        Some(other.span()),
                        ErrorKind::Misplaced { what, section: "include".to_owned(), expected },
                    );
                }
            }
        }
        self.stack.pop();
    }

    /// The text of `path` after the permission check, or `None` with an error recorded.
    fn read(&mut self, path: &Path, name: &str, from: Option<Span>) -> Option<String> {
        let io_error = |error: std::io::Error| ErrorKind::Io { path: name.to_owned(), message: error.to_string() };
        let metadata = match fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(error) => {
                self.error(from, io_error(error));
                return None;
            }
        };
        if metadata.is_dir() {
            self.error(from, ErrorKind::IsDirectory { path: name.to_owned() });
            return None;
        }
        let mode = metadata.permissions().mode() & 0o777;
        if mode & TOO_OPEN_MODE_BITS != 0 {
            self.error(from, ErrorKind::PermissionsTooOpen { path: name.to_owned(), mode });
            return None;
        }
        match fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(error) => {
                self.error(from, io_error(error));
                None
            }
        }
    }

    /// The files one include entry names, in glob order, after the escape and extension checks.
    fn resolve(&mut self, literal: &Literal) -> Vec<PathBuf> {
        let written = clean(Path::new(&literal.value));
        let joined = clean(&self.entry_dir.join(&written));
        let display = joined.display().to_string();
        if !absolute_clean(&joined).starts_with(&self.entry_dir_absolute) {
            self.error(
                Some(literal.span),
                ErrorKind::IncludeEscapes { path: display, dir: self.entry_dir_absolute.display().to_string() },
            );
            return Vec::new();
        }
        if !has_meta(&literal.value) {
            let kind = if fs::symlink_metadata(&joined).is_err() {
                ErrorKind::IncludeNotFound { path: display }
            } else if joined.is_dir() {
                ErrorKind::IsDirectory { path: display }
            } else if joined.extension().is_none_or(|extension| extension != "dae") {
                ErrorKind::NotDaeFile { path: display }
            } else {
                return vec![joined];
            };
            self.error(Some(literal.span), kind);
            return Vec::new();
        }
        let base = if written.is_absolute() { PathBuf::new() } else { self.entry_dir.clone() };
        match glob(&base, &written) {
            Ok(matches) => {
                let files: Vec<PathBuf> = matches
                    .into_iter()
                    .filter(|path| !path.is_dir() && path.extension().is_some_and(|e| e == "dae"))
                    .collect();
                if files.is_empty() {
                    let message = format!("include `{}` matches no `.dae` file", literal.value);
                    let warning = Warning::at(&self.tree.sources, literal.span, message);
                    self.tree.warnings.push(warning);
                }
                files
            }
            Err(reason) => {
                self.error(Some(literal.span), ErrorKind::BadIncludePattern { pattern: literal.value.clone(), reason });
                Vec::new()
            }
        }
    }
}

/// `path` with `.` removed and `..` applied lexically, as Go's `filepath.Clean` (which `filepath.Join`, used
/// by dae, applies): `sub/../a.dae` is `a.dae` even when `sub` does not exist. Leading `..` of a relative
/// path are kept.
fn clean(path: &Path) -> PathBuf {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match clean.components().next_back() {
                Some(Component::Normal(_)) => {
                    clean.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => clean.push(".."),
            },
            other => clean.push(other),
        }
    }
    clean
}

/// `path` made absolute against the working directory, then cleaned.
fn absolute_clean(path: &Path) -> PathBuf {
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    clean(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// Go `filepath.Glob` of `pattern` under `base`: components with glob characters are matched against
/// folder listings (sorted by name), plain components are appended; only existing paths are returned.
fn glob(base: &Path, pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let mut candidates = vec![base.to_path_buf()];
    for component in pattern.components() {
        let Component::Normal(name) = component else {
            candidates.iter_mut().for_each(|candidate| candidate.push(component));
            continue;
        };
        let Some(name) = name.to_str().filter(|name| has_meta(name)) else {
            candidates.iter_mut().for_each(|candidate| candidate.push(name));
            continue;
        };
        let compiled = Pattern::new(name).map_err(|e| e.to_string())?;
        let mut next = Vec::new();
        for folder in &candidates {
            let listing = if folder.as_os_str().is_empty() { Path::new(".") } else { folder };
            let Ok(entries) = fs::read_dir(listing) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter(|entry| compiled.matches(entry))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|entry| folder.join(entry)));
        }
        candidates = next;
    }
    candidates.retain(|candidate| fs::symlink_metadata(candidate).is_ok());
    Ok(candidates)
}
