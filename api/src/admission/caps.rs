//! The caps one client must not exhaust, and the counters behind them.
//!
//! Every cap is checked before any expensive work and refused at once with
//! `RESOURCE_EXHAUSTED` and a retry hint, never queued: a queue behind a
//! flood is a stall for everybody else.
//! - **Per peer address, before authentication**: a token bucket on calls.
//!   A flood of token-less calls is refused here without touching the
//!   database.
//! - **Audit rows per peer**: see [`super::summaries`].
//! - **Calls in flight**, per principal and in total.
//! - **Archive reads in flight**, per principal and in total: a call that
//!   must read the archive takes a permit after its database work (the
//!   connection is back in the pool by then).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::summaries::{PeerSummary, Summaries};
use crate::lock;

/// Keys tracked before idle, full buckets are forgotten.
const MAX_TRACKED: usize = 100_000;

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// Token buckets by key: `rate` per second, bursts of `burst`.
pub struct TokenBuckets<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> TokenBuckets<K> {
    /// Buckets refilling at `rate` per second up to `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; false when none is left.
    pub fn try_take<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.refilled).as_secs_f64() * rate < burst
            });
        }
        if !buckets.contains_key(key) {
            buckets.insert(
                key.to_owned(),
                Bucket {
                    tokens: self.burst,
                    refilled: now,
                },
            );
        }
        let Some(bucket) = buckets.get_mut(key) else {
            return false;
        };
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until `key` has a token again (for retry hints).
    pub fn wait_hint(&self) -> Duration {
        Duration::from_secs_f64((1.0 / self.rate).clamp(0.001, 60.0))
    }
}

/// Counts of holders per key, with a cap per key and in total.
struct Counter {
    per_key: u32,
    total: u32,
    state: Mutex<(u32, HashMap<String, u32>)>,
}

impl Counter {
    fn new(per_key: u32, total: u32) -> Arc<Self> {
        Arc::new(Self {
            per_key: per_key.max(1),
            total: total.max(1),
            state: Mutex::new((0, HashMap::new())),
        })
    }

    fn try_enter(self: &Arc<Self>, key: &str) -> Result<Held, Cap> {
        let mut state = lock(&self.state);
        let (total, per_key) = &mut *state;
        if *total >= self.total {
            return Err(Cap::Total);
        }
        let mine = per_key.entry(key.to_string()).or_insert(0);
        if *mine >= self.per_key {
            return Err(Cap::PerPrincipal);
        }
        *mine += 1;
        *total += 1;
        Ok(Held {
            counter: self.clone(),
            key: key.to_string(),
        })
    }
}

/// A place among the calls (or archive reads) in flight, given back on drop.
#[derive(Debug)]
pub struct Held {
    counter: Arc<Counter>,
    key: String,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter")
            .field("per_key", &self.per_key)
            .field("total", &self.total)
            .finish()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut state = lock(&self.counter.state);
        let (total, per_key) = &mut *state;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_key.get_mut(&self.key) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_key.remove(&self.key);
            }
        }
    }
}

/// Which cap refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// This principal's share is in use.
    PerPrincipal,
    /// The process's total is in use.
    Total,
}

/// What a cap counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlight {
    /// Calls.
    Calls,
    /// Archive reads.
    ArchiveReads,
    /// Open subscriptions (held for the stream's life, not the call's).
    Subscriptions,
}

impl InFlight {
    /// The `cap` label of `strata_api_refused_total` for `cap` of these.
    pub fn refused_label(self, cap: Cap) -> &'static str {
        match (self, cap) {
            (InFlight::Calls, Cap::PerPrincipal) => "calls_per_principal",
            (InFlight::Calls, Cap::Total) => "calls_total",
            (InFlight::ArchiveReads, Cap::PerPrincipal) => "cold_reads_per_principal",
            (InFlight::ArchiveReads, Cap::Total) => "cold_reads_total",
            (InFlight::Subscriptions, Cap::PerPrincipal) => "subscriptions_per_principal",
            (InFlight::Subscriptions, Cap::Total) => "subscriptions_total",
        }
    }
}

/// The address limits are kept for: an IPv4 address, or the /64 of an
/// IPv6 one (a client holds a whole /64 and could otherwise use a fresh
/// address, with fresh buckets, for every call).
pub(super) fn peer_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(bits))
            }
        },
    }
}

/// The caps of one API process (see the module doc).
pub struct Admission {
    peers: TokenBuckets<IpAddr>,
    calls: Arc<Counter>,
    cold_reads: Arc<Counter>,
    subscriptions: Arc<Counter>,
    summaries: Summaries,
}

