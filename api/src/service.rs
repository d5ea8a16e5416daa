//! The `strata.v1.History` gRPC service: authentication, authorisation,
//! limits and audit around the history reader and the exports.
//!
//! Every call goes through `HistoryService::admit` first (bearer token,
//! rate limit, whose history, scopes) and through `HistoryService::finish`
//! last, which writes its one audit record; a call whose audit record
//! cannot be written fails with UNAVAILABLE instead of returning data.
//! ListActivity, the latency-critical call, writes its "allowed" record
//! while the page is read (both must finish before the reply); if that
//! read then fails, a second, "failed" record with the same request id
//! follows.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost_types::Timestamp;
use strata_archiver::ObjectStore;
use strata_proto::v1::history_server::History;
use strata_proto::v1::{
    Event as ProtoEvent, ExportActivityRequest, ExportChunk, ExportFormat, ExportJob, ExportState,
    GetEventRequest, GetExportRequest, ListActivityRequest, ListActivityResponse, Order,
};
use tokio::sync::{mpsc, Notify};
use tokio_postgres::types::Type;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::admission::{Admission, Held, Refusal};
use crate::auth::{Authenticator, Principal};
use crate::export::{self, ExportError, ExportTotals, Format};
use crate::history::{timestamp, Event, HistoryReader, Lookup, Query, ReadAhead, ReadError};
use crate::jobs::{self, JobSpec};
use crate::limits::Limits;
use crate::page_token::{Binding, PageTokenError, PageTokenKeys};
use crate::pool::{Pool, PoolError};

/// Events per page when the request says 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Larger page sizes are coerced to this.
pub const MAX_PAGE_SIZE: usize = 1_000;
/// Most kinds one request may filter on.
pub const MAX_KINDS: usize = 32;
/// How long a refusal for being over a rate or a cap is held before it is
/// answered (its retry hint, within these bounds).
const REFUSAL_HOLD: std::ops::Range<Duration> = Duration::from_millis(250)..Duration::from_secs(1);
/// Retry hint of a refusal for too many calls or archive reads in flight.
const BUSY_WAIT: Duration = Duration::from_millis(200);
/// Earliest accepted timestamp: 0001-01-01T00:00:00Z.
const MIN_SECONDS: i64 = -62_135_596_800;
/// Latest accepted timestamp: 9999-12-31T23:59:59Z.
const MAX_SECONDS: i64 = 253_402_300_799;

/// Settings of the service beyond its parts.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// How long page tokens stay valid.
    pub page_token_ttl: Duration,
    /// Key prefix of export job files.
    pub export_prefix: String,
    /// How long a presigned export URL stays valid.
    pub export_url_ttl: Duration,
    /// How long an export job's file is kept after the job finished.
    pub export_retention: Duration,
    /// Deadline of every unary call (a client's shorter one wins).
    pub request_timeout: Duration,
    /// Archived days GetEvent searches for an id that is not a UUIDv7.
    pub get_event_max_days: usize,
}

/// What the service is built from.
pub struct ServiceParts {
    /// Database connections (API role).
    pub pool: Pool,
    /// The cross-tier reader.
    pub reader: Arc<HistoryReader>,
    /// The archive's object store (also holds export files).
    pub store: ObjectStore,
    /// Bearer-token verification.
    pub auth: Authenticator,
    /// Page-token keys.
    pub tokens: PageTokenKeys,
    /// Per-principal limits.
    pub limits: Limits,
    /// Caps on calls and archive reads in flight, per peer limits and
    /// audit summaries.
    pub admission: Arc<Admission>,
    /// Wakes this process's export worker.
    pub wake_jobs: Arc<Notify>,
    /// Stops streamed exports on shutdown.
    pub cancel: CancellationToken,
    /// The rest.
    pub settings: ServiceSettings,
}

/// The gRPC service; cheap to clone.
#[derive(Clone)]
pub struct HistoryService {
    parts: Arc<ServiceParts>,
}

/// What a call needs besides a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Read the target user's history.
    Read,
    /// Export the target user's history.
    Export,
    /// Look at an export job (target known only later).
    Job,
}

/// One admitted call, carried to its audit record.
struct Call {
    method: &'static str,
    request_id: String,
    principal: Principal,
    target: String,
    started: Instant,
    /// The caller's network address, when known.
    peer: Option<IpAddr>,
    /// When the call must be over (from `started`).
    deadline: Duration,
    /// Its place among the calls in flight, given back when it ends.
    _in_flight: Held,
    /// Whether the "allowed" record was written alongside the work (see
    /// [`HistoryService::audited_alongside`]); unset: not written yet.
    audited: std::sync::OnceLock<bool>,
}

