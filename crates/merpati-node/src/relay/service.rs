//! The mailbox service: answers `/merpati/mailbox/2` requests from [`Mailboxes`], with rate limits,
//! long polls and metrics. It knows nothing of the network: the network layer hands it a peer, the
//! peer's IP address, a request and the time, and sends back the response.
//!
//! Order of checks: rate limit first (so junk costs its sender the same budget as a real request),
//! then the request's own bounds (`validate`), then the fetch tokens ([`TokenCheck`]), then the
//! operation.
//!
//! Long polls. A fetch that finds nothing and allows a wait registers a waiter on each of its
//! mailboxes, fetches once more (a deposit may have landed between the first fetch and the
//! registration), and then sleeps until a deposit into one of those mailboxes is stored or the
//! wait runs out, and fetches again. Waiters are bounded: [`MAX_LONG_POLLS`] in all,
//! [`MAX_LONG_POLLS_PER_NETWORK`] per network (IPv4 address or IPv6 /64: peer ids are free),
//! [`MAX_LONG_POLLS_PER_IPV6_BLOCK`] per IPv6 /48 and [`MAX_LONG_POLLS_PER_PEER`] per peer. A fetch beyond them is answered at once with what it
//! found (nothing), as if its wait had run out: the client's next fetch costs it a rate-limit
//! token, so hoarding slots buys nothing, and an honest client behind a crowded NAT still gets
//! its mail, only later.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use merpati_proto::Timestamp;
use merpati_proto::mailbox::MailboxId;
use merpati_proto::wire::Refusal;
use merpati_proto::wire::mailbox::{Request, Response};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::depositor::{Depositor, Network};
use super::mailboxes::Mailboxes;
use super::metrics::MailboxMetrics;
use super::rate::{RateLimiter, RateLimits};
use super::tokens::TokenCheck;
use crate::clock::Clock;

/// The most fetches waiting for deposits at once, relay-wide.
pub const MAX_LONG_POLLS: usize = 4_096;
/// The most fetches one peer may have waiting at once.
pub const MAX_LONG_POLLS_PER_PEER: u32 = 8;
/// The most fetches one network (IPv4 address, IPv6 /64) may have waiting at once: room for a
/// household or an office of nodes behind one NAT.
pub const MAX_LONG_POLLS_PER_NETWORK: u32 = 64;
/// The most fetches the /64s of one IPv6 /48 may have waiting at once, together.
pub const MAX_LONG_POLLS_PER_IPV6_BLOCK: u32 = 256;

/// The relay's mailbox service. Cloning shares it.
#[derive(Clone, Debug)]
pub struct MailboxService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mailboxes: Mailboxes,
    tokens: TokenCheck,
    rate: RateLimiter,
    metrics: MailboxMetrics,
    waiters: Mutex<Waiters>,
}

/// Fetches waiting for deposits.
#[derive(Debug, Default)]
struct Waiters {
    by_mailbox: HashMap<MailboxId, Vec<(u64, Arc<Notify>)>>,
    per_peer: HashMap<PeerId, u32>,
    /// Per network and per IPv6 /48 block.
    per_network: HashMap<Network, u32>,
    total: usize,
    next: u64,
}

impl MailboxService {
    /// The service of the relay `relay` over `mailboxes`, with the given rate limits, reporting to
    /// `metrics`.
    pub fn new(relay: &PeerId, mailboxes: Mailboxes, rate: RateLimits, metrics: MailboxMetrics) -> Self {
        metrics.set_stored(&mailboxes.stats());
        Self {
            inner: Arc::new(Inner {
                mailboxes,
                tokens: TokenCheck::new(relay),
                rate: RateLimiter::new(rate),
                metrics,
                waiters: Mutex::new(Waiters::default()),
            }),
        }
    }

    /// The mailbox store.
    pub fn mailboxes(&self) -> &Mailboxes {
        &self.inner.mailboxes
    }

    /// The metrics.
    pub fn metrics(&self) -> &MailboxMetrics {
        &self.inner.metrics
    }

