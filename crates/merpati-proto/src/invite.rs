//! Invites: the one line two people exchange, out of band, to become contacts.
//!
//! An invite carries the inviter's [`Bundle`] (identity, device, prekey, versions), the mailbox
//! where the invitee writes the first contact, how to reach the inviter (relays, libp2p peer id and
//! addresses, opaque to this crate), an optional display name, its creation time and a
//! last-resort prekey, all signed by the inviter's identity key.
//!
//! Lifetime. People exchange invites long before they need them, so an invite lasts over a year
//! ([`INVITE_LIFETIME`]), although the bundle's prekey rotates weekly and expires after 37 days:
//! while that prekey is valid a first contact uses it ([`Invite::bundle_at`]), and after, the
//! last-resort prekey, which lives 400 days. The cost is forward secrecy for late first contacts:
//! the last-resort prekey's private key stays on the inviter's device that much longer.
//!
//! Text form: `MERPATI1:` then RFC 4648 base32 (uppercase, no padding) of
//! `invite ‖ checksum`, where `checksum = H("NDR1/invite-checksum" ‖ invite)[..4]`. Uppercase
//! base32 and `:` are all in the QR alphanumeric set, so the line makes a compact QR code, and it
//! survives copy-paste, terminal wrapping and lowercasing. The checksum catches typos and cut-off
//! lines before any key is looked at ([`InviteError::ChecksumMismatch`]); the signature catches
//! deliberate changes ([`InviteError::BadSignature`]).
//!
//! Binary layout of `invite`: bundle ‖ inbox mailbox id (16) ‖ relay count (u8) ‖ relays (u8
//! length ‖ bytes each) ‖ peer id (u8 length ‖ bytes) ‖ address count (u8) ‖ addresses (u8 length ‖
//! bytes each) ‖ name (u8 length ‖ UTF-8, empty for none) ‖ created at (u64 ms) ‖ last-resort
//! prekey (a signed prekey, absent in invites made before they existed) ‖ signature (64) over
//! `H("NDR1/invite" ‖ everything before the signature)`.

use data_encoding::BASE32_NOPAD;
use thiserror::Error;

use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::{Bundle, IdentityError, IdentityKey, IdentityPublic, SignedPrekey, is_last_resort};

pub use crate::identity::INVITE_LIFETIME;
use crate::kdf::{self, label};
use crate::mailbox::MailboxId;
use crate::time::Timestamp;

/// The text form's prefix; the digit is the invite format version.
pub const PREFIX: &str = "MERPATI1:";
/// The longest text [`Invite::parse`] looks at, in bytes, after trimming surrounding whitespace.
/// The largest possible invite is about 3 600 characters.
pub const MAX_INVITE_TEXT: usize = 4096;
/// The most relays an invite lists.
pub const MAX_RELAYS: usize = 4;
/// The most direct addresses an invite lists.
pub const MAX_ADDRS: usize = 8;
/// The longest relay or direct address (a binary multiaddr), in bytes.
pub const MAX_ADDR_LEN: usize = 128;
/// The longest libp2p peer id, in bytes.
pub const MAX_PEER_ID_LEN: usize = 64;
/// The longest display name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;
/// The longest binary invite, signature included, in bytes.
pub const MAX_INVITE_LEN: usize = Bundle::MAX_ENCODED_LEN
    + 16
    + 1
    + MAX_RELAYS * (1 + MAX_ADDR_LEN)
    + 1
    + MAX_PEER_ID_LEN
    + 1
    + MAX_ADDRS * (1 + MAX_ADDR_LEN)
    + 1
    + MAX_NAME_LEN
    + 8
    + SignedPrekey::ENCODED_LEN
    + 64;

/// Checksum bytes appended before base32 encoding.
const CHECKSUM_LEN: usize = 4;

// Every invite this crate can make must also be one it agrees to parse.
const _: () = assert!(PREFIX.len() + ((MAX_INVITE_LEN + CHECKSUM_LEN) * 8).div_ceil(5) <= MAX_INVITE_TEXT);

