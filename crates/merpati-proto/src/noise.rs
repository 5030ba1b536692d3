//! The two one-way Noise handshakes NDR1 is built on, and transport encryption from raw keys.
//!
//! * First contact: `Noise_X_25519_ChaChaPoly_BLAKE2s` — the sender's device static key is sent
//!   encrypted to the recipient's signed prekey; one message, nothing to keep between calls.
//! * Epoch open: `Noise_Npsk0_25519_ChaChaPoly_BLAKE2s` — a fresh ephemeral to the peer's latest
//!   ratchet key, authenticated by the previous root key as PSK.
//!
//! Both go through [`StrictResolver`], which swaps snow's X25519 for ours (refusing all-zero
//! results, zeroizing private keys) and draws ephemerals from caller-supplied randomness, so the
//! crate stays deterministic. After a handshake we take the raw split (`k1`, `k2`) and the handshake
//! hash; snow states are never kept or persisted. Transport messages are sealed by a
//! [`TransportCipher`], a snow `StatelessTransportState` whose keys are set from stored raw keys
//! before every use, with explicit nonces.

use rand_core::CryptoRng;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState, StatelessTransportState};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::kdf;
use crate::keys::{SymmetricKey, X25519Public, X25519Secret};

/// The first-contact handshake pattern.
pub const FIRST_CONTACT_PATTERN: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";
/// The epoch-opening handshake pattern.
pub const EPOCH_PATTERN: &str = "Noise_Npsk0_25519_ChaChaPoly_BLAKE2s";
/// Bytes a first-contact message adds to its payload: `e` (32), encrypted `s` (48), tag (16).
pub const FIRST_CONTACT_OVERHEAD: usize = 96;
/// Bytes an epoch open adds to its payload: `e` (32), tag (16).
pub const EPOCH_OPEN_OVERHEAD: usize = 48;
/// ChaCha20-Poly1305 authentication tag length.
pub const TAG_LEN: usize = 16;
/// The largest Noise message, handshake or transport.
pub const MAX_NOISE_MESSAGE: usize = 65_535;
/// The largest transport plaintext.
pub const MAX_TRANSPORT_PLAINTEXT: usize = MAX_NOISE_MESSAGE - TAG_LEN;

/// Why a Noise operation failed. Deliberately coarse: a peer learns nothing from which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NoiseError {
    /// The message did not authenticate (wrong key, tampered, or a weak key was involved).
    #[error("message did not authenticate")]
    Rejected,
    /// A message or payload exceeds Noise's 65 535-byte limit.
    #[error("message too large for Noise")]
    TooLarge,
    /// snow refused to build a state; this is a bug in the caller's parameters.
    #[error("handshake setup failed")]
    Setup,
    /// The nonce is the one Noise reserves (`u64::MAX`); NDR1 never gets near it.
    #[error("nonce exhausted")]
    Exhausted,
}

/// The result of a finished one-way handshake: what NDR1 keeps instead of snow's state.
#[derive(Debug)]
pub struct Split {
    /// The handshake hash (public: anyone with the transcript can recompute it).
    pub handshake_hash: [u8; 32],
    /// The first raw split key: the initiator's sending key.
    pub k1: SymmetricKey,
    /// The second raw split key: never used for transport in NDR1; feeds the root chain.
    pub k2: SymmetricKey,
}

