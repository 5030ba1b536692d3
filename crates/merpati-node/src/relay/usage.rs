//! What the relay stores, counted per mailbox, per depositor (network and peer) and in all, and
//! the quota check each deposit passes before it is stored.
//!
//! Quotas, in the order they are checked:
//! 1. the mailbox's count and bytes (`MailboxFull`): one conversation cannot take everything;
//! 2. the depositor's network, its IPv6 /48 and its peer (`RateLimited`, retry later): what one
//!    network has stored and not yet seen fetched is capped, so one abuser, however many peer ids
//!    (or /64s of its /48) it makes, cannot take the relay's budget from everyone else;
//! 3. the relay's disk budget and mailbox count (`RelayFull`), of which a reserve is kept for
//!    mailboxes their owners fetched lately ("live"): a mailbox nobody fetches cannot use it.

use std::collections::HashMap;
use std::hash::Hash;

use merpati_proto::mailbox::MailboxId;
use merpati_proto::wire::Refusal;

use super::depositor::{Depositor, Network, PeerKey};
use super::mailboxes::{MailboxLimits, MailboxStats};

/// What a depositor over its quota is told to wait: stored bytes are freed only as recipients
/// fetch theirs, so trying again at once is pointless.
pub(super) const DEPOSITOR_RETRY_MS: u32 = 60_000;

/// The relay's counters.
#[derive(Debug, Default)]
pub(super) struct Usage {
    per_mailbox: HashMap<MailboxId, Held>,
    /// Bytes per network and per IPv6 /48 block (a block is a `Network` of its own kind).
    per_network: HashMap<Network, u64>,
    per_peer: HashMap<PeerKey, u64>,
    envelopes: u64,
    bytes: u64,
}

/// Envelopes and bytes one mailbox holds.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    count: u32,
    bytes: u64,
}

impl Usage {
    /// Whether an envelope of `len` bytes from `depositor` fits in `mailbox` under `limits`;
    /// `live` says whether the mailbox's owner fetched it lately. Changes nothing.
    pub(super) fn admit(
        &self,
        limits: &MailboxLimits,
        mailbox: &MailboxId,
        depositor: &Depositor,
        len: u64,
        live: bool,
    ) -> Result<(), Refusal> {
        let held = self.per_mailbox.get(mailbox);
        let now_held = held.copied().unwrap_or_default();
        if now_held.count >= limits.max_envelopes_per_mailbox
            || now_held.bytes.saturating_add(len) > limits.max_bytes_per_mailbox
        {
            return Err(Refusal::MailboxFull);
        }
        let over = |used: Option<&u64>, max: u64| used.copied().unwrap_or(0).saturating_add(len) > max;
        let network_over =
            depositor.network.is_some_and(|n| over(self.per_network.get(&n), limits.max_bytes_per_network));
        let block_over = depositor
            .network
            .and_then(|n| n.block())
            .is_some_and(|b| over(self.per_network.get(&b), limits.max_bytes_per_ipv6_block));
        if network_over || block_over || over(self.per_peer.get(&depositor.peer), limits.max_bytes_per_peer) {
            return Err(Refusal::RateLimited { retry_after_ms: DEPOSITOR_RETRY_MS });
        }
        let (budget, max_mailboxes) = if live {
            (limits.disk_budget, limits.max_mailboxes)
        } else {
            (limits.open_disk_budget(), limits.open_max_mailboxes())
        };
        if self.bytes.saturating_add(len) > budget
            || (held.is_none() && self.per_mailbox.len() as u64 >= max_mailboxes)
        {
            return Err(Refusal::RelayFull);
        }
        Ok(())
    }

    /// Counts an envelope of `len` bytes stored in `mailbox` by `depositor` (unknown for
    /// envelopes stored before depositors were recorded).
    pub(super) fn add(&mut self, mailbox: MailboxId, depositor: Option<&Depositor>, len: u64) {
        let held = self.per_mailbox.entry(mailbox).or_default();
        held.count = held.count.saturating_add(1);
        held.bytes += len;
        if let Some(depositor) = depositor {
            for key in networks_of(depositor) {
                *self.per_network.entry(key).or_default() += len;
            }
            *self.per_peer.entry(depositor.peer).or_default() += len;
        }
        self.envelopes += 1;
        self.bytes += len;
    }

    /// Stops counting an envelope [`Usage::add`] counted, with the same arguments.
    pub(super) fn release(&mut self, mailbox: MailboxId, depositor: Option<&Depositor>, len: u64) {
        if let Some(held) = self.per_mailbox.get_mut(&mailbox) {
            held.count = held.count.saturating_sub(1);
            held.bytes = held.bytes.saturating_sub(len);
            if held.count == 0 {
                self.per_mailbox.remove(&mailbox);
            }
        }
        if let Some(depositor) = depositor {
            for key in networks_of(depositor) {
                subtract(&mut self.per_network, key, len);
            }
            subtract(&mut self.per_peer, depositor.peer, len);
        }
        self.envelopes = self.envelopes.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len);
    }

    /// The mailboxes holding envelopes.
    pub(super) fn mailboxes(&self) -> impl Iterator<Item = &MailboxId> {
        self.per_mailbox.keys()
    }

    /// Bytes stored by `network`.
    #[cfg(test)]
    pub(super) fn of_network(&self, network: &Network) -> u64 {
        self.per_network.get(network).copied().unwrap_or(0)
    }

    /// The totals (fetch marks are counted elsewhere: 0 here).
    pub(super) fn stats(&self) -> MailboxStats {
        MailboxStats {
            mailboxes: self.per_mailbox.len() as u64,
            envelopes: self.envelopes,
            bytes: self.bytes,
            fetch_marks: 0,
        }
    }
}

