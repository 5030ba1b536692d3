//! A conversation between two people, end to end, with nothing but the protocol crate.
//!
//! Bob publishes an invite; Alice adds him from its text and writes first. Every envelope goes
//! through a simulated relay that stores it by mailbox id (all a relay ever sees), Bob's device
//! restarts from its persisted state in the middle, a long text travels as fragments, and both
//! compare safety numbers at the end. Run it with
//! `cargo run --release -p merpati-proto --example conversation`.
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a demo: prints, and stops on any error

use std::collections::HashMap;
use std::error::Error;

use merpati_proto::Timestamp;
use merpati_proto::envelope::Envelope;
use merpati_proto::fragment::{self, CONTENT_TEXT, Reassembler};
use merpati_proto::frame::Body;
use merpati_proto::identity::{
    Bundle, DeviceCert, IdentityKey, PROTOCOL_VERSION, PrekeyRing, SafetyNumber, fingerprint,
};
use merpati_proto::invite::Invite;
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::mailbox::{self, INBOX_DAY, MailboxId};
use merpati_proto::session::{Incoming, Responder, Sealed, Session, SessionState};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// One person's device.
struct Device {
    name: &'static str,
    identity: IdentityKey,
    device_static: X25519Secret,
    cert: DeviceCert,
    prekeys: PrekeyRing,
    bundle: Bundle,
    inbox_secret: SymmetricKey,
}

impl Device {
    fn new(name: &'static str, now: Timestamp, rng: &mut ChaCha20Rng) -> Result<Self, Box<dyn Error>> {
        let identity = IdentityKey::generate(rng);
        let device_static = X25519Secret::generate(rng);
        let cert = DeviceCert::issue(&identity, &device_static.public(), now);
        let mut prekeys = PrekeyRing::new(&identity, &cert.device_id(), now, rng);
        // The first check makes the last-resort prekey invites carry.
        prekeys.rotate_if_due(&identity, &cert.device_id(), now, rng);
        let bundle = Bundle::new(&identity, cert.clone(), prekeys.current().clone(), vec![PROTOCOL_VERSION])?;
        let inbox_secret = SymmetricKey::generate(rng);
        Ok(Self { name, identity, device_static, cert, prekeys, bundle, inbox_secret })
    }

    fn inbox(&self) -> MailboxId {
        mailbox::mailbox_id(&self.inbox_secret, INBOX_DAY)
    }
}

/// A store-and-forward relay as a relay sees it: opaque envelopes filed under mailbox ids.
#[derive(Default)]
struct Relay {
    mailboxes: HashMap<MailboxId, Vec<Vec<u8>>>,
}

impl Relay {
    fn deposit(&mut self, sealed: &Sealed) {
        let header = Envelope::decode(&sealed.envelope).unwrap().header;
        println!(
            "  relay  stored {:>5} bytes in mailbox {:?} (epoch {}, sub-epoch {}, message {})",
            sealed.envelope.len(),
            sealed.mailbox,
            header.epoch,
            header.sub_epoch,
            header.index
        );
        self.mailboxes.entry(sealed.mailbox).or_default().push(sealed.envelope.clone());
    }

    fn fetch(&mut self, mailbox: &MailboxId) -> Vec<Vec<u8>> {
        self.mailboxes.remove(mailbox).unwrap_or_default()
    }
}

