//! The spool on a real disk: a file encrypted into it, moved chunk by chunk in any order into an
//! incoming blob, checked whole and read back in slices; damage and growth refused.

use merpati_proto::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;

fn file_of(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let path = dir.join("photo.jpg");
    fs::write(&path, &data).unwrap();
    (path, data)
}

#[test]
fn a_file_travels_through_the_spool_in_any_order_and_reads_back_in_slices() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("blobs"));
    let (source, data) = file_of(dir.path(), 3 * PIECE_LEN + 1_000);
    let id = [7u8; 16];
    let sent = spool.encrypt(&mut ChaCha20Rng::seed_from_u64(1), &id, &source).unwrap();
    assert_eq!((sent.len, sent.count), (data.len() as u64, 4));
    assert_eq!(fs::metadata(spool.outgoing(&id)).unwrap().len(), 4 * CHUNK_LEN as u64);
    assert!(!spool.outgoing(&id).with_extension("part").exists());

    let incoming = spool.incoming(&id);
    let file = Spool::open_incoming(&incoming, sent.count).unwrap();
    assert_eq!(Spool::present(&incoming, &sent.key, &id, 4).unwrap(), vec![false; 4], "zeros do not open");
    for index in [3, 1] {
        let chunk = Spool::read_chunk(&spool.outgoing(&id), index).unwrap();
        Spool::write_chunk(&file, &incoming, index, &chunk).unwrap();
    }
    assert_eq!(Spool::present(&incoming, &sent.key, &id, 4).unwrap(), vec![false, true, false, true]);
    assert!(Spool::verify(&incoming, &sent.key, &id, sent.len, 4, sent.hash).is_err(), "incomplete");
    for index in [0, 2] {
        let chunk = Spool::read_chunk(&spool.outgoing(&id), index).unwrap();
        Spool::write_chunk(&file, &incoming, index, &chunk).unwrap();
    }
    Spool::verify(&incoming, &sent.key, &id, sent.len, 4, sent.hash).unwrap();

    let len = data.len() as u64;
    for (offset, max) in [
        (0, 10),
        (0, data.len()),
        (PIECE_LEN as u64 - 8, 20),
        (PIECE_LEN as u64 - 9, 2),
        (len - 5, 100),
        (len, 10),
    ] {
        let slice = Spool::read_plain(&incoming, &sent.key, &id, 4, len, offset, max).unwrap();
        let end = (offset as usize + max).min(data.len());
        assert_eq!(&slice[..], &data[offset as usize..end], "offset {offset}, max {max}");
    }
    let ids: Vec<[u8; 16]> = spool.list().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![id, id], "one outgoing, one incoming");
}

#[test]
fn a_damaged_or_foreign_chunk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("blobs"));
    let (source, _) = file_of(dir.path(), 100_000);
    let id = [1u8; 16];
    let sent = spool.encrypt(&mut ChaCha20Rng::seed_from_u64(2), &id, &source).unwrap();
    let incoming = spool.incoming(&id);
    let file = Spool::open_incoming(&incoming, sent.count).unwrap();
    for index in 0..sent.count {
        let mut chunk = Spool::read_chunk(&spool.outgoing(&id), index).unwrap();
        if index == 1 {
            chunk[100] ^= 1;
        }
        Spool::write_chunk(&file, &incoming, index, &chunk).unwrap();
    }
    assert_eq!(Spool::present(&incoming, &sent.key, &id, sent.count).unwrap(), vec![true, false]);
    assert!(Spool::verify(&incoming, &sent.key, &id, sent.len, sent.count, sent.hash).is_err());
    assert!(Spool::read_plain(&incoming, &sent.key, &id, sent.count, sent.len, 70_000, 10).is_err());
    // Under another blob's id nothing opens, even undamaged.
    assert_eq!(
        Spool::present(&spool.outgoing(&id), &sent.key, &[2; 16], sent.count).unwrap(),
        vec![false, false]
    );
}

#[test]
fn too_large_a_file_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("blobs"));
    let source = dir.path().join("huge.bin");
    File::create(&source).unwrap().set_len(MAX_FILE_LEN + 1).unwrap();
    let refused = spool.encrypt(&mut ChaCha20Rng::seed_from_u64(3), &[3; 16], &source);
    assert!(matches!(refused, Err(SpoolError::TooLarge { .. })), "{:?}", refused.err());
    assert!(spool.list().is_empty());
    assert_eq!(unhex(&hex(&[0xab; 16])), Some([0xab; 16]));
    assert_eq!(unhex("not hex"), None);
}