/// Why an invite could not be made or read. Each message tells a person what to do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InviteError {
    /// Nothing but whitespace was given.
    #[error("the invite is empty: paste the whole line that starts with {PREFIX}")]
    Empty,
    /// The text does not start with the invite prefix.
    #[error("the text does not start with {PREFIX} — is this a Merpati invite?")]
    MissingPrefix,
    /// The prefix names an invite format this version cannot read.
    #[error("this invite (MERPATI{found}:) was made by a newer version of Merpati; update Merpati to use it")]
    UnsupportedVersion {
        /// The format number found after `MERPATI`.
        found: u32,
    },
    /// A character that base32 does not use.
    #[error(
        "character {position} of the invite ({character:?}) cannot be part of an invite, which has \
         only the letters A-Z and digits 2-7 after {PREFIX}: copy the whole line again"
    )]
    NotBase32 {
        /// Its position, counting from 1 at the start of the invite, whitespace left out.
        position: usize,
        /// The character.
        character: char,
    },
    /// The text is longer than any invite.
    #[error("the text is {len} bytes long, more than an invite can be ({max}): paste only the {PREFIX} line")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// [`MAX_INVITE_TEXT`].
        max: usize,
    },
    /// The checksum does not match, or the base32 text has an impossible length: a typo or a
    /// line cut short.
    #[error("the invite is mistyped or cut off: copy the whole line again")]
    ChecksumMismatch,
    /// Its checksum is right but its contents do not decode: made by broken or hostile software.
    #[error("the invite is malformed ({0}): ask for a new one")]
    Malformed(DecodeError),
    /// The signature does not match the contents.
    #[error("the invite has been altered: its signature does not match its contents; do not use it")]
    BadSignature,
    /// The keys inside are invalid (a weak identity key, a bad certificate or bundle).
    #[error("the invite's keys are invalid: {0}")]
    Identity(IdentityError),
    /// Every prekey inside has expired, so a first contact could no longer be opened.
    #[error("the invite expired on {}: ask for a new one", on.date())]
    Expired {
        /// When its last prekey expired.
        on: Timestamp,
    },
    /// [`Invite::new`] was given a field outside its bounds.
    #[error("cannot make this invite: {0}")]
    InvalidField(DecodeError),
}

impl From<IdentityError> for InviteError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Expired { expires_at, .. } => Self::Expired { on: expires_at },
            IdentityError::Decode(e) => Self::Malformed(e),
            e => Self::Identity(e),
        }
    }
}

impl From<DecodeError> for InviteError {
    fn from(e: DecodeError) -> Self {
        Self::Malformed(e)
    }
}

/// A signed invitation to become someone's contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    /// The inviter's bundle, for the first contact.
    pub bundle: Bundle,
    /// The mailbox the first contact is written to.
    pub inbox: MailboxId,
    /// Relays that hold the inbox (binary multiaddrs), at most [`MAX_RELAYS`].
    pub relays: Vec<Vec<u8>>,
    /// The inviter's libp2p peer id, in bytes.
    pub peer_id: Vec<u8>,
    /// Direct addresses of the inviter (binary multiaddrs), at most [`MAX_ADDRS`].
    pub addrs: Vec<Vec<u8>>,
    /// The name the inviter suggests for themselves; never empty when present.
    pub name: Option<String>,
    /// When the invite was made.
    pub created_at: Timestamp,
    /// The prekey a first contact uses once the bundle's has expired (see the module
    /// documentation); none in invites made before last-resort prekeys existed.
    pub last_resort: Option<SignedPrekey>,
    /// The inviter identity's signature.
    pub signature: [u8; 64],
}

impl Invite {
    /// Signs an invite. `identity` must be the key of `bundle`, and `last_resort` a last-resort
    /// prekey it signed for the same device; an empty name counts as none.
    #[expect(clippy::too_many_arguments, reason = "one argument per invite field")]
    pub fn new(
        identity: &IdentityKey,
        bundle: Bundle,
        last_resort: SignedPrekey,
        inbox: MailboxId,
        relays: Vec<Vec<u8>>,
        peer_id: Vec<u8>,
        addrs: Vec<Vec<u8>>,
        name: Option<String>,
        now: Timestamp,
    ) -> Result<Invite, InviteError> {
        if bundle.identity() != &identity.public() {
            return Err(InviteError::Identity(IdentityError::WrongIdentity));
        }
        let name = name.filter(|n| !n.is_empty());
        check_fields(&relays, &peer_id, &addrs, name.as_deref()).map_err(InviteError::InvalidField)?;
        // Handing out an invite that its recipient will refuse helps nobody.
        bundle.verify(now)?;
        let last_resort = Some(last_resort);
        let mut invite = Self {
            bundle,
            inbox,
            relays,
            peer_id,
            addrs,
            name,
            created_at: now,
            last_resort,
            signature: [0; 64],
        };
        invite.check_last_resort()?;
        invite.signature = identity.sign(label::INVITE, &[&invite.body()]);
        Ok(invite)
    }

