//! Golden vectors for NDR1: fixed keys and randomness in, exact bytes and every intermediate value
//! out, so that an implementation written from `docs/protocol.md` alone can check each step.
//!
//! Three files, each compared line by line with what this test computes; a change to the wire format,
//! a label or the key schedule fails here until the files are regenerated on purpose with
//! `MERPATI_BLESS=1 cargo test -p merpati-proto --test golden`:
//!
//! * `tests/golden/ndr1.txt`: one conversation. Both parties' secret and public keys and signed
//!   objects, Bob's invite, the first contact, epochs 1 to 3, a sub-epoch rollover after 64
//!   messages, envelopes padded to several buckets and epoch 4 carrying a receipt, each control and
//!   a fragment, with each handshake's prologue, payload, ephemeral key, hash and split keys, each
//!   sub-epoch key and nonce, and each decoded frame.
//! * `tests/golden/identity.txt`: a certificate, prekey, bundle and invite from fixed keys, and
//!   safety numbers and fingerprints with their intermediate values.
//! * `tests/golden/wire.txt`: the CBOR of every request, response and refusal of the network
//!   protocols, as libp2p's request-response codec (`cbor4ii`) writes it, and the blob tokens of a
//!   fixed relay.
//!
//! Values are not just copied from the crate: each derived value is recomputed here the way the
//! spec states it (hashes and PRFs with `blake2` directly, transport decryption with the plain
//! ChaCha20-Poly1305 AEAD, signatures checked with `ed25519-dalek`) and asserted equal to what the
//! crate produced through its public API. Handshake hashes and split keys come from re-running the
//! responder's side of each handshake with the published secrets.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

mod common;

use std::convert::Infallible;
use std::fmt::{Display, Write};

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac256, Digest};
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, Payload};
use common::{Party, T0, text};
use ed25519_dalek::{Signature, VerifyingKey};
use merpati_proto::blob::{Content, Descriptor};
use merpati_proto::envelope::{Envelope, HEADER_LEN};
use merpati_proto::fragment;
use merpati_proto::frame::{Body, ContactKeys, Control, Frame, MemberCard, ReceiptKind};
use merpati_proto::group::{Action, Entry, GroupEntries, GroupMessage};
use merpati_proto::identity::{
    Bundle, DeviceCert, IdentityKey, IdentityPublic, LAST_RESORT_ID_BIT, LAST_RESORT_LIFETIME,
    PREKEY_LIFETIME, SafetyNumber, SignedPrekey, fingerprint,
};
use merpati_proto::invite::Invite;
use merpati_proto::kdf::label;
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::mailbox::{self, Announcement, MailboxId, MailboxKey};
use merpati_proto::noise::{self, Split};
use merpati_proto::session::{Incoming, Sealed, Session};
use merpati_proto::wire::{self, Refusal, deliver};
use merpati_proto::{Timestamp, rand_core};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, TryCryptoRng, TryRng};

/// The label that expands a handshake's 32-byte seed into its ephemeral key.
const NOISE_RNG: &[u8] = b"NDR1/noise-rng";

/// The seeded test RNG, recording every draw so that each handshake's seed can be found and
/// published. It only observes: the stream is the one the plain RNG would give.
struct Recorder {
    inner: ChaCha20Rng,
    draws: Vec<Vec<u8>>,
}

impl Recorder {
    fn new(seed: u64) -> Self {
        Self { inner: common::rng(seed), draws: Vec::new() }
    }

    /// The draws since the last call.
    fn take(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.draws)
    }
}

impl TryRng for Recorder {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let v = self.inner.next_u32();
        self.draws.push(v.to_le_bytes().to_vec());
        Ok(v)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let v = self.inner.next_u64();
        self.draws.push(v.to_le_bytes().to_vec());
        Ok(v)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.inner.fill_bytes(dst);
        self.draws.push(dst.to_vec());
        Ok(())
    }
}

impl TryCryptoRng for Recorder {}

/// The vector file being written: `name value` lines and `#` comments.
#[derive(Default)]
struct Vectors(String);

impl Vectors {
    fn hex(&mut self, name: &str, bytes: &[u8]) {
        writeln!(self.0, "{name} {}", hex::encode(bytes)).unwrap();
    }

    fn value(&mut self, name: &str, value: impl Display) {
        writeln!(self.0, "{name} {value}").unwrap();
    }

    fn comment(&mut self, text: &str) {
        writeln!(self.0, "# {text}").unwrap();
    }
}

