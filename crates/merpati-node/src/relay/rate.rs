//! Token-bucket rate limits for the mailbox service, per peer and per network (an IPv4 address or
//! an IPv6 /64, see [`super::depositor`]).
//!
//! Every request takes one token from its peer's bucket, one from its network's bucket and, for
//! IPv6, one from its /48's bucket (when the address is known); a bucket refills at `per_second`
//! tokens a second up to `burst`. All are checked before any is taken from, so a refusal costs
//! the caller nothing. A limiter can also count work rather than requests
//! ([`RateLimiter::check_cost`]): the relay's second one counts the fetch tokens it verifies.
//!
//! The maps are bounded: when one is full, buckets that have refilled completely are dropped (a
//! full bucket is what a new one would start as, so nothing is forgotten), at most once a second.
//! If that frees nothing — more distinct senders active at once than the map holds — the sender
//! without a bucket shares one overflow bucket with every other such sender, so a flood of fresh
//! peer ids earns no more than one peer's allowance.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::depositor::Network;

/// The most buckets kept per map (peers, IP addresses).
pub const MAX_BUCKETS: usize = 65_536;
/// How often a full map may be swept for refilled buckets.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One token bucket's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Tokens (requests) added per second.
    pub per_second: u32,
    /// The most tokens a bucket holds: the longest burst allowed after a quiet spell.
    pub burst: u32,
}

/// The mailbox service's rate limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Per libp2p peer. Default: 100 requests/s, bursts of 500.
    pub per_peer: Rate,
    /// Per network (IPv4 address, IPv6 /64), across all peers connecting from it (NATs put many
    /// users behind one).
    /// Default: 400 requests/s, bursts of 2 000.
    pub per_ip: Rate,
    /// Per IPv6 /48, across all its /64s. Default: 1 600 requests/s, bursts of 8 000.
    pub per_ipv6_block: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_peer: Rate { per_second: 100, burst: 500 },
            per_ip: Rate { per_second: 400, burst: 2_000 },
            per_ipv6_block: Rate { per_second: 1_600, burst: 8_000 },
        }
    }
}

/// Per-peer and per-IP token buckets behind one lock, and optionally one bucket for everyone.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    peers: Buckets<PeerId>,
    ips: Buckets<Network>,
    blocks: Buckets<Network>,
    /// The bucket every sender also draws from, and its rate.
    total: Option<(Rate, Bucket)>,
}

impl RateLimiter {
    /// A limiter with no history: every sender starts with a full bucket.
    pub fn new(limits: RateLimits) -> Self {
        Self::with_capacity(limits, MAX_BUCKETS)
    }

    /// A limiter that also holds everyone together to `total`.
    pub fn with_total(limits: RateLimits, total: Rate) -> Self {
        let limiter = Self::new(limits);
        limiter.lock().total = Some((total, Bucket { tokens: f64::from(total.burst), at: Instant::now() }));
        limiter
    }

