//! Which interfaces the daemon attaches to, and in which role: `lan_interface` and `wan_interface` of the
//! `global` section (names or globs; `auto` for WAN = every link owning a default route).

use config::{Global, InterfacePattern, WanInterface};

use crate::attach::Roles;

/// The configured interface selection.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    lan: Vec<InterfacePattern>,
    wan: Vec<InterfacePattern>,
    wan_auto: bool,
}

impl Selection {
    /// From the `global` section.
    pub fn from_global(global: &Global) -> Self {
        let mut wan = Vec::new();
        let mut wan_auto = false;
        for w in &global.wan_interface {
            match w {
                WanInterface::Auto => wan_auto = true,
                WanInterface::Pattern(p) => wan.push(p.clone()),
            }
        }
        Self { lan: global.lan_interface.clone(), wan, wan_auto }
    }

    /// Whether `wan_interface` includes `auto`.
    pub fn wan_auto(&self) -> bool {
        self.wan_auto
    }

    /// The roles of link `name` (index `index`); `auto_wan` lists the default-route links.
    pub fn roles(&self, name: &str, index: u32, auto_wan: &[u32]) -> Roles {
        Roles {
            lan: self.lan.iter().any(|p| p.matches(name)),
            wan: self.wan.iter().any(|p| p.matches(name))
                || (self.wan_auto && auto_wan.contains(&index) && name != "lo"),
        }
    }
}