/// `len32(x) ‖ x` for the label and every part, as the spec's `H` and `PRF` encode their input.
fn encode_input(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in std::iter::once(label).chain(parts.iter().copied()) {
        out.extend_from_slice(&u32::try_from(field.len()).unwrap().to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// A relay's libp2p peer id in binary: the identity multihash of an Ed25519 public key, as the
/// relays' own ids are.
const RELAY_PEER_ID: [u8; 38] = {
    let mut id = [0x33; 38];
    let header = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    let mut i = 0;
    while i < header.len() {
        id[i] = header[i];
        i += 1;
    }
    id
};

/// The spec's `H`: BLAKE2s-256 of the encoded input.
fn h(label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    Blake2s256::digest(encode_input(label, parts)).into()
}

/// The spec's `PRF`: keyed BLAKE2s-256 (RFC 7693 MAC mode) of the encoded input.
fn prf(key: &[u8; 32], label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Blake2sMac256 as KeyInit>::new(key.into());
    mac.update(&encode_input(label, parts));
    mac.finalize_fixed().into()
}

fn prefix16(bytes: &[u8; 32]) -> [u8; 16] {
    bytes[..16].try_into().unwrap()
}

/// Checks an Ed25519 signature by `identity` over `digest` with strict verification.
fn assert_signed(identity: &IdentityPublic, digest: &[u8; 32], signature: &[u8; 64]) {
    let key = VerifyingKey::from_bytes(identity.as_bytes()).unwrap();
    key.verify_strict(digest, &Signature::from_bytes(signature)).unwrap();
}

/// `u8 count ‖ u16 BE each`: the encoded version list.
fn encoded_versions(versions: &[u16]) -> Vec<u8> {
    let mut out = vec![u8::try_from(versions.len()).unwrap()];
    versions.iter().for_each(|v| out.extend_from_slice(&v.to_be_bytes()));
    out
}

/// Writes a certificate, prekey and bundle with the digests their signatures cover.
fn signed_objects(out: &mut Vectors, name: &str, cert: &DeviceCert, prekey: &SignedPrekey, bundle: &Bundle) {
    let created = cert.created_at.millis().to_be_bytes();
    let cert_digest =
        h(label::DEVICE_CERT, &[cert.identity.as_bytes(), cert.device_static.as_bytes(), &created]);
    assert_signed(&cert.identity, &cert_digest, &cert.signature);
    let device_id = prefix16(&h(label::DEVICE_ID, &[cert.device_static.as_bytes()]));
    assert_eq!(&device_id, cert.device_id().as_bytes());
    out.hex(&format!("{name}.device_id"), &device_id);
    out.value(&format!("{name}.cert.created_at"), cert.created_at.millis());
    out.hex(&format!("{name}.cert.digest"), &cert_digest);
    out.hex(&format!("{name}.cert"), &cert.to_bytes());

    prekey_lines(out, &format!("{name}.prekey"), &format!("{name}.signed_prekey"), cert, prekey);

    let versions = encoded_versions(&bundle.versions);
    let versions_hash = h(label::VERSIONS, &[&versions]);
    assert_eq!(versions_hash, bundle.versions_hash());
    let bundle_digest = h(label::BUNDLE, &[&cert.to_bytes(), &prekey.to_bytes(), &versions]);
    assert_signed(&cert.identity, &bundle_digest, &bundle.signature);
    out.hex(&format!("{name}.versions"), &versions);
    out.hex(&format!("{name}.versions_hash"), &versions_hash);
    out.hex(&format!("{name}.bundle.digest"), &bundle_digest);
    out.hex(&format!("{name}.bundle"), &bundle.to_bytes());
}

/// Writes a signed prekey of `cert`'s device: id, times, signed digest (`{name}.*`) and its
/// binary form (`{bytes_name}`).
fn prekey_lines(out: &mut Vectors, name: &str, bytes_name: &str, cert: &DeviceCert, prekey: &SignedPrekey) {
    let (id, created, expires) = (
        prekey.id.to_be_bytes(),
        prekey.created_at.millis().to_be_bytes(),
        prekey.expires_at.millis().to_be_bytes(),
    );
    let device_id = cert.device_id();
    let prekey_digest = h(
        label::PREKEY,
        &[cert.identity.as_bytes(), device_id.as_bytes(), &id, prekey.public.as_bytes(), &created, &expires],
    );
    assert_signed(&cert.identity, &prekey_digest, &prekey.signature);
    out.value(&format!("{name}.id"), prekey.id);
    out.value(&format!("{name}.created_at"), prekey.created_at.millis());
    out.value(&format!("{name}.expires_at"), prekey.expires_at.millis());
    out.hex(&format!("{name}.digest"), &prekey_digest);
    out.hex(bytes_name, &prekey.to_bytes());
}

/// A last-resort prekey for `identity`'s device `cert` from a fixed secret, valid from `now`;
/// writes its secret, public key and signed form under `{name}.last_resort`.
fn last_resort(
    out: &mut Vectors,
    name: &str,
    identity: &IdentityKey,
    cert: &DeviceCert,
    secret: [u8; 32],
    now: Timestamp,
) -> SignedPrekey {
    let secret = X25519Secret::from_bytes(secret);
    let prekey = SignedPrekey::issue(
        identity,
        &cert.device_id(),
        LAST_RESORT_ID_BIT | 1,
        &secret.public(),
        now,
        now.plus(LAST_RESORT_LIFETIME),
    );
    out.hex(&format!("{name}.last_resort.secret"), secret.as_bytes());
    out.hex(&format!("{name}.last_resort.public"), prekey.public.as_bytes());
    prekey_lines(out, &format!("{name}.last_resort"), &format!("{name}.signed_last_resort"), cert, &prekey);
    prekey
}

/// Writes an invite: its signed digest, binary form, checksum and text form.
fn invite_lines(out: &mut Vectors, name: &str, invite: &Invite) {
    let bytes = invite.to_bytes();
    let (body, signature) = bytes.split_at(bytes.len() - 64);
    let digest = h(label::INVITE, &[body]);
    assert_signed(invite.identity(), &digest, &signature.try_into().unwrap());
    let checksum = &h(label::INVITE_CHECKSUM, &[&bytes])[..4];
    let text = format!("MERPATI1:{}", data_encoding::BASE32_NOPAD.encode(&[&bytes[..], checksum].concat()));
    assert_eq!(text, invite.to_text());
    out.hex(&format!("{name}.digest"), &digest);
    out.hex(name, &bytes);
    out.hex(&format!("{name}.checksum"), checksum);
    out.value(&format!("{name}.text"), text);
}

/// Writes a party's keys, signed objects and first-contact inbox.
fn party_lines(out: &mut Vectors, name: &str, p: &Party) {
    let prekey = p.prekeys.current();
    out.hex(&format!("{name}.identity.seed"), &p.identity.to_bytes()[..]);
    out.hex(&format!("{name}.identity"), p.cert.identity.as_bytes());
    out.hex(&format!("{name}.device_static.secret"), p.device_static.as_bytes());
    out.hex(&format!("{name}.device_static"), p.device_static.public().as_bytes());
    out.hex(&format!("{name}.prekey.secret"), p.prekeys.secret_for(prekey.id, T0).unwrap().as_bytes());
    out.hex(&format!("{name}.prekey"), prekey.public.as_bytes());
    signed_objects(out, name, &p.cert, prekey, &p.bundle);
    let key = mailbox_public(&p.inbox_secret, 0);
    let inbox = prefix16(&h(label::MAILBOX, &[&key]));
    assert_eq!(MailboxId(inbox), p.inbox());
    out.hex(&format!("{name}.inbox.secret"), p.inbox_secret.as_bytes());
    out.hex(&format!("{name}.inbox.mailbox_key"), &key);
    out.hex(&format!("{name}.inbox"), &inbox);
}

/// The public half of `day`'s mailbox key of `secret`, computed as the spec says: the Ed25519
/// key whose seed is `PRF(secret, "NDR1/mailbox-key" ‖ day)`.
fn mailbox_public(secret: &SymmetricKey, day: u64) -> [u8; 32] {
    let seed = prf(secret.as_bytes(), label::MAILBOX_KEY, &[&day.to_be_bytes()]);
    ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes()
}

/// Writes a mailbox secret and the announcement it gives at `T0`, recomputed from the secret;
/// returns the announcement's encoding.
fn announcement_lines(
    out: &mut Vectors,
    name: &str,
    secret: &SymmetricKey,
    announced: &Announcement,
) -> Vec<u8> {
    let first_day = T0.day();
    let mut encoded = first_day.to_be_bytes().to_vec();
    encoded.push(14);
    for day in first_day..first_day + 14 {
        encoded.extend_from_slice(&h(label::MAILBOX, &[&mailbox_public(secret, day)])[..16]);
    }
    assert_eq!(announced.first_day, first_day);
    let ids: Vec<u8> = announced.ids.iter().flat_map(|id| id.0).collect();
    assert_eq!(&encoded[9..], &ids[..]);
    out.hex(&format!("{name}.mailbox_secret"), secret.as_bytes());
    out.value(&format!("{name}.announcement.first_day"), first_day);
    out.hex(&format!("{name}.announcement"), &encoded);
    encoded
}

/// Writes a finished handshake: prologue, payload, the ephemeral key (found among the draws of
/// the call that made it, as `PRF(seed, "NDR1/noise-rng", 0 as u64)`), hash and split keys.
fn handshake_lines(
    out: &mut Vectors,
    name: &str,
    (prologue, payload, message): (&[u8], &[u8], &[u8]),
    split: &Split,
    draws: &[Vec<u8>],
) {
    let ephemeral =
        |seed: &[u8]| X25519Secret::from_bytes(prf(seed.try_into().unwrap(), NOISE_RNG, &[&[0; 8]]));
    let seed = draws
        .iter()
        .filter(|d| d.len() == 32)
        .find(|d| ephemeral(d).public().as_bytes() == &message[..32])
        .expect("the ephemeral key is the PRF output of one of the call's 32-byte draws");
    let e = ephemeral(seed);
    out.hex(&format!("{name}.prologue"), prologue);
    out.hex(&format!("{name}.payload"), payload);
    out.hex(&format!("{name}.noise_seed"), seed);
    out.hex(&format!("{name}.ephemeral.secret"), e.as_bytes());
    out.hex(&format!("{name}.ephemeral"), e.public().as_bytes());
    out.hex(&format!("{name}.handshake_hash"), &split.handshake_hash);
    out.hex(&format!("{name}.k1"), split.k1.as_bytes());
    out.hex(&format!("{name}.k2"), split.k2.as_bytes());
}

/// How a text body is shown: short texts quoted, long runs of one character as `"x" × n`.
fn show_text(text: &str) -> String {
    match text.chars().next() {
        Some(c) if text.len() > 40 && text.chars().all(|x| x == c) => {
            format!("{:?} × {}", c.to_string(), text.len())
        }
        _ => format!("{text:?}"),
    }
}

/// Writes an envelope (the two lines the first version of this file had), then its sub-epoch key,
/// nonce, and the frame inside, decrypted with the plain AEAD and empty associated data.
fn envelope_lines(out: &mut Vectors, name: &str, sealed: &Sealed, key: &SymmetricKey, got: &Incoming) {
    let envelope = Envelope::decode(&sealed.envelope).unwrap();
    let header = envelope.header;
    out.value(
        &format!("{name}.header"),
        format_args!(
            "epoch={} sub={} index={} len={}",
            header.epoch,
            header.sub_epoch,
            header.index,
            sealed.envelope.len()
        ),
    );
    out.hex(name, &sealed.envelope);

    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&u64::from(header.index).to_le_bytes());
    let aead = <ChaCha20Poly1305 as chacha20poly1305::KeyInit>::new(key.as_bytes().into());
    let plaintext = aead
        .decrypt(&nonce.into(), Payload { msg: &envelope.ciphertext, aad: &[] })
        .expect("plain AEAD opens it");
    let frame = Frame::decode(&plaintext).unwrap();
    assert_eq!(&frame.header_echo[..], &sealed.envelope[..HEADER_LEN]);
    let unpadded = frame.unpadded_len();
    assert!(plaintext[unpadded..].iter().all(|&b| b == 0));
    assert_eq!((frame.seq, frame.message_id, &frame.body), (got.seq, got.message_id, &got.body));
    let body_len = frame.body.encoded_len();
    out.hex(&format!("{name}.key"), key.as_bytes());
    out.hex(&format!("{name}.nonce"), &nonce);
    out.hex(&format!("{name}.frame"), &plaintext[..unpadded]);
    out.value(
        &format!("{name}.frame.fields"),
        format_args!(
            "message_id={} seq={} sent_at={} ack_epoch={} body_type={} body_len={body_len} padding={}",
            hex::encode(frame.message_id.0),
            frame.seq,
            frame.sent_at.millis(),
            frame.ack_epoch.map_or("none".to_owned(), |e| e.to_string()),
            plaintext[FRAME_BODY_TYPE_AT],
            plaintext.len() - unpadded
        ),
    );
    match &frame.body {
        Body::Text(body) => out.value(&format!("{name}.frame.text"), show_text(body)),
        body => {
            out.hex(&format!("{name}.frame.body"), &plaintext[unpadded - body_len..unpadded]);
            out.value(&format!("{name}.frame.body.fields"), show_body(body));
        }
    }
}

/// The offset of `body_type` in a frame: after the echo, id, seq, time and ack.
const FRAME_BODY_TYPE_AT: usize = HEADER_LEN + 16 + 8 + 8 + 4;

/// The decoded fields of a body, as the vector file shows them.
fn show_body(body: &Body) -> String {
    let list = |items: &[Vec<u8>]| items.iter().map(hex::encode).collect::<Vec<_>>().join(",");
    match body {
        Body::Text(text) => show_text(text),
        Body::Receipt { kind, ids } => format!(
            "receipt kind={} ids={}",
            *kind as u8,
            ids.iter().map(|id| hex::encode(id.0)).collect::<Vec<_>>().join(",")
        ),
        Body::Control(Control::MailboxRotation(a)) => {
            format!("mailbox_rotation first_day={} count={}", a.first_day, a.ids.len())
        }
        Body::Control(Control::RelayHints(hints)) => format!("relay_hints addrs={}", list(hints)),
        Body::Control(Control::NodeInfo { peer_id, addrs }) => {
            format!("node_info peer_id={} addrs={}", hex::encode(peer_id), list(addrs))
        }
        Body::Control(Control::DisplayName(name)) => format!("display_name name={}", hex::encode(name)),
        Body::Control(Control::Restored { at }) => format!("restored at={}", at.0),
        Body::Control(Control::Keys(keys)) => format!(
            "keys bundle={} inbox={} last_resort={}",
            hex::encode(keys.bundle.to_bytes()),
            hex::encode(keys.inbox.0),
            keys.last_resort.as_ref().map_or("none".to_owned(), |p| hex::encode(p.to_bytes()))
        ),
        Body::Control(Control::GroupEntries(g)) => format!(
            "group_entries group={} entries={}",
            hex::encode(g.group.0),
            g.entries.iter().map(|e| hex::encode(e.to_bytes())).collect::<Vec<_>>().join(",")
        ),
        Body::Control(Control::GroupCards { group, cards }) => format!(
            "group_cards group={} cards={}",
            hex::encode(group.0),
            cards
                .iter()
                .map(|c| format!(
                    "(identity={} inbox={} peer_id={} addrs={} relays={})",
                    hex::encode(c.keys.bundle.identity().as_bytes()),
                    hex::encode(c.keys.inbox.0),
                    hex::encode(&c.peer_id),
                    list(&c.addrs),
                    list(&c.relays)
                ))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Body::Group(m) => format!(
            "group group={} sender_seq={} log_n={} heads={} inner=({})",
            hex::encode(m.group.0),
            m.sender_seq,
            m.log_n,
            hex::encode(m.heads),
            show_body(&m.inner)
        ),
        Body::Fragment(f) => format!(
            "fragment group={} content={} index={} count={} total_len={} chunk_len={}",
            hex::encode(f.group),
            f.content,
            f.index,
            f.count,
            f.total_len,
            f.chunk.len()
        ),
        Body::File(file) => {
            let content = match &file.content {
                Content::Inline(data) => format!("inline data_len={}", data.len()),
                Content::Blob { count, .. } => format!("blob count={count}"),
            };
            format!(
                "file len={} hash={} media_type={} name={} caption={} {content}",
                file.len,
                hex::encode(file.hash),
                file.media_type,
                hex::encode(&file.name),
                hex::encode(&file.caption)
            )
        }
    }
}

/// The sending sub-epoch key a session used for its last envelope.
fn send_key(session: &Session) -> SymmetricKey {
    session.state().send.as_ref().unwrap().key.clone()
}

/// The epoch open a session attaches to its current sending epoch.
fn send_open(session: &Session) -> Vec<u8> {
    session.state().send.as_ref().unwrap().open.clone()
}

/// Writes the digest by which `receiver`, which just accepted `open`, recognises it again.
fn open_digest_line(out: &mut Vectors, name: &str, open: &[u8], receiver: &Session) {
    let digest = h(label::OPEN_DIGEST, &[open]);
    assert_eq!(receiver.state().recv.last().unwrap().open_digest, digest);
    out.hex(&format!("{name}.open_digest"), &digest);
}

/// `len8(label) ‖ session_id ‖ epoch (u32)`: the prologue of an epoch open.
fn epoch_prologue(session: &Session, epoch: u32) -> Vec<u8> {
    [&[u8::try_from(label::EPOCH.len()).unwrap()][..], label::EPOCH, &session.id().0, &epoch.to_be_bytes()]
        .concat()
}

/// Writes epoch `epoch`, opened by `opener` towards `peer`: the opener's new ratchet key and
/// mailboxes, the `Noise_Npsk0` handshake (re-run on the peer's side with its ratchet secret and
/// the previous root key), then the first envelope of the epoch as the peer opens it.
fn epoch_lines(
    out: &mut Vectors,
    rng: &mut Recorder,
    (opener, peer): (&mut Session, &mut Session),
    (epoch, name, who, body): (u32, &str, &str, Body),
) {
    let psk = peer.state().root.clone();
    let target = peer.state().my_ratchet.clone().unwrap();
    rng.take();
    let sealed = opener.seal(&body, T0, rng).unwrap();
    let draws = rng.take();
    let open = send_open(opener);
    let prologue = epoch_prologue(opener, epoch);
    let (payload, split) = noise::epoch_open_read(&psk, &target, &prologue, &open).unwrap();
    let state = opener.state();
    let ratchet = state.my_ratchet.as_ref().unwrap();
    let announcement =
        announcement_lines(out, &format!("{name}.{who}"), &state.my_mailbox_secret, &state.my_mailboxes);
    assert_eq!(&payload[..], &[ratchet.public().as_bytes(), &announcement[..]].concat()[..]);
    assert_eq!(split.k1, send_key(opener));
    assert_eq!(prf(split.k2.as_bytes(), label::ROOT, &[]), *state.root.as_bytes());
    out.hex(&format!("{name}.{who}.ratchet.secret"), ratchet.as_bytes());
    out.hex(&format!("{name}.{who}.ratchet"), ratchet.public().as_bytes());
    out.hex(&format!("{name}.psk"), psk.as_bytes());
    out.hex(&format!("{name}.target"), target.public().as_bytes());
    out.hex(&format!("{name}.target.secret"), target.as_bytes());
    handshake_lines(out, name, (&prologue, &payload, &open), &split, &draws);
    out.hex(&format!("{name}.open"), &open);
    let got = peer.open(&sealed.envelope, T0).unwrap();
    open_digest_line(out, name, &open, peer);
    envelope_lines(out, name, &sealed, &split.k1, &got);
    out.hex(&format!("root.after_{name}"), peer.state().root.as_bytes());
    assert_eq!(opener.state().root, peer.state().root);
}

fn ndr1_transcript() -> String {
    let mut rng = Recorder::new(0x4e44_5231);
    let alice = Party::new(&mut rng, T0);
    let bob = Party::new(&mut rng, T0);
    let mut out = Vectors::default();
    out.comment("NDR1 golden vectors: one conversation between Alice (initiator) and Bob (responder).");
    out.comment("Generated by `MERPATI_BLESS=1 cargo test -p merpati-proto --test golden`; checked by");
    out.comment("`cargo test`. Each line is `name value`; byte strings are lowercase hex, integers decimal.");
    out.comment("docs/protocol.md §13 explains every name. Clock: every step happens at `now` below.");
    out.value("now", T0.millis());
    party_lines(&mut out, "alice", &alice);
    party_lines(&mut out, "bob", &bob);

    // Bob's invite (what Alice scanned), and the numbers the two compare. Its last-resort prekey
    // comes from a fixed secret, so the conversation's randomness is the same with or without it.
    let bob_last_resort = last_resort(&mut out, "bob", &bob.identity, &bob.cert, [5; 32], T0);
    let invite = Invite::new(
        &bob.identity,
        bob.bundle.clone(),
        bob_last_resort.clone(),
        bob.inbox(),
        vec![(0..40).collect()],
        (100..138).collect(),
        vec![vec![4; 11]],
        Some("Bob".into()),
        T0,
    )
    .unwrap();
    invite_lines(&mut out, "bob.invite", &invite);
    out.value("safety_number", SafetyNumber::new(&alice.cert.identity, &bob.cert.identity));
    out.value("alice.fingerprint", fingerprint(&alice.cert.identity));
    out.value("bob.fingerprint", fingerprint(&bob.cert.identity));

    // Epoch 0: Alice's first contact to Bob's prekey, re-run here on Bob's side.
    rng.take();
    let mut a = alice.initiate(&bob, T0, &mut rng);
    let first = a.seal(&text("first contact"), T0, &mut rng).unwrap();
    let draws = rng.take();
    let open = send_open(&a);
    let (spk_id, message) = open.split_at(4);
    assert_eq!(spk_id, &bob.prekeys.current().id.to_be_bytes());
    let prologue = [
        &[u8::try_from(label::FIRST_CONTACT.len()).unwrap()][..],
        label::FIRST_CONTACT,
        bob.cert.identity.as_bytes(),
        bob.cert.device_id().as_bytes(),
        spk_id,
        &bob.bundle.versions_hash(),
    ]
    .concat();
    let prekey_secret = bob.prekeys.secret_for(1, T0).unwrap();
    let (payload, sender, split) = noise::first_contact_read(prekey_secret, &prologue, message).unwrap();
    assert_eq!(sender, alice.device_static.public());
    let ratchet = a.state().my_ratchet.clone().unwrap();
    let announcement =
        announcement_lines(&mut out, "epoch0.alice", &a.state().my_mailbox_secret, &a.state().my_mailboxes);
    assert_eq!(
        &payload[..],
        &[&alice.cert.to_bytes()[..], ratchet.public().as_bytes(), &announcement].concat()[..]
    );
    out.hex("epoch0.alice.ratchet.secret", ratchet.as_bytes());
    out.hex("epoch0.alice.ratchet", ratchet.public().as_bytes());
    handshake_lines(&mut out, "epoch0", (&prologue, &payload, message), &split, &draws);
    out.hex("epoch0.open", &open);
    let (mut b, got_first) = Session::accept(bob.responder(), &first.envelope, T0, &mut rng).unwrap();
    assert_eq!(split.k1, send_key(&a));
    open_digest_line(&mut out, "epoch0", &open, &b);
    envelope_lines(&mut out, "epoch0.first_contact", &first, &split.k1, &got_first);
    let session_id = prefix16(&h(label::SESSION_ID, &[&split.handshake_hash]));
    assert_eq!((session_id, b.id()), (a.id().0, a.id()));
    out.hex("session_id", &session_id);
    let root = prf(split.k2.as_bytes(), label::ROOT, &[]);
    assert_eq!((&root, &root), (a.state().root.as_bytes(), b.state().root.as_bytes()));
    out.hex("root.after_epoch0", &root);

    epoch_lines(&mut out, &mut rng, (&mut b, &mut a), (1, "epoch1", "bob", text("epoch one")));
    epoch_lines(&mut out, &mut rng, (&mut a, &mut b), (2, "epoch2", "alice", text("epoch two")));
    epoch_lines(&mut out, &mut rng, (&mut b, &mut a), (3, "epoch3", "bob", text("epoch three")));

    // B sends 64 more messages in epoch 3: the 64th is the first of sub-epoch 1.
    let sub0 = send_key(&b);
    let mut last = None;
    for i in 1..65 {
        let m = b.seal(&text(&format!("message {i}")), T0, &mut rng).unwrap();
        let got = a.open(&m.envelope, T0).unwrap();
        last = Some((m, got));
    }
    let (rollover, got) = last.unwrap();
    let sub1 = send_key(&b);
    assert_eq!(prf(sub0.as_bytes(), label::SUB, &[]), *sub1.as_bytes());
    envelope_lines(&mut out, "epoch3.rollover", &rollover, &sub1, &got);

    for (name, len) in [("pad.512", 1), ("pad.1k", 600), ("pad.2k", 1500), ("pad.16k", 12_000)] {
        let m = b.seal(&Body::Text("x".repeat(len)), T0, &mut rng).unwrap();
        let got = a.open(&m.envelope, T0).unwrap();
        envelope_lines(&mut out, name, &m, &send_key(&b), &got);
    }

    // Epoch 4: Alice answers with every other body type, the first of them opening the epoch.
    let receipt =
        Body::Receipt { kind: ReceiptKind::Read, ids: vec![got_first.message_id, rollover.message_id] };
    epoch_lines(&mut out, &mut rng, (&mut a, &mut b), (4, "epoch4", "alice", receipt));
    let rotation = Body::Control(Control::MailboxRotation(a.my_mailboxes().clone()));
    let hints = Body::Control(Control::RelayHints(vec![(0..40).collect(), vec![0x29; 23]]));
    let node = Body::Control(Control::NodeInfo { peer_id: (100..138).collect(), addrs: vec![vec![4; 11]] });
    // The second fragment of a 49 200-byte text: 48 bytes after the first fragment's 49 152.
    let data: Vec<u8> = (0..49_200u32).map(|i| b"abcdefghijklmnopqrstuvwxyz"[(i % 26) as usize]).collect();
    let fragments = fragment::split(fragment::CONTENT_TEXT, &data, [0x66; 16]).unwrap();
    let second = Body::Fragment(fragments[1].clone());
    for (name, body) in [
        ("control.rotation", rotation),
        ("control.hints", hints),
        ("control.node", node),
        ("fragment", second),
        // Last, so the vectors above stay as they were before display names existed.
        ("control.display_name", Body::Control(Control::DisplayName("Sari Wulandari".into()))),
        // After it, for the same reason: a small file inside its description.
        ("file", Body::File(small_file())),
        // And after that, a restore notice and a device's keys (Bob's, as his invite has them).
        ("control.restored", Body::Control(Control::Restored { at: T0 })),
        (
            "control.keys",
            Body::Control(Control::Keys(Box::new(ContactKeys {
                bundle: bob.bundle.clone(),
                inbox: MailboxId([0x42; 16]),
                last_resort: Some(bob_last_resort.clone()),
            }))),
        ),
        // Then a group's first two entries and a text to the group (protocol §15).
        ("control.group_entries", Body::Control(Control::GroupEntries(group_entries()))),
        (
            "group.text",
            Body::Group(Box::new(GroupMessage {
                group: group_entries().group,
                sender_seq: 1,
                log_n: 1,
                heads: merpati_proto::group::heads_digest(&[group_entries().entries[1].hash()]),
                inner: text("selamat pagi"),
            })),
        ),
        // And a member's card, as an admin passes it on (Bob's keys, node and relay).
        (
            "control.group_cards",
            Body::Control(Control::GroupCards {
                group: group_entries().group,
                cards: vec![MemberCard {
                    keys: ContactKeys {
                        bundle: bob.bundle.clone(),
                        inbox: MailboxId([0x42; 16]),
                        last_resort: Some(bob_last_resort.clone()),
                    },
                    peer_id: (100..138).collect(),
                    addrs: vec![vec![4; 11]],
                    relays: vec![(0..40).collect()],
                }],
            }),
        ),
    ] {
        let m = a.seal(&body, T0, &mut rng).unwrap();
        let got = b.open(&m.envelope, T0).unwrap();
        envelope_lines(&mut out, name, &m, &send_key(&a), &got);
    }
    out.0
}

/// The genesis and first `Add` of `group_vectors`' group.
fn group_entries() -> GroupEntries {
    let owner = IdentityKey::from_bytes(&[1; 32]);
    let member = IdentityKey::from_bytes(&[2; 32]);
    let (group, genesis) = Entry::genesis(&owner, "Pasar Minggu", [0x5a; 16], T0).unwrap();
    let add = Action::Add { member: member.public(), name: "Sari".into() };
    let entry = Entry::sign(&owner, group, 1, vec![genesis.hash()], T0, add).unwrap();
    GroupEntries { group, entries: vec![genesis, entry] }
}

/// A 300-byte file inside its description, whose hash the vector file checks against `H`.
fn small_file() -> Descriptor {
    let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 256) as u8).collect();
    let hash = h(label::BLOB_HASH, &[&data]);
    Descriptor {
        len: 300,
        hash,
        media_type: "audio/ogg".into(),
        name: "catatan suara.ogg".into(),
        caption: "dengar ini".into(),
        thumbnail: Vec::new(),
        content: Content::Inline(zeroize::Zeroizing::new(data)),
    }
}

/// A group's genesis by the identity of seed 01…01 and its `Add` of the identity of seed 02…02
/// (protocol §15.1): each entry's bytes, signed digest (checked here against the layout written
/// out field by field) and hash, and the group's id.
fn group_vectors(out: &mut Vectors, owner: &IdentityKey, member: &IdentityKey, now: Timestamp) {
    let (group_id, genesis) = Entry::genesis(owner, "Pasar Minggu", [0x5a; 16], now).unwrap();
    let author = owner.public();
    let mut create = vec![1, 12];
    create.extend_from_slice(b"Pasar Minggu");
    create.extend_from_slice(&[0x5a; 16]);
    let genesis_parts: [&[u8]; 6] =
        [&[0; 16], &0u32.to_be_bytes(), &[], author.as_bytes(), &now.0.to_be_bytes(), &create];
    assert_signed(&author, &h(label::GROUP_ENTRY, &genesis_parts), &genesis.signature);
    let bytes = genesis.to_bytes();
    assert_eq!(group_id.0, prefix16(&h(label::GROUP_ID, &[&bytes])));
    out.hex("group.genesis", &bytes);
    out.hex("group.genesis.hash", &h(label::GROUP_ENTRY_HASH, &[&bytes]));
    out.hex("group.id", &group_id.0);

    let parent = genesis.hash();
    let add = Action::Add { member: member.public(), name: "Sari".into() };
    let entry = Entry::sign(owner, group_id, 1, vec![parent], now, add).unwrap();
    let mut action = vec![2];
    action.extend_from_slice(member.public().as_bytes());
    action.push(4);
    action.extend_from_slice(b"Sari");
    let parts: [&[u8]; 6] =
        [&group_id.0, &1u32.to_be_bytes(), &parent.0, author.as_bytes(), &now.0.to_be_bytes(), &action];
    assert_signed(&author, &h(label::GROUP_ENTRY, &parts), &entry.signature);
    out.hex("group.add", &entry.to_bytes());
    out.hex("group.add.hash", &entry.hash().0);

    // A group message's id at every member, and the digest of a log's heads (§15.3).
    let seq = 7u64;
    let id = merpati_proto::group::message_id(group_id, &member.public(), seq);
    let sari = member.public();
    let parts: [&[u8]; 3] = [&group_id.0, sari.as_bytes(), &seq.to_be_bytes()];
    assert_eq!(id.0, prefix16(&h(label::GROUP_MESSAGE, &parts)));
    out.hex("group.message_id.sari.7", &id.0);
    let heads = [entry.hash(), parent];
    let mut sorted = [parent.0, entry.hash().0];
    sorted.sort();
    let digest = merpati_proto::group::heads_digest(&heads);
    assert_eq!(digest, prefix16(&h(label::GROUP_HEADS, &[&sorted.concat()])));
    out.hex("group.heads_digest", &digest);
}

/// The certificate, prekey, bundle and invite of `tests/identity_invite.rs`'s golden invite (whose
/// text an independent implementation produced), then safety numbers and fingerprints.
fn identity_vectors() -> String {
    let now = Timestamp(1_750_000_000_000);
    let mut out = Vectors::default();
    out.comment("Identity vectors: fixed keys in, signed objects, an invite, safety numbers out.");
    out.comment("Generated by `MERPATI_BLESS=1 cargo test -p merpati-proto --test golden`; checked by");
    out.comment("`cargo test`. Each line is `name value`; byte strings are lowercase hex, integers decimal.");
    out.value("now", now.millis());
    let identity = IdentityKey::from_bytes(&[1; 32]);
    let device_static = X25519Secret::from_bytes([2; 32]);
    let prekey_secret = X25519Secret::from_bytes([3; 32]);
    out.hex("identity.seed", &identity.to_bytes()[..]);
    out.hex("identity", identity.public().as_bytes());
    out.hex("device_static.secret", device_static.as_bytes());
    out.hex("device_static", device_static.public().as_bytes());
    out.hex("prekey.secret", prekey_secret.as_bytes());
    out.hex("prekey", prekey_secret.public().as_bytes());
    let cert = DeviceCert::issue(&identity, &device_static.public(), now);
    let prekey = SignedPrekey::issue(
        &identity,
        &cert.device_id(),
        1,
        &prekey_secret.public(),
        now,
        now.plus(PREKEY_LIFETIME),
    );
    let bundle = Bundle::new(&identity, cert.clone(), prekey.clone(), vec![1]).unwrap();
    signed_objects(&mut out, "identity", &cert, &prekey, &bundle);
    let last_resort = last_resort(&mut out, "identity", &identity, &cert, [4; 32], now);
    let invite = Invite::new(
        &identity,
        bundle,
        last_resort,
        MailboxId([7; 16]),
        vec![(0..40).collect()],
        (100..138).collect(),
        vec![vec![4; 11], vec![0x29; 23]],
        Some("Alice".into()),
        now,
    )
    .unwrap();
    out.hex("invite.inbox", invite.inbox.as_bytes());
    out.hex("invite.relay", &invite.relays[0]);
    out.hex("invite.peer_id", &invite.peer_id);
    out.hex("invite.addr", &invite.addrs[0]);
    out.hex("invite.addr", &invite.addrs[1]);
    out.value("invite.name", "Alice");
    invite_lines(&mut out, "invite", &invite);

    // Safety numbers: identities from seeds 01…01 and 02…02, then the pair with their order swapped
    // (seed 03…03 sorts before 01…01), each with its sorted keys and hash stream.
    let keys: Vec<IdentityPublic> =
        [[1u8; 32], [2; 32], [3; 32]].iter().map(|s| IdentityKey::from_bytes(s).public()).collect();
    for (i, key) in keys.iter().enumerate() {
        let digest = h(label::FINGERPRINT, &[key.as_bytes()]);
        let groups: Vec<String> = digest[..16].chunks(2).map(hex::encode).collect();
        assert_eq!(groups.join(" "), fingerprint(key));
        out.hex(&format!("fingerprint{}.identity", i + 1), key.as_bytes());
        out.value(&format!("fingerprint{}", i + 1), fingerprint(key));
    }
    for (name, x, y) in [("safety12", &keys[0], &keys[1]), ("safety31", &keys[2], &keys[0])] {
        let (low, high) = if x.as_bytes() <= y.as_bytes() { (x, y) } else { (y, x) };
        let stream: Vec<u8> = (0u8..2)
            .flat_map(|c| h(label::SAFETY_NUMBER, &[&[c], low.as_bytes(), high.as_bytes()]))
            .collect();
        let digits: Vec<String> = stream[..60]
            .chunks(5)
            .map(|g| format!("{:05}", g.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)) % 100_000))
            .collect();
        let number = SafetyNumber::new(x, y).to_string();
        assert_eq!(digits.join(" "), number);
        assert_eq!(number, SafetyNumber::new(y, x).to_string());
        out.hex(&format!("{name}.low"), low.as_bytes());
        out.hex(&format!("{name}.high"), high.as_bytes());
        out.hex(&format!("{name}.stream"), &stream);
        out.value(name, number);
    }
    group_vectors(&mut out, &identity, &IdentityKey::from_bytes(&[2; 32]), now);
    out.0
}