    /// Answers one request of `peer`, connected from `ip`, received at `now`.
    ///
    /// A deposit is answered `Stored` only once durable; a fetch with `wait_ms > 0` that finds
    /// nothing may take up to `wait_ms` to answer.
    pub async fn handle(
        &self,
        peer: PeerId,
        ip: Option<IpAddr>,
        request: Request,
        now: Timestamp,
    ) -> Response {
        let response = self.answer(peer, ip, request, now).await;
        if let Response::Refused(refusal) = &response {
            self.inner.metrics.refused(refusal);
        }
        response
    }

    /// Counts a request that could not be decoded.
    pub fn undecodable(&self) {
        self.inner.metrics.undecodable_request();
        tracing::debug!("relay: an undecodable mailbox request");
    }

    async fn answer(&self, peer: PeerId, ip: Option<IpAddr>, request: Request, now: Timestamp) -> Response {
        if let Err(retry_after_ms) = self.inner.rate.check(&peer, ip, Instant::now()) {
            return Response::Refused(Refusal::RateLimited { retry_after_ms });
        }
        if let Err(e) = request.validate() {
            return Response::Refused(e.refusal());
        }
        let inner = &self.inner;
        match request {
            Request::Deposit { mailbox, envelope } => {
                match inner.mailboxes.deposit(mailbox, envelope, Depositor::new(&peer, ip), now).await {
                    Ok(id) => {
                        inner.metrics.deposited();
                        inner.metrics.set_stored(&inner.mailboxes.stats());
                        self.wake(&mailbox);
                        Response::Stored { id }
                    }
                    Err(refusal) => Response::Refused(refusal),
                }
            }
            Request::Fetch { tokens, after, limit, wait_ms } => {
                let mailboxes = match inner.tokens.mailboxes(&peer, ip, &tokens).await {
                    Ok(mailboxes) => mailboxes,
                    Err(refusal) => return Response::Refused(refusal),
                };
                match self.fetch(peer, ip, &mailboxes, after, limit, wait_ms, now).await {
                    Ok((items, more)) => {
                        inner.metrics.fetched(items.len());
                        Response::Envelopes { items, more }
                    }
                    Err(refusal) => Response::Refused(refusal),
                }
            }
            Request::Delete { token, ids } => {
                let owned = inner.tokens.mailbox(&peer, ip, &token).await;
                match owned.and_then(|mailbox| inner.mailboxes.delete(&mailbox, &ids)) {
                    Ok(count) => {
                        inner.metrics.deleted(count);
                        inner.metrics.set_stored(&inner.mailboxes.stats());
                        Response::Deleted { count }
                    }
                    Err(refusal) => Response::Refused(refusal),
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        &self,
        peer: PeerId,
        ip: Option<IpAddr>,
        owned: &[MailboxId],
        after: Option<u64>,
        limit: u32,
        wait_ms: u32,
        now: Timestamp,
    ) -> Result<(Vec<merpati_proto::wire::mailbox::StoredEnvelope>, bool), Refusal> {
        let mailboxes = &self.inner.mailboxes;
        let page = mailboxes.fetch(owned, after, limit, ip.map(Network::of), now)?;
        if !page.0.is_empty() || wait_ms == 0 {
            return Ok(page);
        }
        let started = Instant::now();
        let wait = Duration::from_millis(u64::from(wait_ms));
        let ids: BTreeSet<MailboxId> = owned.iter().copied().collect();
        let Some(waiter) = self.register(peer, ip.map(Network::of), ids) else {
            return Ok(page);
        };
        loop {
            let elapsed = started.elapsed();
            let now = now.plus(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
            let page = mailboxes.fetch(owned, after, limit, ip.map(Network::of), now)?;
            if !page.0.is_empty() {
                return Ok(page);
            }
            let Some(left) = wait.checked_sub(elapsed).filter(|d| !d.is_zero()) else {
                return Ok(page);
            };
            // A deposit stored after the registration leaves a permit, so none is missed
            // between the fetch above and this wait.
            if tokio::time::timeout(left, waiter.notify.notified()).await.is_err() {
                return Ok(page);
            }
        }
    }

    /// Registers a long-poll waiter on `ids`, or `None` beyond the caps.
    fn register(
        &self,
        peer: PeerId,
        network: Option<Network>,
        ids: BTreeSet<MailboxId>,
    ) -> Option<Waiter<'_>> {
        let mut waiters = self.lock_waiters();
        let of_peer = waiters.per_peer.get(&peer).copied().unwrap_or(0);
        let held = |key: Option<Network>| key.and_then(|k| waiters.per_network.get(&k).copied()).unwrap_or(0);
        let block = network.and_then(|n| n.block());
        if waiters.total >= MAX_LONG_POLLS
            || of_peer >= MAX_LONG_POLLS_PER_PEER
            || held(network) >= MAX_LONG_POLLS_PER_NETWORK
            || held(block) >= MAX_LONG_POLLS_PER_IPV6_BLOCK
        {
            self.inner.metrics.long_poll_declined();
            return None;
        }
        let notify = Arc::new(Notify::new());
        let key = waiters.next;
        waiters.next += 1;
        for id in &ids {
            waiters.by_mailbox.entry(*id).or_default().push((key, Arc::clone(&notify)));
        }
        *waiters.per_peer.entry(peer).or_default() += 1;
        for key in network.into_iter().chain(block) {
            *waiters.per_network.entry(key).or_default() += 1;
        }
        waiters.total += 1;
        self.inner.metrics.set_long_polls(waiters.total);
        Some(Waiter { service: self, peer, network, key, ids, notify })
    }

    /// Wakes the fetches waiting on `mailbox`.
    fn wake(&self, mailbox: &MailboxId) {
        let waiters = self.lock_waiters();
        if let Some(list) = waiters.by_mailbox.get(mailbox) {
            for (_, notify) in list {
                notify.notify_one();
            }
        }
    }

    /// How many fetches are waiting for deposits now.
    pub fn long_polls(&self) -> usize {
        self.lock_waiters().total
    }

    fn lock_waiters(&self) -> MutexGuard<'_, Waiters> {
        self.inner.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Purges envelopes expired by `clock` and refreshes the storage gauges every `every`, until
    /// `shutdown`.
    pub async fn run_maintenance(&self, every: Duration, clock: Clock, shutdown: CancellationToken) {
        let mailboxes = self.inner.mailboxes.clone();
        let inner = &self.inner;
        super::purge::every(
            every,
            clock,
            shutdown,
            "envelopes",
            move |now| mailboxes.purge_expired(now),
            |count| {
                inner.metrics.expired(count.unwrap_or(0));
                inner.metrics.set_stored(&inner.mailboxes.stats());
            },
        )
        .await;
    }
}

/// A registered long poll; unregisters on drop, whichever way the fetch ends.
struct Waiter<'a> {
    service: &'a MailboxService,
    peer: PeerId,
    network: Option<Network>,
    key: u64,
    ids: BTreeSet<MailboxId>,
    notify: Arc<Notify>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiters = self.service.lock_waiters();
        for id in &self.ids {
            if let Some(list) = waiters.by_mailbox.get_mut(id) {
                list.retain(|(key, _)| *key != self.key);
                if list.is_empty() {
                    waiters.by_mailbox.remove(id);
                }
            }
        }
        release(&mut waiters.per_peer, self.peer);
        if let Some(network) = self.network {
            release(&mut waiters.per_network, network);
            if let Some(block) = network.block() {
                release(&mut waiters.per_network, block);
            }
        }
        waiters.total -= 1;
        self.service.inner.metrics.set_long_polls(waiters.total);
    }
}

/// Lowers `key`'s count of waiters, dropping it at zero.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, u32>, key: K) {
    if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use merpati_proto::keys::SymmetricKey;
    use merpati_proto::mailbox::{FetchToken, MailboxKey};

