//! A user node's use of relays: handing an envelope to a contact directly or, when its node cannot
//! be reached, depositing it at every one of the contact's relays; and fetching our own mailboxes
//! from each of our relays, long-polling so a deposit reaches us in milliseconds.
//!
//! The fetch loop owns nothing of the engine: it asks the daemon's actor for the current mailbox
//! keys (a `watch` channel the actor updates when they change, at least at every day change),
//! makes this relay's fetch tokens from them (a token is good at one relay only),
//! sweeps old mailboxes once and long-polls the live ones and hands fetched envelopes to
//! the actor through a bounded queue, deleting at the relay only what the actor reports as
//! processed (stored, a duplicate, or junk that will never open). An envelope the node failed to
//! store stays at the relay and is fetched again when the node restarts or its set of mailboxes
//! changes (a cursor per request keeps it from being fetched in a tight loop meanwhile).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use merpati_proto::mailbox::{FetchToken, MailboxId, MailboxKey};
use merpati_proto::wire::{self, Refusal, deliver, mailbox};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::engine::{Attempt, AttemptResult, MailboxKeys};
use crate::net;

/// How long a fetch may wait at the relay for a deposit when nothing is waiting.
pub const LONG_POLL: Duration = Duration::from_millis(wire::MAX_FETCH_WAIT_MS as u64 - 5_000);
/// Between empty fetch rounds of a node with too many mailboxes for one long poll.
const SPLIT_POLL_PAUSE: Duration = Duration::from_secs(10);
/// The first pause after a failed fetch; doubles up to [`FETCH_RETRY_MAX`].
const FETCH_RETRY_BASE: Duration = Duration::from_secs(1);
/// The longest pause between failed fetches.
const FETCH_RETRY_MAX: Duration = Duration::from_secs(120);
/// A long poll answered empty this soon was declined by the relay (it holds too many polls from
/// our network): poll again only after [`SPLIT_POLL_PAUSE`], not at once.
const DECLINED_POLL: Duration = Duration::from_secs(1);

/// How many fetch tokens a fetch task makes before it lets other tasks run.
const TOKENS_BETWEEN_YIELDS: usize = 64;

/// Why a fetch round ended early.
#[derive(Debug, PartialEq, Eq)]
enum FetchFailure {
    /// The relay asked us to come back later.
    RetryAfter(Duration),
    /// Anything else: unreachable, a refusal, a bad answer.
    Failed(String),
}

impl FetchFailure {
    /// The pause before the next try, the `failures`-th in a row: what the relay asked for, or
    /// a doubling backoff.
    fn pause(&self, failures: u32) -> Duration {
        match self {
            Self::RetryAfter(wait) => (*wait).clamp(FETCH_RETRY_BASE, FETCH_RETRY_MAX),
            Self::Failed(_) => FETCH_RETRY_BASE.saturating_mul(1 << failures.min(8)).min(FETCH_RETRY_MAX),
        }
    }
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RetryAfter(wait) => write!(f, "the relay asked to try again in {} ms", wait.as_millis()),
            Self::Failed(reason) => f.write_str(reason),
        }
    }
}

impl From<String> for FetchFailure {
    fn from(reason: String) -> Self {
        Self::Failed(reason)
    }
}

impl From<&str> for FetchFailure {
    fn from(reason: &str) -> Self {
        Self::Failed(reason.to_owned())
    }
}

/// How a delivery went, and whether the contact's node was tried directly (and not reached).
#[derive(Debug)]
pub struct Delivery {
    /// The result for the engine.
    pub result: AttemptResult,
    /// Whether a direct attempt was made and failed to reach the node.
    pub direct_failed: bool,
}