    /// The inviter's identity.
    pub fn identity(&self) -> &IdentityPublic {
        self.bundle.identity()
    }

    /// Checks the invite signature, the last-resort prekey's signature, then that the bundle
    /// (certificate, versions, a prekey valid at `now`) can be used: see [`Invite::bundle_at`].
    pub fn verify(&self, now: Timestamp) -> Result<(), InviteError> {
        self.identity().verify(label::INVITE, &[&self.body()], &self.signature).map_err(|e| match e {
            IdentityError::BadSignature { .. } => InviteError::BadSignature,
            e => e.into(),
        })?;
        self.check_last_resort()?;
        self.bundle_at(now).map(|_| ())
    }

    /// The bundle a first contact written at `now` uses; see [`bundle_at`].
    pub fn bundle_at(&self, now: Timestamp) -> Result<Bundle, InviteError> {
        bundle_at(&self.bundle, self.last_resort.as_ref(), now)
    }

    /// The last-resort prekey, if any, must be one (by its id) and signed by the invite's
    /// identity for the bundle's device; its age is checked when it is used.
    fn check_last_resort(&self) -> Result<(), InviteError> {
        let Some(prekey) = &self.last_resort else { return Ok(()) };
        if !is_last_resort(prekey.id) {
            return Err(InviteError::Malformed(DecodeError::Invalid { what: "last-resort prekey id" }));
        }
        match prekey.verify(self.identity(), &self.bundle.device_id(), prekey.created_at) {
            Ok(()) => Ok(()),
            Err(e) => Err(InviteError::Identity(e)),
        }
    }

    /// The text form, `MERPATI1:…`, one line.
    pub fn to_text(&self) -> String {
        let mut bytes = self.to_bytes();
        let checksum: [u8; CHECKSUM_LEN] = kdf::hash_prefix(label::INVITE_CHECKSUM, &[&bytes]);
        bytes.extend_from_slice(&checksum);
        let mut text = String::with_capacity(self.text_len());
        text.push_str(PREFIX);
        text.push_str(&BASE32_NOPAD.encode(&bytes));
        text
    }

    /// The length of [`Invite::to_text`], in characters (all ASCII).
    pub fn text_len(&self) -> usize {
        PREFIX.len() + ((self.encoded_len() + CHECKSUM_LEN) * 8).div_ceil(5)
    }

    /// Reads and verifies an invite pasted by a person: ignores surrounding and internal
    /// whitespace (terminals wrap long lines) and accepts lowercase.
    pub fn parse(text: &str, now: Timestamp) -> Result<Invite, InviteError> {
        let trimmed = text.trim();
        if trimmed.len() > MAX_INVITE_TEXT {
            return Err(InviteError::TooLong { len: trimmed.len(), max: MAX_INVITE_TEXT });
        }
        let compact: String =
            trimmed.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
        if compact.is_empty() {
            return Err(InviteError::Empty);
        }
        let data = strip_prefix(&compact)?;
        if let Some((i, character)) =
            data.chars().enumerate().find(|(_, c)| !matches!(c, 'A'..='Z' | '2'..='7'))
        {
            return Err(InviteError::NotBase32 { position: PREFIX.len() + i + 1, character });
        }
        // With the alphabet checked, the only decoding failures left are an impossible length or
        // stray bits in the last character: both a line cut short or mistyped.
        let bytes = BASE32_NOPAD.decode(data.as_bytes()).map_err(|_| InviteError::ChecksumMismatch)?;
        let split = bytes.len().checked_sub(CHECKSUM_LEN).ok_or(InviteError::ChecksumMismatch)?;
        let (payload, checksum) = bytes.split_at(split);
        if checksum != kdf::hash_prefix::<CHECKSUM_LEN>(label::INVITE_CHECKSUM, &[payload]) {
            return Err(InviteError::ChecksumMismatch);
        }
        let invite = Self::from_bytes(payload)?;
        invite.verify(now)?;
        Ok(invite)
    }