/// Sizes of the caps.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// Calls per second per peer address, before authentication.
    pub peer_rate: f64,
    /// Burst of `peer_rate`.
    pub peer_burst: u32,
    /// Refused calls audited one by one per second per peer.
    pub audit_rate: f64,
    /// Burst of `audit_rate`.
    pub audit_burst: u32,
    /// Calls in flight per principal.
    pub calls_per_principal: u32,
    /// Calls in flight in total.
    pub calls_total: u32,
    /// Archive reads in flight per principal.
    pub cold_reads_per_principal: u32,
    /// Archive reads in flight in total.
    pub cold_reads_total: u32,
    /// Open subscriptions per principal.
    pub subscriptions_per_principal: u32,
    /// Open subscriptions in total.
    pub subscriptions_total: u32,
}

impl Admission {
    /// Caps of the given sizes.
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            peers: TokenBuckets::new(limits.peer_rate, limits.peer_burst),
            calls: Counter::new(limits.calls_per_principal, limits.calls_total),
            cold_reads: Counter::new(limits.cold_reads_per_principal, limits.cold_reads_total),
            subscriptions: Counter::new(
                limits.subscriptions_per_principal,
                limits.subscriptions_total,
            ),
            summaries: Summaries::new(limits.audit_rate, limits.audit_burst),
        }
    }

    /// Takes a call token of `peer`; false when the peer is over its rate.
    pub fn peer_allows(&self, peer: IpAddr) -> bool {
        self.peers.try_take(&peer_key(peer))
    }

    /// How long a peer over its rate should wait.
    pub fn peer_wait_hint(&self) -> Duration {
        self.peers.wait_hint()
    }

    /// Whether a refused call of `peer` gets an audit row of its own; if
    /// not, it is counted for the peer's next summary row.
    pub fn audit_individually(&self, peer: IpAddr, method: &str, code: &str) -> bool {
        self.summaries.audit_individually(peer, method, code)
    }

    /// Takes the summaries gathered since the last call.
    pub fn take_summaries(&self) -> Vec<PeerSummary> {
        self.summaries.take()
    }

    /// A place for one of `what` of `principal`, held until it ends.
    pub fn enter(&self, what: InFlight, principal: &str) -> Result<Held, Cap> {
        match what {
            InFlight::Calls => self.calls.try_enter(principal),
            InFlight::ArchiveReads => self.cold_reads.try_enter(principal),
            InFlight::Subscriptions => self.subscriptions.try_enter(principal),
        }
    }

    /// A place for one call of `principal`, held until the call ends.
    pub fn enter_call(&self, principal: &str) -> Result<Held, Cap> {
        self.enter(InFlight::Calls, principal)
    }

    /// A permit for one archive read of `principal`.
    pub fn enter_cold_read(&self, principal: &str) -> Result<Held, Cap> {
        self.enter(InFlight::ArchiveReads, principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            peer_rate: 0.001,
            peer_burst: 3,
            audit_rate: 0.001,
            audit_burst: 2,
            calls_per_principal: 2,
            calls_total: 3,
            cold_reads_per_principal: 1,
            cold_reads_total: 2,
            subscriptions_per_principal: 1,
            subscriptions_total: 2,
        }
    }

    #[test]
    fn ipv6_peers_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(other));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(peer_key(mapped), "10.0.0.1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn buckets_allow_a_burst_then_refuse_per_key() {
        let buckets = TokenBuckets::new(0.001, 3);
        assert!((0..3).all(|_| buckets.try_take(&"a")));
        assert!(!buckets.try_take(&"a"));
        assert!(buckets.try_take(&"b"));
    }

    #[test]
    fn calls_are_capped_per_principal_and_in_total_and_given_back() {
        let admission = Admission::new(limits());
        let a1 = admission.enter_call("a").expect("a1");
        let _a2 = admission.enter_call("a").expect("a2");
        assert_eq!(
            admission.enter_call("a").map(|_| ()),
            Err(Cap::PerPrincipal)
        );
        let _b1 = admission.enter_call("b").expect("b1");
        assert_eq!(admission.enter_call("c").map(|_| ()), Err(Cap::Total));
        drop(a1);
        assert!(admission.enter_call("c").is_ok());
        let _r = admission.enter_cold_read("a").expect("cold a");
        assert_eq!(
            admission.enter_cold_read("a").map(|_| ()),
            Err(Cap::PerPrincipal)
        );
        assert!(admission.enter_cold_read("b").is_ok());
    }
}