    use super::*;
    use crate::relay::mailboxes::MailboxLimits;
    use crate::relay::mailboxes::tests::envelope;
    use crate::relay::rate::Rate;

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    /// The relay under test.
    fn relay() -> PeerId {
        libp2p::identity::Keypair::ed25519_from_bytes([7; 32]).unwrap().public().to_peer_id()
    }

    fn key(n: u8) -> MailboxKey {
        MailboxKey::derive(&SymmetricKey::from_bytes([n; 32]), T0.day())
    }

    fn mailbox(n: u8) -> MailboxId {
        key(n).id()
    }

    /// The owner's token of mailbox `n` for the relay under test.
    fn token(n: u8) -> FetchToken {
        key(n).token(&relay().to_bytes())
    }

    fn service(dir: &std::path::Path, rate: RateLimits) -> (MailboxService, Registry) {
        let mut registry = Registry::default();
        let metrics = MailboxMetrics::register(&mut registry);
        let mailboxes = Mailboxes::open(dir, MailboxLimits::default()).unwrap();
        (MailboxService::new(&relay(), mailboxes, rate, metrics), registry)
    }

    fn deposit(n: u8) -> Request {
        Request::Deposit { mailbox: mailbox(n), envelope: envelope(mailbox(n), 512, n) }
    }

