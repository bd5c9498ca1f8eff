//! v2fly `geosite.dat` / `geoip.dat`: a small protobuf reader that finds one tag without decoding the rest, and
//! an encoder for building test files.
//!
//! The messages (v2fly `app/router/routercommon/common.proto`; unknown fields are skipped):
//!
//! ```text
//! GeoSiteList { repeated GeoSite entry = 1; }
//! GeoSite     { string country_code = 1; repeated Domain domain = 2; }
//! Domain      { Type type = 1; string value = 2; repeated Attribute attribute = 3; }
//!               Type: Plain = 0 (keyword), Regex = 1, RootDomain = 2 (suffix), Full = 3
//! Attribute   { string key = 1; oneof { bool bool_value = 2; int64 int_value = 3; } }
//! GeoIPList   { repeated GeoIP entry = 1; }
//! GeoIP       { string country_code = 1; repeated CIDR cidr = 2; bool reverse_match = 3; }
//! CIDR        { bytes ip = 1; uint32 prefix = 2; }
//! ```
//!
//! Why hand-written rather than `prost`: a real `geosite.dat` holds ~1,500 tags and ~10 MB, and a configuration
//! uses a handful of them. Walking the top-level entries by their length prefixes and decoding only the entries
//! whose `country_code` matches costs one pass with no allocation per skipped entry, needs no build script or
//! `.proto` files, and the two messages read here are the whole of the format we need (about 150 lines).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ir::IpNet;

/// A malformed `.dat` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf at byte {offset}: {what}")]
pub struct DecodeError {
    /// Offset of the problem in the file.
    pub offset: usize,
    /// What is wrong.
    pub what: &'static str,
}

/// How a geosite domain entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainKind {
    /// `Plain` (0): the name contains the value (`keyword:`).
    Plain,
    /// `Regex` (1): the name matches the regular expression (`regex:`).
    Regex,
    /// `RootDomain` (2): the name is the value or under it (`suffix:`).
    RootDomain,
    /// `Full` (3): the name is exactly the value (`full:`).
    Full,
}

impl DomainKind {
    fn from_wire(value: u64) -> Option<Self> {
        match value {
            0 => Some(Self::Plain),
            1 => Some(Self::Regex),
            2 => Some(Self::RootDomain),
            3 => Some(Self::Full),
            _ => None,
        }
    }

    fn to_wire(self) -> u64 {
        match self {
            Self::Plain => 0,
            Self::Regex => 1,
            Self::RootDomain => 2,
            Self::Full => 3,
        }
    }
}

/// One domain entry of a geosite tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoDomain {
    /// How it matches.
    pub kind: DomainKind,
    /// The name, keyword or pattern.
    pub value: String,
    /// Attribute keys (`@cn`, `@ads`), as stored.
    pub attributes: Vec<String>,
}

/// One geosite tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoSite {
    /// The tag (`CN`, `GOOGLE`, ...), compared without regard to case.
    pub country_code: String,
    /// Its entries.
    pub domains: Vec<GeoDomain>,
}

/// One geoip tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoIp {
    /// The tag (`CN`, `PRIVATE`, ...), compared without regard to case.
    pub country_code: String,
    /// Its prefixes, as stored (host bits may be set).
    pub cidrs: Vec<(IpAddr, u8)>,
    /// "Every address except these"; dae refuses such tags and so do we.
    pub reverse_match: bool,
}

/// The tag names of a list, in file order (for "did you mean" and error messages).
pub fn tags(file: &[u8]) -> Result<Vec<String>, DecodeError> {
    let mut out = Vec::new();
    let mut list = Reader::new(file, 0);
    while let Some((field, value)) = list.field()? {
        if let (1, Wire::Bytes(entry, at)) = (field, value) {
            out.push(country_code(entry, at)?.to_owned());
        }
    }
    Ok(out)
}

/// The geosite tag named `code` (any case), if the file has it.
pub fn find_geosite(file: &[u8], code: &str) -> Result<Option<GeoSite>, DecodeError> {
    let Some((entry, at)) = find_entry(file, code)? else { return Ok(None) };
    let mut site = GeoSite { country_code: String::new(), domains: Vec::new() };
    let mut reader = Reader::new(entry, at);
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            (1, Wire::Bytes(text, at)) => site.country_code = utf8(text, at)?.to_owned(),
            (2, Wire::Bytes(domain, at)) => site.domains.push(decode_domain(domain, at)?),
            _ => {}
        }
    }
    Ok(Some(site))
}

/// The geoip tag named `code` (any case), if the file has it.
pub fn find_geoip(file: &[u8], code: &str) -> Result<Option<GeoIp>, DecodeError> {
    let Some((entry, at)) = find_entry(file, code)? else { return Ok(None) };
    let mut geoip = GeoIp { country_code: String::new(), cidrs: Vec::new(), reverse_match: false };
    let mut reader = Reader::new(entry, at);
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            (1, Wire::Bytes(text, at)) => geoip.country_code = utf8(text, at)?.to_owned(),
            (2, Wire::Bytes(cidr, at)) => geoip.cidrs.push(decode_cidr(cidr, at)?),
            (3, Wire::Varint(flag)) => geoip.reverse_match = flag != 0,
            _ => {}
        }
    }
    Ok(Some(geoip))
}