/// Writes a first-contact message from `local` (device static) to `remote` (signed prekey).
pub fn first_contact_write(
    local: &X25519Secret,
    remote: &X25519Public,
    prologue: &[u8],
    payload: &[u8],
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<(Vec<u8>, Split), NoiseError> {
    let builder = builder(FIRST_CONTACT_PATTERN, Some(local), rng)?
        .local_private_key(local.as_bytes())
        .and_then(|b| b.remote_public_key(remote.as_bytes()))
        .and_then(|b| b.prologue(prologue))
        .map_err(|_| NoiseError::Setup)?;
    write_one(builder, payload, FIRST_CONTACT_OVERHEAD)
}

/// Reads a first-contact message with the prekey secret `local`. Returns the payload, the
/// sender's device static key and the split.
pub fn first_contact_read(
    local: &X25519Secret,
    prologue: &[u8],
    message: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, X25519Public, Split), NoiseError> {
    let builder =
        Builder::with_resolver(params(FIRST_CONTACT_PATTERN)?, StrictResolver::boxed_with_local(None, local))
            .local_private_key(local.as_bytes())
            .and_then(|b| b.prologue(prologue))
            .map_err(|_| NoiseError::Setup)?;
    let mut state = builder.build_responder().map_err(|_| NoiseError::Setup)?;
    let payload = read_message(&mut state, message, FIRST_CONTACT_OVERHEAD)?;
    let remote = state.get_remote_static().ok_or(NoiseError::Rejected)?;
    let remote = X25519Public::from_slice(remote).map_err(|_| NoiseError::Rejected)?;
    Ok((payload, remote, finish(state)?))
}

/// Writes an epoch open to the peer's ratchet key `remote`, authenticated by `psk`.
pub fn epoch_open_write(
    psk: &SymmetricKey,
    remote: &X25519Public,
    prologue: &[u8],
    payload: &[u8],
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<(Vec<u8>, Split), NoiseError> {
    let builder = builder(EPOCH_PATTERN, None, rng)?
        .psk(0, psk.as_bytes())
        .and_then(|b| b.remote_public_key(remote.as_bytes()))
        .and_then(|b| b.prologue(prologue))
        .map_err(|_| NoiseError::Setup)?;
    write_one(builder, payload, EPOCH_OPEN_OVERHEAD)
}

/// Reads an epoch open with our ratchet secret `local` and the expected `psk`.
pub fn epoch_open_read(
    psk: &SymmetricKey,
    local: &X25519Secret,
    prologue: &[u8],
    message: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, Split), NoiseError> {
    let builder =
        Builder::with_resolver(params(EPOCH_PATTERN)?, StrictResolver::boxed_with_local(None, local))
            .psk(0, psk.as_bytes())
            .and_then(|b| b.local_private_key(local.as_bytes()))
            .and_then(|b| b.prologue(prologue))
            .map_err(|_| NoiseError::Setup)?;
    let mut state = builder.build_responder().map_err(|_| NoiseError::Setup)?;
    let payload = read_message(&mut state, message, EPOCH_OPEN_OVERHEAD)?;
    Ok((payload, finish(state)?))
}

fn params(pattern: &str) -> Result<snow::params::NoiseParams, NoiseError> {
    pattern.parse().map_err(|_| NoiseError::Setup)
}

fn builder<'a>(
    pattern: &str,
    local: Option<&X25519Secret>,
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<Builder<'a>, NoiseError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut *seed);
    let resolver = match local {
        Some(local) => StrictResolver::boxed_with_local(Some(seed), local),
        None => StrictResolver::boxed(Some(seed)),
    };
    Ok(Builder::with_resolver(params(pattern)?, resolver))
}

fn write_one(builder: Builder<'_>, payload: &[u8], overhead: usize) -> Result<(Vec<u8>, Split), NoiseError> {
    if payload.len() + overhead > MAX_NOISE_MESSAGE {
        return Err(NoiseError::TooLarge);
    }
    let mut state = builder.build_initiator().map_err(|_| NoiseError::Setup)?;
    let mut message = vec![0u8; payload.len() + overhead];
    let len = state.write_message(payload, &mut message).map_err(|_| NoiseError::Rejected)?;
    message.truncate(len);
    Ok((message, finish(state)?))
}

fn read_message(
    state: &mut HandshakeState,
    message: &[u8],
    overhead: usize,
) -> Result<Zeroizing<Vec<u8>>, NoiseError> {
    if message.len() > MAX_NOISE_MESSAGE {
        return Err(NoiseError::TooLarge);
    }
    if message.len() < overhead {
        return Err(NoiseError::Rejected);
    }
    let mut payload = Zeroizing::new(vec![0u8; message.len()]);
    let len = state.read_message(message, &mut payload).map_err(|_| NoiseError::Rejected)?;
    payload.truncate(len);
    Ok(payload)
}

fn finish(mut state: HandshakeState) -> Result<Split, NoiseError> {
    if !state.is_handshake_finished() {
        return Err(NoiseError::Rejected);
    }
    let handshake_hash = kdf::array32_or_zero(state.get_handshake_hash());
    let (k1, k2) = state.dangerously_get_raw_split();
    Ok(Split { handshake_hash, k1: SymmetricKey::from_bytes(k1), k2: SymmetricKey::from_bytes(k2) })
}

/// Seals and opens transport messages with raw keys and explicit nonces.
///
/// snow only creates transport states from finished handshakes, so this runs one throwaway
/// `Noise_N` handshake with fixed, public keys at construction (a few X25519 operations, once per
/// holder) and then installs the real key before each call with `rekey_manually`, resetting it to
/// zeros afterwards so no key lingers inside snow. Replay tracking is the caller's job: snow accepts
/// the same nonce twice.
pub struct TransportCipher {
    sealer: StatelessTransportState,
    opener: StatelessTransportState,
}

impl std::fmt::Debug for TransportCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransportCipher(..)")
    }
}

