//! Per-principal limits: a token bucket on requests and a cap on exports
//! running at once. Kept in process memory: with several API processes the
//! effective limit is per process (put a shared limiter in front for a
//! global one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::admission::TokenBuckets;
use crate::lock;

/// Request-rate and export-concurrency limits.
pub struct Limits {
    requests: TokenBuckets<String>,
    max_exports: u32,
    exports: Arc<Mutex<HashMap<String, u32>>>,
}

/// One running export; frees its slot when dropped.
#[derive(Debug)]
pub struct ExportSlot {
    principal: String,
    exports: Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        let mut exports = lock(&self.exports);
        if let Some(count) = exports.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                exports.remove(&self.principal);
            }
        }
    }
}

impl Limits {
    /// `rate_per_second` sustained with bursts of `burst`; `max_exports`
    /// at once per principal.
    pub fn new(rate_per_second: f64, burst: u32, max_exports: u32) -> Self {
        Self {
            requests: TokenBuckets::new(rate_per_second, burst),
            max_exports,
            exports: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one request token for `principal`; false when none is left.
    pub fn try_request(&self, principal: &str) -> bool {
        self.requests.try_take(principal)
    }

    /// A slot for one more export by `principal`, counting `elsewhere`
    /// exports already running for it outside this process's memory (open
    /// export jobs); `None` when the cap is reached.
    pub fn try_export(&self, principal: &str, elsewhere: u32) -> Option<ExportSlot> {
        let mut exports = lock(&self.exports);
        let running = exports.get(principal).copied().unwrap_or(0);
        if running + elsewhere >= self.max_exports {
            return None;
        }
        exports.insert(principal.to_string(), running + 1);
        Some(ExportSlot {
            principal: principal.to_string(),
            exports: self.exports.clone(),
        })
    }

    /// Exports of `principal` holding a slot in this process.
    pub fn running_exports(&self, principal: &str) -> u32 {
        lock(&self.exports).get(principal).copied().unwrap_or(0)
    }

    /// How long a principal over its rate should wait for a token.
    pub fn wait_hint(&self) -> std::time::Duration {
        self.requests.wait_hint()
    }

    /// The export cap per principal.
    pub fn max_exports(&self) -> u32 {
        self.max_exports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refuses_and_other_principals_are_unaffected() {
        let limits = Limits::new(0.001, 3, 1);
        assert!((0..3).all(|_| limits.try_request("a")));
        assert!(!limits.try_request("a"));
        assert!(limits.try_request("b"));
    }

    #[test]
    fn export_slots_are_released_on_drop() {
        let limits = Limits::new(1.0, 1, 2);
        let one = limits.try_export("a", 0).expect("first");
        let _two = limits.try_export("a", 0).expect("second");
        assert!(limits.try_export("a", 0).is_none());
        assert!(limits.try_export("b", 1).is_some());
        assert!(limits.try_export("b", 2).is_none());
        drop(one);
        assert!(limits.try_export("a", 0).is_some());
    }
}
