//! Blob tests: sizes, round trips in any slicing, and every way a chunk or a description can lie.

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::kdf;

const ID: [u8; 16] = [7; 16];

fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// The whole blob of `data` under a key drawn from `seed`, pushed in slices of `step` bytes.
fn encrypt(seed: u64, id: &[u8; 16], data: &[u8], step: usize) -> (Vec<Vec<u8>>, [u8; 32], BlobKey) {
    let mut encryptor = Encryptor::new(&mut ChaCha20Rng::seed_from_u64(seed), id, data.len() as u64).unwrap();
    let mut chunks = Vec::new();
    for slice in data.chunks(step.max(1)) {
        chunks.extend(encryptor.push(slice).unwrap());
    }
    while let Some(chunk) = encryptor.next_tail().unwrap() {
        chunks.push(chunk);
    }
    assert_eq!(chunks.len() as u32, encryptor.count());
    let key = BlobKey::from_bytes(*encryptor.key().as_bytes());
    (chunks, encryptor.file_hash(), key)
}

fn decrypt(
    key: &BlobKey,
    id: &[u8; 16],
    len: u64,
    hash: [u8; 32],
    chunks: &[Vec<u8>],
) -> Result<Vec<u8>, BlobError> {
    let mut decryptor = Decryptor::new(key, id, len, chunks.len() as u32, hash)?;
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(&decryptor.push(chunk)?);
    }
    decryptor.finish()?;
    Ok(out)
}

#[test]
fn chunk_counts_pad_to_three_significant_bits() {
    let piece = PIECE_LEN as u64;
    assert_eq!(chunk_count(0), Ok(1));
    assert_eq!(chunk_count(piece - 8), Ok(1), "the length prefix takes 8 bytes of the first piece");
    assert_eq!(chunk_count(piece - 7), Ok(2));
    assert_eq!(chunk_count(8 * piece - 8), Ok(8));
    assert_eq!(chunk_count(8 * piece - 7), Ok(10), "9 pieces pad to 10");
    assert_eq!(chunk_count(5 * 1024 * 1024), Ok(96), "a 5 MiB photo: 81 pieces, 96 chunks");
    assert_eq!(chunk_count(MAX_FILE_LEN), Ok(MAX_CHUNKS), "25 MiB: 401 pieces, 448 chunks");
    assert_eq!(
        chunk_count(MAX_FILE_LEN + 1),
        Err(BlobError::TooLarge { len: MAX_FILE_LEN + 1, max: MAX_FILE_LEN })
    );
    for pieces in 1..=401u64 {
        let count = three_significant_bits(pieces);
        assert!(count >= pieces && count * 4 <= pieces * 5 + 4, "{pieces} → {count}");
        let significant = 64 - count.leading_zeros() - count.trailing_zeros();
        assert!(significant <= 3, "{count} has {significant} significant bits");
    }
}

#[test]
fn files_of_every_awkward_size_round_trip_and_hash_as_kdf_does() {
    for len in [0, 1, PIECE_LEN - 8, PIECE_LEN - 7, PIECE_LEN, 3 * PIECE_LEN + 5, 1024 * 1024 + 3] {
        let data = file(len);
        let (chunks, hash, key) = encrypt(1, &ID, &data, 10_007);
        assert!(chunks.iter().all(|c| c.len() == CHUNK_LEN), "every chunk has one size");
        assert_eq!(chunks.len() as u32, chunk_count(len as u64).unwrap());
        assert_eq!(hash, kdf::hash(kdf::label::BLOB_HASH, &[&data]));
        assert_eq!(decrypt(&key, &ID, len as u64, hash, &chunks).unwrap(), data, "{len} bytes");
        for (index, chunk) in chunks.iter().enumerate() {
            assert!(open_chunk(&key, &ID, chunks.len() as u32, index as u32, chunk).is_ok());
        }
    }
}