const TEMPLATE_PATTERN: &str = "Noise_N_25519_ChaChaPoly_BLAKE2s";
const ZERO_KEY: [u8; 32] = [0u8; 32];

impl TransportCipher {
    /// Builds the two transport states (see the type's documentation for the cost).
    pub fn new() -> Result<Self, NoiseError> {
        let responder_secret = X25519Secret::from_bytes([0x42; 32]);
        let responder_public = responder_secret.public();
        let mut init = Builder::with_resolver(
            params(TEMPLATE_PATTERN)?,
            StrictResolver::boxed(Some(Zeroizing::new([0x24; 32]))),
        )
        .remote_public_key(responder_public.as_bytes())
        .and_then(Builder::build_initiator)
        .map_err(|_| NoiseError::Setup)?;
        let mut resp = Builder::with_resolver(params(TEMPLATE_PATTERN)?, StrictResolver::boxed(None))
            .local_private_key(responder_secret.as_bytes())
            .and_then(Builder::build_responder)
            .map_err(|_| NoiseError::Setup)?;
        let mut message = [0u8; 64];
        let len = init.write_message(&[], &mut message).map_err(|_| NoiseError::Setup)?;
        resp.read_message(&message[..len], &mut []).map_err(|_| NoiseError::Setup)?;
        let mut sealer = init.into_stateless_transport_mode().map_err(|_| NoiseError::Setup)?;
        let mut opener = resp.into_stateless_transport_mode().map_err(|_| NoiseError::Setup)?;
        sealer.rekey_initiator_manually(&ZERO_KEY);
        opener.rekey_initiator_manually(&ZERO_KEY);
        Ok(Self { sealer, opener })
    }

    /// Encrypts `plaintext` under `key` with `nonce`; returns ciphertext and tag.
    pub fn seal(&mut self, key: &SymmetricKey, nonce: u64, plaintext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if plaintext.len() > MAX_TRANSPORT_PLAINTEXT {
            return Err(NoiseError::TooLarge);
        }
        let mut out = vec![0u8; plaintext.len() + TAG_LEN];
        self.sealer.rekey_initiator_manually(key.as_bytes());
        let result = self.sealer.write_message(nonce, plaintext, &mut out);
        self.sealer.rekey_initiator_manually(&ZERO_KEY);
        let len = result.map_err(|e| match e {
            snow::Error::State(snow::error::StateProblem::Exhausted) => NoiseError::Exhausted,
            _ => NoiseError::TooLarge,
        })?;
        out.truncate(len);
        Ok(out)
    }

