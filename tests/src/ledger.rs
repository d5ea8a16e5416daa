//! What producers tried to commit, and how each attempt ended.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use strata_producer::PreparedEvent;
use uuid::Uuid;

/// How a producer transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// COMMIT returned success: the events must be stored exactly once.
    Committed,
    /// Rolled back (or failed before COMMIT): the events must never appear.
    RolledBack,
    /// COMMIT was sent but its answer lost: either is acceptable, once.
    Unknown,
}

/// One event as the producer meant it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEvent {
    /// The event id.
    pub event_id: Uuid,
    /// Whose history.
    pub user_id: String,
    /// What.
    pub kind: String,
    /// When (microseconds).
    pub occurred_at: DateTime<Utc>,
    /// The payload as jsonb text.
    pub payload_text: String,
}

impl From<&PreparedEvent> for LedgerEvent {
    fn from(e: &PreparedEvent) -> Self {
        Self {
            event_id: e.event_id,
            user_id: e.user_id.clone(),
            kind: e.kind.clone(),
            occurred_at: e.occurred_at,
            payload_text: e.payload_text.clone(),
        }
    }
}

/// Shared, append-only record of producer transactions.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    entries: Arc<Mutex<Vec<(LedgerEvent, Outcome)>>>,
}

impl Ledger {
    /// Records the events of one transaction with its outcome.
    pub fn record(&self, events: &[LedgerEvent], outcome: Outcome) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.extend(events.iter().cloned().map(|e| (e, outcome)));
    }

    /// Everything recorded so far.
    pub fn entries(&self) -> Vec<(LedgerEvent, Outcome)> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Number of events with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, o)| *o == outcome)
            .count()
    }
}
