//! DNS messages as checked views over bytes (smoltcp's `wire` habit): the header, the one question, the OPT
//! record of a query, and a walk over a response's records that yields where each TTL lives.
//!
//! Why not decode every message with hickory-proto: the per-query path needs four fields of the query and,
//! for a cache hit, nothing else; a full `Message` decode allocates a `Vec` per section and a `Name` per record
//! (measured: `cargo bench -p dns` is not wired yet; see docs/dns.md). hickory-proto stays the reference: a
//! property test holds this view to hickory's decoder, and the tools (test upstream, bootstrap resolver) use it.
//!
//! Every accessor is bounds-checked once in [`Query::parse`] / [`walk_records`]; nothing indexes unchecked.
#![forbid(unsafe_code)]

/// The fixed header.
pub const HEADER_LEN: usize = 12;
/// The largest message a DNS-over-TCP frame can carry.
pub const MAX_MESSAGE: usize = u16::MAX as usize;
/// RFC 1035's UDP payload limit when the client sent no EDNS.
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;
/// A name has at most 255 octets on the wire.
pub const MAX_NAME_WIRE: usize = 255;
/// Compression pointers followed while reading one name; more is a loop.
const MAX_POINTERS: usize = 32;

/// OPT pseudo-record type (RFC 6891).
pub const TYPE_OPT: u16 = 41;
/// A.
pub const TYPE_A: u16 = 1;
/// AAAA.
pub const TYPE_AAAA: u16 = 28;
/// CNAME.
pub const TYPE_CNAME: u16 = 5;
/// SOA.
pub const TYPE_SOA: u16 = 6;

/// Response codes this crate writes or reads.
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// The query was malformed.
    pub const FORMERR: u8 = 1;
    /// The server failed.
    pub const SERVFAIL: u8 = 2;
    /// The name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// Not implemented (opcode).
    pub const NOTIMP: u8 = 4;
    /// Refused.
    pub const REFUSED: u8 = 5;
}

/// Why bytes are not a usable message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its own structure says.
    #[error("message truncated")]
    Truncated,
    /// A name longer than 255 octets, a label type that does not exist, or a pointer loop.
    #[error("malformed name")]
    BadName,
    /// Not exactly one question.
    #[error("expected exactly one question")]
    QuestionCount,
    /// A compression pointer in the question of a query.
    #[error("compressed question name")]
    CompressedQuestion,
    /// A response where a query was expected, or the other way round.
    #[error("wrong message direction")]
    Direction,
}

/// Header flag bits (second and third octets, big-endian u16).
pub mod flags {
    /// Response.
    pub const QR: u16 = 0x8000;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// Authentic data.
    pub const AD: u16 = 0x0020;
    /// Checking disabled.
    pub const CD: u16 = 0x0010;
    /// The opcode field.
    pub const OPCODE_MASK: u16 = 0x7800;
    /// The rcode field (low four bits).
    pub const RCODE_MASK: u16 = 0x000f;
}

fn be16(bytes: &[u8], at: usize) -> Result<u16, WireError> {
    bytes.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or(WireError::Truncated)
}

fn be32(bytes: &[u8], at: usize) -> Result<u32, WireError> {
    bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or(WireError::Truncated)
}

/// The ID of a message (0 when shorter than two bytes).
pub fn id(message: &[u8]) -> u16 {
    be16(message, 0).unwrap_or(0)
}

/// Writes `id` into a message of at least two bytes.
pub fn set_id(message: &mut [u8], id: u16) {
    if let Some(slot) = message.get_mut(..2) {
        slot.copy_from_slice(&id.to_be_bytes());
    }
}

/// The flags word of a message of at least [`HEADER_LEN`] bytes.
pub fn flags_of(message: &[u8]) -> u16 {
    be16(message, 2).unwrap_or(0)
}

/// The rcode (low four bits; the EDNS extension is not read).
pub fn rcode_of(message: &[u8]) -> u8 {
    (flags_of(message) & flags::RCODE_MASK) as u8
}

/// A parsed query: what routing, the cache key and the upstream need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The client's ID.
    pub id: u16,
    /// The flags word.
    pub flags: u16,
    /// The question name as on the wire (labels, the root's zero included), case preserved.
    pub qname_wire_end: usize,
    /// The question type.
    pub qtype: u16,
    /// The question class.
    pub qclass: u16,
    /// EDNS DO bit.
    pub dnssec_ok: bool,
    /// Whether the query carries an OPT record.
    pub has_edns: bool,
    /// The UDP payload size the client accepts (512 without EDNS).
    pub udp_payload: u16,
}

