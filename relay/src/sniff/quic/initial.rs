//! One flow's Initial sniffing across datagrams: walk coalesced packets, open Initials, reassemble CRYPTO,
//! parse the ClientHello once it is whole.

use super::{
    crypto_stream::{AssembleError, CryptoStream},
    frames::{self, FrameError},
    packet::{LongPacket, MAX_CID_LEN},
    precheck::is_likely_initial,
    protection::InitialKeys,
    version::{PacketType, QuicVersion},
};
use crate::sniff::tls::client_hello;

/// What sniffing a flow has reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not a client Initial of a version we can read (the pre-check or decryption failed): forward as is.
    NotQuic,
    /// A QUIC Initial whose ClientHello is not complete yet: hold the datagram and wait for the next.
    NeedMore,
    /// QUIC, but no name: the ClientHello has no SNI, is malformed or too large, the CRYPTO stream is
    /// contradictory, or a session bound ran out.
    NoName,
    /// The ClientHello's server name.
    Name {
        /// The SNI host name, normalised (lower case, no trailing dot).
        sni: String,
        /// ALPN protocol names, in the client's order.
        alpn: Vec<String>,
        /// The QUIC version of the Initial that carried it.
        version: QuicVersion,
    },
}

/// Why reading a packet's frames stopped.
#[derive(Debug)]
enum Stop {
    /// The frame walk ended early; see [`FrameError`].
    Frames(FrameError),
    /// The CRYPTO stream refused a fragment: the flow is decided as [`Outcome::NoName`].
    Assemble,
}

impl From<FrameError> for Stop {
    fn from(e: FrameError) -> Self {
        Stop::Frames(e)
    }
}

impl From<AssembleError> for Stop {
    fn from(_: AssembleError) -> Self {
        Stop::Assemble
    }
}

/// The sniffing state of one flow.
#[derive(Debug, Default)]
pub struct InitialSniffer {
    keys: Option<InitialKeys>,
    version: Option<QuicVersion>,
    stream: CryptoStream,
}

impl InitialSniffer {
    /// A sniffer that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the flow, keys included, so that the sniffer can serve another as if new; only the capacity of
    /// its CRYPTO buffers is kept, which spares a worker two allocations per flow.
    pub fn reset(&mut self) {
        self.keys = None;
        self.version = None;
        self.stream.clear();
    }

    /// Whether an Initial of this flow has been opened (the flow is confirmed QUIC).
    pub fn confirmed(&self) -> bool {
        self.version.is_some()
    }

    /// Reads one client-to-server datagram. `scratch` is a reusable buffer (decryption works on a copy so the
    /// datagram can be forwarded unchanged). Once this returns anything but `NeedMore`, the flow is decided.
    pub fn on_datagram(&mut self, datagram: &[u8], scratch: &mut Vec<u8>) -> Outcome {
        if !self.confirmed() && !is_likely_initial(datagram) {
            return Outcome::NotQuic;
        }
        let mut at = 0;
        let mut first_dcid: Option<([u8; MAX_CID_LEN], usize)> = None;
        while let Some(rest) = datagram.get(at..).filter(|r| !r.is_empty()) {
            // A short-header packet or garbage after the first packet ends the walk (RFC 9000 section 12.2:
            // only long-header packets can be followed by another).
            let Ok(packet) = LongPacket::new_checked(rest) else { break };
            // `packet_len` is at least the header, so the walk always advances.
            at += packet.packet_len();
            let dcid = packet.dcid();
            match &first_dcid {
                // RFC 9000 section 12.2: a coalesced packet with another DCID is not this connection's.
                Some((first, len)) if &first[..*len] != dcid => continue,
                Some(_) => {}
                None => {
                    let mut copy = [0; MAX_CID_LEN];
                    copy[..dcid.len()].copy_from_slice(dcid);
                    first_dcid = Some((copy, dcid.len()));
                }
            }
            if packet.packet_type() != PacketType::Initial || self.version.is_some_and(|v| v != packet.version()) {
                continue;
            }
            match self.open(&packet, scratch) {
                Err(()) if self.confirmed() => continue,
                Err(()) => return Outcome::NotQuic,
                Ok(Ok(())) => {}
                Ok(Err(_stop)) => return Outcome::NoName,
            }
        }
        if !self.confirmed() {
            return Outcome::NotQuic;
        }
        self.evaluate()
    }

    /// Opens one Initial and feeds its CRYPTO frames: `Err(())` when it does not decrypt.
    fn open(&mut self, packet: &LongPacket<&[u8]>, scratch: &mut Vec<u8>) -> Result<Result<(), Stop>, ()> {
        let (version, dcid) = (packet.version(), packet.dcid());
        // Later Initials of the flow (a ClientHello over several datagrams) reuse the keys.
        let keys = match &mut self.keys {
            Some(keys) if keys.matches(version, dcid) => keys,
            slot => slot.insert(InitialKeys::client(version, dcid)),
        };
        let plain = keys.open(packet, scratch).map_err(|_| ())?;
        self.version = Some(version);
        let stream = &mut self.stream;
        let walked = frames::for_each_crypto::<Stop>(plain, |offset, data| Ok(stream.insert(offset, data)?));
        Ok(match walked {
            // A frame type not allowed in Initials has an unknown length: the rest of this packet is lost, but
            // what came before it counts and later packets may still complete the hello.
            Err(Stop::Frames(FrameError::Malformed | FrameError::NotPermitted(_))) => Ok(()),
            other => other,
        })
    }

    /// The outcome from the CRYPTO bytes received so far.
    fn evaluate(&self) -> Outcome {
        let Some(version) = self.version else { return Outcome::NotQuic };
        let prefix = self.stream.contiguous();
        match client_hello::message_len(prefix) {
            Ok(Some(total)) if total <= prefix.len() => match client_hello::parse(prefix) {
                Ok(client_hello::ClientHello { sni: Some(sni), alpn }) => Outcome::Name { sni, alpn, version },
                Ok(_) | Err(_) => Outcome::NoName,
            },
            Ok(_) => Outcome::NeedMore,
            Err(_) => Outcome::NoName,
        }
    }
}