    /// Everything the signature covers.
    fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.encode_body(&mut w);
        w.into_bytes()
    }

    fn encode_body(&self, w: &mut Writer) {
        self.bundle.encode(w);
        w.raw(self.inbox.as_bytes());
        write_list(w, &self.relays);
        w.bytes_u8(&self.peer_id);
        write_list(w, &self.addrs);
        w.bytes_u8(self.name.as_deref().unwrap_or("").as_bytes());
        w.u64(self.created_at.0);
        if let Some(prekey) = &self.last_resort {
            prekey.encode(w);
        }
    }

    /// The length of the binary encoding, signature included.
    pub fn encoded_len(&self) -> usize {
        let list = |items: &[Vec<u8>]| 1 + items.iter().map(|i| 1 + i.len()).sum::<usize>();
        self.bundle.encoded_len()
            + 16
            + list(&self.relays)
            + 1
            + self.peer_id.len()
            + list(&self.addrs)
            + 1
            + self.name.as_ref().map_or(0, String::len)
            + 8
            + self.last_resort.as_ref().map_or(0, |_| SignedPrekey::ENCODED_LEN)
            + 64
    }

    /// Appends the binary encoding, signature included.
    pub fn encode(&self, w: &mut Writer) {
        self.encode_body(w);
        w.raw(&self.signature);
    }

    /// Reads an invite, checking its bounds and keys but no signature.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, InviteError> {
        let bundle = Bundle::decode(r)?;
        let inbox = MailboxId(r.array("inbox")?);
        let relays = read_list(r, MAX_RELAYS, "relays")?;
        let peer_id = r.bytes_u8(MAX_PEER_ID_LEN, "peer id")?.to_vec();
        let addrs = read_list(r, MAX_ADDRS, "addresses")?;
        let name_bytes = r.bytes_u8(MAX_NAME_LEN, "name")?;
        let name = match name_bytes {
            [] => None,
            bytes => {
                let name = std::str::from_utf8(bytes).map_err(|_| DecodeError::Invalid { what: "name" })?;
                Some(name.to_owned())
            }
        };
        let created_at = Timestamp(r.u64("invite time")?);
        // Optional, and the last field before the signature: present when more than the
        // signature is left.
        let last_resort = if r.remaining() > 64 { Some(SignedPrekey::decode(r)?) } else { None };
        let signature = r.array("invite signature")?;
        check_fields(&relays, &peer_id, &addrs, name.as_deref())?;
        Ok(Self { bundle, inbox, relays, peer_id, addrs, name, created_at, last_resort, signature })
    }

    /// The binary encoding as a vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.encode(&mut w);
        w.into_bytes()
    }

    /// Decodes exactly one invite from `bytes`, without verifying it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InviteError> {
        let mut r = Reader::new(bytes);
        let invite = Self::decode(&mut r)?;
        r.finish()?;
        Ok(invite)
    }
}

/// The bundle a first contact written at `now` uses, from an invite's `bundle` and `last_resort`
/// prekey (kept by whoever added the contact, since the first message may come months later):
/// the bundle itself while its prekey is valid, else the same bundle with the last-resort prekey
/// in its place. Refused when both prekeys have expired, with the date the last one did.
///
/// In the second case the bundle's `signature` still covers the rotating prekey: the invite's
/// signature is what vouches for the last-resort one ([`Invite::verify`]).
pub fn bundle_at(
    bundle: &Bundle,
    last_resort: Option<&SignedPrekey>,
    now: Timestamp,
) -> Result<Bundle, InviteError> {
    let expired_on = match bundle.verify(now) {
        Ok(()) => return Ok(bundle.clone()),
        Err(IdentityError::Expired { expires_at, .. }) => expires_at,
        Err(e) => return Err(e.into()),
    };
    let Some(last_resort) = last_resort else { return Err(InviteError::Expired { on: expired_on }) };
    // Everything but the rotating prekey's age must still check out.
    bundle.verify(bundle.prekey.created_at)?;
    last_resort.verify(bundle.identity(), &bundle.device_id(), now)?;
    Ok(Bundle { prekey: last_resort.clone(), ..bundle.clone() })
}

/// The part of `compact` after the prefix, or why there is none.
fn strip_prefix(compact: &str) -> Result<&str, InviteError> {
    if let Some(data) = compact.strip_prefix(PREFIX) {
        return Ok(data);
    }
    if let Some(rest) = compact.strip_prefix("MERPATI") {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && rest[digits..].starts_with(':') {
            let found = rest[..digits].parse().unwrap_or(u32::MAX);
            return Err(InviteError::UnsupportedVersion { found });
        }
    }
    Err(InviteError::MissingPrefix)
}

fn write_list(w: &mut Writer, items: &[Vec<u8>]) {
    w.u8(u8::try_from(items.len()).unwrap_or(u8::MAX));
    for item in items {
        w.bytes_u8(item);
    }
}