/// Tries `attempt`: directly to the contact's node (its known addresses and circuits through its
/// relays), then, if that fails, a deposit at each of its relays at once. With `skip_direct` and
/// relays to deposit at, it goes straight to the relays (the node was just found unreachable).
pub async fn deliver(net: &net::Handle, attempt: &Attempt, skip_direct: bool) -> Delivery {
    let peer = PeerId::from_bytes(&attempt.peer_id).ok();
    let relays: Vec<Multiaddr> =
        attempt.relays.iter().filter_map(|a| Multiaddr::try_from(a.clone()).ok()).collect();
    let skip_direct = skip_direct && !relays.is_empty();
    let mut direct_failure = None;
    let done = |result| Delivery { result, direct_failed: false };
    if let (Some(peer), false) = (peer, skip_direct) {
        let mut addrs: Vec<Multiaddr> =
            attempt.addrs.iter().filter_map(|a| Multiaddr::try_from(a.clone()).ok()).collect();
        addrs.extend(
            relays.iter().map(|relay| relay.clone().with(Protocol::P2pCircuit).with(Protocol::P2p(peer))),
        );
        match net.deliver(peer, addrs, attempt.envelope.clone()).await {
            Ok(deliver::Response::Accepted) => return done(AttemptResult::Accepted),
            // The node itself refused: a relay would only hand it the same envelope later.
            Ok(deliver::Response::Refused(refusal)) => return done(AttemptResult::Refused(refusal)),
            Err(error) => direct_failure = Some(error.to_string()),
        }
    }
    let direct_failed = direct_failure.is_some();
    let result = if relays.is_empty() {
        let reason = direct_failure.unwrap_or_else(|| "the contact's node is unknown".to_owned());
        AttemptResult::Unreachable(reason)
    } else {
        deposit_everywhere(net, &relays, attempt.mailbox, &attempt.envelope).await
    };
    Delivery { result, direct_failed }
}

/// How a batch went: a result for each attempt tried, in order, and whether the contact's node
/// was tried directly (and not reached). Attempts not tried (behind one no relay answered) have
/// no result and stay as they were, to go with the next batch.
#[derive(Debug)]
pub struct BatchDelivery {
    /// The results, for a prefix of the batch.
    pub results: Vec<(merpati_proto::frame::MessageId, AttemptResult)>,
    /// Whether a direct attempt was made and failed to reach the node.
    pub direct_failed: bool,
}

/// Tries a batch of one contact's attempts, in order: all in one exchange with the contact's
/// node (one at a time over `/merpati/deliver/1` if it does not speak the batched protocol);
/// when the node cannot be reached, each deposited at every one of the contact's relays, one
/// after the other so the relays keep them in order. `skip_direct` as for [`deliver`].
pub async fn deliver_batch(net: &net::Handle, batch: &[Attempt], skip_direct: bool) -> BatchDelivery {
    let Some(first) = batch.first() else {
        return BatchDelivery { results: Vec::new(), direct_failed: false };
    };
    let peer = PeerId::from_bytes(&first.peer_id).ok();
    let relays: Vec<Multiaddr> =
        first.relays.iter().filter_map(|a| Multiaddr::try_from(a.clone()).ok()).collect();
    let skip_direct = skip_direct && !relays.is_empty();
    let mut direct_failure = None;
    if let (Some(peer), false) = (peer, skip_direct) {
        let mut addrs: Vec<Multiaddr> =
            first.addrs.iter().filter_map(|a| Multiaddr::try_from(a.clone()).ok()).collect();
        addrs.extend(
            relays.iter().map(|relay| relay.clone().with(Protocol::P2pCircuit).with(Protocol::P2p(peer))),
        );
        let envelopes = batch.iter().map(|attempt| attempt.envelope.clone()).collect();
        match net.deliver_batch(peer, addrs, envelopes).await {
            Ok(responses) => {
                let results = batch
                    .iter()
                    .zip(responses)
                    .map(|(attempt, response)| {
                        let result = match response {
                            deliver::Response::Accepted => AttemptResult::Accepted,
                            deliver::Response::Refused(refusal) => AttemptResult::Refused(refusal),
                        };
                        (attempt.id, result)
                    })
                    .collect();
                return BatchDelivery { results, direct_failed: false };
            }
            // A node of an earlier version: its single deliveries, in order, as far as they go.
            Err(net::DeliverError::Unsupported { .. }) => {
                let mut results = Vec::new();
                for attempt in batch {
                    let delivery = deliver(net, attempt, false).await;
                    let stop = !matches!(delivery.result, AttemptResult::Accepted);
                    results.push((attempt.id, delivery.result));
                    if stop {
                        return BatchDelivery { results, direct_failed: delivery.direct_failed };
                    }
                }
                return BatchDelivery { results, direct_failed: false };
            }
            Err(error) => direct_failure = Some(error.to_string()),
        }
    }
    let direct_failed = direct_failure.is_some();
    if relays.is_empty() {
        let reason = direct_failure.unwrap_or_else(|| "the contact's node is unknown".to_owned());
        let results = batch.iter().map(|a| (a.id, AttemptResult::Unreachable(reason.clone()))).collect();
        return BatchDelivery { results, direct_failed };
    }
    let mut results = Vec::with_capacity(batch.len());
    for attempt in batch {
        let result = deposit_everywhere(net, &relays, attempt.mailbox, &attempt.envelope).await;
        let answered = !matches!(result, AttemptResult::Unreachable(_));
        results.push((attempt.id, result));
        // No relay answered: the rest would fare no better now.
        if !answered {
            break;
        }
    }
    BatchDelivery { results, direct_failed }
}

