//! NDR1 micro-benchmarks: steady-state seal+open, a DH ratchet step, first contact, and the
//! mailbox keys and fetch tokens (derive a day's key, make a relay's token, a relay's check).
//!
//! `cargo bench -p merpati-proto --bench ndr1` prints criterion's estimates; the medians go into
//! `docs/benchmarks.md`.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use merpati_proto::Timestamp;
use merpati_proto::frame::Body;
use merpati_proto::identity::{Bundle, DeviceCert, IdentityKey, PROTOCOL_VERSION, PrekeyRing};
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::mailbox::{INBOX_DAY, MailboxKey, mailbox_id};
use merpati_proto::session::{Responder, Session};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: Timestamp = Timestamp(1_795_219_200_000);

struct Device {
    cert: DeviceCert,
    device_static: X25519Secret,
    prekeys: PrekeyRing,
    bundle: Bundle,
    inbox: merpati_proto::mailbox::MailboxId,
}

fn device(rng: &mut ChaCha20Rng) -> Device {
    let identity = IdentityKey::generate(rng);
    let device_static = X25519Secret::generate(rng);
    let cert = DeviceCert::issue(&identity, &device_static.public(), NOW);
    let prekeys = PrekeyRing::new(&identity, &cert.device_id(), NOW, rng);
    let bundle = Bundle::new(&identity, cert.clone(), prekeys.current().clone(), vec![PROTOCOL_VERSION])
        .expect("bundle");
    let inbox = mailbox_id(&SymmetricKey::generate(rng), INBOX_DAY);
    Device { cert, device_static, prekeys, bundle, inbox }
}

/// A session pair after first contact and one reply, so both directions are established.
fn pair(rng: &mut ChaCha20Rng) -> (Session, Session) {
    let alice = device(rng);
    let bob = device(rng);
    let mut a =
        Session::initiate(&alice.cert, &alice.device_static, &bob.bundle, bob.inbox, NOW, rng).unwrap();
    let first = a.seal(&Body::Text("hi".into()), NOW, rng).unwrap();
    let responder = Responder { bundle: &bob.bundle, prekeys: &bob.prekeys };
    let (mut b, _) = Session::accept(responder, &first.envelope, NOW, rng).unwrap();
    let reply = b.seal(&Body::Text("hi".into()), NOW, rng).unwrap();
    a.open(&reply.envelope, NOW).unwrap();
    (a, b)
}

fn steady_state(c: &mut Criterion) {
    for len in [64usize, 1024, merpati_proto::frame::MAX_TEXT_LEN] {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (mut a, mut b) = pair(&mut rng);
        let body = Body::Text("x".repeat(len));
        // Open A's epoch once so the loop measures only steady-state messages.
        let opener = a.seal(&body, NOW, &mut rng).unwrap();
        b.open(&opener.envelope, NOW).unwrap();
        c.bench_function(&format!("seal+open {len} B (steady state)"), |bench| {
            bench.iter(|| {
                let sealed = a.seal(black_box(&body), NOW, &mut rng).unwrap();
                black_box(b.open(&sealed.envelope, NOW).unwrap());
            })
        });
    }
}

fn ratchet(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (mut a, mut b) = pair(&mut rng);
    let body = Body::Text("x".repeat(1024));
    // Each iteration is one DH ratchet step: the sender opens a new epoch, the receiver reads it.
    // The two sides alternate so that every message opens an epoch.
    let mut a_turn = true;
    c.bench_function("seal+open 1024 B opening a new epoch (DH ratchet step)", |bench| {
        bench.iter(|| {
            let (sender, receiver) = if a_turn { (&mut a, &mut b) } else { (&mut b, &mut a) };
            let sealed = sender.seal(black_box(&body), NOW, &mut rng).unwrap();
            black_box(receiver.open(&sealed.envelope, NOW).unwrap());
            a_turn = !a_turn;
        })
    });
}

fn first_contact(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let alice = device(&mut rng);
    let bob = device(&mut rng);
    let body = Body::Text("x".repeat(1024));
    c.bench_function("first contact 1024 B (both ends)", |bench| {
        bench.iter_batched(
            || ChaCha20Rng::seed_from_u64(rng_next(&mut rng)),
            |mut r| {
                let mut a =
                    Session::initiate(&alice.cert, &alice.device_static, &bob.bundle, bob.inbox, NOW, &mut r)
                        .unwrap();
                let first = a.seal(&body, NOW, &mut r).unwrap();
                let responder = Responder { bundle: &bob.bundle, prekeys: &bob.prekeys };
                black_box(Session::accept(responder, &first.envelope, NOW, &mut r).unwrap());
            },
            BatchSize::SmallInput,
        )
    });
}

fn rng_next(rng: &mut ChaCha20Rng) -> u64 {
    use rand_core::Rng;
    rng.next_u64()
}

fn mailbox_tokens(c: &mut Criterion) {
    let secret = SymmetricKey::from_bytes([5; 32]);
    let relay = [0x33; 38];
    let mut day = NOW.day();
    c.bench_function("mailbox key: derive a day's key", |bench| {
        bench.iter(|| {
            day += 1;
            black_box(MailboxKey::derive(&secret, day))
        })
    });
    let key = MailboxKey::derive(&secret, NOW.day());
    c.bench_function("fetch token: make one for a relay", |bench| {
        bench.iter(|| black_box(key.token(&relay)))
    });
    let token = key.token(&relay);
    c.bench_function("fetch token: a relay's check", |bench| bench.iter(|| assert!(token.verify(&relay))));
}

/// A 10 MiB file into its blob and back: what the file transfer spends on encryption alone.
fn blobs(c: &mut Criterion) {
    use merpati_proto::blob::{BlobKey, Decryptor, Encryptor};
    let file: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let id = [3u8; 16];
    let encrypt = || {
        let mut encryptor =
            Encryptor::new(&mut ChaCha20Rng::seed_from_u64(9), &id, file.len() as u64).unwrap();
        let mut chunks = encryptor.push(&file).unwrap();
        while let Some(chunk) = encryptor.next_tail().unwrap() {
            chunks.push(chunk);
        }
        (chunks, encryptor.file_hash(), BlobKey::from_bytes(*encryptor.key().as_bytes()))
    };
    let mut group = c.benchmark_group("blob 10 MiB");
    group.sample_size(10);
    group.bench_function("encrypt", |bench| bench.iter(encrypt));
    let (chunks, hash, key) = encrypt();
    group.bench_function("open and check", |bench| {
        bench.iter(|| {
            let mut decryptor =
                Decryptor::new(&key, &id, file.len() as u64, chunks.len() as u32, hash).unwrap();
            for chunk in &chunks {
                decryptor.push(chunk).unwrap();
            }
            decryptor.finish().unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, steady_state, ratchet, first_contact, mailbox_tokens, blobs);
criterion_main!(benches);
