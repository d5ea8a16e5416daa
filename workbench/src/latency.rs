//! Commit-to-visible latency: producers note when each event's transaction
//! committed, the relay's ship observer notes when it became visible in the
//! hot store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use uuid::Uuid;

/// Shared between producers and the relay observer.
#[derive(Debug, Default)]
pub struct LatencyTracker {
    pending: Mutex<HashMap<Uuid, Instant>>,
    samples_ms: Mutex<Vec<f64>>,
    visible: std::sync::atomic::AtomicU64,
}

impl LatencyTracker {
    /// A tracker behind an `Arc`.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Called by a producer just before COMMIT.
    pub fn before_commit(&self, id: Uuid) {
        lock(&self.pending).insert(id, Instant::now());
    }

    /// Called by a producer after COMMIT returned: the clock starts here
    /// (unless the event was already seen, which then counts from before).
    pub fn committed(&self, id: Uuid) {
        if let Some(at) = lock(&self.pending).get_mut(&id) {
            *at = Instant::now();
        }
    }

    /// Called when COMMIT failed.
    pub fn abandoned(&self, id: Uuid) {
        lock(&self.pending).remove(&id);
    }

    /// The relay observer: these ids just became visible.
    pub fn visible(&self, ids: &[Uuid]) {
        let now = Instant::now();
        let mut pending = lock(&self.pending);
        let mut samples = lock(&self.samples_ms);
        let mut tracked = 0;
        for id in ids {
            if let Some(at) = pending.remove(id) {
                samples.push(now.saturating_duration_since(at).as_secs_f64() * 1000.0);
                tracked += 1;
            }
        }
        // Only events this tracker saw committed: the demo's backfill is
        // shipped by the same relays and is not "produced" here.
        self.visible
            .fetch_add(tracked, std::sync::atomic::Ordering::Relaxed);
    }

    /// Tracked events seen visible so far.
    pub fn visible_count(&self) -> u64 {
        self.visible.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes the samples gathered so far.
    pub fn take_samples(&self) -> Vec<f64> {
        std::mem::take(&mut *lock(&self.samples_ms))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Percentile (0..=100) of `samples`, sorting them; 0 when empty.
pub fn percentile(samples: &mut [f64], pct: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = ((pct / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), 51.0);
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        assert_eq!(percentile(&mut v, 100.0), 100.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
    }
}
