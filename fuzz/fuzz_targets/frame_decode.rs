//! Fuzzes `Frame::decode`: never panics, and a frame it accepts validates and re-encodes, padded
//! to the input's length, to exactly the input. Its unpadded encoding, one byte shorter (refused),
//! and padding to the largest transport plaintext are checked as well.
#![no_main]

use libfuzzer_sys::fuzz_target;
use merpati_proto::frame::{FIXED_LEN, Frame, FrameError};
use merpati_proto::noise::MAX_TRANSPORT_PLAINTEXT;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::decode(data) else { return };
    assert_eq!(frame.validate(), Ok(()));
    assert!(frame.ack_epoch != Some(u32::MAX));
    let unpadded = frame.unpadded_len();
    assert!(FIXED_LEN <= unpadded && unpadded <= data.len());
    let bytes = frame.encode_padded(data.len()).expect("re-encoding a decoded frame");
    assert_eq!(&bytes[..], data);
    assert!(data[unpadded..].iter().all(|&b| b == 0), "padding must be zero");

    let tight = frame.encode_padded(unpadded).expect("encoding without padding");
    assert_eq!(&tight[..], &data[..unpadded]);
    assert_eq!(Frame::decode(&tight).as_ref(), Ok(&frame));
    if unpadded > 0 {
        let short = unpadded - 1;
        assert_eq!(frame.encode_padded(short), Err(FrameError::TooLarge { len: unpadded, max: short }));
    }
    let largest = frame.encode_padded(MAX_TRANSPORT_PLAINTEXT).expect("padding to the largest plaintext");
    assert_eq!(Frame::decode(&largest), Ok(frame));
});
