//! Checking fetch tokens: a fetch or a delete names each mailbox by a token, which must be signed
//! by the mailbox's key for this relay's peer id (see `merpati_proto::mailbox`). A token made
//! for another relay, or by anyone but the owner, is refused before anything is read or marked.
//!
//! Cost. A signature check takes some 50 µs, and a fetch may carry 256 tokens. So:
//! * a node presents the same tokens at every fetch (a signature is deterministic) and an idle
//!   node renews its long poll every two minutes: each token is verified once and then
//!   recognised by its 32-byte digest in a bounded cache of two generations (when the current
//!   one is full it becomes the previous one and the one before is dropped, so tokens in use
//!   stay; [`VERIFIED_PER_GENERATION`] digests each, some 4 MiB);
//! * tokens not in the cache are charged to a budget of verifications per peer, network and
//!   IPv6 /48 ([`VERIFICATION_LIMITS`]) and of everyone together ([`VERIFICATION_TOTAL`]),
//!   answered `RateLimited` beyond it, so valid tokens for keys of one's own (free to make)
//!   cannot buy more than a slice of the relay's CPU;
//! * the checks run on a blocking thread, not on the network's task;
//! * a request is refused whole at the first token that fails, and its tokens are remembered only
//!   when all of them passed.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use libp2p::PeerId;
use merpati_proto::mailbox::{FetchToken, MailboxId};
use merpati_proto::wire::Refusal;

use super::rate::{Rate, RateLimiter, RateLimits};

/// How many verified tokens one generation of the cache remembers.
pub const VERIFIED_PER_GENERATION: usize = 65_536;

/// The budget of signature checks per sender. A node with a hundred contacts shows at most some
/// 5 000 new tokens when it starts, and a few a day after that; one with a thousand, up to some
/// 50 000, which then take half a minute. One network can buy a tenth of a CPU.
pub const VERIFICATION_LIMITS: RateLimits = RateLimits {
    per_peer: Rate { per_second: 1_000, burst: 20_000 },
    per_ip: Rate { per_second: 2_000, burst: 40_000 },
    per_ipv6_block: Rate { per_second: 4_000, burst: 80_000 },
};

/// The budget of signature checks of all senders together: a quarter of a CPU, however many
/// networks ask. Tokens already verified cost nothing, so nodes fetching as usual are not slowed
/// when it runs out; only the first fetches of nodes starting then wait.
pub const VERIFICATION_TOTAL: Rate = Rate { per_second: 5_000, burst: 100_000 };

/// The relay's check of fetch tokens, with its cache of tokens already verified.
#[derive(Debug)]
pub struct TokenCheck {
    /// This relay's peer id, binary: what a token for it signs.
    relay: Arc<[u8]>,
    verified: Mutex<Generations>,
    per_generation: usize,
    budget: RateLimiter,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashSet<[u8; 32]>,
    previous: HashSet<[u8; 32]>,
}

impl TokenCheck {
    /// A check of tokens made for the relay `relay`.
    pub fn new(relay: &PeerId) -> Self {
        Self::with_limits(relay, VERIFIED_PER_GENERATION, VERIFICATION_LIMITS, VERIFICATION_TOTAL)
    }

    fn with_limits(relay: &PeerId, per_generation: usize, budget: RateLimits, total: Rate) -> Self {
        Self {
            relay: relay.to_bytes().into(),
            verified: Mutex::default(),
            per_generation: per_generation.max(1),
            budget: RateLimiter::with_total(budget, total),
        }
    }

    /// The mailboxes `tokens` open at this relay, for a request of `peer` from `ip`: refused
    /// `Unauthorized` if any token fails, `RateLimited` if checking the new ones would pass the
    /// budget.
    pub async fn mailboxes(
        &self,
        peer: &PeerId,
        ip: Option<IpAddr>,
        tokens: &[FetchToken],
    ) -> Result<Vec<MailboxId>, Refusal> {
        let new: Vec<FetchToken> = {
            let mut verified = self.lock();
            tokens.iter().filter(|token| !self.remembers(&mut verified, &token.digest())).cloned().collect()
        };
        if !new.is_empty() {
            let cost = u32::try_from(new.len()).unwrap_or(u32::MAX);
            if let Err(retry_after_ms) = self.budget.check_cost(peer, ip, Instant::now(), cost) {
                return Err(Refusal::RateLimited { retry_after_ms });
            }
            let relay = Arc::clone(&self.relay);
            let digests = tokio::task::spawn_blocking(move || {
                new.iter()
                    .map(|token| token.verify(&relay).then(|| token.digest()))
                    .collect::<Option<Vec<_>>>()
            })
            .await
            .map_err(|_| Refusal::Internal)?
            .ok_or(Refusal::Unauthorized)?;
            let mut verified = self.lock();
            for digest in digests {
                self.remember(&mut verified, digest);
            }
        }
        Ok(tokens.iter().map(FetchToken::mailbox).collect())
    }