impl HistoryService {
    /// The service over `parts`.
    pub fn new(parts: ServiceParts) -> Self {
        Self {
            parts: Arc::new(parts),
        }
    }

    /// Admits a call: the peer's rate (before anything else), the bearer
    /// token, the principal's rate, whose history, scopes, and a place among
    /// the calls in flight. A refusal is audited here (on its own while the
    /// peer's audit budget lasts, else in the peer's next summary row) and
    /// returned.
    async fn admit<T>(
        &self,
        method: &'static str,
        request: &Request<T>,
        requested_user: &str,
        need: Need,
    ) -> Result<Call, Status> {
        let started = Instant::now();
        let request_id = request_id(request);
        let peer = request.remote_addr().map(|address| address.ip());
        let deadline = deadline(request, self.parts.settings.request_timeout);
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or("\u{0}"));
        let requested = truncate(requested_user, 256);
        let admission = &self.parts.admission;
        // `summarizable`: a refusal a flood can produce (bad token, a rate, a
        // cap), which may be summarized beyond the peer's audit budget.
        // Authorisation and argument denials come after the principal's
        // rate limit and are always audited one by one.
        let deny_with = |principal: &str, status: Status, summarizable: bool| {
            let request_id = request_id.clone();
            let principal = principal.to_string();
            let requested = requested.to_string();
            async move {
                let status = with_request_id(status, &request_id);
                let code = code_name(status.code());
                let individually = !summarizable
                    || peer.is_none_or(|peer| admission.audit_individually(peer, method, code));
                if individually {
                    self.audit(&AuditRecord {
                        request_id: &request_id,
                        principal: &principal,
                        target: &requested,
                        method,
                        decision: "denied",
                        status: &status,
                        peer,
                    })
                    .await;
                } else {
                    crate::metrics::AUDIT_SUMMARIZED.inc();
                }
                record(method, status.code(), started);
                status
            }
        };
        // A refusal for being over a limit is answered after its retry hint
        // (within REFUSAL_HOLD): a client that retries at once, as a flood
        // does, paces itself to the server instead of spinning on it.
        let deny = |principal: &str, status: Status| deny_with(principal, status, false);
        let refuse = |principal: &str, status: Status, wait: Duration| {
            let denied = deny_with(principal, status, true);
            async move {
                tokio::time::sleep(wait.clamp(REFUSAL_HOLD.start, REFUSAL_HOLD.end)).await;
                denied.await
            }
        };
        if let Some(peer) = peer {
            if !admission.peer_allows(peer) {
                crate::metrics::REFUSED
                    .with_label_values(&["peer_rate"])
                    .inc();
                let wait = admission.peer_wait_hint();
                let status = exhausted(
                    "too many calls from this network address; retry later",
                    wait.max(REFUSAL_HOLD.start),
                );
                return Err(refuse("", status, wait).await);
            }
        }
        let principal = match self.parts.auth.authenticate(authorization) {
            Ok(principal) => principal,
            // Held like a refusal: a token-less flood paces itself too (a
            // client with an expired token refreshes it anyway).
            Err(err) => {
                return Err(
                    refuse("", Status::unauthenticated(err.to_string()), Duration::ZERO).await,
                )
            }
        };
        if !self.parts.limits.try_request(&principal.subject) {
            crate::metrics::REFUSED
                .with_label_values(&["principal_rate"])
                .inc();
            let wait = self.parts.limits.wait_hint();
            return Err(refuse(
                &principal.subject,
                exhausted(
                    "request rate limit reached for this principal; retry later",
                    wait.max(REFUSAL_HOLD.start),
                ),
                wait,
            )
            .await);
        }
        if matches!(need, Need::Export | Need::Job) && !principal.export {
            return Err(deny(
                &principal.subject,
                Status::permission_denied("this token lacks the activity:export scope"),
            )
            .await);
        }
        let target = if need == Need::Job {
            String::new()
        } else if principal.read_any {
            if requested_user.is_empty() {
                return Err(deny(
                    &principal.subject,
                    Status::invalid_argument("user_id is required with an activity:read:any token"),
                )
                .await);
            }
            requested_user.to_string()
        } else if requested_user.is_empty() || requested_user == principal.subject {
            principal.subject.clone()
        } else {
            return Err(deny(
                &principal.subject,
                Status::permission_denied("a customer token reads only its own history"),
            )
            .await);
        };
        if target.len() > strata_core::event::MAX_USER_ID_BYTES {
            return Err(deny(
                &principal.subject,
                Status::invalid_argument("user_id is longer than 256 bytes"),
            )
            .await);
        }
        let in_flight = match admission.enter_call(&principal.subject) {
            Ok(held) => held,
            Err(refusal) => {
                let cap = match refusal {
                    Refusal::PerPrincipal => "calls_per_principal",
                    Refusal::Total => "calls_total",
                };
                crate::metrics::REFUSED.with_label_values(&[cap]).inc();
                return Err(refuse(&principal.subject, busy(refusal, "calls"), BUSY_WAIT).await);
            }
        };
        Ok(Call {
            method,
            request_id,
            principal,
            target,
            started,
            peer,
            deadline,
            _in_flight: in_flight,
            audited: std::sync::OnceLock::new(),
        })
    }

    /// Runs `work` within the call's deadline; DEADLINE_EXCEEDED after it.
    /// Whatever `work` holds (a pooled connection, a permit) is given back
    /// when it is dropped; an open transaction rolls back.
    async fn bounded<T>(
        &self,
        call: &Call,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        within(call.method, call.deadline, call.started, work).await
    }

    /// A permit to read the archive for `call`, or RESOURCE_EXHAUSTED.
    fn cold_permit(&self, call: &Call) -> Result<Held, Status> {
        self.parts
            .admission
            .enter_cold_read(&call.principal.subject)
            .map_err(|refusal| {
                let cap = match refusal {
                    Refusal::PerPrincipal => "cold_reads_per_principal",
                    Refusal::Total => "cold_reads_total",
                };
                crate::metrics::REFUSED.with_label_values(&[cap]).inc();
                busy(refusal, "archive reads")
            })
    }

    /// Audits and counts the outcome of an admitted call.
    async fn finish<T>(
        &self,
        call: Call,
        result: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let (decision, status) = match &result {
            Ok(_) => ("allowed", Status::ok("")),
            Err(status) if status.code() == tonic::Code::NotFound => ("denied", status.clone()),
            Err(status) => ("failed", status.clone()),
        };
        // A record written alongside the work stands for its success; a
        // failure after it gets a record of its own.
        let audited = match call.audited.get().copied() {
            Some(written) if !written || result.is_ok() => written,
            written_alongside => {
                let recorded = self
                    .audit(&AuditRecord {
                        request_id: &call.request_id,
                        principal: &call.principal.subject,
                        target: &call.target,
                        method: call.method,
                        decision,
                        status: &status,
                        peer: call.peer,
                    })
                    .await;
                recorded || written_alongside == Some(true)
            }
        };
        let result = if audited {
            result
        } else {
            Err(Status::unavailable(
                "the audit log is unavailable; nothing was returned",
            ))
        };
        match result {
            Ok(value) => {
                record(call.method, tonic::Code::Ok, call.started);
                let mut response = Response::new(value);
                if let Ok(value) = call.request_id.parse() {
                    response.metadata_mut().insert("x-request-id", value);
                }
                Ok(response)
            }
            Err(status) => {
                record(call.method, status.code(), call.started);
                Err(with_request_id(status, &call.request_id))
            }
        }
    }

    /// Writes one audit record; false when it could not be written.
    async fn audit(&self, record: &AuditRecord<'_>) -> bool {
        let code = code_name(record.status.code());
        let detail = truncate(record.status.message(), 200);
        let result = write_audit(
            &self.parts.pool,
            &[
                (&record.request_id, Type::TEXT),
                (&record.principal, Type::TEXT),
                (&record.target, Type::TEXT),
                (&record.method, Type::TEXT),
                (&record.decision, Type::TEXT),
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

    /// Runs `work` while writing the call's "allowed" audit record, so the
    /// commit of that record does not add to the latency; the result is
    /// held until both are done, and [`Self::finish`] withholds it if the
    /// record could not be written.
    async fn audited_alongside<T>(&self, call: &Call, work: impl Future<Output = T>) -> T {
        let allowed = Status::ok("");
        let record = AuditRecord {
            request_id: &call.request_id,
            principal: &call.principal.subject,
            target: &call.target,
            method: call.method,
            decision: "allowed",
            status: &allowed,
            peer: call.peer,
        };
        let record = self.audit(&record);
        let (result, audited) = tokio::join!(work, record);
        let _ = call.audited.set(audited);
        result
    }

    async fn list(
        &self,
        call: &Call,
        request: ListActivityRequest,
    ) -> Result<ListActivityResponse, Status> {
        let (from_micros, to_micros) = range(request.from.as_ref(), request.to.as_ref())?;
        let kinds = kinds(&request.kinds)?;
        let limit = match request.page_size {
            n if n < 0 => return Err(Status::invalid_argument("page_size must not be negative")),
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let descending = match Order::try_from(request.order) {
            Ok(Order::Unspecified | Order::Ascending) => false,
            Ok(Order::Descending) => true,
            Err(_) => return Err(Status::invalid_argument("unknown order")),
        };
        let binding = Binding {
            user_id: &call.target,
            kinds: &kinds,
            from_micros,
            to_micros,
            descending,
        };
        let now = chrono::Utc::now().timestamp();
        let after = if request.page_token.is_empty() {
            None
        } else {
            match self.parts.tokens.verify(&request.page_token, &binding, now) {
                Ok(cursor) => Some(cursor),
                Err(PageTokenError::Expired) => {
                    return Err(Status::invalid_argument(
                        "page_token has expired; start again without it",
                    ))
                }
                Err(_) => {
                    return Err(Status::invalid_argument(
                        "page_token is not valid for this request (it must come from the previous page of the same query)",
                    ))
                }
            }
        };
        let query = Query {
            user_id: call.target.clone(),
            from_micros,
            to_micros,
            kinds: kinds.clone(),
            descending,
            after,
            limit,
        };
        let request_id = call.request_id.clone();
        let read = async {
            // The connection goes back to the pool before any archive read.
            // In a task of its own: if the deadline drops this call, the
            // statement still finishes and its connection goes back to the
            // pool idle, never with a query in flight.
            let (pool, reader, hot_query) = (
                self.parts.pool.clone(),
                self.parts.reader.clone(),
                query.clone(),
            );
            let hot_page = tokio::spawn(async move {
                let mut client = pool.get().await.map_err(DbWork::Pool)?;
                reader
                    .hot_part(&mut client, &hot_query)
                    .await
                    .map_err(DbWork::Read)
            })
            .await
            .map_err(|e| internal_status("read the hot store", &e))?
            .map_err(|e| e.status(&request_id))?;
            let _permit = if hot_page.needs_archive(&query) {
                Some(self.cold_permit(call)?)
            } else {
                None
            };
            self.parts
                .reader
                .cold_part(hot_page, &query, &mut ReadAhead::none())
                .await
                .map_err(|e| read_status(&request_id, e))
        };
        let page = self.audited_alongside(call, read).await?;
        let expires = now + self.parts.settings.page_token_ttl.as_secs() as i64;
        let next_page_token = page
            .next
            .map(|cursor| self.parts.tokens.issue(&cursor, &binding, expires))
            .unwrap_or_default();
        Ok(ListActivityResponse {
            events: page.events.iter().map(to_proto).collect(),
            next_page_token,
        })
    }

    async fn get_event_inner(
        &self,
        call: &Call,
        request: &GetEventRequest,
    ) -> Result<ProtoEvent, Status> {
        let event_id = uuid::Uuid::parse_str(&request.event_id)
            .map_err(|_| Status::invalid_argument("event_id must be a UUID"))?;
        // In a task of its own, as a page's statement (see `list`).
        let (pool, reader, target) = (
            self.parts.pool.clone(),
            self.parts.reader.clone(),
            call.target.clone(),
        );
        let lookup = tokio::spawn(async move {
            let mut client = pool.get().await.map_err(DbWork::Pool)?;
            reader
                .find_hot(&mut client, &target, event_id)
                .await
                .map_err(DbWork::Read)
        })
        .await
        .map_err(|e| internal_status("read the hot store", &e))?
        .map_err(|e| e.status(&call.request_id))?;
        let found = match lookup {
            Lookup::Found(event) => Some(event),
            Lookup::Archive(files) if files.is_empty() => None,
            Lookup::Archive(files) => {
                let _permit = self.cold_permit(call)?;
                self.parts
                    .reader
                    .find_cold(
                        files,
                        &call.target,
                        event_id,
                        self.parts.settings.get_event_max_days,
                    )
                    .await
                    .map_err(|e| read_status(&call.request_id, e))?
            }
        };
        found
            .map(|e| to_proto(&e))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no such event in this user's history (archived days are searched at most {} days back from a UUIDv7 id's time, or the {} most recent for other ids; use ListActivity with a range for older events)",
                    self.parts.settings.get_event_max_days, self.parts.settings.get_event_max_days
                ))
            })
    }

    fn export_query(
        &self,
        call: &Call,
        request: &ExportActivityRequest,
    ) -> Result<(Query, Format), Status> {
        let (from_micros, to_micros) = range(request.from.as_ref(), request.to.as_ref())?;
        let kinds = kinds(&request.kinds)?;
        let format = match ExportFormat::try_from(request.format) {
            Ok(ExportFormat::Unspecified | ExportFormat::Jsonl) => Format::JsonLines,
            Ok(ExportFormat::Csv) => Format::Csv,
            Err(_) => return Err(Status::invalid_argument("unknown export format")),
        };
        Ok((
            Query {
                user_id: call.target.clone(),
                from_micros,
                to_micros,
                kinds,
                descending: false,
                after: None,
                limit: export::EXPORT_PAGE,
            },
            format,
        ))
    }

    async fn open_jobs(&self, principal: &str) -> Result<u32, Status> {
        jobs::open_count(&self.parts.pool, principal)
            .await
            .map_err(|e| internal_status("count export jobs", &*e))
    }

    async fn start_stream(
        &self,
        call: &Call,
        request: &ExportActivityRequest,
    ) -> Result<ReceiverStream<Result<ExportChunk, Status>>, Status> {
        let (query, format) = self.export_query(call, request)?;
        let open = self.open_jobs(&call.principal.subject).await?;
        let slot = self
            .parts
            .limits
            .try_export(&call.principal.subject, open)
            .ok_or_else(|| export_limit(self.parts.limits.max_exports()))?;
        // Two chunks in flight at most: a slow client slows the reader
        // instead of growing a buffer.
        let (sender, receiver) = mpsc::channel(2);
        let parts = self.parts.clone();
        let request_id = call.request_id.clone();
        tokio::spawn(async move {
            let _slot = slot;
            crate::metrics::EXPORTS_RUNNING.inc();
            let mut sink = ChannelSink {
                sender: sender.clone(),
            };
            let result = export::run(
                &parts.reader,
                &parts.pool,
                query,
                format,
                &parts.cancel,
                &mut sink,
            )
            .await;
            crate::metrics::EXPORTS_RUNNING.dec();
            match result {
                Ok(totals) => crate::metrics::export_finished("stream", totals.bytes),
                Err(ExportError::Cancelled) => {}
                Err(err) => {
                    let status = match err {
                        ExportError::Read(e) => read_status(&request_id, e),
                        ExportError::Pool(e) => pool_status(e),
                        other => internal_status("export", &other),
                    };
                    let _ = sender.send(Err(status)).await;
                }
            }
        });
        Ok(ReceiverStream::new(receiver))
    }

    async fn start_job(
        &self,
        call: &Call,
        request: &ExportActivityRequest,
    ) -> Result<ExportJob, Status> {
        let (query, format) = self.export_query(call, request)?;
        let limits = &self.parts.limits;
        // Held while the job is created, so this process's streams see it;
        // once its row exists, the row counts, in every API process.
        let slot = limits
            .try_export(&call.principal.subject, 0)
            .ok_or_else(|| export_limit(limits.max_exports()))?;
        let streams_here = limits
            .running_exports(&call.principal.subject)
            .saturating_sub(1);
        let spec = JobSpec {
            principal: call.principal.subject.clone(),
            user_id: query.user_id.clone(),
            from: timestamp(query.from_micros),
            to: timestamp(query.to_micros),
            kinds: query.kinds,
            format,
        };
        let job = jobs::create(
            &self.parts.pool,
            &spec,
            &self.parts.settings.export_prefix,
            limits.max_exports().saturating_sub(streams_here),
        )
        .await
        .map_err(|e| internal_status("create export job", &*e))?
        .ok_or_else(|| export_limit(limits.max_exports()))?;
        drop(slot);
        self.parts.wake_jobs.notify_one();
        self.job_message(&job).await
    }

    async fn get_job(
        &self,
        call: &mut Call,
        request: &GetExportRequest,
    ) -> Result<ExportJob, Status> {
        let id = uuid::Uuid::parse_str(&request.export_id)
            .map_err(|_| Status::invalid_argument("export_id must be a UUID"))?;
        let job = jobs::get(&self.parts.pool, id)
            .await
            .map_err(|e| internal_status("read export job", &*e))?;
        let not_found = || Status::not_found("no such export job");
        let job = job.ok_or_else(not_found)?;
        if job.principal != call.principal.subject && !call.principal.read_any {
            return Err(not_found());
        }
        call.target = job.user_id.clone();
        self.job_message(&job).await
    }

    async fn job_message(&self, job: &jobs::Job) -> Result<ExportJob, Status> {
        let retention = self.parts.settings.export_retention;
        if job.is_expired(retention, chrono::Utc::now()) {
            // Never a URL to a file that is gone (or about to be).
            return Err(Status::failed_precondition(format!(
                "export {} expired after {}; start a new one",
                job.export_id,
                retention_text(retention)
            )));
        }
        let state = match job.state.as_str() {
            "pending" => ExportState::Pending,
            "running" => ExportState::Running,
            "done" => ExportState::Done,
            _ => ExportState::Failed,
        };
        let mut message = ExportJob {
            export_id: job.export_id.to_string(),
            state: state as i32,
            events: job.events,
            bytes: job.bytes,
            download_url: String::new(),
            download_url_expires_at: None,
            error: job.error.clone(),
        };
        if state == ExportState::Done {
            let ttl = self.parts.settings.export_url_ttl;
            let url = self
                .parts
                .store
                .presign_get(&job.object_key, ttl)
                .await
                .map_err(|e| internal_status("presign export URL", &e))?;
            let expires = chrono::Utc::now() + ttl;
            message.download_url = url;
            message.download_url_expires_at = Some(Timestamp {
                seconds: expires.timestamp(),
                nanos: expires.timestamp_subsec_nanos() as i32,
            });
        }
        Ok(message)
    }
}

