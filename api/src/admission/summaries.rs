//! Audit rows per peer: each refused call is audited on its own while the
//! peer's audit budget (a token bucket) lasts; beyond it, refusals are
//! counted here and written as one summary row per peer and interval
//! ([`crate::audit::write_summaries`]), so a flood cannot flood the audit
//! table too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use super::caps::{peer_key, TokenBuckets};
use crate::lock;

/// Refused calls of one peer since its last summary row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSummary {
    /// The peer.
    pub peer: IpAddr,
    /// Calls refused and not audited one by one.
    pub calls: u64,
    /// (method, status code, count), sorted.
    pub methods: Vec<(String, String, u64)>,
}

/// Refused calls of one peer by (method, status code).
type RefusalCounts = HashMap<(String, String), u64>;

/// The audit budgets of the peers and the refusals beyond them.
pub(super) struct Summaries {
    audit_budget: TokenBuckets<IpAddr>,
    counts: Mutex<HashMap<IpAddr, RefusalCounts>>,
}

impl Summaries {
    /// Budgets of `rate` rows per second per peer, bursts of `burst`.
    pub(super) fn new(rate: f64, burst: u32) -> Self {
        Self {
            audit_budget: TokenBuckets::new(rate, burst),
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a refused call of `peer` gets an audit row of its own; if
    /// not, it is counted for the peer's next summary row.
    pub(super) fn audit_individually(&self, peer: IpAddr, method: &str, code: &str) -> bool {
        let peer = peer_key(peer);
        if self.audit_budget.try_take(&peer) {
            return true;
        }
        let mut counts = lock(&self.counts);
        *counts
            .entry(peer)
            .or_default()
            .entry((method.to_string(), code.to_string()))
            .or_default() += 1;
        false
    }

    /// Takes the summaries gathered since the last call, by peer.
    pub(super) fn take(&self) -> Vec<PeerSummary> {
        let drained = std::mem::take(&mut *lock(&self.counts));
        let mut out: Vec<PeerSummary> = drained
            .into_iter()
            .map(|(peer, methods)| {
                let mut methods: Vec<(String, String, u64)> = methods
                    .into_iter()
                    .map(|((method, code), n)| (method, code, n))
                    .collect();
                methods.sort();
                PeerSummary {
                    peer,
                    calls: methods.iter().map(|(_, _, n)| n).sum(),
                    methods,
                }
            })
            .collect();
        out.sort_by_key(|s| s.peer);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_beyond_the_audit_budget_become_one_summary_per_peer() {
        let summaries = Summaries::new(0.001, 2);
        let peer: IpAddr = "10.0.0.1".parse().expect("ip");
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        let denied = "UNAUTHENTICATED";
        assert!(summaries.audit_individually(peer, "GetEvent", denied));
        assert!(summaries.audit_individually(peer, "GetEvent", denied));
        for _ in 0..1000 {
            assert!(!summaries.audit_individually(peer, "GetEvent", denied));
        }
        assert!(!summaries.audit_individually(peer, "ListActivity", denied));
        assert!(summaries.audit_individually(other, "GetEvent", denied));
        assert_eq!(
            summaries.take(),
            vec![PeerSummary {
                peer,
                calls: 1001,
                methods: vec![
                    ("GetEvent".into(), denied.into(), 1000),
                    ("ListActivity".into(), denied.into(), 1)
                ],
            }]
        );
        assert!(summaries.take().is_empty());
    }
}
