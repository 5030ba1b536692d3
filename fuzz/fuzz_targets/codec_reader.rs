//! Fuzzes `codec::Reader`: a short program from the input runs field reads over the rest, and every
//! successful read must consume exactly its encoding, which `codec::Writer` must reproduce.
#![no_main]

use libfuzzer_sys::fuzz_target;
use merpati_proto::codec::{DecodeError, Reader, Writer};

/// The most operations one input runs.
const MAX_OPS: usize = 32;

/// Limits the length-prefixed reads are given, picked by an operation's high nibble.
const LIMITS: [usize; 8] = [0, 1, 2, 16, 255, 256, 65_535, usize::MAX];

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else { return };
    let (ops, input) = rest.split_at(usize::from(count).min(MAX_OPS).min(rest.len()));
    let mut reader = Reader::new(input);
    for &op in ops {
        let max = LIMITS[usize::from(op >> 4) % LIMITS.len()];
        let offset = input.len() - reader.remaining();
        let mut expected = Writer::new();
        let result: Result<(), DecodeError> = match op & 0x0f {
            0 => reader.u8("u8").map(|v| {
                expected.u8(v);
            }),
            1 => reader.u16("u16").map(|v| {
                expected.u16(v);
            }),
            2 => reader.u32("u32").map(|v| {
                expected.u32(v);
            }),
            3 => reader.u64("u64").map(|v| {
                expected.u64(v);
            }),
            4 => reader.array::<32>("array").map(|v| {
                expected.raw(&v);
            }),
            5 => reader.take(max.min(4096), "take").map(|v| {
                expected.raw(v);
            }),
            6 => reader.bytes_u8(max, "bytes_u8").map(|v| {
                assert!(v.len() <= max);
                expected.bytes_u8(v);
            }),
            7 => reader.bytes_u16(max, "bytes_u16").map(|v| {
                assert!(v.len() <= max);
                expected.bytes_u16(v);
            }),
            8 => reader.bytes_u32(max, "bytes_u32").map(|v| {
                assert!(v.len() <= max);
                expected.bytes_u32(v);
            }),
            9 => reader.count_u8(max, "count_u8").map(|n| {
                assert!(n <= max);
                expected.u8(u8::try_from(n).expect("count fits its prefix"));
            }),
            10 => reader.count_u16(max, "count_u16").map(|n| {
                assert!(n <= max);
                expected.u16(u16::try_from(n).expect("count fits its prefix"));
            }),
            11 => {
                let clone = reader.clone();
                assert_eq!(clone.finish().is_ok(), reader.remaining() == 0);
                Ok(())
            }
            _ => {
                expected.raw(reader.rest());
                Ok(())
            }
        };
        let consumed = input.len() - reader.remaining() - offset;
        match result {
            Ok(()) => assert_eq!(&input[offset..offset + consumed], &expected.into_bytes()[..]),
            // A failed read may have taken its length prefix, never more than that.
            Err(_) => assert!(consumed <= 4, "a failed read consumed {consumed} bytes"),
        }
    }
    let remaining = reader.remaining();
    match reader.finish() {
        Ok(()) => assert_eq!(remaining, 0),
        Err(e) => assert_eq!(e, DecodeError::Trailing { count: remaining }),
    }
});