fn show(who: &str, incoming: &Incoming) {
    match &incoming.body {
        Body::Text(text) if text.len() > 60 => {
            println!("  {who:<6} got #{}: {}… ({} bytes)", incoming.seq, &text[..40], text.len())
        }
        Body::Text(text) => println!("  {who:<6} got #{}: {text}", incoming.seq),
        other => println!("  {who:<6} got #{}: {other:?}", incoming.seq),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut rng = ChaCha20Rng::from_rng(&mut rand_core::UnwrapErr(SysRandom));
    let mut now = Timestamp(1_795_219_200_000);
    let mut relay = Relay::default();

    println!("1. Bob publishes an invite");
    let bob = Device::new("bob", now, &mut rng)?;
    let invite = Invite::new(
        &bob.identity,
        bob.bundle.clone(),
        bob.prekeys.last_resort().ok_or("no last-resort prekey")?.clone(),
        bob.inbox(),
        Vec::new(),
        b"bob's node".to_vec(),
        Vec::new(),
        Some("Bob".into()),
        now,
    )?;
    let text = invite.to_text();
    println!("  {}…{} ({} characters)", &text[..24], &text[text.len() - 8..], text.len());

    println!("2. Alice adds Bob from the text and writes first (first contact)");
    let alice = Device::new("alice", now, &mut rng)?;
    let invite = Invite::parse(&text, now)?;
    let mut a =
        Session::initiate(&alice.cert, &alice.device_static, &invite.bundle, invite.inbox, now, &mut rng)?;
    for line in ["Hi Bob, it's Alice. Is the order for Friday still on?", "Two boxes, as before."] {
        relay.deposit(&a.seal(&Body::Text(line.into()), now, &mut rng)?);
    }

    println!("3. Bob fetches his inbox: the first envelope starts the session");
    let mut inbox = relay.fetch(&bob.inbox()).into_iter();
    let responder = Responder { bundle: &bob.bundle, prekeys: &bob.prekeys };
    let (mut b, first) = Session::accept(responder, &inbox.next().unwrap(), now, &mut rng)?;
    show(bob.name, &first);
    for envelope in inbox {
        show(bob.name, &b.open(&envelope, now)?);
    }

    println!("4. Bob answers (his first epoch: a fresh DH ratchet step)");
    relay.deposit(&b.seal(&Body::Text("Yes! Friday at ten.".into()), now, &mut rng)?);
    for envelope in relay.fetch(&a.state().my_mailboxes.current(now).unwrap()) {
        show(alice.name, &a.open(&envelope, now)?);
    }

    println!("5. Bob's device restarts from its persisted state; Alice writes meanwhile");
    let persisted = serde_json::to_vec(b.state())?;
    drop(b);
    now = now.plus(3 * Timestamp::HOUR);
    relay.deposit(&a.seal(&Body::Text("Great, see you then.".into()), now, &mut rng)?);
    let mut b = Session::restore(serde_json::from_slice::<SessionState>(&persisted)?, now);
    for envelope in relay.fetch(&b.state().my_mailboxes.current(now).unwrap()) {
        show(bob.name, &b.open(&envelope, now)?);
    }

    println!("6. A long text (88 KiB) travels as fragments");
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(2000);
    let mut group = [0u8; 16];
    rng.fill_bytes(&mut group);
    for piece in fragment::split(CONTENT_TEXT, long.as_bytes(), group)? {
        relay.deposit(&b.seal(&Body::Fragment(piece), now, &mut rng)?);
    }
    let mut reassembler = Reassembler::new();
    for envelope in relay.fetch(&a.state().my_mailboxes.current(now).unwrap()) {
        if let Body::Fragment(piece) = a.open(&envelope, now)?.body
            && let Some((_, whole)) = reassembler.push(piece, now)?
        {
            println!("  alice  reassembled {} bytes, intact: {}", whole.len(), whole == long.as_bytes());
        }
    }

    println!("7. Both compare safety numbers (read them to each other out of band)");
    let alice_sees = SafetyNumber::new(&alice.identity.public(), &a.peer().identity);
    let bob_sees = SafetyNumber::new(&bob.identity.public(), &b.peer().identity);
    println!("  alice  {alice_sees}");
    println!("  bob    {bob_sees}");
    println!(
        "  match: {}; Bob's fingerprint {}",
        alice_sees.to_string() == bob_sees.to_string(),
        fingerprint(&a.peer().identity)
    );
    println!("  missing messages: alice {:?}, bob {:?}", a.missing(), b.missing());
    Ok(())
}

/// The operating system's randomness, read once to seed the demo's generator.
struct SysRandom;

impl rand_core::TryRng for SysRandom {
    type Error = std::io::Error;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(dst)
    }
}