impl Query {
    /// Parses a query: a header with QR clear and opcode QUERY, exactly one uncompressed question, and any
    /// records after it (an OPT among them is read). The question name is written, lower-case and dotted,
    /// without the final dot, into `name` (cleared first).
    pub fn parse(message: &[u8], name: &mut String) -> Result<Self, WireError> {
        if message.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let flags = be16(message, 2)?;
        if flags & flags::QR != 0 {
            return Err(WireError::Direction);
        }
        if be16(message, 4)? != 1 {
            return Err(WireError::QuestionCount);
        }
        let end = read_question_name(message, HEADER_LEN, name)?;
        let qtype = be16(message, end)?;
        let qclass = be16(message, end + 2)?;
        let mut query = Query {
            id: be16(message, 0)?,
            flags,
            qname_wire_end: end,
            qtype,
            qclass,
            dnssec_ok: false,
            has_edns: false,
            udp_payload: CLASSIC_UDP_PAYLOAD,
        };
        let records = usize::from(be16(message, 6)?) + usize::from(be16(message, 8)?) + usize::from(be16(message, 10)?);
        let mut at = end + 4;
        for _ in 0..records {
            let record = read_record(message, at)?;
            if record.rtype == TYPE_OPT {
                query.has_edns = true;
                query.udp_payload = record.class.max(CLASSIC_UDP_PAYLOAD);
                query.dnssec_ok = record.ttl & 0x8000 != 0;
            }
            at = record.end;
        }
        Ok(query)
    }

    /// The opcode.
    pub fn opcode(&self) -> u8 {
        ((self.flags & flags::OPCODE_MASK) >> 11) as u8
    }

    /// Checking disabled.
    pub fn checking_disabled(&self) -> bool {
        self.flags & flags::CD != 0
    }

    /// Recursion desired.
    pub fn recursion_desired(&self) -> bool {
        self.flags & flags::RD != 0
    }

    /// The question (name, type, class) as on the wire: `message[12..question_end]`.
    pub fn question_end(&self) -> usize {
        self.qname_wire_end + 4
    }
}

/// Reads an uncompressed question name at `at` into `out` (lower-case, dotted); returns the offset after it.
fn read_question_name(message: &[u8], mut at: usize, out: &mut String) -> Result<usize, WireError> {
    out.clear();
    let start = at;
    loop {
        let len = *message.get(at).ok_or(WireError::Truncated)? as usize;
        if len & 0xc0 == 0xc0 {
            return Err(WireError::CompressedQuestion);
        }
        if len & 0xc0 != 0 {
            return Err(WireError::BadName);
        }
        at += 1;
        if len == 0 {
            break;
        }
        let label = message.get(at..at + len).ok_or(WireError::Truncated)?;
        if !out.is_empty() {
            out.push('.');
        }
        for &byte in label {
            // Bytes outside printable ASCII are kept as `\DDD`, as presentation format writes them.
            match byte.to_ascii_lowercase() {
                b @ (b'!'..=b'~') if b != b'.' && b != b'\\' => out.push(char::from(b)),
                b => {
                    out.push('\\');
                    out.push_str(&format!("{b:03}"));
                }
            }
        }
        at += len;
        if at - start > MAX_NAME_WIRE {
            return Err(WireError::BadName);
        }
    }
    Ok(at)
}

/// Skips a (possibly compressed) name at `at`; returns the offset after it in the message.
pub fn skip_name(message: &[u8], mut at: usize) -> Result<usize, WireError> {
    loop {
        let len = *message.get(at).ok_or(WireError::Truncated)?;
        match len & 0xc0 {
            0xc0 => {
                if at + 2 > message.len() {
                    return Err(WireError::Truncated);
                }
                return Ok(at + 2);
            }
            0 if len == 0 => return Ok(at + 1),
            0 => at += 1 + usize::from(len),
            _ => return Err(WireError::BadName),
        }
    }
}

/// Reads a (possibly compressed) name at `at` into `out` (lower-case, dotted, no final dot).
pub fn read_name(message: &[u8], mut at: usize, out: &mut String) -> Result<(), WireError> {
    out.clear();
    let mut pointers = 0;
    let mut wire_len = 0;
    loop {
        let len = *message.get(at).ok_or(WireError::Truncated)?;
        match len & 0xc0 {
            0xc0 => {
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(WireError::BadName);
                }
                at = usize::from(be16(message, at)? & 0x3fff);
            }
            0 if len == 0 => return Ok(()),
            0 => {
                let label = message.get(at + 1..at + 1 + usize::from(len)).ok_or(WireError::Truncated)?;
                wire_len += label.len() + 1;
                if wire_len > MAX_NAME_WIRE {
                    return Err(WireError::BadName);
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &byte in label {
                    match byte.to_ascii_lowercase() {
                        b @ (b'!'..=b'~') if b != b'.' && b != b'\\' => out.push(char::from(b)),
                        b => {
                            out.push('\\');
                            out.push_str(&format!("{b:03}"));
                        }
                    }
                }
                at += 1 + usize::from(len);
            }
            _ => return Err(WireError::BadName),
        }
    }
}

/// One resource record's fixed fields and where its parts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView {
    /// Where the owner name starts.
    pub name_at: usize,
    /// Type.
    pub rtype: u16,
    /// Class (for OPT: the UDP payload size).
    pub class: u16,
    /// TTL (for OPT: extended rcode, version, flags).
    pub ttl: u32,
    /// Offset of the TTL field.
    pub ttl_at: usize,
    /// Offset of the rdata.
    pub rdata_at: usize,
    /// Offset after the record.
    pub end: usize,
}

