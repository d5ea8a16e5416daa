//! Compares the ledger with the hot store.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use tokio_postgres::Client;
use uuid::Uuid;

use crate::ledger::{Ledger, LedgerEvent, Outcome};

/// What the hot store holds against what producers committed.
#[derive(Debug, Default)]
pub struct Report {
    /// Events whose transaction committed.
    pub committed: usize,
    /// Events whose transaction rolled back.
    pub rolled_back: usize,
    /// Events whose commit outcome is unknown.
    pub unknown: usize,
    /// Rows in the hot store.
    pub stored: usize,
    /// Committed but not stored.
    pub lost: Vec<Uuid>,
    /// Stored more than once.
    pub duplicated: Vec<Uuid>,
    /// Stored although rolled back, or never produced at all.
    pub phantom: Vec<Uuid>,
    /// Stored with other fields than produced.
    pub mismatched: Vec<Uuid>,
    /// Users whose history does not read back in (occurred_at, event_id) order
    /// equal to the ledger's.
    pub out_of_order_users: Vec<String>,
}

impl Report {
    /// Nothing lost, duplicated, phantom, altered or out of order.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.phantom.is_empty()
            && self.mismatched.is_empty()
            && self.out_of_order_users.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "committed={} rolled_back={} unknown={} stored={} lost={} duplicated={} phantom={} mismatched={} out_of_order_users={}",
            self.committed,
            self.rolled_back,
            self.unknown,
            self.stored,
            self.lost.len(),
            self.duplicated.len(),
            self.phantom.len(),
            self.mismatched.len(),
            self.out_of_order_users.len()
        )?;
        if !self.lost.is_empty() {
            write!(f, " first lost: {:?}", &self.lost[..self.lost.len().min(5)])?;
        }
        if !self.phantom.is_empty() {
            write!(
                f,
                " first phantom: {:?}",
                &self.phantom[..self.phantom.len().min(5)]
            )?;
        }
        Ok(())
    }
}

/// Reads the whole hot store and compares it with the ledger.
pub async fn check(ledger: &Ledger, hot: &Client) -> anyhow::Result<Report> {
    let rows = hot
        .query(
            "SELECT event_id, user_id, kind, occurred_at, payload::text \
             FROM strata.activity ORDER BY user_id, occurred_at, event_id",
            &[],
        )
        .await?;
    let stored: Vec<LedgerEvent> = rows
        .iter()
        .map(|r| LedgerEvent {
            event_id: r.get(0),
            user_id: r.get(1),
            kind: r.get(2),
            occurred_at: r.get(3),
            payload_text: r.get(4),
        })
        .collect();
    Ok(compare(&ledger.entries(), &stored))
}

/// Field equality, payloads compared as JSON values (Postgres's jsonb
/// prints keys in its own order).
fn same_event(a: &LedgerEvent, b: &LedgerEvent) -> bool {
    let payload = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
    a.event_id == b.event_id
        && a.user_id == b.user_id
        && a.kind == b.kind
        && a.occurred_at == b.occurred_at
        && payload(&a.payload_text).is_some()
        && payload(&a.payload_text) == payload(&b.payload_text)
}

/// The comparison itself (pure, unit-tested).
pub fn compare(entries: &[(LedgerEvent, Outcome)], stored: &[LedgerEvent]) -> Report {
    let mut report = Report {
        stored: stored.len(),
        ..Report::default()
    };
    let mut produced: HashMap<Uuid, (&LedgerEvent, Outcome)> = HashMap::new();
    for (event, outcome) in entries {
        match outcome {
            Outcome::Committed => report.committed += 1,
            Outcome::RolledBack => report.rolled_back += 1,
            Outcome::Unknown => report.unknown += 1,
        }
        produced.insert(event.event_id, (event, *outcome));
    }
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    for event in stored {
        *seen.entry(event.event_id).or_default() += 1;
        match produced.get(&event.event_id) {
            None | Some((_, Outcome::RolledBack)) => report.phantom.push(event.event_id),
            Some((expected, _)) => {
                if !same_event(expected, event) {
                    report.mismatched.push(event.event_id);
                }
            }
        }
    }
    report.duplicated = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    let mut expected_by_user: BTreeMap<&str, Vec<&LedgerEvent>> = BTreeMap::new();
    for (event, outcome) in entries {
        let landed = seen.contains_key(&event.event_id);
        match outcome {
            Outcome::Committed if !landed => report.lost.push(event.event_id),
            Outcome::Committed => {}
            Outcome::Unknown if landed => {}
            _ => continue,
        }
        expected_by_user
            .entry(event.user_id.as_str())
            .or_default()
            .push(event);
    }
    let mut stored_by_user: BTreeMap<&str, Vec<Uuid>> = BTreeMap::new();
    for event in stored {
        stored_by_user
            .entry(event.user_id.as_str())
            .or_default()
            .push(event.event_id);
    }
    for (user, mut expected) in expected_by_user {
        expected.sort_by_key(|e| (e.occurred_at, e.event_id));
        let expected: Vec<Uuid> = expected.iter().map(|e| e.event_id).collect();
        let got: Vec<Uuid> = stored_by_user
            .get(user)
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|id| expected.contains(id))
                    .collect()
            })
            .unwrap_or_default();
        if got != expected && !expected.iter().any(|id| report.lost.contains(id)) {
            report.out_of_order_users.push(user.to_string());
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn event(n: u128, user: &str, second: i64) -> LedgerEvent {
        LedgerEvent {
            event_id: Uuid::from_u128(n),
            user_id: user.into(),
            kind: "login".into(),
            occurred_at: Utc.timestamp_opt(second, 0).single().expect("valid time"),
            payload_text: "{}".into(),
        }
    }

    #[test]
    fn finds_each_kind_of_fault() {
        let a = event(1, "u", 10);
        let b = event(2, "u", 20);
        let c = event(3, "u", 30);
        let d = event(4, "v", 40);
        let entries = vec![
            (a.clone(), Outcome::Committed),
            (b.clone(), Outcome::Committed),
            (c.clone(), Outcome::RolledBack),
            (d.clone(), Outcome::Unknown),
        ];
        let clean = compare(&entries, &[a.clone(), b.clone()]);
        assert!(clean.is_clean(), "{clean}");
        let report = compare(&entries, &[a.clone(), a.clone(), c.clone(), d.clone()]);
        assert_eq!(report.lost, vec![b.event_id]);
        assert_eq!(report.duplicated, vec![a.event_id]);
        assert_eq!(report.phantom, vec![c.event_id]);
        let mut altered = b.clone();
        altered.payload_text = "{\"x\": 1}".into();
        let report = compare(&entries, &[a.clone(), altered]);
        assert_eq!(report.mismatched, vec![b.event_id]);
        let report = compare(&entries, &[b.clone(), a.clone()]);
        assert_eq!(report.out_of_order_users, vec!["u".to_string()]);
    }
}
