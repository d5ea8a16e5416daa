//! The audit trail: one row in `strata.api_audit` per call (request id,
//! principal, whose history, method, decision, status code and text,
//! peer), and one summary row per peer for the refusals beyond its audit
//! budget.
//!
//! **Invariant:** no response leaves before its audit row is written: a
//! call whose row cannot be written is answered UNAVAILABLE instead of
//! with data (refusals over a limit: their row, or their count in the
//! peer's next summary row). ListActivity, the latency-critical call,
//! writes its "allowed" row while the page is read ([`alongside`]); if
//! that read then fails, a second, "failed" row with the same request id
//! follows ([`outcome`]).

use std::future::Future;
use std::net::IpAddr;

use tokio_postgres::types::{ToSql, Type};
use tonic::{Code, Status};

use crate::admission::{Admission, Call};
use crate::error::code_name;
use crate::pool::{Pool, PoolError};
use crate::request::truncate;

/// One row: request_id, principal, target_user, method, decision,
/// status_code, detail, peer, calls.
const INSERT_AUDIT: &str = "INSERT INTO strata.api_audit
               (request_id, principal, target_user, method, decision, status_code, detail, peer, calls)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Longest status text kept in a call's row, in bytes.
const DETAIL_BYTES: usize = 200;
/// Longest text of a summary row, in bytes.
const SUMMARY_DETAIL_BYTES: usize = 1000;

/// What became of a call (the `decision` column, text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditDecision {
    /// Answered with data.
    Allowed,
    /// Refused: admission, or nothing this caller may see (NOT_FOUND).
    Denied,
    /// Admitted, then failed.
    Failed,
}

impl AuditDecision {
    /// The column's text.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDecision::Allowed => "allowed",
            AuditDecision::Denied => "denied",
            AuditDecision::Failed => "failed",
        }
    }

    /// The decision on an admitted call answered with `code`.
    pub fn of_admitted(code: Code) -> Self {
        match code {
            Code::Ok => AuditDecision::Allowed,
            Code::NotFound => AuditDecision::Denied,
            _ => AuditDecision::Failed,
        }
    }
}

/// One audit row.
#[derive(Debug)]
pub struct AuditRecord<'a> {
    /// The call's request id.
    pub request_id: &'a str,
    /// Who called (empty before authentication).
    pub principal: &'a str,
    /// Whose history.
    pub target: &'a str,
    /// The gRPC method.
    pub method: &'a str,
    /// What became of it.
    pub decision: AuditDecision,
    /// The answer's code.
    pub code: Code,
    /// The answer's text (cut to 200 bytes).
    pub detail: &'a str,
    /// The caller's address, when known.
    pub peer: Option<IpAddr>,
}

/// Why an audit row could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// No connection.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The insert.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

async fn insert(pool: &Pool, values: &[(&(dyn ToSql + Sync), Type)]) -> Result<(), AuditError> {
    let client = pool.get().await?;
    // Typed: one round trip, no separate prepare.
    client.execute_typed(INSERT_AUDIT, values).await?;
    Ok(())
}

/// `text` as Postgres text can hold it: NUL characters (which a refused
/// call's `user_id` or a token's subject may carry, and which Postgres
/// refuses in text) become U+FFFD, so hostile input cannot make the
/// audit row fail and the call go unaudited.
fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Writes one audit row; false (logged and counted) when it could not be
/// written.
pub async fn write(pool: &Pool, record: &AuditRecord<'_>) -> bool {
    let code = code_name(record.code);
    let detail = storable(truncate(record.detail, DETAIL_BYTES));
    let decision = record.decision.as_str();
    let request_id = storable(record.request_id);
    let principal = storable(record.principal);
    let target = storable(record.target);
    let result = insert(
        pool,
        &[
            (&request_id, Type::TEXT),
            (&principal, Type::TEXT),
            (&target, Type::TEXT),
            (&record.method, Type::TEXT),
            (&decision, Type::TEXT),
            (&code, Type::TEXT),
            (&detail, Type::TEXT),
            (&record.peer, Type::INET),
            (&1i64, Type::INT8),
        ],
    )
    .await;
    match result {
        Ok(()) => true,
        Err(err) => {
            tracing::error!(request_id = %record.request_id, error = %err, "cannot write the audit record");
            crate::metrics::errors("audit");
            false
        }
    }
}