/// CBOR diagnostic notation (RFC 8949 §8) of the item at `*at`, for the kinds the wire types use:
/// unsigned integers, byte and text strings, arrays, maps and the simple values. Written here from
/// the bytes, so the vector file shows the shapes the spec describes without trusting the encoder.
fn diagnostic(bytes: &[u8], at: &mut usize) -> String {
    let initial = bytes[*at];
    *at += 1;
    let (major, info) = (initial >> 5, initial & 0x1f);
    let arg = match info {
        0..=23 => u64::from(info),
        24..=27 => {
            let len = 1usize << (info - 24);
            let value = bytes[*at..*at + len].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            *at += len;
            value
        }
        _ => panic!("indefinite lengths and floats are not used"),
    };
    let len = usize::try_from(arg).unwrap();
    let take = |at: &mut usize| {
        let slice = &bytes[*at..*at + len];
        *at += len;
        slice
    };
    match (major, info) {
        (0, _) => arg.to_string(),
        (2, _) => format!("h'{}'", hex::encode(take(at))),
        (3, _) => format!("{:?}", std::str::from_utf8(take(at)).unwrap()),
        (4, _) => format!("[{}]", (0..len).map(|_| diagnostic(bytes, at)).collect::<Vec<_>>().join(", ")),
        (5, _) => {
            let entries: Vec<String> =
                (0..len).map(|_| format!("{}: {}", diagnostic(bytes, at), diagnostic(bytes, at))).collect();
            format!("{{{}}}", entries.join(", "))
        }
        (7, 20) => "false".into(),
        (7, 21) => "true".into(),
        (7, 22) => "null".into(),
        _ => panic!("CBOR major type {major} is not used"),
    }
}

