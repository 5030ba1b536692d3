//! Fuzzes opening a blob: a real file is encrypted, then its chunks and its description are
//! bent the ways a relay or a lying sender could (bytes edited, chunks swapped, dropped or
//! repeated, another length, count or hash), and the result is fed to `blob::Decryptor`.
//!
//! Opening must never panic, must succeed exactly when nothing was bent, and then must give back
//! exactly the file. Raw bytes offered as chunks must be refused, whatever the position.
#![no_main]

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::{Input, apply_edits};
use merpati_proto::blob::{self, BlobKey, CHUNK_LEN, Decryptor, Encryptor, PIECE_LEN};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    // Up to three pieces: enough for first, middle and last chunks, cheap to encrypt.
    let len = u64::from(input.u32()) % (3 * PIECE_LEN as u64);
    let id = [input.u8(); 16];
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(input.u8()));
    let file: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let mut encryptor = Encryptor::new(&mut rng, &id, len).expect("within the limit");
    let key = BlobKey::from_bytes(*encryptor.key().as_bytes());
    let mut chunks = encryptor.push(&file).expect("the announced length");
    while let Some(chunk) = encryptor.next_tail().expect("complete") {
        chunks.push(chunk);
    }
    let hash = encryptor.file_hash();
    let count = encryptor.count();
    let original = chunks.clone();
    let (mut said_len, mut said_count, mut said_hash) = (len, count, hash);

    for _ in 0..(input.u8() % 4) {
        let at = usize::from(input.u8()) % chunks.len().max(1);
        match input.u8() % 7 {
            0 if !chunks.is_empty() => {
                let edits = input.bytes(8).to_vec();
                apply_edits(&mut chunks[at], &edits);
            }
            1 if chunks.len() > 1 => {
                let other = (at + 1) % chunks.len();
                chunks.swap(at, other);
            }
            2 if !chunks.is_empty() => {
                chunks.remove(at);
            }
            3 if !chunks.is_empty() => {
                let copy = chunks[at].clone();
                chunks.insert(at, copy);
            }
            4 => said_len = u64::from(input.u16()),
            5 => said_count = u32::from(input.u8() % 8),
            6 => said_hash[0] ^= input.u8(),
            _ => {}
        }
    }
    // Judged on the end state: edits that cancel out leave the blob as it was.
    let bent = chunks != original || (said_len, said_count, said_hash) != (len, count, hash);
    let opened = (|| {
        let mut decryptor = Decryptor::new(&key, &id, said_len, said_count, said_hash)?;
        let mut out = Vec::new();
        for chunk in &chunks {
            out.extend_from_slice(&decryptor.push(chunk)?);
        }
        decryptor.finish()?;
        Ok::<_, blob::BlobError>(out)
    })();
    match opened {
        Ok(out) => {
            assert!(!bent, "a bent blob opened");
            assert_eq!(out, file, "the file came back changed");
        }
        Err(e) => assert!(bent, "an untouched blob was refused: {e}"),
    }

    // Raw bytes as a chunk never open, unless they are the real one-chunk blob's chunk.
    let raw = input.rest();
    if blob::open_chunk(&key, &id, 1, 0, raw).is_ok() {
        assert!(raw.len() == CHUNK_LEN && count == 1 && original[0] == raw, "raw bytes opened as a chunk");
    }
});