/// A retention as people say it: `24h`, `90m`, `45s`, `1500ms`.
fn retention_text(retention: Duration) -> String {
    let seconds = retention.as_secs();
    if retention.subsec_nanos() != 0 || seconds == 0 {
        strata_core::duration::format(retention)
    } else if seconds.is_multiple_of(3600) {
        format!("{}h", seconds / 3600)
    } else if seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

/// Sends export chunks to a streaming client.
struct ChannelSink {
    sender: mpsc::Sender<Result<ExportChunk, Status>>,
}

impl export::Sink for ChannelSink {
    async fn accept(&mut self, chunk: Vec<u8>, _so_far: ExportTotals) -> Result<bool, ExportError> {
        Ok(self
            .sender
            .send(Ok(ExportChunk { data: chunk }))
            .await
            .is_ok())
    }
}

#[tonic::async_trait]
impl History for HistoryService {
    async fn list_activity(
        &self,
        request: Request<ListActivityRequest>,
    ) -> Result<Response<ListActivityResponse>, Status> {
        let user = request.get_ref().user_id.clone();
        let call = self
            .admit("ListActivity", &request, &user, Need::Read)
            .await?;
        let result = self
            .bounded(&call, self.list(&call, request.into_inner()))
            .await;
        self.finish(call, result).await
    }

    async fn get_event(
        &self,
        request: Request<GetEventRequest>,
    ) -> Result<Response<ProtoEvent>, Status> {
        let user = request.get_ref().user_id.clone();
        let call = self.admit("GetEvent", &request, &user, Need::Read).await?;
        let result = self
            .bounded(&call, self.get_event_inner(&call, request.get_ref()))
            .await;
        self.finish(call, result).await
    }

    type ExportActivityStream = ReceiverStream<Result<ExportChunk, Status>>;

    async fn export_activity(
        &self,
        request: Request<ExportActivityRequest>,
    ) -> Result<Response<Self::ExportActivityStream>, Status> {
        let user = request.get_ref().user_id.clone();
        let call = self
            .admit("ExportActivity", &request, &user, Need::Export)
            .await?;
        let result = self
            .bounded(&call, self.start_stream(&call, request.get_ref()))
            .await;
        self.finish(call, result).await
    }

    async fn start_export(
        &self,
        request: Request<ExportActivityRequest>,
    ) -> Result<Response<ExportJob>, Status> {
        let user = request.get_ref().user_id.clone();
        let call = self
            .admit("StartExport", &request, &user, Need::Export)
            .await?;
        let result = self
            .bounded(&call, self.start_job(&call, request.get_ref()))
            .await;
        self.finish(call, result).await
    }

    async fn get_export(
        &self,
        request: Request<GetExportRequest>,
    ) -> Result<Response<ExportJob>, Status> {
        let mut call = self.admit("GetExport", &request, "", Need::Job).await?;
        let (deadline, started) = (call.deadline, call.started);
        let result = within(
            "GetExport",
            deadline,
            started,
            self.get_job(&mut call, request.get_ref()),
        )
        .await;
        self.finish(call, result).await
    }
}

/// Runs `work` until `deadline` after `started`; DEADLINE_EXCEEDED after.
async fn within<T>(
    method: &'static str,
    deadline: Duration,
    started: Instant,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let left = deadline.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, work).await {
        Ok(result) => result,
        Err(_) => {
            crate::metrics::DEADLINES.with_label_values(&[method]).inc();
            Err(Status::deadline_exceeded(format!(
                "the call did not finish within its deadline ({} ms)",
                deadline.as_millis()
            )))
        }
    }
}