#[test]
fn a_chunk_opens_only_in_its_place_in_its_blob() {
    let data = file(5 * PIECE_LEN);
    let (chunks, hash, key) = encrypt(2, &ID, &data, PIECE_LEN);
    let count = chunks.len() as u32;
    // Swapped.
    assert_eq!(open_chunk(&key, &ID, count, 0, &chunks[1]), Err(BlobError::BadChunk { index: 0 }));
    let mut swapped = chunks.clone();
    swapped.swap(1, 2);
    assert_eq!(decrypt(&key, &ID, data.len() as u64, hash, &swapped), Err(BlobError::BadChunk { index: 1 }));
    // From another blob, or under another key.
    assert!(open_chunk(&key, &[8; 16], count, 0, &chunks[0]).is_err());
    assert!(open_chunk(&BlobKey::from_bytes([3; 32]), &ID, count, 0, &chunks[0]).is_err());
    // One bit flipped.
    let mut bent = chunks[3].clone();
    bent[100] ^= 1;
    assert_eq!(open_chunk(&key, &ID, count, 3, &bent), Err(BlobError::BadChunk { index: 3 }));
    // Cut short, or said to be part of a blob of fewer chunks: the last chunk is marked, and
    // the count is bound into every chunk.
    assert_eq!(
        decrypt(&key, &ID, data.len() as u64, hash, &chunks[..count as usize - 1]).unwrap_err(),
        BlobError::CountMismatch { len: data.len() as u64, count: count - 1 }
    );
    assert!(open_chunk(&key, &ID, count - 1, count - 2, &chunks[count as usize - 2]).is_err());
    let mut decryptor = Decryptor::new(&key, &ID, data.len() as u64, count, hash).unwrap();
    for chunk in &chunks[..3] {
        decryptor.push(chunk).unwrap();
    }
    assert_eq!(decryptor.finish(), Err(BlobError::Incomplete { got: 3, count }));
    // Wrong sizes and positions are refused before any decryption.
    assert!(open_chunk(&key, &ID, count, 0, &chunks[0][..CHUNK_LEN - 1]).is_err());
    assert!(open_chunk(&key, &ID, count, count, &chunks[0]).is_err());
    assert!(open_chunk(&key, &ID, MAX_CHUNKS + 1, 0, &chunks[0]).is_err());
}

#[test]
fn a_description_that_lies_is_caught() {
    let data = file(2 * PIECE_LEN);
    let (chunks, hash, key) = encrypt(4, &ID, &data, 4096);
    let len = data.len() as u64;
    // Another hash: the file opens but is not the one described.
    let mut other = hash;
    other[0] ^= 1;
    assert_eq!(decrypt(&key, &ID, len, other, &chunks), Err(BlobError::HashMismatch));
    // Another length with the same chunk count: the prefix inside says otherwise.
    assert_eq!(
        decrypt(&key, &ID, len - 1, hash, &chunks),
        Err(BlobError::LengthMismatch { expected: len - 1, got: len })
    );
    // A count that does not follow from the length: refused before anything is fetched.
    assert_eq!(
        Decryptor::new(&key, &ID, len, 9, hash).unwrap_err(),
        BlobError::CountMismatch { len, count: 9 }
    );
    assert!(Decryptor::new(&key, &ID, MAX_FILE_LEN + 1, MAX_CHUNKS, hash).is_err());
}

#[test]
fn padding_must_be_zero() {
    let key = BlobKey::from_bytes([5; 32]);
    let data = file(100);
    // A blob whose plaintext carries a stray byte after the file, sealed as a sender would.
    let count = chunk_count(100).unwrap();
    let mut piece = Vec::new();
    piece.extend_from_slice(&100u64.to_be_bytes());
    piece.extend_from_slice(&data);
    piece.resize(PIECE_LEN, 0);
    piece[PIECE_LEN - 1] = 1;
    let tag = key
        .cipher()
        .encrypt_in_place_detached(&nonce(0, count), &associated_data(&ID, count), &mut piece)
        .unwrap();
    piece.extend_from_slice(&tag);
    let hash = kdf::hash(kdf::label::BLOB_HASH, &[&data]);
    assert_eq!(decrypt(&key, &ID, 100, hash, &[piece]), Err(BlobError::BadPadding));
}

#[test]
fn the_encryptor_takes_exactly_the_announced_bytes() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut encryptor = Encryptor::new(&mut rng, &ID, 10).unwrap();
    assert_eq!(encryptor.push(&[1; 11]), Err(BlobError::LengthMismatch { expected: 10, got: 11 }));
    encryptor.push(&[1; 4]).unwrap();
    assert_eq!(encryptor.next_tail(), Err(BlobError::LengthMismatch { expected: 10, got: 4 }));
    encryptor.push(&[1; 6]).unwrap();
    assert!(encryptor.next_tail().unwrap().is_some());
    assert_eq!(encryptor.next_tail(), Ok(None));
    assert!(Encryptor::new(&mut rng, &ID, MAX_FILE_LEN + 1).is_err());
    assert_eq!(format!("{:?}", encryptor.key()), "BlobKey(..)", "a key never prints");
}

#[test]
fn the_same_file_twice_is_two_unrelated_blobs() {
    let data = file(1000);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let a = Encryptor::new(&mut rng, &ID, 1000).unwrap();
    let b = Encryptor::new(&mut rng, &ID, 1000).unwrap();
    assert_ne!(a.key(), b.key(), "each file its own key");
    let (x, hash_x, _) = encrypt(7, &ID, &data, 1000);
    let (y, hash_y, _) = encrypt(8, &ID, &data, 1000);
    assert_ne!(x[0], y[0]);
    assert_eq!(hash_x, hash_y, "the hash is the file's, whatever the key");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_file_in_any_slicing_round_trips(len in 0usize..300_000, step in 1usize..70_000, seed: u64) {
        let data = file(len);
        let (chunks, hash, key) = encrypt(seed, &ID, &data, step);
        prop_assert_eq!(decrypt(&key, &ID, len as u64, hash, &chunks).unwrap(), data);
    }
}