/// Deposits `envelope` into `mailbox` at every relay at once; the result counts how many stored
/// it and why the others refused.
async fn deposit_everywhere(
    net: &net::Handle,
    relays: &[Multiaddr],
    mailbox: MailboxId,
    envelope: &[u8],
) -> AttemptResult {
    let deposits = relays.iter().map(|relay| async move {
        let Some(peer) = net::peer_of(relay) else { return Err(None) };
        let request = mailbox::Request::Deposit { mailbox, envelope: envelope.to_vec() };
        match net.mailbox(peer, vec![relay.clone()], request).await {
            Ok(mailbox::Response::Stored { .. }) => Ok(()),
            Ok(mailbox::Response::Refused(refusal)) => Err(Some(refusal)),
            Ok(other) => {
                debug!(relay = %peer, ?other, "unexpected answer to a deposit");
                Err(None)
            }
            Err(error) => {
                debug!(relay = %peer, %error, "deposit failed");
                Err(None)
            }
        }
    });
    let results = join_all(deposits).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let refusals: Vec<Refusal> = results.iter().filter_map(|r| r.err().flatten()).collect();
    if accepted == 0 && refusals.is_empty() {
        return AttemptResult::Unreachable(
            "neither the contact's node nor any of its relays answered".into(),
        );
    }
    AttemptResult::Deposited {
        accepted: u8::try_from(accepted).unwrap_or(u8::MAX),
        total: u8::try_from(relays.len()).unwrap_or(u8::MAX),
        refusals,
    }
}

/// What a fetch task tells the daemon's actor.
#[derive(Debug)]
pub enum FetchReport {
    /// Envelopes to process.
    Fetched(Fetched),
    /// Every closed mailbox of a day up to `through` has been swept at `relay`: a restart need
    /// not sweep them there again ([`crate::store::Change::NoteSwept`]).
    Swept {
        /// The relay.
        relay: PeerId,
        /// The last day swept.
        through: u64,
    },
}

/// Envelopes fetched from a relay, for the daemon's actor to process.
#[derive(Debug)]
pub struct Fetched {
    /// The relay they came from.
    pub relay: PeerId,
    /// The envelopes, in the relay's order.
    pub items: Vec<mailbox::StoredEnvelope>,
    /// Answered with the relay ids of the envelopes that were processed and may be deleted.
    pub done: oneshot::Sender<Vec<u64>>,
}

/// The keys of every mailbox we own, as the actor last computed them.
pub type Keys = watch::Receiver<Arc<MailboxKeys>>;