/// Encodes a `GeoSiteList` (for tests and tools).
pub fn encode_geosite_list(sites: &[GeoSite]) -> Vec<u8> {
    let mut out = Vec::new();
    for site in sites {
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, site.country_code.as_bytes());
        for domain in &site.domains {
            let mut message = Vec::new();
            put_varint_field(&mut message, 1, domain.kind.to_wire());
            put_bytes(&mut message, 2, domain.value.as_bytes());
            for key in &domain.attributes {
                let mut attribute = Vec::new();
                put_bytes(&mut attribute, 1, key.as_bytes());
                put_varint_field(&mut attribute, 2, 1);
                put_bytes(&mut message, 3, &attribute);
            }
            put_bytes(&mut entry, 2, &message);
        }
        put_bytes(&mut out, 1, &entry);
    }
    out
}

/// Encodes a `GeoIPList` (for tests and tools).
pub fn encode_geoip_list(entries: &[GeoIp]) -> Vec<u8> {
    let mut out = Vec::new();
    for geoip in entries {
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, geoip.country_code.as_bytes());
        for (addr, prefix) in &geoip.cidrs {
            let mut cidr = Vec::new();
            match addr {
                IpAddr::V4(v4) => put_bytes(&mut cidr, 1, &v4.octets()),
                IpAddr::V6(v6) => put_bytes(&mut cidr, 1, &v6.octets()),
            }
            put_varint_field(&mut cidr, 2, u64::from(*prefix));
            put_bytes(&mut entry, 2, &cidr);
        }
        if geoip.reverse_match {
            put_varint_field(&mut entry, 3, 1);
        }
        put_bytes(&mut out, 1, &entry);
    }
    out
}

/// A geoip prefix as an [`IpNet`] with host bits cleared; `None` if the prefix is too long for the address.
pub fn to_ipnet(addr: IpAddr, prefix: u8) -> Option<IpNet> {
    match addr {
        IpAddr::V4(v4) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            Some(IpNet { addr: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)), prefix })
        }
        IpAddr::V6(v6) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            Some(IpNet { addr: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)), prefix })
        }
        _ => None,
    }
}

fn find_entry<'a>(file: &'a [u8], code: &str) -> Result<Option<(&'a [u8], usize)>, DecodeError> {
    let mut list = Reader::new(file, 0);
    while let Some((field, value)) = list.field()? {
        if let (1, Wire::Bytes(entry, at)) = (field, value)
            && country_code(entry, at)?.eq_ignore_ascii_case(code)
        {
            return Ok(Some((entry, at)));
        }
    }
    Ok(None)
}

/// Field 1 of an entry, read without decoding the rest.
fn country_code(entry: &[u8], at: usize) -> Result<&str, DecodeError> {
    let mut reader = Reader::new(entry, at);
    while let Some((field, value)) = reader.field()? {
        if let (1, Wire::Bytes(text, at)) = (field, value) {
            return utf8(text, at);
        }
    }
    Ok("")
}

fn decode_domain(bytes: &[u8], at: usize) -> Result<GeoDomain, DecodeError> {
    let mut domain = GeoDomain { kind: DomainKind::Plain, value: String::new(), attributes: Vec::new() };
    let mut reader = Reader::new(bytes, at);
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            (1, Wire::Varint(kind)) => {
                domain.kind = DomainKind::from_wire(kind)
                    .ok_or(DecodeError { offset: reader.offset(), what: "unknown domain type" })?;
            }
            (2, Wire::Bytes(text, at)) => domain.value = utf8(text, at)?.to_owned(),
            (3, Wire::Bytes(attribute, at)) => {
                let mut inner = Reader::new(attribute, at);
                while let Some((field, value)) = inner.field()? {
                    if let (1, Wire::Bytes(key, at)) = (field, value) {
                        domain.attributes.push(utf8(key, at)?.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(domain)
}

fn decode_cidr(bytes: &[u8], at: usize) -> Result<(IpAddr, u8), DecodeError> {
    let (mut ip, mut prefix) = (None, 0u64);
    let mut reader = Reader::new(bytes, at);
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            (1, Wire::Bytes(raw, at)) => {
                ip = Some(match raw.len() {
                    4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(raw).expect("length checked"))),
                    16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(raw).expect("length checked"))),
                    _ => return Err(DecodeError { offset: at, what: "an IP address must be 4 or 16 bytes" }),
                });
            }
            (2, Wire::Varint(value)) => prefix = value,
            _ => {}
        }
    }
    let ip = ip.ok_or(DecodeError { offset: at, what: "a CIDR without an address" })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(DecodeError { offset: at, what: "a prefix longer than its address" });
    }
    Ok((ip, prefix as u8))
}

