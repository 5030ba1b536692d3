//! Fuzzes `Invite::parse`, which reads text a person pasted (see the crate docs for the modes).
//!
//! Raw mode: the input, as UTF-8 (lossily converted if it is not), is parsed at a fixed time. It
//! must never panic, and an invite it accepts must be the one its text spells: `to_text()` equals
//! the input with whitespace removed and letters uppercased, and the binary form round-trips.
//!
//! Edit mode: one of a few valid invites signed by a fixed identity, parsed at a time taken from
//! the payload, after the edit script ran over its text. `parse` documents that it ignores
//! surrounding and internal whitespace and accepts lowercase, and looks at no more than
//! `MAX_INVITE_TEXT` bytes once the text is trimmed; so the edited text must parse exactly when it
//! differs from the original only in whitespace and letter case, that limit holds, and the
//! last-resort prekey has not expired. It must then give back the original invite.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::{Mode, T0, apply_edits, assert_verdict, parties};
use merpati_proto::Timestamp;
use merpati_proto::identity::{LAST_RESORT_LIFETIME, PREKEY_LIFETIME};
use merpati_proto::invite::{Invite, MAX_INVITE_TEXT};

/// Valid invites: the smallest possible, a typical one, and one with every list full.
fn invites() -> &'static [(Invite, String)] {
    static INVITES: OnceLock<Vec<(Invite, String)>> = OnceLock::new();
    INVITES.get_or_init(|| {
        let alice = &parties().0;
        let full = vec![0xab; merpati_proto::invite::MAX_ADDR_LEN];
        let fields = [
            (vec![], vec![0x01], vec![], None),
            (vec![vec![0x36; 40]], vec![0x00; 38], vec![vec![0x04; 11], vec![0x29; 23]], Some("Alice")),
            (
                vec![full.clone(); merpati_proto::invite::MAX_RELAYS],
                vec![0x02; merpati_proto::invite::MAX_PEER_ID_LEN],
                vec![full; merpati_proto::invite::MAX_ADDRS],
                Some("Zoë ☃ Ωmega"),
            ),
        ];
        fields
            .into_iter()
            .map(|(relays, peer_id, addrs, name)| {
                let invite = Invite::new(
                    &alice.identity,
                    alice.bundle.clone(),
                    alice.prekeys.last_resort().expect("a last-resort prekey").clone(),
                    alice.inbox(),
                    relays,
                    peer_id,
                    addrs,
                    name.map(str::to_owned),
                    T0,
                )
                .expect("making an invite");
                let text = invite.to_text();
                (invite, text)
            })
            .collect()
    })
}

/// The text as `parse` reads it: whitespace removed, ASCII letters uppercased.
fn normalize(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect()
}

/// Checks what `parse` promises about an invite it accepted from `text`.
fn check_accepted(invite: &Invite, text: &str) {
    assert_eq!(invite.to_text(), normalize(text), "an accepted invite is not the one the text spells");
    assert_eq!(invite.text_len(), invite.to_text().len());
    let bytes = invite.to_bytes();
    assert_eq!(bytes.len(), invite.encoded_len());
    assert_eq!(Invite::from_bytes(&bytes).as_ref(), Ok(invite));
}

fuzz_target!(|data: &[u8]| {
    match Mode::of(data) {
        Mode::Raw(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            if let Ok(invite) = Invite::parse(&text, T0) {
                check_accepted(&invite, &text);
            }
        }
        Mode::Edit { payload, edits } => {
            let all = invites();
            let (invite, valid) = &all[usize::from(payload.first().copied().unwrap_or(0)) % all.len()];
            // Steps of 1/128 of the last-resort prekey's lifetime: step 128 is the invite's last
            // valid millisecond.
            let step = u64::from(payload.get(1).copied().unwrap_or(0));
            let now = T0.plus(step * (LAST_RESORT_LIFETIME / 128));
            let mut bytes = valid.clone().into_bytes();
            apply_edits(&mut bytes, edits);
            let text = String::from_utf8_lossy(&bytes);
            let same = normalize(&text) == *valid
                && text.trim().len() <= MAX_INVITE_TEXT
                && invite.last_resort.as_ref().is_some_and(|p| now <= p.expires_at);
            assert_eq!(invite.bundle.prekey.expires_at, Timestamp(T0.0 + PREKEY_LIFETIME));
            assert_eq!(
                invite.last_resort.as_ref().map(|p| p.expires_at),
                Some(Timestamp(T0.0 + LAST_RESORT_LIFETIME))
            );
            assert_verdict(same, Invite::parse(&text, now), |got| {
                assert_eq!(&got, invite);
                check_accepted(&got, &text);
            });
        }
    }
});
