//! The file store against a real sled database: tokens, quotas, expiry with a moved clock, and
//! what survives a reopen.

use std::path::Path;

use merpati_proto::blob::BlobSecret;

use super::*;
use crate::relay::mailboxes::MailboxLimits;
use crate::relay::mailboxes::tests::open as open_mailboxes;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const RELAY: &[u8] = b"this relay";

fn chunk(fill: u8) -> Vec<u8> {
    vec![fill; CHUNK_LEN]
}

/// An uploader's secrets for one blob with `readers` readers.
struct Upload {
    id: BlobId,
    write: BlobSecret,
    readers: Vec<BlobSecret>,
}

impl Upload {
    fn new(n: u8, readers: u8) -> Self {
        Self {
            id: BlobId([n; 16]),
            write: BlobSecret::from_bytes([n; 32]),
            readers: (0..readers).map(|r| BlobSecret::from_bytes([n ^ 0x80 ^ r; 32])).collect(),
        }
    }

    fn blob(&self, chunks: u32) -> NewBlob {
        NewBlob {
            blob_id: self.id,
            chunks,
            write_hash: self.write.write_token(RELAY).hash(),
            read_hashes: self.readers.iter().map(|r| r.read_token(RELAY).hash()).collect(),
        }
    }

    fn write(&self) -> BlobToken {
        self.write.write_token(RELAY)
    }

    fn read(&self, reader: usize) -> BlobToken {
        self.readers[reader].read_token(RELAY)
    }
}

fn depositor(peer: u8, ip: [u8; 4]) -> Depositor {
    Depositor { network: Some(Network::of(ip.into())), peer: PeerKey([peer; 8]) }
}

fn open(dir: &Path, limits: BlobLimits) -> Blobs {
    Blobs::open(&open_mailboxes(dir, MailboxLimits::default()), limits).unwrap()
}

#[tokio::test]
async fn a_blob_is_put_read_and_gone_once_every_reader_acked() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path(), BlobLimits::default());
    let up = Upload::new(1, 2);
    let expires = blobs.create(up.blob(10), depositor(1, [192, 0, 2, 1]), T0).await.unwrap();
    assert_eq!(expires, T0.0 + 30 * Timestamp::DAY);
    assert_eq!(blobs.stats(), BlobStats { blobs: 1, bytes: 10 * CHUNK_LEN as u64 });

    for index in [0u32, 1, 3] {
        blobs.put(&up.write(), &up.id, index, &chunk(index as u8), T0).await.unwrap();
    }
    blobs.put(&up.write(), &up.id, 1, &chunk(1), T0).await.expect("a chunk put twice is fine");
    assert_eq!(blobs.status(&up.write(), &up.id, T0).unwrap(), vec![0b0000_1011, 0]);

    let got = blobs.get(&up.read(0), &up.id, 0, 16, T0).unwrap();
    assert_eq!(got, vec![chunk(0), chunk(1)], "stops at the first chunk not stored");
    assert!(blobs.get(&up.read(1), &up.id, 2, 16, T0).unwrap().is_empty(), "chunk 2 is not there yet");
    assert_eq!(blobs.get(&up.read(1), &up.id, 3, 1, T0).unwrap(), vec![chunk(3)]);

    blobs.ack(&up.read(0), &up.id, T0).await.unwrap();
    blobs.ack(&up.read(0), &up.id, T0).await.expect("a second ack is harmless");
    assert_eq!(blobs.stats().blobs, 1, "one reader still to come");
    blobs.ack(&up.read(1), &up.id, T0).await.unwrap();
    assert_eq!(blobs.stats(), BlobStats::default());
    assert_eq!(blobs.get(&up.read(1), &up.id, 0, 1, T0), Err(Refusal::UnknownBlob));
    assert_eq!(blobs.inner.chunks.len(), 0, "the chunks went with it");
}