    /// The mailbox `token` opens at this relay (see [`TokenCheck::mailboxes`]).
    pub async fn mailbox(
        &self,
        peer: &PeerId,
        ip: Option<IpAddr>,
        token: &FetchToken,
    ) -> Result<MailboxId, Refusal> {
        self.mailboxes(peer, ip, std::slice::from_ref(token)).await.map(|_| token.mailbox())
    }

    /// Whether the token with `digest` was verified before; one found in the previous
    /// generation moves to the current one.
    fn remembers(&self, verified: &mut Generations, digest: &[u8; 32]) -> bool {
        if verified.current.contains(digest) {
            return true;
        }
        if !verified.previous.remove(digest) {
            return false;
        }
        self.remember(verified, *digest);
        true
    }

    fn remember(&self, verified: &mut Generations, digest: [u8; 32]) {
        if verified.current.len() >= self.per_generation {
            verified.previous = std::mem::take(&mut verified.current);
        }
        verified.current.insert(digest);
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

    fn generous() -> RateLimits {
        let plenty = Rate { per_second: 1_000_000, burst: 1_000_000 };
        RateLimits { per_peer: plenty, per_ip: plenty, per_ipv6_block: plenty }
    }

    #[tokio::test]
    async fn only_tokens_made_for_this_relay_by_the_owner_pass() {
        let (here, elsewhere, peer) = (PeerId::random(), PeerId::random(), PeerId::random());
        let check = TokenCheck::new(&here);
        let mine = key(1).token(&here.to_bytes());
        assert_eq!(check.mailbox(&peer, None, &mine).await, Ok(key(1).id()));
        assert_eq!(check.mailbox(&peer, None, &mine).await, Ok(key(1).id()), "again, from the cache");
        let for_another_relay = key(1).token(&elsewhere.to_bytes());
        assert_eq!(check.mailbox(&peer, None, &for_another_relay).await, Err(Refusal::Unauthorized));
        let borrowed_key = FetchToken { key: mine.key, ..key(2).token(&here.to_bytes()) };
        assert_eq!(check.mailbox(&peer, None, &borrowed_key).await, Err(Refusal::Unauthorized));
        let third = key(3).token(&here.to_bytes());
        assert_eq!(
            check.mailboxes(&peer, None, &[mine.clone(), for_another_relay, third.clone()]).await,
            Err(Refusal::Unauthorized),
            "one bad token refuses the request"
        );
        assert!(!check.remembers(&mut check.lock(), &third.digest()), "nothing of a refused request is kept");
        assert_eq!(check.mailboxes(&peer, None, &[mine, third]).await, Ok(vec![key(1).id(), key(3).id()]));
    }

    #[tokio::test]
    async fn new_tokens_are_charged_to_a_budget_and_cached_ones_are_free() {
        let (here, peer) = (PeerId::random(), PeerId::random());
        let budget = RateLimits { per_peer: Rate { per_second: 10, burst: 20 }, ..generous() };
        let check = TokenCheck::with_limits(&here, 1_000, budget, generous().per_peer);
        let tokens: Vec<FetchToken> = (0..30).map(|n| key(n).token(&here.to_bytes())).collect();
        assert!(check.mailboxes(&peer, None, &tokens[..20]).await.is_ok());
        let Err(Refusal::RateLimited { retry_after_ms }) =
            check.mailboxes(&peer, None, &tokens[10..30]).await
        else {
            panic!("ten new tokens past a spent budget")
        };
        assert!(retry_after_ms > 0);
        for _ in 0..5 {
            assert!(check.mailboxes(&peer, None, &tokens[..20]).await.is_ok(), "verified ones cost nothing");
        }
        assert!(
            check.mailboxes(&PeerId::random(), None, &tokens[20..]).await.is_ok(),
            "another peer's budget"
        );
    }

    #[tokio::test]
    async fn the_cache_stays_bounded_and_keeps_tokens_in_use() {
        let (relay, peer) = (PeerId::random(), PeerId::random());
        let check = TokenCheck::with_limits(&relay, 4, generous(), generous().per_peer);
        let tokens: Vec<FetchToken> = (0..20).map(|n| key(n).token(&relay.to_bytes())).collect();
        let in_use = &tokens[0];
        for token in &tokens[1..] {
            check.mailbox(&peer, None, token).await.unwrap();
            check.mailbox(&peer, None, in_use).await.unwrap();
            let verified = check.lock();
            assert!(verified.current.len() <= 4 && verified.previous.len() <= 4);
            assert!(
                verified.current.contains(&in_use.digest()) || verified.previous.contains(&in_use.digest()),
                "a token presented at every fetch is never dropped"
            );
        }
        assert!(!check.remembers(&mut check.lock(), &tokens[1].digest()), "one not seen since is forgotten");
        // A forgotten token is verified again, not refused.
        assert_eq!(check.mailbox(&peer, None, &tokens[1]).await, Ok(key(1).id()));
    }
}
