//! `crypto`: NDR1 in process, through the same session API the criterion benches use
//! (`crates/merpati-proto/benches/ndr1.rs`): seal+open in steady state at 64 B, 1 KiB and
//! 15 KiB (the largest text), a message that opens a new epoch (a DH ratchet step: the sender's
//! epoch open and the receiver reading it), and first contact (initiate, seal, accept: both ends).
//! Every operation is timed on its own, many times; median and p99 in microseconds.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use merpati_proto::Timestamp;
use merpati_proto::frame::Body;
use merpati_proto::identity::{Bundle, DeviceCert, IdentityKey, PROTOCOL_VERSION, PrekeyRing};
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::mailbox::{INBOX_DAY, MailboxId, mailbox_id};
use merpati_proto::session::{Responder, Session};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::json;

use crate::util::{Unit, report, summary};

const NOW: Timestamp = Timestamp(1_795_219_200_000);

struct Device {
    cert: DeviceCert,
    device_static: X25519Secret,
    prekeys: PrekeyRing,
    bundle: Bundle,
    inbox: MailboxId,
}

fn device(rng: &mut ChaCha20Rng) -> anyhow::Result<Device> {
    let identity = IdentityKey::generate(rng);
    let device_static = X25519Secret::generate(rng);
    let cert = DeviceCert::issue(&identity, &device_static.public(), NOW);
    let prekeys = PrekeyRing::new(&identity, &cert.device_id(), NOW, rng);
    let bundle = Bundle::new(&identity, cert.clone(), prekeys.current().clone(), vec![PROTOCOL_VERSION])
        .map_err(|e| anyhow::anyhow!("bundle: {e:?}"))?;
    let inbox = mailbox_id(&SymmetricKey::generate(rng), INBOX_DAY);
    Ok(Device { cert, device_static, prekeys, bundle, inbox })
}

/// A session pair after first contact and one reply, so both directions are established.
fn pair(rng: &mut ChaCha20Rng) -> anyhow::Result<(Session, Session)> {
    let alice = device(rng)?;
    let bob = device(rng)?;
    let mut a = Session::initiate(&alice.cert, &alice.device_static, &bob.bundle, bob.inbox, NOW, rng)
        .map_err(|e| anyhow::anyhow!("initiate: {e:?}"))?;
    let first = a.seal(&Body::Text("hi".into()), NOW, rng).map_err(|e| anyhow::anyhow!("seal: {e:?}"))?;
    let responder = Responder { bundle: &bob.bundle, prekeys: &bob.prekeys };
    let (mut b, _) = Session::accept(responder, &first.envelope, NOW, rng)
        .map_err(|e| anyhow::anyhow!("accept: {e:?}"))?;
    let reply = b.seal(&Body::Text("hi".into()), NOW, rng).map_err(|e| anyhow::anyhow!("seal: {e:?}"))?;
    a.open(&reply.envelope, NOW).map_err(|e| anyhow::anyhow!("open: {e:?}"))?;
    Ok((a, b))
}

/// `seal` then `open` of `body` from `a` to `b`, timed.
fn seal_open(
    a: &mut Session,
    b: &mut Session,
    body: &Body,
    rng: &mut ChaCha20Rng,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let sealed = a.seal(std::hint::black_box(body), NOW, rng).map_err(|e| anyhow::anyhow!("seal: {e:?}"))?;
    let opened = b.open(&sealed.envelope, NOW).map_err(|e| anyhow::anyhow!("open: {e:?}"))?;
    let elapsed = t0.elapsed();
    std::hint::black_box(opened);
    Ok(elapsed)
}

pub(crate) fn run(quick: bool) -> anyhow::Result<()> {
    let steady_iterations = if quick { 2_000 } else { 50_000 };
    let slow_iterations = if quick { 200 } else { 3_000 };
    let mut figures = serde_json::Map::new();

    for (name, len) in [("64B", 64usize), ("1KiB", 1024), ("15KiB", merpati_proto::frame::MAX_TEXT_LEN)] {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (mut a, mut b) = pair(&mut rng)?;
        let body = Body::Text("x".repeat(len));
        // Open A's epoch once so the loop measures only steady-state messages; warm up.
        for _ in 0..100 {
            seal_open(&mut a, &mut b, &body, &mut rng)?;
        }
        let iterations = if len > 4096 { steady_iterations / 5 } else { steady_iterations };
        let samples = (0..iterations)
            .map(|_| seal_open(&mut a, &mut b, &body, &mut rng))
            .collect::<anyhow::Result<Vec<_>>>()?;
        figures.insert(format!("seal_open_steady_{name}_us"), summary(samples, Unit::Micros));
    }

    // Each message opens an epoch: the two sides alternate.
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (mut a, mut b) = pair(&mut rng)?;
    let body = Body::Text("x".repeat(1024));
    let mut samples = Vec::with_capacity(slow_iterations);
    for i in 0..slow_iterations + 10 {
        let t = if i % 2 == 0 {
            seal_open(&mut a, &mut b, &body, &mut rng)?
        } else {
            seal_open(&mut b, &mut a, &body, &mut rng)?
        };
        if i >= 10 {
            samples.push(t);
        }
    }
    figures.insert("seal_open_new_epoch_1KiB_us".into(), summary(samples, Unit::Micros));

    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let alice = device(&mut rng)?;
    let bob = device(&mut rng)?;
    let mut samples = Vec::with_capacity(slow_iterations);
    for i in 0..slow_iterations + 10 {
        let t0 = Instant::now();
        let mut a =
            Session::initiate(&alice.cert, &alice.device_static, &bob.bundle, bob.inbox, NOW, &mut rng)
                .map_err(|e| anyhow::anyhow!("initiate: {e:?}"))?;
        let first = a.seal(&body, NOW, &mut rng).map_err(|e| anyhow::anyhow!("seal: {e:?}"))?;
        let responder = Responder { bundle: &bob.bundle, prekeys: &bob.prekeys };
        let accepted = Session::accept(responder, &first.envelope, NOW, &mut rng)
            .map_err(|e| anyhow::anyhow!("accept: {e:?}"))
            .context("first contact")?;
        let elapsed = t0.elapsed();
        std::hint::black_box(accepted);
        if i >= 10 {
            samples.push(elapsed);
        }
    }
    figures.insert("first_contact_both_ends_1KiB_us".into(), summary(samples, Unit::Micros));

    report(
        "crypto",
        json!({
            "steady_iterations": steady_iterations,
            "steady_iterations_15KiB": steady_iterations / 5,
            "slow_iterations": slow_iterations,
            "sizes_bytes": [64, 1024, merpati_proto::frame::MAX_TEXT_LEN],
            "what": "one seal plus one open per sample, timed in process with the merpati_proto session API",
        }),
        figures.into(),
    );
    Ok(())
}
