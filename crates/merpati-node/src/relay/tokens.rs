//! Checking fetch tokens: a fetch or a delete names each mailbox by a token, which must be signed
//! by the mailbox's key for this relay's peer id (see `merpati_proto::mailbox`). A token made
//! for another relay, or by anyone but the owner, is refused before anything is read or marked.
//!
//! A node presents the same tokens at every fetch (a signature is deterministic), and an idle
//! node renews its long poll every two minutes: each token is verified once and then recognised
//! by its digest in a bounded cache. The cache has two generations: when the current one is
//! full it becomes the previous one and the one before is dropped, so tokens in use stay and
//! memory stays within [`VERIFIED_PER_GENERATION`] digests twice over (some 5 MiB).

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use libp2p::PeerId;
use merpati_proto::mailbox::{FetchToken, MailboxId};
use merpati_proto::wire::Refusal;

/// How many verified tokens one generation of the cache remembers.
pub const VERIFIED_PER_GENERATION: usize = 131_072;

/// The relay's check of fetch tokens, with its cache of tokens already verified.
#[derive(Debug)]
pub struct TokenCheck {
    /// This relay's peer id, binary: what a token for it signs.
    relay: Vec<u8>,
    verified: Mutex<Generations>,
    per_generation: usize,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashSet<[u8; 16]>,
    previous: HashSet<[u8; 16]>,
}

impl TokenCheck {
    /// A check of tokens made for the relay `relay`.
    pub fn new(relay: &PeerId) -> Self {
        Self::with_capacity(relay, VERIFIED_PER_GENERATION)
    }

    fn with_capacity(relay: &PeerId, per_generation: usize) -> Self {
        Self { relay: relay.to_bytes(), verified: Mutex::default(), per_generation: per_generation.max(1) }
    }

    /// The mailboxes `tokens` open at this relay, or `Unauthorized` at the first token that does
    /// not verify (the rest are not looked at: a request with a bad token is refused whole).
    pub fn mailboxes(&self, tokens: &[FetchToken]) -> Result<Vec<MailboxId>, Refusal> {
        tokens.iter().map(|token| self.mailbox(token)).collect()
    }

    /// The mailbox `token` opens at this relay, or `Unauthorized`.
    pub fn mailbox(&self, token: &FetchToken) -> Result<MailboxId, Refusal> {
        let digest = token.digest();
        if self.remembers(&digest) {
            return Ok(token.mailbox());
        }
        if !token.verify(&self.relay) {
            return Err(Refusal::Unauthorized);
        }
        let mut verified = self.lock();
        if verified.current.len() >= self.per_generation {
            verified.previous = std::mem::take(&mut verified.current);
        }
        verified.current.insert(digest);
        Ok(token.mailbox())
    }

    /// Whether the token with `digest` was verified before; one found in the previous
    /// generation moves to the current one.
    fn remembers(&self, digest: &[u8; 16]) -> bool {
        let mut verified = self.lock();
        if verified.current.contains(digest) {
            return true;
        }
        if !verified.previous.remove(digest) {
            return false;
        }
        if verified.current.len() >= self.per_generation {
            verified.previous = std::mem::take(&mut verified.current);
        }
        verified.current.insert(*digest);
        true
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use merpati_proto::keys::SymmetricKey;
    use merpati_proto::mailbox::MailboxKey;

    use super::*;

    fn key(n: u8) -> MailboxKey {
        MailboxKey::derive(&SymmetricKey::from_bytes([n; 32]), 20_000)
    }

    #[test]
    fn only_tokens_made_for_this_relay_by_the_owner_pass() {
        let (here, elsewhere) = (PeerId::random(), PeerId::random());
        let check = TokenCheck::new(&here);
        let mine = key(1).token(&here.to_bytes());
        assert_eq!(check.mailbox(&mine), Ok(key(1).id()));
        assert_eq!(check.mailbox(&mine), Ok(key(1).id()), "again, from the cache");
        let for_another_relay = key(1).token(&elsewhere.to_bytes());
        assert_eq!(check.mailbox(&for_another_relay), Err(Refusal::Unauthorized));
        let borrowed_key = FetchToken { key: mine.key, ..key(2).token(&here.to_bytes()) };
        assert_eq!(check.mailbox(&borrowed_key), Err(Refusal::Unauthorized));
        assert_eq!(
            check.mailboxes(&[mine.clone(), for_another_relay, key(3).token(&here.to_bytes())]),
            Err(Refusal::Unauthorized),
            "one bad token refuses the request"
        );
        assert_eq!(
            check.mailboxes(&[mine, key(3).token(&here.to_bytes())]),
            Ok(vec![key(1).id(), key(3).id()])
        );
    }

    #[test]
    fn the_cache_stays_bounded_and_keeps_tokens_in_use() {
        let relay = PeerId::random();
        let check = TokenCheck::with_capacity(&relay, 4);
        let tokens: Vec<FetchToken> = (0..20).map(|n| key(n).token(&relay.to_bytes())).collect();
        let in_use = &tokens[0];
        for token in &tokens[1..] {
            check.mailbox(token).unwrap();
            check.mailbox(in_use).unwrap();
            let verified = check.lock();
            assert!(verified.current.len() <= 4 && verified.previous.len() <= 4);
            assert!(
                verified.current.contains(&in_use.digest()) || verified.previous.contains(&in_use.digest()),
                "a token presented at every fetch is never dropped"
            );
        }
        assert!(!check.remembers(&tokens[1].digest()), "one not seen since is forgotten");
        // A forgotten token is verified again, not refused.
        assert_eq!(check.mailbox(&tokens[1]), Ok(key(1).id()));
    }
}
