//! Where `geosite.dat`, `geoip.dat` and `ext:` files are found, and expanding their tags into rule values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::geodata::{self, DomainKind};
use super::ir::{DomainSet, IpNet};

/// The environment variable dae reads for its asset folder.
pub const ASSET_ENV: &str = "DAE_LOCATION_ASSET";

/// Folders searched after `DAE_LOCATION_ASSET` and the configuration's folder: dae's (`/usr/local/share/dae`,
/// `/usr/share/dae`, the XDG data folders' defaults), then where v2ray/v2fly packages install the same files.
pub const DEFAULT_ASSET_DIRS: [&str; 4] =
    ["/usr/local/share/dae", "/usr/share/dae", "/usr/local/share/v2ray", "/usr/share/v2ray"];

/// The folders asset files are looked up in, in order; each file is taken from the first folder that has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assets {
    dirs: Vec<PathBuf>,
}

impl Assets {
    /// Look in `dir` only.
    pub fn dir(dir: impl Into<PathBuf>) -> Self {
        Self { dirs: vec![dir.into()] }
    }

    /// Look in `dirs`, in order.
    pub fn search(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// Look nowhere: every `geosite:`, `geoip:` and `ext:` value is an error. For configurations that need none.
    pub fn none() -> Self {
        Self::default()
    }

    /// dae's lookup: `$DAE_LOCATION_ASSET` when set, then the configuration file's folder (`config_dir`), then
    /// [`DEFAULT_ASSET_DIRS`].
    pub fn default_for(config_dir: Option<&Path>) -> Self {
        let mut dirs = Vec::new();
        if let Some(location) = std::env::var_os(ASSET_ENV).filter(|value| !value.is_empty()) {
            dirs.push(PathBuf::from(location));
        }
        dirs.extend(config_dir.map(Path::to_path_buf));
        dirs.extend(DEFAULT_ASSET_DIRS.iter().map(PathBuf::from));
        Self { dirs }
    }

    /// The folders, in search order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The path of `file` in the first folder that has it.
    pub fn find(&self, file: &str) -> Option<PathBuf> {
        self.dirs.iter().map(|dir| dir.join(file)).find(|path| path.is_file())
    }
}

/// The domain values of one geosite tag, by kind, as in [`DomainSet`].
pub(crate) type SiteValues = DomainSet;

/// Files read during one lowering, each read once however many tags are used.
pub(crate) struct AssetCache<'a> {
    assets: &'a Assets,
    files: HashMap<String, Result<Arc<[u8]>, String>>,
}

impl<'a> AssetCache<'a> {
    pub(crate) fn new(assets: &'a Assets) -> Self {
        Self { assets, files: HashMap::new() }
    }

    fn file(&mut self, name: &str) -> Result<Arc<[u8]>, String> {
        let assets = self.assets;
        self.files
            .entry(name.to_owned())
            .or_insert_with(|| {
                let Some(path) = assets.find(name) else {
                    let searched: Vec<String> = assets.dirs.iter().map(|d| format!("`{}`", d.display())).collect();
                    return Err(if searched.is_empty() {
                        format!("`{name}` not found: no asset folder is configured")
                    } else {
                        format!(
                            "`{name}` not found in {}; put it there or set {ASSET_ENV} to its folder",
                            searched.join(", ")
                        )
                    });
                };
                std::fs::read(&path)
                    .map(Arc::from)
                    .map_err(|error| format!("cannot read `{}`: {error}", path.display()))
            })
            .clone()
    }

    /// The values of geosite tag `code` (with optional `@attr` filters, all of which an entry must carry) in
    /// `file`: suffixes, full names and keywords lower-cased, regular expressions as stored.
    pub(crate) fn geosite(&mut self, file: &str, code: &str) -> Result<SiteValues, String> {
        let bytes = self.file(file)?;
        let mut parts = code.split('@');
        let tag = parts.next().unwrap_or_default();
        let attributes: Vec<&str> = parts.collect();
        if tag.is_empty() || attributes.iter().any(|a| a.is_empty()) {
            return Err(format!("`{code}` is not a tag: write `tag` or `tag@attribute`"));
        }
        let site = geodata::find_geosite(&bytes, tag).map_err(|e| format!("`{file}` is not a geosite file: {e}"))?;
        let Some(site) = site else {
            return Err(missing_tag(&bytes, file, tag));
        };
        let mut values = SiteValues::default();
        let wanted = |domain: &geodata::GeoDomain| {
            attributes.iter().all(|want| domain.attributes.iter().any(|have| have.eq_ignore_ascii_case(want)))
        };
        for domain in site.domains.into_iter().filter(wanted) {
            let name = || domain.value.trim_end_matches('.').to_ascii_lowercase();
            match domain.kind {
                DomainKind::RootDomain => values.suffix.push(name()),
                DomainKind::Full => values.full.push(name()),
                DomainKind::Plain => values.keyword.push(name()),
                DomainKind::Regex => values.regex.push(domain.value.clone()),
            }
        }
        Ok(values)
    }

    /// The prefixes of geoip tag `code` in `file`, host bits cleared.
    pub(crate) fn geoip(&mut self, file: &str, code: &str) -> Result<Vec<IpNet>, String> {
        let bytes = self.file(file)?;
        let geoip = geodata::find_geoip(&bytes, code).map_err(|e| format!("`{file}` is not a geoip file: {e}"))?;
        let Some(geoip) = geoip else {
            return Err(missing_tag(&bytes, file, code));
        };
        if geoip.reverse_match {
            return Err(format!(
                "tag `{code}` of `{file}` is a reverse match (every address but its list), which dae does not support either"
            ));
        }
        Ok(geoip.cidrs.into_iter().filter_map(|(addr, prefix)| geodata::to_ipnet(addr, prefix)).collect())
    }
}

fn missing_tag(bytes: &[u8], file: &str, tag: &str) -> String {
    let tags = geodata::tags(bytes).unwrap_or_default();
    let lower: Vec<String> = tags.iter().map(|t| t.to_ascii_lowercase()).collect();
    let suggestion = crate::suggest::did_you_mean(&tag.to_ascii_lowercase(), lower.iter().map(String::as_str));
    match suggestion {
        Some(close) => format!("tag `{tag}` not found in `{file}`; did you mean `{close}`?"),
        None => format!("tag `{tag}` not found in `{file}` ({} tags)", tags.len()),
    }
}