fn read_record(message: &[u8], at: usize) -> Result<RecordView, WireError> {
    let name_end = skip_name(message, at)?;
    let rtype = be16(message, name_end)?;
    let class = be16(message, name_end + 2)?;
    let ttl = be32(message, name_end + 4)?;
    let rdlen = usize::from(be16(message, name_end + 8)?);
    let rdata_at = name_end + 10;
    let end = rdata_at + rdlen;
    if end > message.len() {
        return Err(WireError::Truncated);
    }
    Ok(RecordView { name_at: at, rtype, class, ttl, ttl_at: name_end + 4, rdata_at, end })
}

/// Which section a record is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Answer.
    Answer,
    /// Authority.
    Authority,
    /// Additional.
    Additional,
}

/// A response's header counts and records, checked end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseView {
    /// The flags word.
    pub flags: u16,
    /// Offset after the question.
    pub question_end: usize,
    /// The question type.
    pub qtype: u16,
    /// The question class.
    pub qclass: u16,
    /// Every record, with its section.
    pub records: Vec<(Section, RecordView)>,
}

impl ResponseView {
    /// The rcode (header bits only).
    pub fn rcode(&self) -> u8 {
        (self.flags & flags::RCODE_MASK) as u8
    }

    /// Truncated.
    pub fn truncated(&self) -> bool {
        self.flags & flags::TC != 0
    }
}

/// Parses a response with exactly one question, whose name is written into `name` (lower-case, dotted).
pub fn walk_response(message: &[u8], name: &mut String) -> Result<ResponseView, WireError> {
    if message.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let flags = be16(message, 2)?;
    if flags & flags::QR == 0 {
        return Err(WireError::Direction);
    }
    if be16(message, 4)? != 1 {
        return Err(WireError::QuestionCount);
    }
    read_name(message, HEADER_LEN, name)?;
    let qname_end = skip_name(message, HEADER_LEN)?;
    let qtype = be16(message, qname_end)?;
    let qclass = be16(message, qname_end + 2)?;
    let counts = [
        (Section::Answer, be16(message, 6)?),
        (Section::Authority, be16(message, 8)?),
        (Section::Additional, be16(message, 10)?),
    ];
    let mut at = qname_end + 4;
    let mut records = Vec::new();
    for (section, count) in counts {
        for _ in 0..count {
            let record = read_record(message, at)?;
            at = record.end;
            records.push((section, record));
        }
    }
    Ok(ResponseView { flags, question_end: qname_end + 4, qtype, qclass, records })
}

/// Writes a response with no records for the query in `query_message` (its header and question copied):
/// `rcode`, QR and RA set, RD and CD echoed, an OPT record when the query had one (payload 1232, DO echoed).
pub fn empty_response(query_message: &[u8], query: &Query, rcode: u8, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&query_message[..query.question_end()]);
    let echoed = query.flags & (flags::RD | flags::CD | flags::OPCODE_MASK);
    let flags = flags::QR | flags::RA | echoed | u16::from(rcode);
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..12].fill(0);
    if query.has_edns {
        out[10..12].copy_from_slice(&1u16.to_be_bytes());
        push_opt(out, query.dnssec_ok);
    }
}

/// Writes the REFUSED answer to `query_message` into `out` (what an overloaded entry point says); `false`, with
/// `out` untouched, when the message is not a query this forwarder would answer (then it is dropped).
pub fn refused(query_message: &[u8], out: &mut Vec<u8>) -> bool {
    let mut name = String::new();
    match Query::parse(query_message, &mut name) {
        Ok(query) => {
            empty_response(query_message, &query, rcode::REFUSED, out);
            true
        }
        Err(_) => false,
    }
}

/// EDNS payload size this forwarder advertises (the DNS flag day 2020 value, fits an unfragmented datagram).
pub const ADVERTISED_PAYLOAD: u16 = 1232;

fn push_opt(out: &mut Vec<u8>, dnssec_ok: bool) {
    out.push(0); // root owner
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&ADVERTISED_PAYLOAD.to_be_bytes());
    let ttl: u32 = if dnssec_ok { 0x8000 } else { 0 };
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
}

/// Writes the truncated form of `response` (header and question only, TC set) for a UDP client whose payload
/// limit it exceeds; the client retries over TCP.
pub fn truncated_copy(response: &[u8], question_end: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&response[..question_end.min(response.len())]);
    if out.len() >= HEADER_LEN {
        let flags = be16(out, 2).unwrap_or(0) | flags::TC;
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        out[6..12].fill(0);
    }
}

/// Whether the question of `response` (ending at `question_end`) is the question of `query` (ending at
/// `query_question_end`): same type and class, name equal ignoring ASCII case.
pub fn same_question(response: &[u8], question_end: usize, query: &[u8], query_question_end: usize) -> bool {
    question_end == query_question_end
        && response.len() >= question_end
        && query.len() >= question_end
        && question_end >= HEADER_LEN + 5
        && response[HEADER_LEN..question_end - 4].eq_ignore_ascii_case(&query[HEADER_LEN..question_end - 4])
        && response[question_end - 4..question_end] == query[question_end - 4..question_end]
}

#[cfg(test)]
mod tests;
