//! Fuzzes the request-response messages as a relay and a node read them off the wire: bytes
//! decoded as CBOR (the codec libp2p uses for our protocols) into mailbox, blob and deliver
//! requests (single and batched) and their responses. Decoding and validating never panic; whatever
//! validates encodes and decodes back to itself, and a response that validates against a request
//! keeps every bound. Fetch tokens read off the wire are checked as a relay checks them: never a
//! panic, and none made of fuzzed bytes passes (that would be a forged signature).
#![no_main]

use libfuzzer_sys::fuzz_target;
use merpati_proto::blob::{CHUNK_LEN, MAX_CHUNKS};
use merpati_proto::mailbox::FetchToken;
use merpati_proto::wire::{self, blob, deliver, mailbox};

/// The relay peer id fuzzed tokens are checked against.
const RELAY: &[u8] = b"\x00\x24\x08\x01\x12\x20fuzzed relay's public key bytes";

fn check_tokens(request: &mailbox::Request) {
    let tokens: &[FetchToken] = match request {
        mailbox::Request::Fetch { tokens, .. } => tokens,
        mailbox::Request::Delete { token, .. } => std::slice::from_ref(token),
        mailbox::Request::Deposit { .. } => &[],
    };
    for token in tokens.iter().take(4) {
        assert!(!token.verify(RELAY), "a fetch token of fuzzed bytes verified");
    }
}

fn round_trips<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = cbor4ii::serde::to_vec(Vec::new(), value).expect("encodes");
    let back: T = cbor4ii::serde::from_slice(&bytes).expect("decodes what it encoded");
    assert_eq!(&back, value);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = cbor4ii::serde::from_slice::<mailbox::Request>(data) {
        check_tokens(&request);
        if request.validate().is_ok() {
            round_trips(&request);
        }
        // A response decoded from the same bytes, checked against this request.
        if let Ok(response) = cbor4ii::serde::from_slice::<mailbox::Response>(data) {
            let _ = response.validate_for(&request);
        }
    }
    if let Ok(response) = cbor4ii::serde::from_slice::<mailbox::Response>(data)
        && response.validate().is_ok()
    {
        if let mailbox::Response::Envelopes { items, .. } = &response {
            assert!(items.len() <= wire::MAX_FETCH_LIMIT as usize);
        }
        round_trips(&response);
    }
    if let Ok(request) = cbor4ii::serde::from_slice::<blob::Request>(data) {
        if request.validate().is_ok() {
            if let blob::Request::Put { index, chunk, .. } = &request {
                assert!(*index < MAX_CHUNKS && chunk.len() == CHUNK_LEN);
            }
            round_trips(&request);
        }
        if let Ok(response) = cbor4ii::serde::from_slice::<blob::Response>(data)
            && response.validate_for(&request).is_ok()
            && let blob::Response::Chunks { chunks } = &response
        {
            assert!(chunks.len() <= blob::MAX_GET_CHUNKS as usize);
        }
    }
    if let Ok(response) = cbor4ii::serde::from_slice::<blob::Response>(data)
        && response.validate().is_ok()
    {
        round_trips(&response);
    }
    if let Ok(request) = cbor4ii::serde::from_slice::<deliver::Request>(data)
        && request.validate().is_ok()
    {
        round_trips(&request);
    }
    if let Ok(batch) = cbor4ii::serde::from_slice::<deliver::Batch>(data)
        && batch.validate().is_ok()
    {
        assert!(batch.envelopes.len() <= wire::MAX_BATCH_ENVELOPES);
        assert!(batch.envelopes.iter().map(|e| e.len()).sum::<usize>() <= wire::MAX_BATCH_BYTES);
        round_trips(&batch);
        if let Ok(response) = cbor4ii::serde::from_slice::<deliver::BatchResponse>(data)
            && response.validate_for(&batch).is_ok()
        {
            assert_eq!(response.results.len(), batch.envelopes.len());
        }
    }
});