fn utf8(bytes: &[u8], at: usize) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError { offset: at, what: "a string that is not UTF-8" })
}

/// A field's payload: varints are read, length-delimited payloads are borrowed with their file offset, fixed-width
/// ones are skipped.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8], usize),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// File offset of `buf[0]`, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn error(&self, what: &'static str) -> DecodeError {
        DecodeError { offset: self.offset(), what }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        /// A varint carries 7 bits per byte: 10 bytes hold 64 bits.
        const MAX_VARINT_BYTES: usize = 10;
        let mut value = 0u64;
        for index in 0..MAX_VARINT_BYTES {
            let byte = *self.buf.get(self.pos).ok_or_else(|| self.error("truncated varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    fn take(&mut self, len: u64) -> Result<(&'a [u8], usize), DecodeError> {
        let at = self.offset();
        let len = usize::try_from(len).map_err(|_| self.error("length too large"))?;
        let end = self.pos.checked_add(len).filter(|&end| end <= self.buf.len());
        let end = end.ok_or_else(|| self.error("length runs past the end"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok((bytes, at))
    }

    /// The next field, or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, DecodeError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 0x7 {
            0 => Wire::Varint(self.varint()?),
            1 => self.take(8).map(|_| Wire::Fixed)?,
            2 => {
                let len = self.varint()?;
                let (bytes, at) = self.take(len)?;
                Wire::Bytes(bytes, at)
            }
            5 => self.take(4).map(|_| Wire::Fixed)?,
            _ => return Err(self.error("unsupported wire type")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, value: u64) {
    put_varint(out, field << 3);
    put_varint(out, value);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

impl fmt::Display for DomainKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain => "keyword",
            Self::Regex => "regex",
            Self::RootDomain => "suffix",
            Self::Full => "full",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(code: &str, domains: &[(DomainKind, &str, &[&str])]) -> GeoSite {
        GeoSite {
            country_code: code.into(),
            domains: domains
                .iter()
                .map(|(kind, value, attrs)| GeoDomain {
                    kind: *kind,
                    value: (*value).into(),
                    attributes: attrs.iter().map(|a| (*a).into()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn geosite_round_trips_and_finds_tags_in_any_case() {
        let sites = [
            site("CN", &[(DomainKind::RootDomain, "baidu.com", &["cn"]), (DomainKind::Full, "a.cn", &[])]),
            site("GOOGLE", &[(DomainKind::Plain, "google", &[]), (DomainKind::Regex, "^g\\.", &["ads", "cn"])]),
        ];
        let file = encode_geosite_list(&sites);
        assert_eq!(find_geosite(&file, "google").unwrap().as_ref(), Some(&sites[1]));
        assert_eq!(find_geosite(&file, "Cn").unwrap().as_ref(), Some(&sites[0]));
        assert_eq!(find_geosite(&file, "us").unwrap(), None);
        assert_eq!(tags(&file).unwrap(), ["CN", "GOOGLE"]);
    }

    #[test]
    fn geoip_round_trips_with_reverse_flag() {
        let entry = GeoIp {
            country_code: "PRIVATE".into(),
            cidrs: vec![("10.0.0.0".parse().unwrap(), 8), ("fc00::".parse().unwrap(), 7)],
            reverse_match: true,
        };
        let file = encode_geoip_list(std::slice::from_ref(&entry));
        assert_eq!(find_geoip(&file, "private").unwrap(), Some(entry));
    }

    #[test]
    fn truncated_files_are_errors_not_panics() {
        let file = encode_geosite_list(&[site("CN", &[(DomainKind::Full, "a.cn", &[])])]);
        for cut in 1..file.len() {
            assert!(find_geosite(&file[..cut], "XX").is_err(), "cut at {cut}");
        }
        let bad_ip = {
            let mut cidr = Vec::new();
            put_bytes(&mut cidr, 1, &[1, 2, 3]);
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, b"X");
            put_bytes(&mut entry, 2, &cidr);
            let mut list = Vec::new();
            put_bytes(&mut list, 1, &entry);
            list
        };
        assert!(find_geoip(&bad_ip, "x").unwrap_err().what.contains("4 or 16 bytes"));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, b"CN");
        put_bytes(&mut entry, 3, b"hash");
        put_varint_field(&mut entry, 9, 7);
        entry.extend_from_slice(&[(10 << 3) | 5, 0, 0, 0, 0]);
        let mut list = Vec::new();
        put_bytes(&mut list, 1, &entry);
        let found = find_geosite(&list, "cn").unwrap().unwrap();
        assert!(found.domains.is_empty());
    }

    #[test]
    fn geoip_prefixes_lose_host_bits() {
        let net = to_ipnet("10.1.2.3".parse().unwrap(), 8).unwrap();
        assert_eq!(net, IpNet { addr: "10.0.0.0".parse().unwrap(), prefix: 8 });
        assert_eq!(to_ipnet("10.1.2.3".parse().unwrap(), 0).unwrap().addr, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(to_ipnet("10.1.2.3".parse().unwrap(), 33), None);
    }
}
