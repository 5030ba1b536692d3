//! Bounded binary reading and writing shared by every wire codec in this crate.
//!
//! All integers are big-endian. Variable-length fields carry an explicit length prefix that is
//! checked against the field's own maximum *before* anything is allocated, and every decoder ends
//! with [`Reader::finish`], so trailing bytes are an error rather than silently ignored.

use thiserror::Error;

/// Why a byte string could not be decoded. `what` names the field, for error messages and tests.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended inside the named field.
    #[error("input ends inside {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A length prefix exceeds the field's maximum.
    #[error("{what} is {len} long, more than the limit of {max}")]
    TooLong {
        /// The field being read.
        what: &'static str,
        /// The length found.
        len: usize,
        /// The field's maximum.
        max: usize,
    },
    /// A field holds a value outside its allowed set.
    #[error("{what} has an invalid value")]
    Invalid {
        /// The field being read.
        what: &'static str,
    },
    /// Bytes remain after the last field.
    #[error("{count} unexpected bytes after the end")]
    Trailing {
        /// How many bytes were left.
        count: usize,
    },
}

/// Reads fields from a byte slice, never past its end.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.input.len()
    }

    /// The next `len` bytes.
    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.input.len() < len {
            return Err(DecodeError::Truncated { what });
        }
        let (head, tail) = self.input.split_at(len);
        self.input = tail;
        Ok(head)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.input)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A byte string with a `u8` length prefix, at most `max` long.
    pub fn bytes_u8(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u8(what)?);
        self.bounded(len, max, what)
    }

    /// A byte string with a `u16` length prefix, at most `max` long.
    pub fn bytes_u16(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16(what)?);
        self.bounded(len, max, what)
    }

    /// A byte string with a `u32` length prefix, at most `max` long.
    pub fn bytes_u32(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.u32(what)?).unwrap_or(usize::MAX);
        self.bounded(len, max, what)
    }

    /// A count prefix (`u8`) for a list of at most `max` items.
    pub fn count_u8(&mut self, max: usize, what: &'static str) -> Result<usize, DecodeError> {
        let len = usize::from(self.u8(what)?);
        check_len(len, max, what)
    }

    /// A count prefix (`u16`) for a list of at most `max` items.
    pub fn count_u16(&mut self, max: usize, what: &'static str) -> Result<usize, DecodeError> {
        let len = usize::from(self.u16(what)?);
        check_len(len, max, what)
    }

    fn bounded(&mut self, len: usize, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        check_len(len, max, what)?;
        self.take(len, what)
    }

    /// Succeeds only if every byte was read.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.input.len() {
            0 => Ok(()),
            count => Err(DecodeError::Trailing { count }),
        }
    }
}

fn check_len(len: usize, max: usize, what: &'static str) -> Result<usize, DecodeError> {
    if len > max { Err(DecodeError::TooLong { what, len, max }) } else { Ok(len) }
}

/// Appends fields to a byte vector. Length prefixes are checked by the caller's `MAX_*` limits;
/// a field too long for its prefix width is a programming error and saturates the prefix, which
/// the matching reader then rejects.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { out: Vec::with_capacity(capacity) }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Raw bytes, no prefix.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// A byte string with a `u8` length prefix.
    pub fn bytes_u8(&mut self, bytes: &[u8]) -> &mut Self {
        self.u8(u8::try_from(bytes.len()).unwrap_or(u8::MAX)).raw(bytes)
    }

    /// A byte string with a `u16` length prefix.
    pub fn bytes_u16(&mut self, bytes: &[u8]) -> &mut Self {
        self.u16(u16::try_from(bytes.len()).unwrap_or(u16::MAX)).raw(bytes)
    }

    /// A byte string with a `u32` length prefix.
    pub fn bytes_u32(&mut self, bytes: &[u8]) -> &mut Self {
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX)).raw(bytes)
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let mut w = Writer::new();
        w.u8(7).u16(300).u32(70_000).u64(1 << 40).bytes_u16(b"hello");
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("a"), Ok(7));
        assert_eq!(r.u16("b"), Ok(300));
        assert_eq!(r.u32("c"), Ok(70_000));
        assert_eq!(r.u64("d"), Ok(1 << 40));
        assert_eq!(r.clone().bytes_u16(4, "e"), Err(DecodeError::TooLong { what: "e", len: 5, max: 4 }));
        assert_eq!(r.bytes_u16(5, "e"), Ok(&b"hello"[..]));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn truncation_and_trailing_are_errors() {
        let mut r = Reader::new(&[0, 9, 1]);
        assert_eq!(r.bytes_u16(100, "body"), Err(DecodeError::Truncated { what: "body" }));
        let mut r = Reader::new(&[1, 2]);
        assert_eq!(r.u8("x"), Ok(1));
        assert_eq!(r.finish(), Err(DecodeError::Trailing { count: 1 }));
    }
}