#[tokio::test]
async fn each_token_opens_only_what_it_is_for() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path(), BlobLimits::default());
    let up = Upload::new(2, 1);
    let other = Upload::new(3, 1);
    let who = depositor(1, [192, 0, 2, 1]);
    let expires = blobs.create(up.blob(2), who, T0).await.unwrap();
    assert_eq!(blobs.create(up.blob(2), who, T0.plus(5)).await, Ok(expires), "created again: same answer");
    let mut stolen = up.blob(2);
    stolen.write_hash = other.write().hash();
    assert_eq!(blobs.create(stolen, who, T0).await, Err(Refusal::Unauthorized), "someone else's id");

    let data = chunk(7);
    assert_eq!(blobs.put(&other.write(), &up.id, 0, &data, T0).await, Err(Refusal::Unauthorized));
    assert_eq!(blobs.put(&up.read(0), &up.id, 0, &data, T0).await, Err(Refusal::Unauthorized), "a reader");
    assert_eq!(blobs.put(&up.write(), &up.id, 2, &data, T0).await, Err(Refusal::Malformed), "past the count");
    let at_another_relay = up.write.write_token(b"another relay");
    assert_eq!(blobs.put(&at_another_relay, &up.id, 0, &data, T0).await, Err(Refusal::Unauthorized));
    blobs.put(&up.write(), &up.id, 0, &data, T0).await.unwrap();

    assert_eq!(blobs.get(&up.write(), &up.id, 0, 1, T0), Err(Refusal::Unauthorized), "the writer reads not");
    assert_eq!(blobs.get(&other.read(0), &up.id, 0, 1, T0), Err(Refusal::Unauthorized));
    assert_eq!(blobs.status(&up.read(0), &up.id, T0), Err(Refusal::Unauthorized));
    assert_eq!(blobs.ack(&other.read(0), &up.id, T0).await, Err(Refusal::Unauthorized));
    assert_eq!(blobs.delete(&up.read(0), &up.id, T0).await, Err(Refusal::Unauthorized));
    assert_eq!(blobs.stats().blobs, 1, "every refusal left it as it was");
    assert_eq!(blobs.get(&up.read(0), &up.id, 0, 1, T0).unwrap(), vec![data]);

    blobs.delete(&up.write(), &up.id, T0).await.unwrap();
    assert_eq!(blobs.stats(), BlobStats::default());
    assert_eq!(blobs.status(&up.write(), &up.id, T0), Err(Refusal::UnknownBlob));
}

#[tokio::test]
async fn room_is_reserved_per_uploader_per_network_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let chunk_bytes = CHUNK_LEN as u64;
    let limits = BlobLimits { budget: 48 * chunk_bytes, per_user: 8 * chunk_bytes, ..BlobLimits::default() };
    let blobs = open(dir.path(), limits);
    let home = [192, 0, 2, 1];

    let too_big = blobs.create(Upload::new(1, 1).blob(9), depositor(1, home), T0).await;
    assert_eq!(too_big, Err(Refusal::TooLarge { max: (8 * chunk_bytes) as u32 }));
    blobs.create(Upload::new(2, 1).blob(6), depositor(1, home), T0).await.unwrap();
    let over = blobs.create(Upload::new(3, 1).blob(3), depositor(1, home), T0).await;
    assert!(matches!(over, Err(Refusal::RateLimited { .. })), "{over:?}");
    // Peer ids are free: the network holds two users' worth (16 chunks), however many peers.
    blobs.create(Upload::new(12, 1).blob(8), depositor(2, home), T0).await.unwrap();
    let crowded = blobs.create(Upload::new(13, 1).blob(3), depositor(3, home), T0).await;
    assert!(matches!(crowded, Err(Refusal::RateLimited { .. })), "{crowded:?}");
    // The /64s of one IPv6 /48 share four users' worth (32 chunks).
    let v6 = |n: u16| Depositor {
        network: Some(Network::of(std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, n, 0, 0, 0, 1).into())),
        peer: PeerKey([n as u8 + 100; 8]),
    };
    for n in 0..4 {
        blobs.create(Upload::new(30 + n as u8, 1).blob(8), v6(n), T0).await.unwrap();
    }
    let block = blobs.create(Upload::new(40, 1).blob(1), v6(9), T0).await;
    assert!(matches!(block, Err(Refusal::RateLimited { .. })), "{block:?}");
    // Another network has room of its own, but not past the relay's budget of 48.
    assert_eq!(blobs.stats().bytes, 46 * chunk_bytes);
    let full = blobs.create(Upload::new(22, 1).blob(3), depositor(21, [198, 51, 100, 7]), T0).await;
    assert_eq!(full, Err(Refusal::RelayFull));

    // Withdrawing a blob gives its room back.
    let first = Upload::new(2, 1);
    blobs.delete(&first.write(), &first.id, T0).await.unwrap();
    blobs.create(Upload::new(3, 1).blob(3), depositor(1, home), T0).await.expect("room again");
}

#[tokio::test]
async fn room_reserved_and_never_filled_is_given_back_after_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path(), BlobLimits::default());
    let (filled, empty) = (Upload::new(1, 1), Upload::new(2, 1));
    blobs.create(filled.blob(2), depositor(1, [192, 0, 2, 1]), T0).await.unwrap();
    blobs.create(empty.blob(2), depositor(1, [192, 0, 2, 1]), T0).await.unwrap();
    for index in 0..2 {
        blobs.put(&filled.write(), &filled.id, index, &chunk(1), T0).await.unwrap();
    }
    blobs.put(&empty.write(), &empty.id, 0, &chunk(1), T0).await.unwrap();
    assert_eq!(blobs.purge_expired(T0.plus(UPLOAD_WINDOW_MS - 1)).unwrap(), 0);
    assert_eq!(blobs.purge_expired(T0.plus(UPLOAD_WINDOW_MS)).unwrap(), 1, "only the one never filled");
    assert_eq!(blobs.stats(), BlobStats { blobs: 1, bytes: 2 * CHUNK_LEN as u64 });
    assert_eq!(blobs.get(&filled.read(0), &filled.id, 0, 2, T0.plus(UPLOAD_WINDOW_MS)).unwrap().len(), 2);
}