    fn fetch(n: u8, wait_ms: u32) -> Request {
        Request::Fetch { tokens: vec![token(n)], after: None, limit: 64, wait_ms }
    }

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[tokio::test]
    async fn requests_are_answered_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (service, registry) = service(dir.path(), RateLimits::default());
        let peer = PeerId::random();
        let Response::Stored { id } = service.handle(peer, None, deposit(1), T0).await else {
            panic!("not stored")
        };
        let Response::Envelopes { items, more } = service.handle(peer, None, fetch(1, 0), T0).await else {
            panic!("no page")
        };
        assert_eq!((items.len(), items[0].id, more), (1, id, false));
        let delete = Request::Delete { token: token(2), ids: vec![id] };
        assert_eq!(service.handle(peer, None, delete, T0).await, Response::Deleted { count: 0 });
        let delete = Request::Delete { token: token(1), ids: vec![id] };
        assert_eq!(service.handle(peer, None, delete, T0).await, Response::Deleted { count: 1 });
        // Fails `validate`: no tokens.
        let bad = Request::Fetch { tokens: Vec::new(), after: None, limit: 1, wait_ms: 0 };
        assert_eq!(service.handle(peer, None, bad, T0).await, Response::Refused(Refusal::Malformed));
        let wrong = Request::Deposit { mailbox: mailbox(1), envelope: envelope(mailbox(2), 512, 0) };
        assert_eq!(service.handle(peer, None, wrong, T0).await, Response::Refused(Refusal::Malformed));

        service.undecodable();