/// The call's deadline: `limit`, or the client's `grpc-timeout` when it
/// is shorter.
fn deadline<T>(request: &Request<T>, limit: Duration) -> Duration {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(limit, |client| client.min(limit))
}

/// `grpc-timeout` as the gRPC HTTP/2 protocol spells it: at most 8 digits
/// and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let digits = text.get(..text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(value.checked_mul(3600)?),
        'M' => Duration::from_secs(value.checked_mul(60)?),
        'S' => Duration::from_secs(value),
        'm' => Duration::from_millis(value),
        'u' => Duration::from_micros(value),
        'n' => Duration::from_nanos(value),
        _ => return None,
    })
}

/// RESOURCE_EXHAUSTED with a retry hint: `retry-after` (seconds) and
/// `grpc-retry-pushback-ms`, which gRPC clients with a retry policy obey.
fn exhausted(message: &str, wait: Duration) -> Status {
    let millis = wait.as_millis().clamp(1, 60_000) as u64;
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Ok(value) = millis.to_string().parse() {
        metadata.insert("grpc-retry-pushback-ms", value);
    }
    if let Ok(value) = millis.div_ceil(1000).to_string().parse() {
        metadata.insert("retry-after", value);
    }
    Status::with_metadata(
        tonic::Code::ResourceExhausted,
        format!("{message} (retry after {millis} ms)"),
        metadata,
    )
}

