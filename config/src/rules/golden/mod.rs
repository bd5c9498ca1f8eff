//! The golden table: dae's routing semantics as cases any engine must reproduce.
//!
//! Each [`GoldenCase`] is self-contained: its configured interfaces, groups and `routing` body make a complete
//! configuration ([`GoldenCase::config_text`], loaded and lowered by [`GoldenCase::rule_set`], no asset files
//! needed), and each [`GoldenCheck`] is one packet with the [`Verdict`] dae's semantics give it. An engine runs
//! the table like this:
//!
//! ```
//! use config::rules::{golden, reference};
//! for case in golden::cases() {
//!     let rules = case.rule_set();
//!     for check in &case.checks {
//!         assert_eq!(reference::route(&rules, &check.packet), check.expected, "{}: {}", case.name, check.what);
//!     }
//! }
//! ```
//!
//! A packet's `interface` is the name of the link it was seen on; `None` stands for a link that does not exist
//! (an `interface(...)` name with no live link can never be a packet's interface). A kernel engine creates the
//! links of [`GoldenCase::links`] and gives each packet the index of its named link.

mod cases;

use super::assets::Assets;
use super::ir::{Outbound, Packet, RuleSet, Target, Verdict};

pub use cases::cases;

/// One packet and the verdict it must get.
#[derive(Debug, Clone)]
pub struct GoldenCheck {
    /// What the packet is, in words (`"LAN-in on lan1, not listed"`).
    pub what: &'static str,
    /// The packet.
    pub packet: Packet<'static>,
    /// dae's verdict.
    pub expected: Verdict,
}

/// One routing configuration and the packets that pin its meaning.
#[derive(Debug, Clone)]
pub struct GoldenCase {
    /// A name saying what the case is about (`"negated_lan_interface"`).
    pub name: &'static str,
    /// `global.lan_interface` (names or globs).
    pub lan_interfaces: &'static [&'static str],
    /// `global.wan_interface` (names, globs or `auto`).
    pub wan_interfaces: &'static [&'static str],
    /// Groups the rules may name (each defined with `policy: min`).
    pub groups: &'static [&'static str],
    /// The body of the `routing` section, in dae's syntax.
    pub routing: &'static str,
    /// The packets.
    pub checks: Vec<GoldenCheck>,
}

impl GoldenCase {
    /// The complete configuration text.
    pub fn config_text(&self) -> String {
        let mut text = String::from("global {\n");
        if !self.lan_interfaces.is_empty() {
            text.push_str(&format!("    lan_interface: {}\n", quote_all(self.lan_interfaces)));
        }
        if !self.wan_interfaces.is_empty() {
            text.push_str(&format!("    wan_interface: {}\n", quote_all(self.wan_interfaces)));
        }
        text.push_str("}\n");
        if !self.groups.is_empty() {
            text.push_str("group {\n");
            for group in self.groups {
                text.push_str(&format!("    {group} {{\n        policy: min\n    }}\n"));
            }
            text.push_str("}\n");
        }
        text.push_str(&format!("routing {{\n{}\n}}\n", self.routing));
        text
    }

    /// The configuration loaded (as `<name>.dae`) and lowered.
    ///
    /// # Panics
    /// With the rendered errors, if the case does not load: the table itself is wrong then.
    pub fn rule_set(&self) -> RuleSet {
        let file = format!("{}.dae", self.name);
        let loaded = crate::load_str(&file, &self.config_text()).unwrap_or_else(|e| panic!("golden case:\n{e}"));
        super::lower(&loaded.config, &Assets::none()).unwrap_or_else(|e| panic!("golden case:\n{e}")).rules
    }

    /// Every interface name a packet of the case is seen on, sorted, without repeats.
    pub fn links(&self) -> Vec<&'static str> {
        let mut links: Vec<&'static str> = self.checks.iter().filter_map(|check| check.packet.interface).collect();
        links.sort_unstable();
        links.dedup();
        links
    }
}

fn quote_all(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| if *name == "auto" { (*name).to_owned() } else { format!("'{name}'") })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Verdict::Outbound` to `target`, no must, no mark.
pub fn to(target: Target) -> Verdict {
    Verdict::Outbound(Outbound { target, must: false, mark: 0 })
}

/// `direct`.
pub fn direct() -> Verdict {
    to(Target::Direct)
}

/// `block`.
pub fn block() -> Verdict {
    to(Target::Block)
}

/// The group `name`.
pub fn group(name: &str) -> Verdict {
    to(Target::Group(name.to_owned()))
}

/// `verdict` with `must` set.
pub fn must(verdict: Verdict) -> Verdict {
    match verdict {
        Verdict::Outbound(outbound) => Verdict::Outbound(Outbound { must: true, ..outbound }),
        Verdict::Dns => Verdict::Dns,
    }
}

/// `verdict` with mark `mark`.
pub fn marked(verdict: Verdict, mark: u32) -> Verdict {
    match verdict {
        Verdict::Outbound(outbound) => Verdict::Outbound(Outbound { mark, ..outbound }),
        Verdict::Dns => Verdict::Dns,
    }
}