/// The row of an admitted call answered with `code` and `detail`.
fn call_record<'a>(call: &'a Call, code: Code, detail: &'a str) -> AuditRecord<'a> {
    AuditRecord {
        request_id: &call.request_id,
        principal: &call.principal.subject,
        target: &call.target,
        method: call.method,
        decision: AuditDecision::of_admitted(code),
        code,
        detail,
        peer: call.peer,
    }
}

/// Runs `work` while writing the call's "allowed" row, so the commit of
/// that row does not add to the latency; the result is held until both
/// are done, and [`outcome`] withholds it if the row could not be written.
pub async fn alongside<T>(pool: &Pool, call: &Call, work: impl Future<Output = T>) -> T {
    let record = call_record(call, Code::Ok, "");
    let (result, audited) = tokio::join!(work, write(pool, &record));
    let _ = call.audited.set(audited);
    result
}

/// Audits the outcome of an admitted call (unless a row written
/// [`alongside`] the work already stands for it); false when the call has
/// no row, so its result must be withheld.
pub async fn outcome<T>(pool: &Pool, call: &Call, result: &Result<T, Status>) -> bool {
    let (code, detail) = match result {
        Ok(_) => (Code::Ok, ""),
        Err(status) => (status.code(), status.message()),
    };
    // A row written alongside the work stands for its success; a failure
    // after it gets a row of its own.
    match call.audited.get().copied() {
        Some(written) if !written || result.is_ok() => written,
        written_alongside => {
            let recorded = write(pool, &call_record(call, code, detail)).await;
            recorded || written_alongside == Some(true)
        }
    }
}

/// Writes the refusal summaries gathered since the last call: one row per
/// peer (method `*` when several, the calls it stands for in `calls`).
/// Summaries that cannot be written are logged and counted, not retried:
/// the metric `strata_api_audit_summarized_total` keeps the count.
pub async fn write_summaries(pool: &Pool, admission: &Admission) {
    for summary in admission.take_summaries() {
        let method = match summary.methods.as_slice() {
            [(method, _, _)] => method.clone(),
            _ => "*".to_string(),
        };
        let code = match summary.methods.as_slice() {
            [(_, code, _)] => code.clone(),
            _ => "MIXED".to_string(),
        };
        let detail: Vec<String> = summary
            .methods
            .iter()
            .map(|(method, code, n)| format!("{method} {code} x{n}"))
            .collect();
        let detail = format!(
            "summary of {} refused calls not audited one by one: {}",
            summary.calls,
            detail.join(", ")
        );
        let request_id = format!("summary-{}", uuid::Uuid::new_v4());
        let calls = i64::try_from(summary.calls).unwrap_or(i64::MAX);
        let decision = AuditDecision::Denied.as_str();
        let result = insert(
            pool,
            &[
                (&request_id, Type::TEXT),
                (&"", Type::TEXT),
                (&"", Type::TEXT),
                (&method, Type::TEXT),
                (&decision, Type::TEXT),
                (&code, Type::TEXT),
                (&truncate(&detail, SUMMARY_DETAIL_BYTES), Type::TEXT),
                (&Some(summary.peer), Type::INET),
                (&calls, Type::INT8),
            ],
        )
        .await;
        if let Err(err) = result {
            tracing::error!(peer = %summary.peer, calls = summary.calls, error = %err, "cannot write an audit summary");
            crate::metrics::errors("audit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_stored_as_replacement_characters() {
        assert_eq!(storable("alice"), "alice");
        assert!(matches!(storable("alice"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(storable("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn decisions_read_as_the_column_stores_them() {
        assert_eq!(AuditDecision::Allowed.as_str(), "allowed");
        assert_eq!(AuditDecision::Denied.as_str(), "denied");
        assert_eq!(AuditDecision::Failed.as_str(), "failed");
        assert_eq!(AuditDecision::of_admitted(Code::Ok), AuditDecision::Allowed);
        assert_eq!(
            AuditDecision::of_admitted(Code::NotFound),
            AuditDecision::Denied
        );
        assert_eq!(
            AuditDecision::of_admitted(Code::Unavailable),
            AuditDecision::Failed
        );
    }
}