        let text = exposition(&registry);
        for line in [
            "merpati_mailbox_undecodable_requests_total 1",
            "merpati_mailbox_deposits_total 1",
            "merpati_mailbox_fetches_total 1",
            "merpati_mailbox_envelopes_fetched_total 1",
            "merpati_mailbox_envelopes_deleted_total 1",
            "merpati_mailbox_deletes_total 2",
            "merpati_mailbox_refusals_total{kind=\"malformed\"} 2",
            "merpati_mailbox_stored_envelopes 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    /// Another relay of the same recipient sees the recipient's tokens for it; they open nothing
    /// here, and the refusal changes nothing: the envelope stays, the mailbox is not marked.
    #[tokio::test]
    async fn a_token_made_for_another_relay_opens_nothing_here() {
        let dir = tempfile::tempdir().unwrap();
        let (service, registry) = service(dir.path(), RateLimits::default());
        let (owner, other_relay) = (PeerId::random(), PeerId::random());
        let Response::Stored { id } = service.handle(owner, None, deposit(1), T0).await else {
            panic!("not stored")
        };
        let seen_elsewhere = key(1).token(&other_relay.to_bytes());
        assert_eq!(seen_elsewhere.mailbox(), mailbox(1), "the same mailbox id at every relay");
        let both = Request::Fetch {
            tokens: vec![token(2), seen_elsewhere.clone()],
            after: None,
            limit: 8,
            wait_ms: 0,
        };
        let delete = Request::Delete { token: seen_elsewhere, ids: vec![id] };
        for request in [both, delete] {
            assert_eq!(
                service.handle(other_relay, None, request, T0).await,
                Response::Refused(Refusal::Unauthorized)
            );
        }
        assert_eq!(service.mailboxes().stats().fetch_marks, 0, "a refused fetch marks nothing");
        let Response::Envelopes { items, .. } = service.handle(owner, None, fetch(1, 0), T0).await else {
            panic!("no page")
        };
        assert_eq!(
            items.iter().map(|item| item.id).collect::<Vec<_>>(),
            vec![id],
            "still there for its owner"
        );
        assert!(exposition(&registry).contains("merpati_mailbox_refusals_total{kind=\"unauthorized\"} 2"));
    }

    #[tokio::test]
    async fn a_flooding_peer_is_rate_limited_while_another_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let rate = RateLimits {
            per_peer: Rate { per_second: 1, burst: 10 },
            per_ip: Rate { per_second: 1_000, burst: 1_000 },
            ..RateLimits::default()
        };
        let (service, registry) = service(dir.path(), rate);
        let (flooder, other) = (PeerId::random(), PeerId::random());
        let ip = Some(IpAddr::from([192, 0, 2, 1]));
        let mut limited = 0;
        for _ in 0..50 {
            if let Response::Refused(Refusal::RateLimited { retry_after_ms }) =
                service.handle(flooder, ip, fetch(1, 0), T0).await
            {
                assert!(retry_after_ms >= 1);
                limited += 1;
            }
        }
        assert_eq!(limited, 40);
        assert!(matches!(service.handle(other, ip, fetch(1, 0), T0).await, Response::Envelopes { .. }));
        assert!(exposition(&registry).contains("merpati_mailbox_refusals_total{kind=\"rate_limited\"} 40"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_poll_wakes_on_a_deposit_and_times_out_empty_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (service, _registry) = service(dir.path(), RateLimits::default());
        let owner = PeerId::random();
        let poll = {
            let service = service.clone();
            tokio::spawn(async move {
                let response = service.handle(owner, None, fetch(1, 10_000), T0).await;
                (response, Instant::now())
            })
        };
        // Let the poll register; a deposit elsewhere does not wake it with anything.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(service.long_polls(), 1);
        let sender = PeerId::random();
        assert!(matches!(service.handle(sender, None, deposit(2), T0).await, Response::Stored { .. }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!poll.is_finished());
        let Response::Stored { id } = service.handle(sender, None, deposit(1), T0).await else { panic!() };
        let stored_at = Instant::now();
        let (response, answered_at) =
            tokio::time::timeout(Duration::from_secs(2), poll).await.unwrap().unwrap();
        let Response::Envelopes { items, .. } = response else { panic!("{response:?}") };
        assert_eq!(items.iter().map(|e| e.id).collect::<Vec<_>>(), vec![id]);
        let latency = answered_at.saturating_duration_since(stored_at);
        assert!(latency < Duration::from_millis(50), "woke after {latency:?}");
        assert_eq!(service.long_polls(), 0);

        // Nothing comes: the poll ends empty after its wait.
        let started = Instant::now();
        let response = service.handle(owner, None, fetch(3, 150), T0).await;
        assert_eq!(response, Response::Envelopes { items: Vec::new(), more: false });
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(150) && waited < Duration::from_secs(2), "{waited:?}");
        assert_eq!(service.long_polls(), 0);
    }

    /// Holds `count` long polls of `peer` from `ip` on mailbox 1, waiting until all are registered.
    async fn hold_long_polls(
        service: &MailboxService,
        peer: PeerId,
        ip: Option<IpAddr>,
        count: u32,
    ) -> Vec<tokio::task::JoinHandle<Response>> {
        let before = service.long_polls();
        let polls: Vec<_> = (0..count)
            .map(|_| {
                let service = service.clone();
                tokio::spawn(async move { service.handle(peer, ip, fetch(1, 5_000), T0).await })
            })
            .collect();
        while service.long_polls() < before + count as usize {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        polls
    }

    #[tokio::test]
    async fn long_polls_are_capped_per_peer_and_per_network_and_answered_empty_beyond() {
        let dir = tempfile::tempdir().unwrap();
        let (service, registry) = service(dir.path(), RateLimits::default());
        let peer = PeerId::random();
        let home = Some(IpAddr::from([198, 51, 100, 2]));
        let mut polls = hold_long_polls(&service, peer, home, MAX_LONG_POLLS_PER_PEER).await;
        // Beyond the peer's cap: answered at once, empty, as if the wait had run out.
        let started = Instant::now();
        let empty = Response::Envelopes { items: Vec::new(), more: false };
        assert_eq!(service.handle(peer, home, fetch(1, 5_000), T0).await, empty);
        assert!(started.elapsed() < Duration::from_secs(2));
        // Fresh peer ids from one IPv6 /64 share the network's cap.
        let crowd = |i: u16| Some(IpAddr::from([0x2001, 0xdb8, 0, 9, i, 0, 0, 1]));
        let per_network = MAX_LONG_POLLS_PER_NETWORK / MAX_LONG_POLLS_PER_PEER;
        for i in 0..per_network {
            polls.extend(
                hold_long_polls(&service, PeerId::random(), crowd(i as u16), MAX_LONG_POLLS_PER_PEER).await,
            );
        }
        let started = Instant::now();
        assert_eq!(service.handle(PeerId::random(), crowd(999), fetch(1, 5_000), T0).await, empty);
        assert!(started.elapsed() < Duration::from_secs(2));
        // The other /64s of that /48 share its 256 slots.
        let neighbour = |n: u16, i: u16| Some(IpAddr::from([0x2001, 0xdb8, 0, 0x100 + n, i, 0, 0, 1]));
        for n in 0..(MAX_LONG_POLLS_PER_IPV6_BLOCK / MAX_LONG_POLLS_PER_NETWORK - 1) as u16 {
            for i in 0..per_network {
                let peer = PeerId::random();
                polls.extend(
                    hold_long_polls(&service, peer, neighbour(n, i as u16), MAX_LONG_POLLS_PER_PEER).await,
                );
            }
        }
        assert_eq!(service.handle(PeerId::random(), neighbour(99, 0), fetch(1, 5_000), T0).await, empty);
        // Another network still gets a slot.
        let elsewhere = Some(IpAddr::from([203, 0, 113, 5]));
        polls.extend(hold_long_polls(&service, PeerId::random(), elsewhere, 1).await);
        assert!(exposition(&registry).contains("merpati_mailbox_long_polls_declined_total 3"));
        // One deposit answers them all.
        assert!(matches!(
            service.handle(PeerId::random(), None, deposit(1), T0).await,
            Response::Stored { .. }
        ));
        for poll in polls {
            let response = tokio::time::timeout(Duration::from_secs(2), poll).await.unwrap().unwrap();
            assert!(matches!(response, Response::Envelopes { ref items, .. } if items.len() == 1));
        }
        assert_eq!(service.long_polls(), 0);
    }

    #[tokio::test]
    async fn maintenance_purges_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let (service, registry) = service(dir.path(), RateLimits::default());
        // Deposited long ago: already past the 30-day TTL by the wall clock.
        let ancient = Timestamp(1_000);
        assert!(matches!(
            service.handle(PeerId::random(), None, deposit(1), ancient).await,
            Response::Stored { .. }
        ));
        let shutdown = CancellationToken::new();
        let task = {
            let service = service.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                service.run_maintenance(Duration::from_millis(20), Clock::system(), shutdown).await
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while service.mailboxes().stats().envelopes > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(service.mailboxes().stats().envelopes, 0);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), task).await.unwrap().unwrap();
        let text = exposition(&registry);
        assert!(text.contains("merpati_mailbox_envelopes_expired_total 1"), "{text}");
        assert!(text.contains("merpati_mailbox_stored_envelopes 0"), "{text}");
    }
}