    fn with_capacity(limits: RateLimits, capacity: usize) -> Self {
        Self {
            limits,
            state: Mutex::new(State {
                peers: Buckets::new(limits.per_peer, capacity),
                ips: Buckets::new(limits.per_ip, capacity),
                blocks: Buckets::new(limits.per_ipv6_block, capacity),
                total: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one token for a request of `peer` from `ip` at `now`, or says how many milliseconds
    /// to wait before one is available (taking nothing).
    pub fn check(&self, peer: &PeerId, ip: Option<IpAddr>, now: Instant) -> Result<(), u32> {
        self.check_cost(peer, ip, now, 1)
    }

    /// Takes `cost` tokens for work of `peer` from `ip` at `now`, or says how many milliseconds
    /// to wait before they are available (taking nothing). A cost above a bucket's burst waits
    /// for a full bucket and leaves it owing the rest.
    pub fn check_cost(&self, peer: &PeerId, ip: Option<IpAddr>, now: Instant, cost: u32) -> Result<(), u32> {
        let cost = f64::from(cost);
        let mut state = self.lock();
        let State { peers, ips, blocks, total } = &mut *state;
        let peer_wait = peers.refill(*peer, now, cost);
        let network = ip.map(Network::of);
        let block = network.and_then(|n| n.block());
        let ip_wait = network.map_or(0, |network| ips.refill(network, now, cost));
        let block_wait = block.map_or(0, |block| blocks.refill(block, now, cost));
        let total_wait = total.as_mut().map_or(0, |(rate, bucket)| {
            bucket.refill(*rate, now);
            bucket.wait_ms(*rate, cost)
        });
        let wait = peer_wait.max(ip_wait).max(block_wait).max(total_wait);
        if wait > 0 {
            return Err(wait);
        }
        if let Some((_, bucket)) = total {
            bucket.tokens -= cost;
        }
        peers.take(peer, cost);
        if let Some(network) = network {
            ips.take(&network, cost);
        }
        if let Some(block) = block {
            blocks.take(&block, cost);
        }
        Ok(())
    }

    /// How many peer and IP buckets are kept now.
    pub fn tracked(&self) -> (usize, usize) {
        let state = self.lock();
        (state.peers.map.len(), state.ips.map.len())
    }

    /// The limits in force.
    pub fn limits(&self) -> RateLimits {
        self.limits
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate.per_second)).min(f64::from(rate.burst));
        self.at = now.max(self.at);
    }

    /// Milliseconds until `cost` tokens (or a full bucket, if fewer) are there (0: now).
    fn wait_ms(&self, rate: Rate, cost: f64) -> u32 {
        let needed = cost.min(f64::from(rate.burst)).max(1.0);
        if self.tokens >= needed {
            return 0;
        }
        if rate.per_second == 0 {
            return u32::MAX;
        }
        let ms = ((needed - self.tokens) * 1000.0 / f64::from(rate.per_second)).ceil();
        // At least 1: a zero wait would read as "go ahead".
        (ms as u32).max(1)
    }
}

#[derive(Debug)]
struct Buckets<K> {
    rate: Rate,
    capacity: usize,
    map: HashMap<K, Bucket>,
    /// Shared by every sender that found the map full (see the module documentation).
    overflow: Bucket,
    last_sweep: Option<Instant>,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    fn new(rate: Rate, capacity: usize) -> Self {
        Self {
            rate,
            capacity,
            map: HashMap::new(),
            overflow: Bucket { tokens: f64::from(rate.burst), at: Instant::now() },
            last_sweep: None,
        }
    }

    /// Refills `key`'s bucket (creating it if there is room) and returns its wait for `cost`.
    fn refill(&mut self, key: K, now: Instant, cost: f64) -> u32 {
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            self.sweep(now);
        }
        let rate = self.rate;
        let bucket = if self.map.len() < self.capacity || self.map.contains_key(&key) {
            self.map.entry(key).or_insert(Bucket { tokens: f64::from(rate.burst), at: now })
        } else {
            &mut self.overflow
        };
        bucket.refill(rate, now);
        bucket.wait_ms(rate, cost)
    }

    /// Takes `cost` tokens from the bucket `refill` chose for `key`.
    fn take(&mut self, key: &K, cost: f64) {
        let bucket = match self.map.get_mut(key) {
            Some(bucket) => bucket,
            None => &mut self.overflow,
        };
        bucket.tokens -= cost;
    }

    /// Drops buckets that have refilled completely, at most once per `SWEEP_EVERY`.
    fn sweep(&mut self, now: Instant) {
        if self.last_sweep.is_some_and(|last| now.saturating_duration_since(last) < SWEEP_EVERY) {
            return;
        }
        self.last_sweep = Some(now);
        let rate = self.rate;
        self.map.retain(|_, bucket| {
            bucket.refill(rate, now);
            bucket.tokens < f64::from(rate.burst)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, burst: u32) -> RateLimits {
        RateLimits {
            per_peer: Rate { per_second, burst },
            per_ip: Rate { per_second: 1_000, burst: 10_000 },
            ..RateLimits::default()
        }
    }

    #[test]
    fn a_flooding_peer_is_refused_while_another_passes() {
        let limiter = RateLimiter::new(limits(10, 20));
        let (flooder, other) = (PeerId::random(), PeerId::random());
        let ip: IpAddr = [192, 0, 2, 1].into();
        let now = Instant::now();
        let passed = (0..100).filter(|_| limiter.check(&flooder, Some(ip), now).is_ok()).count();
        assert_eq!(passed, 20, "exactly the burst passes");
        let wait = limiter.check(&flooder, Some(ip), now).expect_err("refused");
        assert!((1..=100).contains(&wait), "one token at 10/s is ≤ 100 ms away, got {wait}");
        assert!(limiter.check(&other, Some(ip), now).is_ok());
        // Refills at the stated rate.
        let later = now + Duration::from_millis(250);
        let passed = (0..100).filter(|_| limiter.check(&flooder, Some(ip), later).is_ok()).count();
        assert_eq!(passed, 2);
    }

    #[test]
    fn the_ip_limit_holds_across_peers_and_a_refusal_takes_nothing() {
        let limits = RateLimits {
            per_peer: Rate { per_second: 1, burst: 5 },
            per_ip: Rate { per_second: 1, burst: 8 },
            ..RateLimits::default()
        };
        let limiter = RateLimiter::new(limits);
        let ip: IpAddr = [198, 51, 100, 7].into();
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!((0..10).filter(|_| limiter.check(&a, Some(ip), now).is_ok()).count(), 5);
        // `a` was refused five times: the IP bucket lost nothing to those refusals.
        assert_eq!((0..10).filter(|_| limiter.check(&b, Some(ip), now).is_ok()).count(), 3);
        // The IP is exhausted, so `c` is refused, and its own bucket stays full.
        let c = PeerId::random();
        assert!(limiter.check(&c, Some(ip), now).is_err());
        let elsewhere: IpAddr = [203, 0, 113, 9].into();
        assert_eq!((0..10).filter(|_| limiter.check(&c, Some(elsewhere), now).is_ok()).count(), 5);
    }

    #[test]
    fn the_64s_of_one_48_share_its_bucket() {
        let limits = RateLimits {
            per_peer: Rate { per_second: 1, burst: 100 },
            per_ip: Rate { per_second: 1, burst: 10 },
            per_ipv6_block: Rate { per_second: 1, burst: 25 },
        };
        let limiter = RateLimiter::new(limits);
        let now = Instant::now();
        let mut passed = 0;
        for i in 0..50u16 {
            let ip = IpAddr::from([0x2001, 0xdb8, 0x77, i, 0, 0, 0, 1]);
            passed += (0..20).filter(|_| limiter.check(&PeerId::random(), Some(ip), now).is_ok()).count();
        }
        assert_eq!(passed, 25, "the /48's burst, however many /64s ask");
        let elsewhere = IpAddr::from([0x2001, 0xdb8, 0x78, 0, 0, 0, 0, 1]);
        assert!(limiter.check(&PeerId::random(), Some(elsewhere), now).is_ok());
    }

    #[test]
    fn work_is_charged_by_its_cost() {
        let limiter = RateLimiter::new(limits(100, 300));
        let (peer, ip) = (PeerId::random(), Some(IpAddr::from([192, 0, 2, 9])));
        let now = Instant::now();
        assert_eq!(limiter.check_cost(&peer, ip, now, 256), Ok(()));
        let wait = limiter.check_cost(&peer, ip, now, 256).expect_err("44 left, 256 asked");
        assert_eq!(wait, 2_120, "212 tokens at 100/s");
        assert_eq!(limiter.check_cost(&peer, ip, now, 44), Ok(()), "a refusal took nothing");
        // More than the burst: waits for a full bucket, then owes the rest.
        let full = now + Duration::from_secs(3);
        assert_eq!(limiter.check_cost(&peer, ip, full, 1_000), Ok(()));
        assert_eq!(limiter.check_cost(&peer, ip, full + Duration::from_secs(7), 1), Err(10), "700 owed");
    }

    #[test]
    fn a_total_holds_everyone_together() {
        let plenty = Rate { per_second: 1_000, burst: 1_000 };
        let limits = RateLimits { per_peer: plenty, per_ip: plenty, per_ipv6_block: plenty };
        let limiter = RateLimiter::with_total(limits, Rate { per_second: 10, burst: 100 });
        let now = Instant::now();
        let passed = (0..20u8)
            .filter(|i| {
                let ip = IpAddr::from([198, 51, 100, *i]);
                limiter.check_cost(&PeerId::random(), Some(ip), now, 30).is_ok()
            })
            .count();
        assert_eq!(passed, 3, "three of twenty senders, each well within its own limits");
        // A refusal by the total took nothing from the sender's own buckets.
        let (peer, ip) = (PeerId::random(), Some(IpAddr::from([203, 0, 113, 1])));
        assert!(limiter.check_cost(&peer, ip, now, 30).is_err());
        let later = now + Duration::from_secs(100);
        assert_eq!(limiter.check_cost(&peer, ip, later, 1_000), Ok(()), "its own burst, untouched");
    }

    #[test]
    fn maps_stay_bounded_and_fresh_peers_share_the_overflow() {
        let limiter = RateLimiter::with_capacity(limits(10, 20), 64);
        let now = Instant::now();
        let mut passed = 0;
        for _ in 0..1_000 {
            if limiter.check(&PeerId::random(), None, now).is_ok() {
                passed += 1;
            }
        }
        let (peers, _) = limiter.tracked();
        assert_eq!(peers, 64, "the map never grows past its capacity");
        // 64 tracked peers passed once each; the other 936 shared one bucket of 20.
        assert_eq!(passed, 64 + 20);
        // Once the tracked buckets are full again, a sweep makes room for new peers.
        let later = now + Duration::from_secs(5);
        let newcomer = PeerId::random();
        assert!(limiter.check(&newcomer, None, later).is_ok());
        assert!(limiter.tracked().0 <= 64);
        let peers_after = limiter.tracked().0;
        assert_eq!(peers_after, 1, "only the newcomer's bucket is not full");
    }
}