/// Fetches our mailboxes at `relay` until `stop` is cancelled: first a sweep of every old
/// mailbox not yet swept here (see [`MailboxKeys`]; closed days up to `swept_through` were
/// swept before a restart), then a long poll of the live ones while nothing waits, pages back
/// to back while more does, and a growing pause after failures.
pub async fn fetch_loop(
    net: net::Handle,
    relay: Multiaddr,
    mut keys: Keys,
    swept_through: Option<u64>,
    fetched: mpsc::Sender<FetchReport>,
    stop: CancellationToken,
) {
    let Some(peer) = net::peer_of(&relay) else { return };
    let mut tokens = RelayTokens::new(peer);
    // Per chunk of tokens, the highest relay id seen: envelopes the node could not store stay at
    // the relay, and the cursor keeps them from being fetched again at once, in a loop.
    let mut cursors: Vec<Option<u64>> = Vec::new();
    let mut sweeps = Sweeps::resuming(swept_through);
    let mut wait = Duration::ZERO;
    let mut failures = 0u32;
    let mut previous: Option<Arc<MailboxKeys>> = None;
    loop {
        let current = keys.borrow_and_update().clone();
        // New mailboxes (a new conversation, a new day), whether they came during a fetch or a
        // pause: ask again with the new tokens, from the start, since the chunks changed.
        if previous.as_ref().is_some_and(|previous| !Arc::ptr_eq(previous, &current)) {
            tokens.keep_only(&current);
            cursors.clear();
        }
        previous = Some(Arc::clone(&current));
        let unswept = tokens.of(&sweeps.pending(&current)).await;
        let live = tokens.of(&current.live).await;
        let started = tokio::time::Instant::now();
        let long_poll = unswept.is_empty() && !wait.is_zero();
        let work = async {
            if unswept.is_empty() {
                fetch_round(&net, peer, &relay, &live, &cursors, wait, &fetched).await.map(Some)
            } else {
                sweep(&net, peer, &relay, &unswept, &fetched).await.map(|()| None)
            }
        };
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            // New mailboxes: taken up at the top of the loop, without waiting.
            changed = keys.changed() => {
                if changed.is_err() {
                    return;
                }
                wait = Duration::ZERO;
                continue;
            }
            outcome = work => outcome,
        };
        let pause = match outcome {
            Ok(Some(Round { last, more, empty })) => {
                failures = 0;
                cursors = last;
                wait = if more { Duration::ZERO } else { LONG_POLL };
                if long_poll && empty && started.elapsed() < DECLINED_POLL {
                    debug!(relay = %peer, "the relay declined a long poll; polling every {SPLIT_POLL_PAUSE:?}");
                    SPLIT_POLL_PAUSE
                } else {
                    Duration::ZERO
                }
            }
            Ok(None) => {
                failures = 0;
                if !unswept.is_empty() {
                    debug!(relay = %peer, mailboxes = unswept.len(), "swept old mailboxes");
                }
                if let Some(through) = sweeps.done(&current) {
                    // Only an optimisation: a full queue loses nothing but a restart's work.
                    let _ = fetched.try_send(FetchReport::Swept { relay: peer, through });
                }
                Duration::ZERO
            }
            Err(error @ FetchFailure::RetryAfter(_)) => {
                debug!(relay = %peer, %error, "fetch deferred");
                wait = Duration::ZERO;
                error.pause(failures)
            }
            Err(error) => {
                debug!(relay = %peer, %error, "fetch failed");
                if failures == 0 {
                    info!(relay = %peer, %error, "cannot fetch from the relay; will keep trying");
                }
                failures = failures.saturating_add(1);
                wait = Duration::ZERO;
                error.pause(failures)
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// One relay's fetch tokens, made from our mailbox keys as they are needed and kept while the
/// mailbox is ours to fetch: a signature per mailbox and relay, not one per request.
#[derive(Debug)]
pub struct RelayTokens {
    /// The relay's peer id, binary: what its tokens sign.
    relay: Vec<u8>,
    made: HashMap<MailboxId, FetchToken>,
}

impl RelayTokens {
    /// No tokens yet for the relay `relay`.
    pub fn new(relay: PeerId) -> Self {
        Self { relay: relay.to_bytes(), made: HashMap::new() }
    }

    /// The relay's tokens of `keys`, in their order. Making one costs some 45 µs (a node with a
    /// thousand contacts makes tens of thousands when it starts), so the task yields between
    /// batches rather than hold a runtime thread for seconds.
    pub async fn of(&mut self, keys: &[MailboxKey]) -> Vec<FetchToken> {
        let mut tokens = Vec::with_capacity(keys.len());
        let mut made = 0usize;
        for key in keys {
            let token = match self.made.get(&key.id()) {
                Some(token) => token.clone(),
                None => {
                    made += 1;
                    if made.is_multiple_of(TOKENS_BETWEEN_YIELDS) {
                        tokio::task::yield_now().await;
                    }
                    let token = key.token(&self.relay);
                    self.made.insert(key.id(), token.clone());
                    token
                }
            };
            tokens.push(token);
        }
        tokens
    }

    /// Forgets the tokens of mailboxes no longer in `keys`.
    pub fn keep_only(&mut self, keys: &MailboxKeys) {
        let ours: HashSet<MailboxId> = keys.live.iter().chain(&keys.old).map(MailboxKey::id).collect();
        self.made.retain(|id, _| ours.contains(id));
    }
}

/// Which old mailboxes a relay has been swept of (see [`MailboxKeys`]): each once, from the
/// task's start; and, from before a restart, the closed days up to the one recorded.
///
/// Why a closed day needs no second sweep: senders write under the day of their own clock, so a
/// day two or more behind ours is written to only by a sender whose clock is that far behind.
/// Days ahead are swept again at every start: they were swept while empty, and may have been
/// written to since.
#[derive(Debug, Default)]
pub struct Sweeps {
    /// The old mailboxes fetched to the end at this relay. Only the current old set is kept, so
    /// this stays as small as one day's list.
    swept: HashSet<MailboxId>,
    /// Every closed mailbox of a day up to this one was fetched to the end at this relay.
    through: Option<u64>,
}

impl Sweeps {
    /// Sweeps that start knowing the closed days up to `through` were swept.
    pub fn resuming(through: Option<u64>) -> Self {
        Self { swept: HashSet::new(), through }
    }

    /// The old mailboxes of `keys` still to sweep.
    pub fn pending(&self, keys: &MailboxKeys) -> Vec<MailboxKey> {
        let closed = keys.today.saturating_sub(2);
        let swept_before =
            |key: &MailboxKey| self.through.is_some_and(|through| key.day() <= through.min(closed));
        keys.old.iter().filter(|key| !self.swept.contains(&key.id()) && !swept_before(key)).cloned().collect()
    }

    /// Records that every old mailbox of `keys` has been fetched to the end; returns the last
    /// closed day now swept, when that moved on.
    pub fn done(&mut self, keys: &MailboxKeys) -> Option<u64> {
        self.swept = keys.old.iter().map(MailboxKey::id).collect();
        let closed = keys.today.checked_sub(2)?;
        if self.through.is_some_and(|through| through >= closed) {
            return None;
        }
        self.through = Some(closed);
        Some(closed)
    }
}

/// Fetches `tokens` page after page, without waiting at the relay, until nothing is left.
async fn sweep(
    net: &net::Handle,
    peer: PeerId,
    relay: &Multiaddr,
    tokens: &[FetchToken],
    fetched: &mpsc::Sender<FetchReport>,
) -> Result<(), FetchFailure> {
    let mut cursors = Vec::new();
    loop {
        let Round { last, more, .. } =
            fetch_round(net, peer, relay, tokens, &cursors, Duration::ZERO, fetched).await?;
        if !more {
            return Ok(());
        }
        cursors = last;
    }
}

struct Round {
    /// Per chunk, the highest relay id seen: the next cursors.
    last: Vec<Option<u64>>,
    /// Whether more is waiting.
    more: bool,
    /// Whether the round found nothing at all.
    empty: bool,
}

/// One fetch (in chunks of at most `MAX_FETCH_TOKENS` tokens), the actor's processing, and the
/// deletion of what it processed.
async fn fetch_round(
    net: &net::Handle,
    peer: PeerId,
    relay: &Multiaddr,
    tokens: &[FetchToken],
    cursors: &[Option<u64>],
    wait: Duration,
    fetched: &mpsc::Sender<FetchReport>,
) -> Result<Round, FetchFailure> {
    if tokens.is_empty() {
        std::future::pending::<()>().await;
    }
    let mut last = Vec::new();
    let mut more = false;
    let mut empty = true;
    let chunks: Vec<&[FetchToken]> = tokens.chunks(wire::MAX_FETCH_TOKENS).collect();
    // One request cannot long-poll several chunks: with more mailboxes than one request names,
    // the node polls instead, pausing between empty rounds.
    let split = chunks.len() > 1;
    if split && !wait.is_zero() {
        tokio::time::sleep(SPLIT_POLL_PAUSE).await;
    }
    let wait_ms = if split { 0 } else { u32::try_from(wait.as_millis()).unwrap_or(0) };
    for (index, chunk) in chunks.into_iter().enumerate() {
        let after = cursors.get(index).copied().flatten();
        last.push(after);
        let request =
            mailbox::Request::Fetch { tokens: chunk.to_vec(), after, limit: wire::MAX_FETCH_LIMIT, wait_ms };
        let items = match net.mailbox(peer, vec![relay.clone()], request).await {
            Ok(mailbox::Response::Envelopes { items, more: page_more }) => {
                more |= page_more;
                items
            }
            Ok(mailbox::Response::Refused(Refusal::RateLimited { retry_after_ms })) => {
                return Err(FetchFailure::RetryAfter(Duration::from_millis(u64::from(retry_after_ms))));
            }
            Ok(mailbox::Response::Refused(refusal)) => return Err(refusal.to_string().into()),
            Ok(other) => return Err(format!("unexpected answer {other:?}").into()),
            Err(error) => return Err(error.to_string().into()),
        };
        if items.is_empty() {
            continue;
        }
        empty = false;
        last[index] = last[index].max(items.iter().map(|item| item.id).max());
        let owners: HashMap<MailboxId, FetchToken> =
            chunk.iter().map(|token| (MailboxId::of(token), token.clone())).collect();
        let mailboxes: HashMap<u64, MailboxId> = items.iter().map(|item| (item.id, item.mailbox)).collect();
        let (done, processed) = oneshot::channel();
        let batch = FetchReport::Fetched(Fetched { relay: peer, items, done });
        fetched.send(batch).await.map_err(|_| "the node is stopping")?;
        let processed = processed.await.map_err(|_| "the node is stopping")?;
        delete(net, peer, relay, &owners, &mailboxes, processed).await;
    }
    Ok(Round { last, more, empty })
}

/// Deletes processed envelopes at the relay, one request per mailbox. A failed delete is only
/// logged: the envelopes come back in a later fetch and are recognised as duplicates.
async fn delete(
    net: &net::Handle,
    peer: PeerId,
    relay: &Multiaddr,
    owners: &HashMap<MailboxId, FetchToken>,
    mailboxes: &HashMap<u64, MailboxId>,
    processed: Vec<u64>,
) {
    let mut by_mailbox: BTreeMap<MailboxId, Vec<u64>> = BTreeMap::new();
    for id in processed {
        if let Some(mailbox) = mailboxes.get(&id) {
            by_mailbox.entry(*mailbox).or_default().push(id);
        }
    }
    for (mailbox, ids) in by_mailbox {
        let Some(token) = owners.get(&mailbox) else { continue };
        for ids in ids.chunks(wire::MAX_DELETE_IDS) {
            let request = mailbox::Request::Delete { token: token.clone(), ids: ids.to_vec() };
            match net.mailbox(peer, vec![relay.clone()], request).await {
                Ok(mailbox::Response::Deleted { .. }) => {}
                other => debug!(relay = %peer, ?other, "delete at the relay failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use merpati_proto::keys::SymmetricKey;

    use super::*;

    fn keys(today: u64, days: impl IntoIterator<Item = u64>) -> MailboxKeys {
        let secret = SymmetricKey::from_bytes([4; 32]);
        let old = days.into_iter().map(|day| MailboxKey::derive(&secret, day)).collect();
        MailboxKeys { live: Vec::new(), old, today }
    }

    fn days(pending: &[MailboxKey]) -> Vec<u64> {
        pending.iter().map(MailboxKey::day).collect()
    }

    #[test]
    fn a_restart_sweeps_only_the_days_closed_since_and_the_days_ahead() {
        // Day 100: closed days 90 to 98 and days ahead 102 to 105, all to sweep at first.
        let first = keys(100, (90..=98).chain(102..=105));
        let mut sweeps = Sweeps::resuming(None);
        assert_eq!(days(&sweeps.pending(&first)).len(), 13);
        assert_eq!(sweeps.done(&first), Some(98), "closed days up to 98 swept");
        assert!(sweeps.pending(&first).is_empty());
        assert_eq!(sweeps.done(&first), None, "no progress, nothing to record");

        // Restarted on day 103 with that progress: the days closed since, and every day ahead
        // (swept while empty, perhaps written to since).
        let later = keys(103, (93..=101).chain(105..=107));
        let resumed = Sweeps::resuming(Some(98));
        assert_eq!(days(&resumed.pending(&later)), [99, 100, 101, 105, 106, 107]);
        // A clock set back: days past it are not closed, whatever was recorded.
        let back = keys(95, (85..=93).chain(97..=99));
        assert_eq!(days(&resumed.pending(&back)), [97, 98, 99]);
    }

    #[test]
    fn a_relay_that_asks_for_a_pause_gets_it_and_failures_back_off() {
        let asked = FetchFailure::RetryAfter(Duration::from_millis(60_000));
        assert_eq!(asked.pause(0), Duration::from_secs(60), "what the relay asked, not a 1 s retry");
        assert_eq!(asked.pause(7), Duration::from_secs(60), "nor the backoff of earlier failures");
        let short = FetchFailure::RetryAfter(Duration::from_millis(5));
        assert_eq!(short.pause(0), FETCH_RETRY_BASE, "never a busy loop");
        let long = FetchFailure::RetryAfter(Duration::from_millis(u64::from(u32::MAX)));
        assert_eq!(long.pause(0), FETCH_RETRY_MAX);
        let failed = FetchFailure::from("unreachable");
        assert_eq!(failed.pause(1), Duration::from_secs(2));
        assert_eq!(failed.pause(3), Duration::from_secs(8));
        assert_eq!(failed.pause(30), FETCH_RETRY_MAX);
    }
}
