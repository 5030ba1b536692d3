//! The mailbox service: answers `/merpati/mailbox/1` requests from [`Mailboxes`], with rate limits,
//! long polls and metrics. It knows nothing of the network: the network layer hands it a peer, the
//! peer's IP address, a request and the time, and sends back the response.
//!
//! Order of checks: rate limit first (so junk costs its sender the same budget as a real request),
//! then the request's own bounds (`validate`), then the operation.
//!
//! Long polls. A fetch that finds nothing and allows a wait registers a waiter on each of its
//! mailboxes, fetches once more (a deposit may have landed between the first fetch and the
//! registration), and then sleeps until a deposit into one of those mailboxes is stored or the
//! wait runs out, and fetches again. Waiters are bounded: [`MAX_LONG_POLLS`] in all and
//! [`MAX_LONG_POLLS_PER_PEER`] per peer; beyond that the fetch is answered `RateLimited`.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use merpati_proto::Timestamp;
use merpati_proto::mailbox::{FetchToken, MailboxId};
use merpati_proto::wire::Refusal;
use merpati_proto::wire::mailbox::{Request, Response};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::mailboxes::Mailboxes;
use super::metrics::MailboxMetrics;
use super::rate::{RateLimiter, RateLimits};

/// The most fetches waiting for deposits at once, relay-wide.
pub const MAX_LONG_POLLS: usize = 4_096;
/// The most fetches one peer may have waiting at once.
pub const MAX_LONG_POLLS_PER_PEER: u32 = 8;
/// What a fetch beyond the long-poll caps is told to wait before retrying, in milliseconds.
const LONG_POLL_RETRY_MS: u32 = 1_000;

/// The relay's mailbox service. Cloning shares it.
#[derive(Clone, Debug)]
pub struct MailboxService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mailboxes: Mailboxes,
    rate: RateLimiter,
    metrics: MailboxMetrics,
    waiters: Mutex<Waiters>,
}

/// Fetches waiting for deposits.
#[derive(Debug, Default)]
struct Waiters {
    by_mailbox: HashMap<MailboxId, Vec<(u64, Arc<Notify>)>>,
    per_peer: HashMap<PeerId, u32>,
    total: usize,
    next: u64,
}

impl MailboxService {
    /// A service over `mailboxes` with the given rate limits, reporting to `metrics`.
    pub fn new(mailboxes: Mailboxes, rate: RateLimits, metrics: MailboxMetrics) -> Self {
        metrics.set_stored(&mailboxes.stats());
        Self {
            inner: Arc::new(Inner {
                mailboxes,
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
                match inner.mailboxes.deposit(mailbox, envelope, now).await {
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
                match self.fetch(peer, &tokens, after, limit, wait_ms, now).await {
                    Ok((items, more)) => {
                        inner.metrics.fetched(items.len());
                        Response::Envelopes { items, more }
                    }
                    Err(refusal) => Response::Refused(refusal),
                }
            }
            Request::Delete { token, ids } => match inner.mailboxes.delete(&token, &ids) {
                Ok(count) => {
                    inner.metrics.deleted(count);
                    inner.metrics.set_stored(&inner.mailboxes.stats());
                    Response::Deleted { count }
                }
                Err(refusal) => Response::Refused(refusal),
            },
        }
    }

    async fn fetch(
        &self,
        peer: PeerId,
        tokens: &[FetchToken],
        after: Option<u64>,
        limit: u32,
        wait_ms: u32,
        now: Timestamp,
    ) -> Result<(Vec<merpati_proto::wire::mailbox::StoredEnvelope>, bool), Refusal> {
        let mailboxes = &self.inner.mailboxes;
        let page = mailboxes.fetch(tokens, after, limit, now)?;
        if !page.0.is_empty() || wait_ms == 0 {
            return Ok(page);
        }
        let started = Instant::now();
        let wait = Duration::from_millis(u64::from(wait_ms));
        let ids: BTreeSet<MailboxId> = tokens.iter().map(MailboxId::of).collect();
        let waiter = self.register(peer, ids)?;
        loop {
            let elapsed = started.elapsed();
            let now = now.plus(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
            let page = mailboxes.fetch(tokens, after, limit, now)?;
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

    /// Registers a long-poll waiter on `ids`, within the caps.
    fn register(&self, peer: PeerId, ids: BTreeSet<MailboxId>) -> Result<Waiter<'_>, Refusal> {
        let mut waiters = self.lock_waiters();
        let of_peer = waiters.per_peer.get(&peer).copied().unwrap_or(0);
        if waiters.total >= MAX_LONG_POLLS || of_peer >= MAX_LONG_POLLS_PER_PEER {
            return Err(Refusal::RateLimited { retry_after_ms: LONG_POLL_RETRY_MS });
        }
        let notify = Arc::new(Notify::new());
        let key = waiters.next;
        waiters.next += 1;
        for id in &ids {
            waiters.by_mailbox.entry(*id).or_default().push((key, Arc::clone(&notify)));
        }
        *waiters.per_peer.entry(peer).or_default() += 1;
        waiters.total += 1;
        self.inner.metrics.set_long_polls(waiters.total);
        Ok(Waiter { service: self, peer, key, ids, notify })
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

    /// Purges expired envelopes and refreshes the storage gauges every `every`, until `shutdown`.
    pub async fn run_maintenance(&self, every: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let mailboxes = self.inner.mailboxes.clone();
            // A purge of many envelopes is seconds of sled work: off the async workers.
            let purged = tokio::task::spawn_blocking(move || mailboxes.purge_expired(wall_clock())).await;
            match purged {
                Ok(Ok(count)) => {
                    if count > 0 {
                        tracing::info!(count, "relay: purged expired envelopes");
                    }
                    self.inner.metrics.expired(count);
                }
                Ok(Err(e)) => tracing::error!(error = %e, "relay: purging expired envelopes failed"),
                Err(e) => tracing::error!(error = %e, "relay: the purge task failed"),
            }
            self.inner.metrics.set_stored(&self.inner.mailboxes.stats());
        }
    }
}

/// The current wall-clock time (0 if the clock is before 1970).
fn wall_clock() -> Timestamp {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// A registered long poll; unregisters on drop, whichever way the fetch ends.
struct Waiter<'a> {
    service: &'a MailboxService,
    peer: PeerId,
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
        if let Some(count) = waiters.per_peer.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                waiters.per_peer.remove(&self.peer);
            }
        }
        waiters.total -= 1;
        self.service.inner.metrics.set_long_polls(waiters.total);
    }
}
