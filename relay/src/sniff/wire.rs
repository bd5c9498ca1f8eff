//! A bounds-checked byte cursor shared by the sniffers' parsers.
//!
//! TLS and QUIC nest length-prefixed fields; every read here checks the remaining length once and returns
//! `None` when the input is short, so parsers never index a slice by hand and never panic on hostile input.

/// A forward-only reader over a byte slice. Every accessor consumes what it returns or, when the input is too
/// short, returns `None` and leaves the cursor where it was.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// The bytes not yet read.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Whether every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.rest.split_at_checked(n)?;
        self.rest = tail;
        Some(head)
    }

    /// Skips `n` bytes.
    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        self.bytes(n).map(|_| ())
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.rest.split_first_chunk::<N>()?;
        self.rest = tail;
        Some(*head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u24(&mut self) -> Option<u32> {
        self.array::<3>().map(|[a, b, c]| u32::from_be_bytes([0, a, b, c]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    /// A vector with a one-byte length prefix (TLS `<0..2^8-1>`).
    pub(crate) fn vec8(&mut self) -> Option<&'a [u8]> {
        let mut probe = *self;
        let len = probe.u8()?;
        let body = probe.bytes(usize::from(len))?;
        *self = probe;
        Some(body)
    }

    /// A vector with a two-byte length prefix (TLS `<0..2^16-1>`).
    pub(crate) fn vec16(&mut self) -> Option<&'a [u8]> {
        let mut probe = *self;
        let len = probe.u16()?;
        let body = probe.bytes(usize::from(len))?;
        *self = probe;
        Some(body)
    }

    /// A QUIC variable-length integer (RFC 9000 section 16): the two high bits of the first byte give its length
    /// (1, 2, 4 or 8 bytes), so the value is below 2^62.
    pub(crate) fn varint(&mut self) -> Option<u64> {
        let first = *self.rest.first()?;
        let len = 1usize << (first >> 6);
        let bytes = self.bytes(len)?;
        let mut value = u64::from(first & 0x3f);
        for &b in &bytes[1..] {
            value = (value << 8) | u64::from(b);
        }
        Some(value)
    }

    /// A varint that must fit a `usize` no larger than `max`; larger values are treated as malformed.
    pub(crate) fn varint_len(&mut self, max: usize) -> Option<usize> {
        let mut probe = *self;
        let value = usize::try_from(probe.varint()?).ok().filter(|&v| v <= max)?;
        *self = probe;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_decodes_rfc9000_appendix_a1_examples() {
        let cases: [(&[u8], u64); 4] = [
            (&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c], 151_288_809_941_952_652),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, want) in cases {
            let mut r = Reader::new(bytes);
            assert_eq!(r.varint(), Some(want));
            assert!(r.is_empty());
        }
    }

    #[test]
    fn truncated_varint_is_none_and_consumes_nothing() {
        let mut r = Reader::new(&[0x9d, 0x7f]);
        assert_eq!(r.varint(), None);
        assert_eq!(r.rest(), &[0x9d, 0x7f]);
    }

    #[test]
    fn varint_len_rejects_values_above_the_bound_without_consuming() {
        let mut r = Reader::new(&[0x7b, 0xbd]);
        assert_eq!(r.varint_len(1000), None);
        assert_eq!(r.varint_len(20_000), Some(15_293));
    }

    #[test]
    fn length_prefixed_vector_longer_than_input_is_none() {
        let mut r = Reader::new(&[0x00, 0x05, 1, 2, 3]);
        assert_eq!(r.vec16(), None);
        assert_eq!(r.rest().len(), 5);
        let mut r = Reader::new(&[0x02, 1, 2, 3]);
        assert_eq!(r.vec8(), Some(&[1u8, 2][..]));
        assert_eq!(r.rest(), &[3]);
    }
}