/// Writes one message's CBOR encoding (as libp2p's request-response codec writes it) and its
/// diagnostic notation, and checks that it decodes back to the same value.
fn cbor_lines<T>(out: &mut Vectors, name: &str, value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = cbor4ii::serde::to_vec(Vec::new(), value).unwrap();
    assert_eq!(&cbor4ii::serde::from_slice::<T>(&bytes).unwrap(), value);
    let mut at = 0;
    let shown = diagnostic(&bytes, &mut at);
    assert_eq!(at, bytes.len());
    out.hex(&format!("{name}.cbor"), &bytes);
    out.value(&format!("{name}.diag"), shown);
}

/// Every request and response of `/merpati/deliver/1`, `/merpati/deliver/2` and
/// `/merpati/mailbox/2`, and every refusal.
fn wire_vectors() -> String {
    let mut out = Vectors::default();
    out.comment("Wire vectors: the CBOR of every request, response and refusal of the network protocols.");
    out.comment("Generated by `MERPATI_BLESS=1 cargo test -p merpati-proto --test golden`; checked by");
    out.comment("`cargo test`. `.cbor` is the encoding in hex, `.diag` its RFC 8949 diagnostic notation.");
    out.comment("Envelope and chunk bytes here are short placeholders: they are opaque to this layer.");
    let envelope = vec![1, 2, 3, 4];
    let mailbox = MailboxId([0x11; 16]);
    let token = MailboxKey::derive(&SymmetricKey::from_bytes([0x22; 32]), T0.day()).token(&RELAY_PEER_ID);
    cbor_lines(&mut out, "deliver.request", &deliver::Request { envelope: envelope.clone() });
    cbor_lines(&mut out, "deliver.accepted", &deliver::Response::Accepted);
    cbor_lines(&mut out, "deliver.refused", &deliver::Response::Refused(Refusal::TooLarge { max: 65_536 }));
    cbor_lines(&mut out, "deliver.refused.conflict", &deliver::Response::Refused(Refusal::SessionConflict));
    let batch = deliver::Batch {
        envelopes: vec![serde_bytes::ByteBuf::from(envelope.clone()), serde_bytes::ByteBuf::from(vec![5, 6])],
    };
    cbor_lines(&mut out, "deliver.batch", &batch);
    cbor_lines(
        &mut out,
        "deliver.batch_response",
        &deliver::BatchResponse {
            results: vec![
                deliver::Response::Accepted,
                deliver::Response::Refused(Refusal::RateLimited { retry_after_ms: 1_000 }),
            ],
        },
    );
    let requests = [
        ("mailbox.deposit", wire::mailbox::Request::Deposit { mailbox, envelope: envelope.clone() }),
        (
            "mailbox.fetch",
            wire::mailbox::Request::Fetch {
                tokens: vec![token.clone()],
                after: None,
                limit: 64,
                wait_ms: 30_000,
            },
        ),
        (
            "mailbox.fetch_after",
            wire::mailbox::Request::Fetch {
                tokens: vec![token.clone()],
                after: Some(7),
                limit: 256,
                wait_ms: 0,
            },
        ),
        ("mailbox.delete", wire::mailbox::Request::Delete { token, ids: vec![7, 300] }),
    ];
    for (name, request) in &requests {
        cbor_lines(&mut out, name, request);
    }
    let item = wire::mailbox::StoredEnvelope { mailbox, id: 7, envelope };
    let responses = [
        ("mailbox.stored", wire::mailbox::Response::Stored { id: 7 }),
        ("mailbox.envelopes", wire::mailbox::Response::Envelopes { items: vec![item], more: false }),
        ("mailbox.deleted", wire::mailbox::Response::Deleted { count: 2 }),
    ];
    for (name, response) in &responses {
        cbor_lines(&mut out, name, response);
    }
    let refusals = [
        ("mailbox_full", Refusal::MailboxFull),
        ("too_large", Refusal::TooLarge { max: 65_536 }),
        ("rate_limited", Refusal::RateLimited { retry_after_ms: 1_500 }),
        ("unauthorized", Refusal::Unauthorized),
        ("relay_full", Refusal::RelayFull),
        ("malformed", Refusal::Malformed),
        ("unknown_mailbox", Refusal::UnknownMailbox),
        ("internal", Refusal::Internal),
    ];
    for (name, refusal) in refusals {
        cbor_lines(&mut out, &format!("mailbox.refused.{name}"), &wire::mailbox::Response::Refused(refusal));
    }
    blob_wire_vectors(&mut out);
    out.0
}

