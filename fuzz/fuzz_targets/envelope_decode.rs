//! Fuzzes `Envelope::decode` and `Header::decode`. Even first byte: the rest is decoded as it is;
//! whatever decodes must validate, re-encode to exactly the input with `encoded_len()` equal to its
//! length, and agree with `Header::decode` of the first 27 bytes (which also reports the same error
//! when the header is what fails). Odd first byte: an envelope is built from fields in the input;
//! `validate()` must accept it exactly when decoding its encoding gives it back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::Input;
use merpati_proto::envelope::{Envelope, HEADER_LEN, Header, Kind, MAX_ENVELOPE_LEN, MAX_OPEN_LEN};
use merpati_proto::mailbox::MailboxId;
use merpati_proto::noise::TAG_LEN;

/// Decodes `data` and checks everything the decoders promise about it.
fn decode(data: &[u8]) {
    let envelope = Envelope::decode(data);
    let prefix = &data[..data.len().min(HEADER_LEN)];
    let header = Header::decode(prefix);
    if let Ok(header) = &header {
        assert_eq!(prefix.len(), HEADER_LEN);
        assert_eq!(&header.encode()[..], prefix);
        assert_eq!(header.validate(), Ok(()));
    }
    // A header that fails fails the envelope the same way, unless the size check came first.
    if let (Err(e), true) = (&header, data.len() <= MAX_ENVELOPE_LEN) {
        assert_eq!(envelope.as_ref().err(), Some(e), "header and envelope decoding disagree");
    }
    // Exactly 27 bytes are only a header, never a whole envelope; more never decode as a header.
    if data.len() != HEADER_LEN {
        assert!(Header::decode(data).is_err());
    }
    let Ok(envelope) = envelope else { return };
    assert_eq!(header.as_ref(), Ok(&envelope.header));
    assert_eq!(envelope.validate(), Ok(()));
    assert!(envelope.open.as_ref().is_none_or(|open| !open.is_empty() && open.len() <= MAX_OPEN_LEN));
    assert!(envelope.header.kind == Kind::Session || envelope.open.is_some());
    assert!(envelope.ciphertext.len() >= TAG_LEN);
    assert_eq!(envelope.encoded_len(), data.len());
    assert_eq!(envelope.encode(), data);
}

/// Builds an envelope from the input, lengths included, and checks `validate` against decoding.
fn build(input: &mut Input<'_>) {
    let header = Header {
        version: input.u8(),
        kind: if input.u8() & 1 == 0 { Kind::FirstContact } else { Kind::Session },
        mailbox: MailboxId(std::array::from_fn(|_| input.u8())),
        epoch: input.u32(),
        sub_epoch: input.u32(),
        index: input.u8(),
    };
    // Lengths up to a little past every limit; the bytes themselves do not matter here.
    let open_len = usize::from(input.u16()) % (MAX_OPEN_LEN + 64);
    let has_open = input.u8() & 1 == 1;
    let ciphertext_len = usize::from(input.u16()) + usize::from(input.u8() & 3) * 1024;
    let fill = input.u8();
    let envelope = Envelope {
        header,
        open: has_open.then(|| vec![fill; open_len]),
        ciphertext: vec![fill ^ 0x5a; ciphertext_len],
    };
    let bytes = envelope.encode();
    assert_eq!(bytes.len(), envelope.encoded_len());
    let decoded = Envelope::decode(&bytes);
    match envelope.validate() {
        Ok(()) => assert_eq!(decoded, Ok(envelope)),
        // `Some(empty)` is written as "no open": it decodes (or fails) as another envelope.
        Err(_) if envelope.open.as_ref().is_some_and(Vec::is_empty) => assert_ne!(decoded, Ok(envelope)),
        Err(e) => assert_eq!(decoded, Err(e)),
    }
    decode(&bytes);
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => build(&mut Input::new(rest)),
        Some((_, rest)) => decode(rest),
        None => decode(data),
    }
});
