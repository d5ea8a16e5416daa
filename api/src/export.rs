//! Exports: one user's events in a range, ascending, as JSON lines or CSV,
//! produced page by page so memory stays bounded whatever the range.
//!
//! The same writer feeds the streamed export (`ExportActivity`) and the
//! background job (`StartExport`), so both produce identical bytes.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use strata_archive::StoreError;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::history::{HistoryReader, Query, ReadAhead};
use crate::pool::{Pool, PoolError};
use crate::read_error::ReadError;

/// Events read per page while exporting.
pub const EXPORT_PAGE: usize = 1_000;
/// Archived days whose files an export fetches at once (concurrent GETs:
/// an export is bound by the object store's latency, not its bandwidth).
pub const EXPORT_READ_AHEAD_DAYS: usize = 4;
/// Decoded archive rows an export keeps between pages (a few MB), so a
/// day spanning several pages is fetched once.
pub const EXPORT_KEPT_EVENTS: usize = 20_000;
/// Bytes gathered before a chunk is handed on.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// An export file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    JsonLines,
    /// RFC 4180 CSV with a header row.
    Csv,
}

impl Format {
    /// The name stored with a job and used as file extension.
    pub fn name(self) -> &'static str {
        match self {
            Self::JsonLines => "jsonl",
            Self::Csv => "csv",
        }
    }

    /// The inverse of [`Format::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "jsonl" => Some(Self::JsonLines),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    /// What the file starts with.
    pub fn header(self) -> &'static [u8] {
        match self {
            Self::JsonLines => b"",
            Self::Csv => b"event_id,user_id,kind,occurred_at,source,payload_json,ingested_at\r\n",
        }
    }

    /// Appends one event as one line (one record).
    pub fn write(self, event: &Event, out: &mut Vec<u8>) {
        let occurred_at = rfc3339(event.occurred_at);
        let ingested_at = rfc3339(event.ingested_at);
        match self {
            Self::JsonLines => {
                // The payload is JSON already (as Postgres prints jsonb):
                // embedded as an object, not re-encoded as a string.
                out.extend_from_slice(b"{\"event_id\":\"");
                out.extend_from_slice(event.event_id.hyphenated().to_string().as_bytes());
                out.extend_from_slice(b"\",\"user_id\":");
                json_string(&event.user_id, out);
                out.extend_from_slice(b",\"kind\":");
                json_string(&event.kind, out);
                out.extend_from_slice(b",\"occurred_at\":\"");
                out.extend_from_slice(occurred_at.as_bytes());
                out.extend_from_slice(b"\",\"source\":");
                json_string(&event.source, out);
                out.extend_from_slice(b",\"payload\":");
                out.extend_from_slice(event.payload.as_bytes());
                out.extend_from_slice(b",\"ingested_at\":\"");
                out.extend_from_slice(ingested_at.as_bytes());
                out.extend_from_slice(b"\"}\n");
            }
            Self::Csv => {
                let id = event.event_id.hyphenated().to_string();
                // (cell, is free text): text cells are neutralised against
                // formula injection; the id and the timestamps we format
                // ourselves and cannot start with a trigger.
                let fields = [
                    (id.as_str(), false),
                    (event.user_id.as_str(), true),
                    (event.kind.as_str(), true),
                    (occurred_at.as_str(), false),
                    (event.source.as_str(), true),
                    (event.payload.as_str(), true),
                    (ingested_at.as_str(), false),
                ];
                for (i, (field, text)) in fields.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    csv_field(field, text, out);
                }
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// UTC microseconds as RFC 3339 with microseconds and `Z`.
pub fn rfc3339(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_default()
}

fn json_string(value: &str, out: &mut Vec<u8>) {
    match serde_json::to_string(value) {
        Ok(text) => out.extend_from_slice(text.as_bytes()),
        Err(_) => out.extend_from_slice(b"null"),
    }
}

/// First characters that make a spreadsheet read a cell as a formula
/// (OWASP's list for CSV injection).
const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// One RFC 4180 cell. A `text` cell starting with a formula trigger is
/// neutralised as OWASP recommends: prefixed with `'` (spreadsheets then
/// show it as text, `=HYPERLINK(...)` included) and quoted. A payload's
/// JSON starts with `{`, so numbers like -12.5 inside it are untouched.
fn csv_field(value: &str, text: bool, out: &mut Vec<u8>) {
    let neutralise = text && value.starts_with(FORMULA_TRIGGERS);
    let needs_quotes = neutralise
        || value.is_empty()
        || value
            .bytes()
            .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if needs_quotes {
        out.push(b'"');
        if neutralise {
            out.push(b'\'');
        }
        for b in value.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(value.as_bytes());
    }
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the history.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// No database connection.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The consumer went away or the process is shutting down.
    #[error("export cancelled")]
    Cancelled,
    /// Writing a job's spool file (the cause is shown in the message, which
    /// is what is logged and recorded, so it is not also the `source()`).
    #[error("spool file: {0}")]
    Spool(std::io::Error),
    /// Uploading a job's file.
    #[error(transparent)]
    Upload(StoreError),
    /// Renewing a job's lease (the cause is shown in the message, as it
    /// always was, so it is not also the `source()`).
    #[error("renew job lease: {0}")]
    Renew(tokio_postgres::Error),
    /// The job's lease lapsed and another worker took it over.
    #[error("job is no longer running here")]
    NotRunning,
}

/// Totals of a finished export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportTotals {
    /// Events written.
    pub events: u64,
    /// Bytes written, header included.
    pub bytes: u64,
}

/// Where export chunks go.
pub trait Sink {
    /// Takes the next chunk (`so_far` includes it); false stops the export.
    fn accept(
        &mut self,
        chunk: Vec<u8>,
        so_far: ExportTotals,
    ) -> impl std::future::Future<Output = Result<bool, ExportError>> + Send;
}

/// Runs `query` (ascending; its `after` and `limit` are overwritten) to the
/// end, handing chunks of at most about [`CHUNK_BYTES`] to `sink`. Each
/// chunk ends at a record boundary.
pub async fn run(
    reader: &HistoryReader,
    pool: &Pool,
    mut query: Query,
    format: Format,
    cancel: &CancellationToken,
    sink: &mut impl Sink,
) -> Result<ExportTotals, ExportError> {
    query.descending = false;
    query.limit = EXPORT_PAGE;
    query.after = None;
    let mut totals = ExportTotals {
        events: 0,
        bytes: format.header().len() as u64,
    };
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
    chunk.extend_from_slice(format.header());
    let mut ahead = ReadAhead::new(EXPORT_READ_AHEAD_DAYS, EXPORT_KEPT_EVENTS);
    loop {
        if cancel.is_cancelled() {
            return Err(ExportError::Cancelled);
        }
        // The connection goes back to the pool before the archive reads.
        let hot_page = {
            let mut client = pool.get().await?;
            reader.hot_part(&mut client, &query).await?
        };
        let page = reader.cold_part(hot_page, &query, &mut ahead).await?;
        for event in &page.events {
            let before = chunk.len();
            format.write(event, &mut chunk);
            totals.events += 1;
            totals.bytes += (chunk.len() - before) as u64;
            if chunk.len() >= CHUNK_BYTES {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES + 4096));
                if !sink.accept(full, totals).await? {
                    return Err(ExportError::Cancelled);
                }
            }
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    if !chunk.is_empty() && !sink.accept(chunk, totals).await? {
        return Err(ExportError::Cancelled);
    }
    Ok(totals)
}

/// How long an export job's claim lasts without renewal; a crashed API's
/// job is taken over after this.
pub const JOB_LEASE: Duration = Duration::from_secs(30);
/// Attempts before a job is marked failed.
pub const JOB_MAX_ATTEMPTS: i32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &str, user: &str) -> Event {
        Event {
            user_id: user.into(),
            occurred_at: 1_700_000_000_123_456,
            event_id: uuid::Uuid::nil(),
            kind: "login".into(),
            source: "web".into(),
            payload: payload.into(),
            ingested_at: 1_700_000_001_000_000,
        }
    }

    #[test]
    fn jsonl_embeds_the_payload_and_escapes_strings() {
        let mut out = Vec::new();
        Format::JsonLines.write(&event(r#"{"a": 1}"#, "u\"1\n"), &mut out);
        let line = String::from_utf8(out).expect("utf8");
        let value: serde_json::Value = serde_json::from_str(line.trim_end()).expect("json");
        assert_eq!(value["user_id"], "u\"1\n");
        assert_eq!(value["payload"]["a"], 1);
        assert_eq!(value["occurred_at"], "2023-11-14T22:13:20.123456Z");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut out = Vec::new();
        Format::Csv.write(&event(r#"{"a": "x,y"}"#, "=cmd"), &mut out);
        let line = String::from_utf8(out).expect("utf8");
        assert!(line.contains(r#","'=cmd","#), "{line}");
        assert!(line.contains(r#""{""a"": ""x,y""}""#), "{line}");
        assert!(line.ends_with("\r\n"));
    }

    fn cell(value: &str) -> String {
        let mut out = Vec::new();
        csv_field(value, true, &mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn csv_neutralises_formula_cells() {
        assert_eq!(
            cell("=HYPERLINK(\"http://x\",\"y\")"),
            r#""'=HYPERLINK(""http://x"",""y"")""#
        );
        assert_eq!(cell("+1"), r#""'+1""#);
        assert_eq!(cell("-x"), r#""'-x""#);
        assert_eq!(cell("@SUM(A1)"), r#""'@SUM(A1)""#);
        assert_eq!(cell("\tcmd"), "\"'\tcmd\"");
        assert_eq!(cell("\rcmd"), "\"'\rcmd\"");
        // Harmless cells are left alone; a trigger inside a cell is data.
        assert_eq!(cell("user-42"), "user-42");
        assert_eq!(cell(r#"{"amount": -12.5}"#), r#""{""amount"": -12.5}""#);
        assert_eq!(cell(""), r#""""#);

        let mut out = Vec::new();
        let mut e = event(r#"{"amount": -12.5}"#, "-x");
        e.kind = "@kind".into();
        e.source = "+src".into();
        Format::Csv.write(&e, &mut out);
        let line = String::from_utf8(out).expect("utf8");
        assert_eq!(
            line,
            "00000000-0000-0000-0000-000000000000,\"'-x\",\"'@kind\",\
             2023-11-14T22:13:20.123456Z,\"'+src\",\"{\"\"amount\"\": -12.5}\",\
             2023-11-14T22:13:21.000000Z\r\n"
        );
    }

    use strata_core::error_chain as chain;

    /// The text logged and recorded for a failed attempt is what it was
    /// when these were strings, and the chain repeats no cause.
    #[test]
    fn export_failures_show_their_cause_once() {
        let spool = ExportError::Spool(std::io::Error::other("no space left on device"));
        assert_eq!(spool.to_string(), "spool file: no space left on device");
        assert_eq!(chain(&spool), spool.to_string());

        let driver = "port=notaport"
            .parse::<tokio_postgres::Config>()
            .expect_err("not a port");
        let driver_text = driver.to_string();
        let renew = ExportError::Renew(driver);
        assert_eq!(renew.to_string(), format!("renew job lease: {driver_text}"));
        assert_eq!(chain(&renew), renew.to_string());

        let scratch = ExportError::from(ReadError::from(std::io::Error::other("disk full")));
        assert_eq!(scratch.to_string(), "scratch file: disk full");
        assert_eq!(chain(&scratch), scratch.to_string());
    }
}