/// `/merpati/blob/1`, with tokens derived from fixed secrets for the relay of these vectors.
fn blob_wire_vectors(out: &mut Vectors) {
    use merpati_proto::blob::BlobSecret;
    use wire::blob::{BlobId, Request, Response};
    let write = BlobSecret::from_bytes([0x33; 32]).write_token(&RELAY_PEER_ID);
    let read = BlobSecret::from_bytes([0x44; 32]).read_token(&RELAY_PEER_ID);
    assert_eq!(write.0, prf(&[0x33; 32], b"NDR1/blob-write", &[&RELAY_PEER_ID]));
    assert_eq!(read.0, prf(&[0x44; 32], b"NDR1/blob-read", &[&RELAY_PEER_ID]));
    assert_eq!(write.hash().0, h(b"NDR1/blob-token", &[&write.0]));
    assert_eq!(read.hash().0, h(b"NDR1/blob-token", &[&read.0]));
    out.hex("blob.write_token", &write.0);
    out.hex("blob.write_token_hash", &write.hash().0);
    out.hex("blob.read_token", &read.0);
    out.hex("blob.read_token_hash", &read.hash().0);
    let blob_id = BlobId([0x55; 16]);
    let requests = [
        (
            "blob.create",
            Request::Create { blob_id, chunks: 96, write_hash: write.hash(), read_hashes: vec![read.hash()] },
        ),
        ("blob.put", Request::Put { token: write.clone(), blob_id, index: 95, chunk: vec![9, 8, 7] }),
        ("blob.status", Request::Status { token: write.clone(), blob_id }),
        ("blob.get", Request::Get { token: read.clone(), blob_id, first: 16, count: 16 }),
        ("blob.ack", Request::Ack { token: read, blob_id }),
        ("blob.delete", Request::Delete { token: write, blob_id }),
    ];
    for (name, request) in &requests {
        cbor_lines(out, name, request);
    }
    let responses = [
        ("blob.created", Response::Created { expires_at: 1_700_000_000_000 }),
        ("blob.stored", Response::Stored),
        ("blob.present", Response::Present { stored: vec![0xff, 0x01] }),
        ("blob.chunks", Response::Chunks { chunks: vec![serde_bytes::ByteBuf::from(vec![9, 8, 7])] }),
        ("blob.acked", Response::Acked),
        ("blob.deleted", Response::Deleted),
        ("blob.refused.not_reserved", Response::Refused(Refusal::NotReserved)),
        ("blob.refused.unknown_blob", Response::Refused(Refusal::UnknownBlob)),
    ];
    for (name, response) in &responses {
        cbor_lines(out, name, response);
    }
}