/// A cap on things in flight was reached.
fn busy(refusal: Refusal, what: &str) -> Status {
    let whose = match refusal {
        Refusal::PerPrincipal => "this principal has the most",
        Refusal::Total => "the server has the most",
    };
    exhausted(
        &format!("{whose} {what} in flight it may have; retry when one has finished"),
        BUSY_WAIT,
    )
}

/// Why database work in a task of its own failed.
enum DbWork {
    Pool(PoolError),
    Read(ReadError),
}

impl DbWork {
    fn status(self, request_id: &str) -> Status {
        match self {
            DbWork::Pool(err) => pool_status(err),
            DbWork::Read(err) => read_status(request_id, err),
        }
    }
}

/// One audit record.
struct AuditRecord<'a> {
    request_id: &'a str,
    principal: &'a str,
    target: &'a str,
    method: &'a str,
    decision: &'a str,
    status: &'a Status,
    peer: Option<IpAddr>,
}

/// Inserts one audit row: request_id, principal, target_user, method,
/// decision, status_code, detail, peer, calls.
async fn write_audit(
    pool: &Pool,
    values: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    // Typed: one round trip, no separate prepare.
    client
        .execute_typed(
            "INSERT INTO strata.api_audit
               (request_id, principal, target_user, method, decision, status_code, detail, peer, calls)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            values,
        )
        .await?;
    Ok(())
}

