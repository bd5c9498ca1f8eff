//! Front end for the configuration language of dae (`.dae` files).
//!
//! [`load`] reads an entry file and the files it includes, parses them with dae's grammar, merges sections
//! the way dae does and type-checks the result into a [`Config`]:
//!
//! - the `global` section becomes a strict, typed [`Global`]: every key dae knows is recognised and its
//!   value checked; unknown keys are errors with a "did you mean" suggestion; keys dae-rs does not act on
//!   yet produce a [`Warning`];
//! - `subscription`, `node`, `group`, `routing` and `dns` are checked for shape and kept as syntax tree
//!   ([`ast`]) with a span on every node;
//! - [`rules::lower`] turns `routing` into the rule IR ([`rules::RuleSet`]) with dae's semantics, which the
//!   reference evaluator, the userspace matcher ([`rules::Compiled`]) and the kernel all evaluate;
//!   [`validate`] does load and lower in one step (`dae validate`).
//!
//! Errors come all at once (the first and up to ten more are printed) as `file:line:col: message`
//! followed by the source line and carets under the offending token; see [`ConfigErrors`].
//!
//! ```
//! let loaded = config::load_str("example.dae", "global { lan_interface: eth0, veth* }").unwrap();
//! assert_eq!(loaded.config.global.lan_interface.len(), 2);
//! assert!(loaded.config.global.lan_interface[1].matches("veth1"));
//! assert_eq!(loaded.config.routing_fallback(), "direct");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ast;
mod config;
pub mod dns;
pub mod duration;
mod error;
mod glob;
mod global;
mod include;
mod interface;
mod lexer;
mod parser;
pub mod rules;
mod sections;
pub mod source;
mod suggest;
mod validate;
mod values;

use std::path::Path;
use std::sync::Arc;

pub use config::{Config, Loaded};
pub use error::{ConfigError, ConfigErrors, ErrorKind, MAX_REPORTED_ERRORS, Note, Warning};
pub use global::{DialMode, Global, KeySupport, LogLevel, NumberRange, TlsImplementation, global_keys};
pub use interface::{InterfaceError, InterfacePattern, MAX_IFNAME_LEN, WanInterface};
pub use sections::{DnsSection, DnsUpstream, Filter, Group, NamedLink, RoutingSection};
pub use validate::{Validated, validate, validate_str, validate_with};

/// Reads the configuration at `path` and every file it includes, then parses and type-checks it.
///
/// `path` is shown in messages as given. `include { ... }` paths are resolved against its folder, as dae
/// does: globs are allowed, no path may leave that folder, cycles are refused, and every file read
/// (the entry too) must not be group-writable nor accessible by others (use mode 0640 or 0600).
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let tree = include::load_tree(path);
    let sources = Arc::new(tree.sources);
    config::check(tree.sections, sources, tree.errors, tree.warnings, true)
}

/// Parses and type-checks a configuration held in memory (a built-in default, a test), named `file_name`
/// in messages.
///
/// No file is read: an `include` section is an error, because there is no entry folder to resolve its
/// paths against. Permissions are not checked either.
pub fn load_str(file_name: &str, source: &str) -> Result<Loaded, ConfigErrors> {
    let mut sources = source::SourceMap::new();
    let id = sources.add(file_name, source);
    let parsed = parser::parse(id, sources.file(id));
    config::check(parsed.sections, Arc::new(sources), parsed.errors, Vec::new(), false)
}