/// Compares `fresh` with the checked-in `tests/golden/<file>`, or rewrites it under `MERPATI_BLESS`.
fn check_golden(file: &str, fresh: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(file);
    if std::env::var_os("MERPATI_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, fresh).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with MERPATI_BLESS=1 to create it", path.display()));
    for (n, (want, got)) in expected.lines().zip(fresh.lines()).enumerate() {
        assert_eq!(want, got, "{file} line {} differs (MERPATI_BLESS=1 rewrites the file)", n + 1);
    }
    assert_eq!(expected.lines().count(), fresh.lines().count(), "{file} has a different number of lines");
}

#[test]
fn ndr1_golden_vectors() {
    let fresh = ndr1_transcript();
    assert_eq!(fresh, ndr1_transcript(), "the transcript must be deterministic");
    check_golden("ndr1.txt", &fresh);
}

#[test]
fn wire_golden_vectors() {
    let fresh = wire_vectors();
    assert_eq!(fresh, wire_vectors(), "the vectors must be deterministic");
    check_golden("wire.txt", &fresh);
}

#[test]
fn identity_golden_vectors() {
    let fresh = identity_vectors();
    assert_eq!(fresh, identity_vectors(), "the vectors must be deterministic");
    check_golden("identity.txt", &fresh);
}

/// The mailbox ids and fetch tokens of a secret are what the spec's construction gives: the id
/// hashes the day's mailbox key, and a token is that key and its signature over the relay's peer
/// id, which checks with nothing but the token and the relay's own id.
#[test]
fn mailbox_derivation_matches_the_spec() {
    let secret = SymmetricKey::from_bytes([9; 32]);
    for day in [0, T0.day()] {
        let key = mailbox_public(&secret, day);
        assert_eq!(mailbox::mailbox_id(&secret, day).0, prefix16(&h(label::MAILBOX, &[&key])));
        let token = MailboxKey::derive(&secret, day).token(&RELAY_PEER_ID);
        assert_eq!(token.key, key);
        let digest = h(label::FETCH, &[&RELAY_PEER_ID]);
        let public = VerifyingKey::from_bytes(&key).unwrap();
        assert!(public.verify_strict(&digest, &Signature::from_bytes(&token.proof)).is_ok());
        assert!(token.verify(&RELAY_PEER_ID));
    }
}