/// Writes the refusal summaries gathered since the last call: one row per
/// peer (method `*` when several, the calls it stands for in `calls`).
/// Summaries that cannot be written are logged and counted, not retried:
/// the metric `strata_api_audit_summarized_total` keeps the count.
pub(crate) async fn write_audit_summaries(pool: &Pool, admission: &Admission) {
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
        let result = write_audit(
            pool,
            &[
                (&request_id, Type::TEXT),
                (&"", Type::TEXT),
                (&"", Type::TEXT),
                (&method, Type::TEXT),
                (&"denied", Type::TEXT),
                (&code, Type::TEXT),
                (&truncate(&detail, 1000), Type::TEXT),
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

/// The caller's `x-request-id` when it is a sane token, else a new UUID.
fn request_id<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn with_request_id(mut status: Status, request_id: &str) -> Status {
    if let Ok(value) = request_id.parse() {
        status.metadata_mut().insert("x-request-id", value);
    }
    status
}

fn record(method: &str, code: tonic::Code, started: Instant) {
    crate::metrics::REQUESTS
        .with_label_values(&[method, code_name(code)])
        .inc();
    crate::metrics::LATENCY
        .with_label_values(&[method])
        .observe(started.elapsed().as_secs_f64());
}

/// The canonical gRPC code name (`OK`, `INVALID_ARGUMENT`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn export_limit(max: u32) -> Status {
    Status::resource_exhausted(format!(
        "this principal already runs {max} exports (streams and jobs); wait for one to finish"
    ))
}

fn pool_status(err: PoolError) -> Status {
    tracing::warn!(error = %err, "api database pool");
    crate::metrics::errors("pool");
    Status::unavailable("the history store is busy or unreachable; retry")
}

fn read_status(request_id: &str, err: ReadError) -> Status {
    tracing::error!(%request_id, error = %err, "history read failed");
    crate::metrics::errors("read");
    match err {
        ReadError::Db { .. } | ReadError::Store(_) => {
            Status::unavailable("the history store is unreachable; retry")
        }
        ReadError::Decode { .. } | ReadError::Archive { .. } | ReadError::Scratch(_) => {
            Status::internal(
                "the history could not be read; the error is logged under this request id",
            )
        }
    }
}

fn internal_status(what: &str, err: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %err, "{what}");
    crate::metrics::errors("internal");
    Status::internal(format!("{what} failed; the error is logged"))
}

/// Validated range in UTC microseconds: unset `from` is the beginning of
/// time, unset `to` the end of time (so the range, and with it the page
/// token binding, does not move between pages).
fn range(from: Option<&Timestamp>, to: Option<&Timestamp>) -> Result<(i64, i64), Status> {
    let from = match from {
        Some(t) => micros(t, "from")?,
        None => MIN_SECONDS * 1_000_000,
    };
    let to = match to {
        Some(t) => micros(t, "to")?,
        None => (MAX_SECONDS + 1) * 1_000_000,
    };
    if from > to {
        return Err(Status::invalid_argument("`from` is after `to`"));
    }
    Ok((from, to))
}

fn micros(t: &Timestamp, field: &str) -> Result<i64, Status> {
    if !(0..1_000_000_000).contains(&t.nanos) || !(MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) {
        return Err(Status::invalid_argument(format!(
            "`{field}` is not a valid timestamp (years 0001 to 9999, nanos 0..1e9)"
        )));
    }
    Ok(t.seconds * 1_000_000 + i64::from(t.nanos / 1_000))
}

fn kinds(requested: &[String]) -> Result<Vec<String>, Status> {
    if requested.len() > MAX_KINDS {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_KINDS} kinds per request"
        )));
    }
    for kind in requested {
        if strata_core::event::validate_kind(kind).is_err() {
            return Err(Status::invalid_argument(format!(
                "kinds: {:?} is not a valid kind",
                truncate(kind, 64)
            )));
        }
    }
    let mut kinds = requested.to_vec();
    kinds.sort_unstable();
    kinds.dedup();
    Ok(kinds)
}

fn proto_timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// An event as the API returns it.
pub fn to_proto(event: &Event) -> ProtoEvent {
    ProtoEvent {
        event_id: event.event_id.hyphenated().to_string(),
        user_id: event.user_id.clone(),
        kind: event.kind.clone(),
        occurred_at: Some(proto_timestamp(event.occurred_at)),
        source: event.source.clone(),
        payload_json: event.payload.clone(),
        ingested_at: Some(proto_timestamp(event.ingested_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_spells_them() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "123456789S", "1x", "-1S", "1.5S", "9999999\u{e9}"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn retention_reads_as_people_say_it() {
        assert_eq!(retention_text(Duration::from_secs(24 * 3600)), "24h");
        assert_eq!(retention_text(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(retention_text(Duration::from_secs(45)), "45s");
        assert_eq!(retention_text(Duration::from_millis(1500)), "1500ms");
    }
}
