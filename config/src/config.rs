//! [`Config`], the typed result of a load, and the step from parsed sections to it.

use std::sync::Arc;

use crate::ast::Section;
use crate::error::{ConfigError, ConfigErrors, ErrorKind, Warning};
use crate::global::{Global, decode_global};
use crate::sections::{
    DnsSection, Group, NamedLink, RoutingSection, decode_dns, decode_groups, decode_links, decode_rules,
};
use crate::source::{SourceMap, Span};
use crate::suggest::did_you_mean;

/// Every top-level section dae knows.
const SECTIONS: [&str; 7] = ["global", "subscription", "node", "group", "routing", "dns", "include"];

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `global` section, typed.
    pub global: Global,
    /// `subscription` links.
    pub subscription: Vec<NamedLink>,
    /// `node` links.
    pub node: Vec<NamedLink>,
    /// `group` definitions.
    pub group: Vec<Group>,
    /// The `routing` section; `None` when absent, which means no rules and fallback `direct`.
    pub routing: Option<RoutingSection>,
    /// The `dns` section, when present.
    pub dns: Option<DnsSection>,
    /// Every file read, so later stages can render their own errors at the spans kept in the tree.
    pub sources: Arc<SourceMap>,
}

impl Config {
    /// The name of the routing fallback outbound: `routing { fallback: x }`, or `direct` when unset.
    pub fn routing_fallback(&self) -> &str {
        self.routing
            .as_ref()
            .and_then(|routing| routing.fallback.as_ref())
            .map_or(RoutingSection::DEFAULT_FALLBACK, |call| call.name.name.as_str())
    }
}

/// A loaded configuration and the warnings to show the user.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Things accepted but worth telling: recognised keys with no effect yet, deprecated keys, repeats.
    pub warnings: Vec<Warning>,
}

/// Merges top-level sections of the same name, as dae does: one section per name, in order of first
/// appearance, holding the items of every occurrence in the order given (the entry file first, then each
/// included file, depth first).
fn merge_sections(sections: impl IntoIterator<Item = Section>) -> Vec<Section> {
    let mut merged: Vec<Section> = Vec::new();
    for section in sections {
        match merged.iter_mut().find(|m| m.name.name == section.name.name) {
            Some(existing) => existing.items.extend(section.items),
            None => merged.push(section),
        }
    }
    merged
}

/// Errors in file order, file-less errors last, so the first one printed is the first one in the text.
pub(crate) fn sort_errors(errors: &mut [ConfigError]) {
    errors.sort_by_key(|error| (error.span().is_none(), error.span().map(|span| (span.file, span.start))));
}

/// Parses already done, type-checks `sections` (every top-level section of every file, unmerged, the
/// including file before its includes).
///
/// `errors` holds what reading and parsing found. Type checking still runs then, so one round reports as
/// much as possible, but its errors are kept only for top-level sections that parsed cleanly (a section with
/// a syntax error lacks the broken items, so checking it would report echoes), and errors about the
/// configuration as a whole (a missing `global`) are dropped.
///
/// `includes_resolved` says whether `include` sections were already handled by the file loader (otherwise
/// they are an error).
pub(crate) fn check(
    sections: Vec<Section>,
    sources: Arc<SourceMap>,
    mut errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
    includes_resolved: bool,
) -> Result<Loaded, ConfigErrors> {
    let broken: Vec<Span> = sections
        .iter()
        .map(|section| section.span)
        .filter(|section| errors.iter().any(|e| e.span().is_some_and(|at| contains(*section, at))))
        .collect();
    let parsed_cleanly = errors.is_empty();
    match build(merge_sections(sections), Arc::clone(&sources), warnings, includes_resolved) {
        Ok(loaded) if parsed_cleanly => return Ok(loaded),
        Ok(_) => {}
        Err(type_errors) => errors.extend(type_errors.into_iter().filter(|e| match e.span() {
            Some(at) => !broken.iter().any(|section| contains(*section, at)),
            None => parsed_cleanly,
        })),
    }
    sort_errors(&mut errors);
    Err(ConfigErrors::new(errors, sources))
}

fn contains(outer: Span, inner: Span) -> bool {
    outer.file == inner.file && outer.start <= inner.start && inner.start <= outer.end
}

fn build(
    sections: Vec<Section>,
    sources: Arc<SourceMap>,
    mut warnings: Vec<Warning>,
    includes_resolved: bool,
) -> Result<Loaded, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut global = None;
    let mut subscription = Vec::new();
    let mut node = Vec::new();
    let mut group = Vec::new();
    let mut routing = None;
    let mut dns = None;
    for section in &sections {
        match section.name.name.as_str() {
            "global" => global = Some(decode_global(section, &sources, &mut errors, &mut warnings)),
            "subscription" => subscription = decode_links(section, &mut errors),
            "node" => node = decode_links(section, &mut errors),
            "group" => group = decode_groups(section, &mut errors),
            "routing" => routing = Some(decode_rules(section, "routing", false, &mut errors)),
            "dns" => dns = Some(decode_dns(section, &mut errors)),
            "include" if includes_resolved => {}
            "include" => errors.push(ConfigError::at(section.name.span, ErrorKind::IncludeUnavailable)),
            name => errors.push(ConfigError::at(
                section.name.span,
                ErrorKind::UnknownSection { name: name.to_owned(), suggestion: did_you_mean(name, SECTIONS) },
            )),
        }
    }
    if global.is_none() {
        let entry = sources.files().next().map_or_else(String::new, |file| file.name().to_owned());
        errors.push(ConfigError::global(ErrorKind::MissingSection { file: entry, section: "global" }));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    warnings.sort_by_key(|warning| warning.span.map(|span| (span.file, span.start)));
    Ok(Loaded {
        config: Config { global: global.expect("checked above"), subscription, node, group, routing, dns, sources },
        warnings,
    })
}