    /// Decrypts and authenticates `ciphertext` under `key` with `nonce`.
    pub fn open(
        &mut self,
        key: &SymmetricKey,
        nonce: u64,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, NoiseError> {
        if ciphertext.len() > MAX_NOISE_MESSAGE {
            return Err(NoiseError::TooLarge);
        }
        if ciphertext.len() < TAG_LEN {
            return Err(NoiseError::Rejected);
        }
        let mut out = Zeroizing::new(vec![0u8; ciphertext.len()]);
        self.opener.rekey_initiator_manually(key.as_bytes());
        let result = self.opener.read_message(nonce, ciphertext, &mut out);
        self.opener.rekey_initiator_manually(&ZERO_KEY);
        let len = result.map_err(|_| NoiseError::Rejected)?;
        out.truncate(len);
        Ok(out)
    }
}

thread_local! {
    /// One transport cipher per thread, built on first use: building one costs a throwaway
    /// handshake, which must not be paid per session or per message.
    static TRANSPORT: std::cell::RefCell<Option<TransportCipher>> = const { std::cell::RefCell::new(None) };
}

fn with_transport<T>(f: impl FnOnce(&mut TransportCipher) -> Result<T, NoiseError>) -> Result<T, NoiseError> {
    TRANSPORT.with(|slot| {
        let mut slot = slot.try_borrow_mut().map_err(|_| NoiseError::Setup)?;
        let cipher = match &mut *slot {
            Some(cipher) => cipher,
            empty => empty.insert(TransportCipher::new()?),
        };
        f(cipher)
    })
}

/// Seals a transport message under `key` with `nonce`, with this thread's [`TransportCipher`].
pub fn seal(key: &SymmetricKey, nonce: u64, plaintext: &[u8]) -> Result<Vec<u8>, NoiseError> {
    with_transport(|cipher| cipher.seal(key, nonce, plaintext))
}

/// Opens a transport message under `key` with `nonce`, with this thread's [`TransportCipher`].
pub fn open(key: &SymmetricKey, nonce: u64, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, NoiseError> {
    with_transport(|cipher| cipher.open(key, nonce, ciphertext))
}

/// snow's resolver with our X25519 and a deterministic RNG seeded by the caller.
///
/// Hashing and the AEAD come from snow's default resolver. Without a seed, the RNG fails every
/// call, so a state that would need randomness (a responder never does) fails instead of using a
/// weak source.
pub struct StrictResolver {
    seed: Option<Zeroizing<[u8; 32]>>,
    local: Option<X25519Secret>,
    default: DefaultResolver,
}

impl std::fmt::Debug for StrictResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StrictResolver(..)")
    }
}

impl StrictResolver {
    /// A resolver whose RNG stream is derived from `seed` (none: no RNG).
    pub fn new(seed: Option<Zeroizing<[u8; 32]>>) -> Self {
        Self { seed, local: None, default: DefaultResolver }
    }

    /// The same, boxed for `snow::Builder::with_resolver`.
    pub fn boxed(seed: Option<Zeroizing<[u8; 32]>>) -> Box<dyn CryptoResolver + Send> {
        Box::new(Self::new(seed))
    }

    /// A resolver that already knows our static key pair, so snow's setup does not recompute the
    /// public key (one fixed-base multiplication saved per handshake).
    fn boxed_with_local(
        seed: Option<Zeroizing<[u8; 32]>>,
        local: &X25519Secret,
    ) -> Box<dyn CryptoResolver + Send> {
        Box::new(Self { seed, local: Some(local.clone()), default: DefaultResolver })
    }
}

impl CryptoResolver for StrictResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(match &self.seed {
            Some(seed) => Box::new(SeededRandom { seed: seed.clone(), counter: 0 }),
            None => Box::new(NoRandom),
        })
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => {
                Some(Box::new(StrictX25519 { known: self.local.clone(), ..Default::default() }))
            }
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        match choice {
            HashChoice::Blake2s => self.default.resolve_hash(choice),
            _ => None,
        }
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            CipherChoice::ChaChaPoly => self.default.resolve_cipher(choice),
            _ => None,
        }
    }
}

/// A keystream of `PRF(seed, counter)` blocks: deterministic given the seed, which the caller
/// draws from its own CSPRNG.
struct SeededRandom {
    seed: Zeroizing<[u8; 32]>,
    counter: u64,
}

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        for chunk in dest.chunks_mut(32) {
            let block = kdf::prf(&self.seed, b"NDR1/noise-rng", &[&self.counter.to_be_bytes()]);
            self.counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }
}

/// The RNG of a resolver without a seed: refuses to produce anything.
struct NoRandom;

impl Random for NoRandom {
    fn try_fill_bytes(&mut self, _dest: &mut [u8]) -> Result<(), snow::Error> {
        Err(snow::Error::Rng)
    }
}

/// X25519 for snow that refuses short keys and all-zero results, and zeroizes on drop.
#[derive(Default)]
struct StrictX25519 {
    secret: Option<X25519Secret>,
    public: [u8; 32],
    /// Our static key pair, if the resolver was told it: `set` with the same private key then
    /// takes the public key from here instead of recomputing it.
    known: Option<X25519Secret>,
}