#[tokio::test]
async fn an_expired_blob_not_yet_purged_gives_its_room_back_when_its_id_is_taken_again() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path(), BlobLimits::default());
    let up = Upload::new(3, 1);
    let expires = blobs.create(up.blob(4), depositor(1, [192, 0, 2, 1]), T0).await.unwrap();
    blobs.put(&up.write(), &up.id, 0, &chunk(1), T0).await.unwrap();
    let again = Upload::new(3, 1);
    blobs.create(again.blob(2), depositor(2, [192, 0, 2, 2]), Timestamp(expires)).await.unwrap();
    assert_eq!(
        blobs.stats(),
        BlobStats { blobs: 1, bytes: 2 * CHUNK_LEN as u64 },
        "counted once, at its new size"
    );
    assert_eq!(
        blobs.status(&again.write(), &again.id, Timestamp(expires)).unwrap(),
        vec![0],
        "no old chunk left"
    );
}

#[tokio::test]
async fn a_blob_expires_with_its_ttl_and_the_purge_frees_its_room() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = open(dir.path(), BlobLimits::default());
    let up = Upload::new(4, 1);
    let expires = blobs.create(up.blob(2), depositor(1, [192, 0, 2, 1]), T0).await.unwrap();
    blobs.put(&up.write(), &up.id, 0, &chunk(1), T0).await.unwrap();
    blobs.put(&up.write(), &up.id, 1, &chunk(2), T0).await.unwrap();

    let day_29 = T0.plus(29 * Timestamp::DAY);
    assert_eq!(blobs.get(&up.read(0), &up.id, 0, 1, day_29).unwrap().len(), 1);
    assert_eq!(blobs.purge_expired(day_29).unwrap(), 0);

    let day_30 = Timestamp(expires);
    assert_eq!(blobs.get(&up.read(0), &up.id, 0, 1, day_30), Err(Refusal::UnknownBlob));
    assert_eq!(blobs.put(&up.write(), &up.id, 1, &chunk(2), day_30).await, Err(Refusal::UnknownBlob));
    assert_eq!(blobs.stats().blobs, 1, "held until the purge");
    assert_eq!(blobs.purge_expired(day_30).unwrap(), 1);
    assert_eq!(blobs.stats(), BlobStats::default());
    assert_eq!(blobs.inner.chunks.len(), 0);
    // The id may be used again afterwards, by anyone.
    blobs.create(Upload::new(4, 1).blob(1), depositor(2, [192, 0, 2, 2]), day_30).await.unwrap();
}

#[tokio::test]
async fn blobs_and_their_counters_survive_a_reopen_and_orphan_chunks_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upload::new(5, 1);
    {
        let blobs = open(dir.path(), BlobLimits::default());
        blobs.create(up.blob(3), depositor(1, [192, 0, 2, 1]), T0).await.unwrap();
        blobs.put(&up.write(), &up.id, 2, &chunk(2), T0).await.unwrap();
        // What a crash between removing a blob's record and its chunks leaves behind.
        blobs.inner.chunks.insert(chunk_key(&BlobId([9; 16]), 0), chunk(9)).unwrap();
        blobs.inner.mailboxes.flush().await.unwrap();
    }
    let blobs = open(dir.path(), BlobLimits::default());
    assert_eq!(blobs.stats(), BlobStats { blobs: 1, bytes: 3 * CHUNK_LEN as u64 });
    assert_eq!(blobs.status(&up.write(), &up.id, T0).unwrap(), vec![0b100]);
    assert_eq!(blobs.get(&up.read(0), &up.id, 2, 4, T0).unwrap(), vec![chunk(2)]);
    assert_eq!(blobs.inner.chunks.len(), 1, "the orphan chunk is gone");
}

#[test]
fn records_round_trip_and_damage_is_refused() {
    let meta = Meta {
        chunks: 448,
        created_at: 1,
        expires_at: 2,
        write_hash: TokenHash([3; 32]),
        depositor: depositor(4, [192, 0, 2, 9]),
        readers: vec![(TokenHash([5; 32]), false), (TokenHash([6; 32]), true)],
    };
    let bytes = meta.encode();
    assert_eq!(Meta::decode(&bytes), Some(meta));
    for cut in 0..bytes.len() {
        assert_eq!(Meta::decode(&bytes[..cut]), None, "cut at {cut}");
    }
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 2;
    assert_eq!(Meta::decode(&wrong_version), None);
}