/// The depositor's network and its block, those it has.
fn networks_of(depositor: &Depositor) -> impl Iterator<Item = Network> {
    depositor.network.into_iter().chain(depositor.network.and_then(|n| n.block()))
}

/// Lowers `key`'s count by `len`, dropping it at zero so the maps hold only current depositors.
fn subtract<K: Hash + Eq>(map: &mut HashMap<K, u64>, key: K, len: u64) {
    if let Some(used) = map.get_mut(&key) {
        *used = used.saturating_sub(len);
        if *used == 0 {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use libp2p::PeerId;

    use super::*;

    fn limits() -> MailboxLimits {
        MailboxLimits {
            max_envelopes_per_mailbox: 100,
            max_bytes_per_mailbox: 10_000,
            max_bytes_per_network: 3_000,
            max_bytes_per_peer: 2_000,
            max_bytes_per_ipv6_block: 5_000,
            disk_budget: 10_000,
            max_mailboxes: 10,
            live_reserve_percent: 20,
            ..MailboxLimits::default()
        }
    }

    fn from(ip: &str) -> Depositor {
        Depositor::new(&PeerId::random(), Some(ip.parse::<IpAddr>().unwrap()))
    }

    #[test]
    fn a_network_is_capped_whatever_its_peers_and_others_still_get_in() {
        let limits = limits();
        let mut usage = Usage::default();
        let mailbox = MailboxId([1; 16]);
        // Fresh peer ids from one /64 do not escape the network's cap.
        let mut stored = 0;
        for i in 0..10 {
            let depositor = from(&format!("2001:db8:7:7::{i}"));
            if usage.admit(&limits, &mailbox, &depositor, 1_000, true).is_ok() {
                usage.add(mailbox, Some(&depositor), 1_000);
                stored += 1;
            }
        }
        assert_eq!(stored, 3);
        let refused = usage.admit(&limits, &mailbox, &from("2001:db8:7:7::99"), 1_000, true);
        assert_eq!(refused, Err(Refusal::RateLimited { retry_after_ms: DEPOSITOR_RETRY_MS }));
        // One peer is capped below its network's cap.
        let peer = from("192.0.2.1");
        usage.add(mailbox, Some(&peer), 2_000);
        assert!(usage.admit(&limits, &mailbox, &peer, 1, true).is_err());
        assert!(usage.admit(&limits, &mailbox, &from("192.0.2.1"), 1, true).is_ok());
        // Releasing frees the quota again, and empty counters are dropped.
        usage.release(mailbox, Some(&peer), 2_000);
        assert!(usage.admit(&limits, &mailbox, &peer, 2_000, true).is_ok());
        assert_eq!(usage.of_network(&peer.network.unwrap()), 0);
    }

    #[test]
    fn the_64s_of_one_48_share_a_larger_quota() {
        let limits = limits();
        let mut usage = Usage::default();
        let mailbox = MailboxId([2; 16]);
        // Each /64 of the /48 may store 3 000, all of them together 5 000.
        let mut stored = 0;
        for i in 0..20u16 {
            let depositor = from(&format!("2001:db8:9:{i:x}::1"));
            while usage.admit(&limits, &mailbox, &depositor, 1_000, true).is_ok() {
                usage.add(mailbox, Some(&depositor), 1_000);
                stored += 1_000;
            }
        }
        assert_eq!(stored, 5_000);
        // Another /48 is not held back.
        assert!(usage.admit(&limits, &mailbox, &from("2001:db8:a::1"), 1_000, true).is_ok());
    }

    #[test]
    fn the_reserve_is_for_live_mailboxes_only() {
        let limits = limits();
        let mut usage = Usage::default();
        for i in 0..4u8 {
            usage.add(MailboxId([i; 16]), None, 2_000);
        }
        // 8 000 stored: the open part of the budget (8 000) is used up, the reserve is not.
        let stranger = from("198.51.100.1");
        assert_eq!(usage.admit(&limits, &MailboxId([9; 16]), &stranger, 100, false), Err(Refusal::RelayFull));
        assert!(usage.admit(&limits, &MailboxId([9; 16]), &stranger, 100, true).is_ok());
        assert!(usage.admit(&limits, &MailboxId([9; 16]), &stranger, 2_001, true).is_err());
        // The mailbox count has a reserve too: 8 of 10 are open to anyone.
        let mut usage = Usage::default();
        for i in 0..8u8 {
            usage.add(MailboxId([i; 16]), None, 1);
        }
        assert_eq!(usage.admit(&limits, &MailboxId([9; 16]), &stranger, 1, false), Err(Refusal::RelayFull));
        assert!(usage.admit(&limits, &MailboxId([9; 16]), &stranger, 1, true).is_ok());
        assert!(
            usage.admit(&limits, &MailboxId([0; 16]), &stranger, 1, false).is_ok(),
            "an existing mailbox"
        );
    }
}