impl Dh for StrictX25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        32
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, privkey: &[u8]) {
        // snow cannot report an error here; a wrong-length key leaves no key, so `dh` fails.
        self.secret = crate::keys::array32(privkey).ok().map(|bytes| match &self.known {
            Some(known) if bool::from(subtle::ConstantTimeEq::ct_eq(&known.as_bytes()[..], &bytes[..])) => {
                known.clone()
            }
            _ => X25519Secret::from_bytes(bytes),
        });
        self.public = self.secret.as_ref().map(|s| *s.public().as_bytes()).unwrap_or_default();
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(&mut *bytes)?;
        let secret = X25519Secret::from_bytes(*bytes);
        self.public = *secret.public().as_bytes();
        self.secret = Some(secret);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        self.secret.as_ref().map(|s| &s.as_bytes()[..]).unwrap_or(&[])
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let secret = self.secret.as_ref().ok_or(snow::Error::Dh)?;
        // snow hands over its whole key buffer (56 bytes for Curve448's sake); the key is the first
        // 32. Our own API only ever gives snow `[u8; 32]` keys, so lengths are checked there.
        let peer = pubkey.get(..32).and_then(|k| crate::keys::array32(k).ok()).ok_or(snow::Error::Dh)?;
        let shared = secret.diffie_hellman(&peer).map_err(|_| snow::Error::Dh)?;
        out.get_mut(..32).ok_or(snow::Error::Dh)?.copy_from_slice(&*shared);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn first_contact_round_trip() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let alice = X25519Secret::generate(&mut rng);
        let prekey = X25519Secret::generate(&mut rng);
        let (msg, sent) =
            first_contact_write(&alice, &prekey.public(), b"p", b"hello", &mut rng).expect("write");
        assert_eq!(msg.len(), 5 + FIRST_CONTACT_OVERHEAD);
        let (payload, remote, got) = first_contact_read(&prekey, b"p", &msg).expect("read");
        assert_eq!(&payload[..], b"hello");
        assert_eq!(remote, alice.public());
        assert_eq!(sent.handshake_hash, got.handshake_hash);
        assert_eq!(sent.k1, got.k1);
        assert_eq!(sent.k2, got.k2);
        assert_eq!(first_contact_read(&prekey, b"q", &msg).err(), Some(NoiseError::Rejected));
    }

    #[test]
    fn epoch_open_needs_the_psk() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let ratchet = X25519Secret::generate(&mut rng);
        let psk = SymmetricKey::from_bytes([3; 32]);
        let (msg, sent) = epoch_open_write(&psk, &ratchet.public(), b"e", b"x", &mut rng).expect("write");
        assert_eq!(msg.len(), 1 + EPOCH_OPEN_OVERHEAD);
        let (_, got) = epoch_open_read(&psk, &ratchet, b"e", &msg).expect("read");
        assert_eq!(sent.k1, got.k1);
        let wrong = SymmetricKey::from_bytes([4; 32]);
        assert_eq!(epoch_open_read(&wrong, &ratchet, b"e", &msg).err(), Some(NoiseError::Rejected));
    }

    #[test]
    fn small_order_ephemeral_is_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let ratchet = X25519Secret::generate(&mut rng);
        let psk = SymmetricKey::from_bytes([3; 32]);
        let (mut msg, _) = epoch_open_write(&psk, &ratchet.public(), b"e", b"x", &mut rng).expect("write");
        msg[..32].copy_from_slice(&[0u8; 32]);
        assert_eq!(epoch_open_read(&psk, &ratchet, b"e", &msg).err(), Some(NoiseError::Rejected));
    }

    #[test]
    fn transport_cipher_uses_the_given_key_and_nonce() {
        let mut cipher = TransportCipher::new().expect("cipher");
        let key = SymmetricKey::from_bytes([5; 32]);
        let ct = cipher.seal(&key, 3, b"payload").expect("seal");
        assert_eq!(&cipher.open(&key, 3, &ct).expect("open")[..], b"payload");
        assert!(cipher.open(&key, 4, &ct).is_err());
        assert!(cipher.open(&SymmetricKey::from_bytes([6; 32]), 3, &ct).is_err());
        assert_eq!(cipher.seal(&key, u64::MAX, b"x"), Err(NoiseError::Exhausted));
    }
}
