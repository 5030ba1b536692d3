//! Test support shared by the integration tests: deterministic parties with identities, prekeys,
//! bundles and inboxes.
#![allow(dead_code, unreachable_pub)]

use merpati_proto::Timestamp;
use merpati_proto::frame::Body;
use merpati_proto::identity::{Bundle, DeviceCert, IdentityKey, PROTOCOL_VERSION, PrekeyRing};
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::mailbox::{self, INBOX_DAY, MailboxId};
use merpati_proto::session::{Responder, Session};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, SeedableRng};

/// 2026-11-21T00:00:00Z, a fixed start for every test clock.
pub const T0: Timestamp = Timestamp(1_795_219_200_000);

/// One user's device: everything a node would keep about itself.
pub struct Party {
    pub identity: IdentityKey,
    pub device_static: X25519Secret,
    pub cert: DeviceCert,
    pub prekeys: PrekeyRing,
    pub bundle: Bundle,
    pub inbox_secret: SymmetricKey,
}

impl Party {
    pub fn new(rng: &mut (impl CryptoRng + ?Sized), now: Timestamp) -> Self {
        let identity = IdentityKey::generate(rng);
        let device_static = X25519Secret::generate(rng);
        let cert = DeviceCert::issue(&identity, &device_static.public(), now);
        let prekeys = PrekeyRing::new(&identity, &cert.device_id(), now, rng);
        let bundle = Bundle::new(&identity, cert.clone(), prekeys.current().clone(), vec![PROTOCOL_VERSION])
            .expect("bundle");
        let inbox_secret = SymmetricKey::generate(rng);
        Self { identity, device_static, cert, prekeys, bundle, inbox_secret }
    }

    pub fn inbox(&self) -> MailboxId {
        mailbox::mailbox_id(&self.inbox_secret, INBOX_DAY)
    }

    pub fn responder(&self) -> Responder<'_> {
        Responder { bundle: &self.bundle, prekeys: &self.prekeys }
    }

    /// Starts a session to `peer`.
    pub fn initiate(&self, peer: &Party, now: Timestamp, rng: &mut (impl CryptoRng + ?Sized)) -> Session {
        Session::initiate(&self.cert, &self.device_static, &peer.bundle, peer.inbox(), now, rng)
            .expect("initiate")
    }
}

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub fn text(s: &str) -> Body {
    Body::Text(s.to_owned())
}

/// A pair of sessions that have completed first contact and one reply (both epochs 0 and 1 known).
pub fn established(seed: u64) -> (Party, Party, Session, Session, ChaCha20Rng) {
    let mut rng = rng(seed);
    let alice = Party::new(&mut rng, T0);
    let bob = Party::new(&mut rng, T0);
    let mut a = alice.initiate(&bob, T0, &mut rng);
    let first = a.seal(&text("hello bob"), T0, &mut rng).expect("seal");
    let (mut b, _) = Session::accept(bob.responder(), &first.envelope, T0, &mut rng).expect("accept");
    let reply = b.seal(&text("hello alice"), T0, &mut rng).expect("seal");
    a.open(&reply.envelope, T0).expect("open reply");
    (alice, bob, a, b, rng)
}

/// A serialization round trip of a session's state, as a restart would do it.
pub fn restart(session: &Session, now: Timestamp) -> Session {
    let json = serde_json::to_string(session.state()).expect("serialize");
    Session::restore(serde_json::from_str(&json).expect("deserialize"), now)
}

/// The session's state as a comparable string.
pub fn snapshot(session: &Session) -> String {
    serde_json::to_string(session.state()).expect("serialize")
}