fn read_list(r: &mut Reader<'_>, max: usize, what: &'static str) -> Result<Vec<Vec<u8>>, DecodeError> {
    let count = r.count_u8(max, what)?;
    (0..count).map(|_| r.bytes_u8(MAX_ADDR_LEN, "address").map(<[u8]>::to_vec)).collect()
}

/// Bounds shared by [`Invite::new`] and [`Invite::decode`], so every invite made can be read.
fn check_fields(
    relays: &[Vec<u8>],
    peer_id: &[u8],
    addrs: &[Vec<u8>],
    name: Option<&str>,
) -> Result<(), DecodeError> {
    let bounded = |what, len, min, max| match len {
        len if len > max => Err(DecodeError::TooLong { what, len, max }),
        len if len < min => Err(DecodeError::Invalid { what }),
        _ => Ok(()),
    };
    bounded("relays", relays.len(), 0, MAX_RELAYS)?;
    bounded("addresses", addrs.len(), 0, MAX_ADDRS)?;
    for addr in relays.iter().chain(addrs) {
        bounded("address", addr.len(), 1, MAX_ADDR_LEN)?;
    }
    bounded("peer id", peer_id.len(), 1, MAX_PEER_ID_LEN)?;
    if let Some(name) = name {
        bounded("name", name.len(), 1, MAX_NAME_LEN)?;
        // The name is shown in a terminal: control characters could rewrite the screen and
        // bidirectional overrides could make it read as someone else's.
        if name.chars().any(|c| c.is_control() || is_bidi_control(c)) {
            return Err(DecodeError::Invalid { what: "name" });
        }
    }
    Ok(())
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{DeviceCert, PREKEY_LIFETIME, PrekeyRing, SUPPORTED_VERSIONS};
    use crate::keys::X25519Secret;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const T0: Timestamp = Timestamp(1_750_000_000_000);

    struct Inviter {
        identity: IdentityKey,
        bundle: Bundle,
        last_resort: SignedPrekey,
    }

    fn inviter(seed: u64) -> Inviter {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identity = IdentityKey::generate(&mut rng);
        let cert = DeviceCert::issue(&identity, &X25519Secret::generate(&mut rng).public(), T0);
        let mut ring = PrekeyRing::new(&identity, &cert.device_id(), T0, &mut rng);
        ring.rotate_if_due(&identity, &cert.device_id(), T0, &mut rng);
        let bundle = Bundle::new(&identity, cert, ring.current().clone(), SUPPORTED_VERSIONS.to_vec())
            .expect("bundle");
        let last_resort = ring.last_resort().expect("a new ring has a last-resort prekey").clone();
        Inviter { identity, bundle, last_resort }
    }

    /// The typical invite: one relay of 40 bytes, an IPv4 and an IPv6 QUIC address, an ed25519
    /// peer id (38 bytes) and a short name.
    fn typical(seed: u64) -> (Inviter, Invite) {
        let who = inviter(seed);
        let invite = Invite::new(
            &who.identity,
            who.bundle.clone(),
            who.last_resort.clone(),
            MailboxId([7; 16]),
            vec![vec![0x36; 40]],
            vec![0x00; 38],
            vec![vec![0x04; 11], vec![0x29; 23]],
            Some("Alice".into()),
            T0,
        )
        .expect("invite");
        (who, invite)
    }

    /// Re-encodes `payload` with a correct checksum, as an attacker who altered it would.
    fn rechecksum(payload: &[u8]) -> String {
        let mut bytes = payload.to_vec();
        bytes.extend_from_slice(&kdf::hash_prefix::<CHECKSUM_LEN>(label::INVITE_CHECKSUM, &[payload]));
        format!("{PREFIX}{}", BASE32_NOPAD.encode(&bytes))
    }

    #[test]
    fn typical_invite_round_trips_at_the_expected_length() {
        let (_, invite) = typical(1);
        let text = invite.to_text();
        assert_eq!(invite.encoded_len(), 531 + SignedPrekey::ENCODED_LEN);
        assert_eq!(invite.to_bytes().len(), invite.encoded_len());
        assert_eq!(text.len(), invite.text_len());
        assert_eq!(text.len(), 1051);
        assert!(text.starts_with(PREFIX));
        assert!(text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b':'));
        assert_eq!(Invite::parse(&text, T0), Ok(invite.clone()));
        assert_eq!(Invite::from_bytes(&invite.to_bytes()), Ok(invite));
    }

    #[test]
    fn parse_tolerates_wrapping_case_and_surrounding_space() {
        let (_, invite) = typical(2);
        let text = invite.to_text();
        let wrapped: Vec<String> =
            text.as_bytes().chunks(80).map(|line| String::from_utf8_lossy(line).into_owned()).collect();
        for variant in [
            format!("  {text}\n"),
            wrapped.join("\n"),
            wrapped.join("\r\n    "),
            text.to_lowercase(),
            format!("\t{}\t", wrapped.join(" ").to_lowercase()),
        ] {
            assert_eq!(Invite::parse(&variant, T0).as_ref(), Ok(&invite), "{variant:?}");
        }
    }

    #[test]
    fn parse_explains_what_is_wrong() {
        let (_, invite) = typical(3);
        let text = invite.to_text();
        assert_eq!(Invite::parse("", T0), Err(InviteError::Empty));
        assert_eq!(Invite::parse(" \n\t ", T0), Err(InviteError::Empty));
        assert_eq!(Invite::parse("hello there", T0), Err(InviteError::MissingPrefix));
        assert_eq!(Invite::parse(&text[PREFIX.len()..], T0), Err(InviteError::MissingPrefix));
        assert_eq!(Invite::parse("MERPATI:ABC", T0), Err(InviteError::MissingPrefix));
        let newer = text.replacen("MERPATI1:", "MERPATI2:", 1);
        assert_eq!(Invite::parse(&newer, T0), Err(InviteError::UnsupportedVersion { found: 2 }));
        assert_eq!(Invite::parse("merpati17:xyz", T0), Err(InviteError::UnsupportedVersion { found: 17 }));
        let long = format!("{text}{}", "A".repeat(MAX_INVITE_TEXT));
        assert_eq!(
            Invite::parse(&long, T0),
            Err(InviteError::TooLong { len: long.len(), max: MAX_INVITE_TEXT })
        );

        let mut typo = text.clone().into_bytes();
        typo[20] = b'0';
        let typo = String::from_utf8(typo).expect("ascii");
        assert_eq!(Invite::parse(&typo, T0), Err(InviteError::NotBase32 { position: 21, character: '0' }));
        let accent = format!("{}é{}", &text[..30], &text[31..]);
        assert_eq!(Invite::parse(&accent, T0), Err(InviteError::NotBase32 { position: 31, character: 'é' }));

        for cut in [1, 2, 7, 8, 100, text.len() - PREFIX.len()] {
            assert_eq!(
                Invite::parse(&text[..text.len() - cut], T0),
                Err(InviteError::ChecksumMismatch),
                "cut {cut}"
            );
        }
        assert_eq!(Invite::parse(&format!("{text}A"), T0), Err(InviteError::ChecksumMismatch));
        assert_eq!(Invite::parse(&format!("{text}AAAAAAAA"), T0), Err(InviteError::ChecksumMismatch));
    }

    #[test]
    fn error_messages_guide_a_person_without_leaking_keys() {
        assert!(InviteError::MissingPrefix.to_string().contains("does not start with MERPATI1:"));
        assert!(
            InviteError::UnsupportedVersion { found: 2 }.to_string().contains("newer version of Merpati")
        );
        assert!(InviteError::ChecksumMismatch.to_string().contains("mistyped or cut off"));
        assert!(InviteError::BadSignature.to_string().contains("altered"));
        let weak = InviteError::Identity(IdentityError::WeakKey).to_string();
        assert!(weak.contains("weak"), "{weak}");
    }

    #[test]
    fn altered_invites_fail_the_signature() {
        let (_, invite) = typical(4);
        let payload = invite.to_bytes();
        let body_len = payload.len() - 64;
        let name_at = body_len - 8 - 5;
        // The name, the time, the inbox and the signature itself: changes that still decode.
        let inbox_at = invite.bundle.encoded_len();
        for i in (name_at..name_at + 5).chain(body_len - 8..payload.len()).chain(inbox_at..inbox_at + 16) {
            let mut altered = payload.clone();
            altered[i] ^= 0x02;
            assert_eq!(Invite::parse(&rechecksum(&altered), T0), Err(InviteError::BadSignature), "byte {i}");
        }
        // Swapping in another invite's (valid) bundle does not pass either.
        let mut swapped = invite.clone();
        swapped.bundle = typical(5).1.bundle;
        assert_eq!(Invite::parse(&swapped.to_text(), T0), Err(InviteError::BadSignature));
    }

    #[test]
    fn weak_identity_and_expired_prekey_are_refused() {
        let (signer, invite) = typical(6);
        let mut payload = invite.to_bytes();
        let mut neutral = [0u8; 32];
        neutral[0] = 1;
        payload[..32].copy_from_slice(&neutral);
        assert_eq!(
            Invite::parse(&rechecksum(&payload), T0),
            Err(InviteError::Identity(IdentityError::WeakKey))
        );

        let text = invite.to_text();
        let expiry = invite.bundle.prekey.expires_at;
        assert_eq!(expiry, T0.plus(PREKEY_LIFETIME));
        assert!(Invite::parse(&text, expiry).is_ok());
        assert_eq!(invite.bundle_at(expiry).expect("bundle"), invite.bundle);
        // Past the rotating prekey's expiry, first contacts use the last-resort prekey, for over
        // a year after the invite was made.
        let later = expiry.plus(1);
        assert!(Invite::parse(&text, later).is_ok());
        let last_resort = invite.last_resort.clone().expect("last-resort prekey");
        assert_eq!(invite.bundle_at(later).expect("bundle").prekey, last_resort);
        assert!(last_resort.expires_at >= T0.plus(INVITE_LIFETIME));
        assert!(Invite::parse(&text, T0.plus(INVITE_LIFETIME)).is_ok());
        let dead = last_resort.expires_at.plus(1);
        let error = Invite::parse(&text, dead).expect_err("expired");
        assert_eq!(error, InviteError::Expired { on: last_resort.expires_at });
        assert!(error.to_string().contains(&last_resort.expires_at.date()), "{error}");
        // An invite made before last-resort prekeys existed lasts as long as its bundle.
        let mut old = invite.clone();
        old.last_resort = None;
        old.signature = signer.identity.sign(label::INVITE, &[&old.body()]);
        assert_eq!(Invite::from_bytes(&old.to_bytes()), Ok(old.clone()));
        assert_eq!(Invite::parse(&old.to_text(), later), Err(InviteError::Expired { on: expiry }));
        let who = inviter(6);
        let late = Invite::new(
            &who.identity,
            who.bundle,
            who.last_resort.clone(),
            MailboxId([1; 16]),
            vec![],
            vec![1],
            vec![],
            None,
            expiry.plus(1),
        );
        assert_eq!(late, Err(InviteError::Expired { on: expiry }));
    }

    #[test]
    fn new_enforces_bounds() {
        let who = inviter(7);
        let make = |relays: Vec<Vec<u8>>, peer: Vec<u8>, addrs: Vec<Vec<u8>>, name: Option<&str>| {
            Invite::new(
                &who.identity,
                who.bundle.clone(),
                who.last_resort.clone(),
                MailboxId([0; 16]),
                relays,
                peer,
                addrs,
                name.map(Into::into),
                T0,
            )
        };
        let field = |r: Result<Invite, InviteError>| match r {
            Err(InviteError::InvalidField(e)) => e,
            other => panic!("expected a field error, got {other:?}"),
        };
        let addr = vec![1u8; 10];
        assert!(
            make(
                vec![addr.clone(); MAX_RELAYS],
                vec![1; MAX_PEER_ID_LEN],
                vec![addr.clone(); MAX_ADDRS],
                Some("Bob")
            )
            .is_ok()
        );
        assert_eq!(
            field(make(vec![addr.clone(); MAX_RELAYS + 1], vec![1], vec![], None)),
            DecodeError::TooLong { what: "relays", len: 5, max: MAX_RELAYS }
        );
        assert_eq!(
            field(make(vec![], vec![1], vec![addr.clone(); MAX_ADDRS + 1], None)),
            DecodeError::TooLong { what: "addresses", len: 9, max: MAX_ADDRS }
        );
        assert_eq!(
            field(make(vec![vec![1; MAX_ADDR_LEN + 1]], vec![1], vec![], None)),
            DecodeError::TooLong { what: "address", len: 129, max: MAX_ADDR_LEN }
        );
        assert_eq!(
            field(make(vec![vec![]], vec![1], vec![], None)),
            DecodeError::Invalid { what: "address" }
        );
        assert_eq!(field(make(vec![], vec![], vec![], None)), DecodeError::Invalid { what: "peer id" });
        assert!(matches!(
            field(make(vec![], vec![1; 65], vec![], None)),
            DecodeError::TooLong { what: "peer id", .. }
        ));
        let long_name = "é".repeat(33);
        assert!(matches!(
            field(make(vec![], vec![1], vec![], Some(&long_name))),
            DecodeError::TooLong { what: "name", .. }
        ));
        for bad in ["a\nb", "\u{1b}[2J", "evil\u{202e}txt", "nul\0", "\u{85}"] {
            assert_eq!(
                field(make(vec![], vec![1], vec![], Some(bad))),
                DecodeError::Invalid { what: "name" },
                "{bad:?}"
            );
        }
        let unnamed = make(vec![], vec![1], vec![], Some("")).expect("empty name");
        assert_eq!(unnamed.name, None);
        assert_eq!(Invite::parse(&unnamed.to_text(), T0), Ok(unnamed));

        let other = inviter(8);
        assert_eq!(
            Invite::new(
                &other.identity,
                who.bundle.clone(),
                who.last_resort.clone(),
                MailboxId([0; 16]),
                vec![],
                vec![1],
                vec![],
                None,
                T0
            ),
            Err(InviteError::Identity(IdentityError::WrongIdentity))
        );
    }

    #[test]
    fn a_signed_but_out_of_bounds_invite_is_malformed() {
        let (who, mut invite) = typical(9);
        invite.name = Some("line\nbreak".into());
        invite.signature = who.identity.sign(label::INVITE, &[&invite.body()]);
        assert_eq!(
            Invite::parse(&invite.to_text(), T0),
            Err(InviteError::Malformed(DecodeError::Invalid { what: "name" }))
        );
    }

    #[test]
    fn the_largest_invite_fits_the_text_limit() {
        let who = inviter(10);
        let full = vec![0xAB; MAX_ADDR_LEN];
        let invite = Invite::new(
            &who.identity,
            who.bundle.clone(),
            who.last_resort.clone(),
            MailboxId([0; 16]),
            vec![full.clone(); MAX_RELAYS],
            vec![1; MAX_PEER_ID_LEN],
            vec![full; MAX_ADDRS],
            Some("n".repeat(MAX_NAME_LEN)),
            T0,
        )
        .expect("invite");
        let text = invite.to_text();
        assert!(text.len() <= MAX_INVITE_TEXT, "{}", text.len());
        assert_eq!(Invite::parse(&text, T0), Ok(invite));
    }

    fn bytes_list(max_items: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..=MAX_ADDR_LEN), 0..=max_items)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn invites_round_trip(
            seed in 0u64..8,
            relays in bytes_list(MAX_RELAYS),
            peer_id in proptest::collection::vec(any::<u8>(), 1..=MAX_PEER_ID_LEN),
            addrs in bytes_list(MAX_ADDRS),
            name in proptest::option::of("[a-zA-Z0-9 éüß☃-]{1,16}"),
            inbox: [u8; 16],
            offset in 0u64..PREKEY_LIFETIME,
        ) {
            let who = inviter(seed);
            let now = T0.plus(offset);
            let invite = Invite::new(&who.identity, who.bundle, who.last_resort.clone(), MailboxId(inbox), relays, peer_id, addrs, name, now)
                .expect("invite");
            let bytes = invite.to_bytes();
            prop_assert_eq!(bytes.len(), invite.encoded_len());
            prop_assert!(bytes.len() <= MAX_INVITE_LEN);
            prop_assert_eq!(Invite::from_bytes(&bytes), Ok(invite.clone()));
            let text = invite.to_text();
            prop_assert_eq!(text.len(), invite.text_len());
            prop_assert_eq!(Invite::parse(&text, now), Ok(invite));
        }

        #[test]
        fn mutated_invites_never_panic_and_never_pass(
            seed in 0u64..4,
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<proptest::sample::Index>(),
            truncate: bool,
        ) {
            let (_, invite) = typical(seed);
            let mut bytes = invite.to_bytes();
            for (at, value) in &edits {
                let i = at.index(bytes.len());
                bytes[i] ^= value | 1;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            let _ = Invite::from_bytes(&bytes);
            prop_assert!(Invite::parse(&rechecksum(&bytes), T0).is_err());
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,64}", tail in "[A-Za-z2-7 \n]{0,900}") {
            let _ = Invite::parse(&text, T0);
            let _ = Invite::parse(&format!("{PREFIX}{tail}"), T0);
            let _ = Invite::parse(&format!("{text}{tail}"), T0);
        }
    }
}
