//! `dae validate`: load a configuration and lower its routing, reporting every error and warning.

use std::path::Path;

use crate::config::Config;
use crate::dns::DnsConfig;
use crate::error::{ConfigErrors, Warning};
use crate::rules::{Assets, RuleSet, lower};

/// A configuration that loads and whose routing lowers.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The typed configuration.
    pub config: Config,
    /// The lowered `routing` section.
    pub rules: RuleSet,
    /// The lowered `dns` section (dae's defaults when there is none: no upstreams, every query `asis`).
    pub dns: DnsConfig,
    /// Warnings of loading and lowering, loading's first.
    pub warnings: Vec<Warning>,
}

/// Loads `path` (with its includes) and lowers its `routing` section, reading geosite/geoip files from dae's
/// asset folders ([`Assets::default_for`] with the configuration's folder), and its `dns` section.
pub fn validate(path: &Path) -> Result<Validated, ConfigErrors> {
    let folder = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    validate_with(path, &Assets::default_for(Some(folder)))
}

/// [`validate`] for a configuration held in memory (`file_name` names it in errors); assets from the default
/// folders.
pub fn validate_str(file_name: &str, text: &str) -> Result<Validated, ConfigErrors> {
    let loaded = crate::load_str(file_name, text)?;
    lowered(loaded, &Assets::default_for(None))
}

/// [`validate`] with asset files looked up in `assets`.
pub fn validate_with(path: &Path, assets: &Assets) -> Result<Validated, ConfigErrors> {
    lowered(crate::load(path)?, assets)
}

fn lowered(loaded: crate::Loaded, assets: &Assets) -> Result<Validated, ConfigErrors> {
    // Both sections lower even when the other fails, so one round reports every error.
    let (routing, dns) = (lower(&loaded.config, assets), crate::dns::lower(&loaded.config, assets));
    match (routing, dns) {
        (Ok(lowered), Ok(dns)) => {
            let mut warnings = loaded.warnings;
            warnings.extend(lowered.warnings);
            warnings.extend(dns.warnings);
            Ok(Validated { config: loaded.config, rules: lowered.rules, dns: dns.dns, warnings })
        }
        (Err(errors), Ok(_)) | (Ok(_), Err(errors)) => Err(errors),
        (Err(routing), Err(dns)) => Err(routing.merged(dns)),
    }
}
