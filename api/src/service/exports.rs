//! ExportActivity (a streamed export), and StartExport, GetExport,
//! ListExports and CancelExport (export jobs). Both kinds count against the
//! principal's export limit: streams by their slot in this process, jobs by
//! their open rows, in every API process.

use strata_proto::v1::{
    CancelExportRequest, ExportActivityRequest, ExportActivityResponse, ExportFormat, ExportJob,
    ExportState, GetExportRequest, ListExportsRequest, ListExportsResponse, StartExportRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::HistoryService;
use crate::admission::Call;
use crate::convert::proto_instant;
use crate::error::{self, ApiError, InvalidArgument, NotFound};
use crate::event::timestamp;
use crate::export::{self, ExportError, ExportTotals, Format};
use crate::history::Query;
use crate::jobs::{self, Cancelled, Created, JobSpec, JobState, ListCursor, Listing};
use crate::page_token::{Binding, Cursor};
use crate::request;

/// What the streamed and the job export share of their requests.
struct ExportRange<'a> {
    start_time: Option<&'a prost_types::Timestamp>,
    end_time: Option<&'a prost_types::Timestamp>,
    kinds: &'a [String],
    format: i32,
}

impl<'a> From<&'a ExportActivityRequest> for ExportRange<'a> {
    fn from(request: &'a ExportActivityRequest) -> Self {
        Self {
            start_time: request.start_time.as_ref(),
            end_time: request.end_time.as_ref(),
            kinds: &request.kinds,
            format: request.format,
        }
    }
}

impl<'a> From<&'a StartExportRequest> for ExportRange<'a> {
    fn from(request: &'a StartExportRequest) -> Self {
        Self {
            start_time: request.start_time.as_ref(),
            end_time: request.end_time.as_ref(),
            kinds: &request.kinds,
            format: request.format,
        }
    }
}

impl HistoryService {
    fn export_query(
        &self,
        call: &Call,
        request: ExportRange<'_>,
    ) -> Result<(Query, Format), ApiError> {
        let (from_micros, to_micros) = request::range(request.start_time, request.end_time)?;
        let kinds = request::kinds(request.kinds)?;
        let format = request::export_format(request.format)?;
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

    fn export_limit(&self) -> ApiError {
        ApiError::ExportLimit {
            max: self.parts.limits.max_exports(),
        }
    }

    pub(super) async fn start_stream(
        &self,
        call: &Call,
        request: &ExportActivityRequest,
    ) -> Result<ReceiverStream<Result<ExportActivityResponse, Status>>, ApiError> {
        let (query, format) = self.export_query(call, request.into())?;
        let limits = &self.parts.limits;
        let subject = &call.principal.subject;
        let slot = jobs::reserve_stream(&self.parts.pool, subject, |open_jobs| {
            limits.try_export(subject, open_jobs)
        })
        .await
        .map_err(|e| ApiError::internal("count export jobs", e))?
        .ok_or_else(|| self.export_limit())?;
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
                    let err = match err {
                        ExportError::Read(e) => ApiError::Read(e),
                        ExportError::Pool(e) => ApiError::Pool(e),
                        other => ApiError::internal("export", other),
                    };
                    // Mid-stream: the status ends the stream; the call's
                    // request id went out with its response headers.
                    let _ = sender.send(Err(error::status(err, &request_id))).await;
                }
            }
        });
        Ok(ReceiverStream::new(receiver))
    }

    pub(super) async fn start_job(
        &self,
        call: &Call,
        request: &StartExportRequest,
    ) -> Result<ExportJob, ApiError> {
        let (query, format) = self.export_query(call, request.into())?;
        let request_id = request::export_request_id(&request.request_id)?;
        let limits = &self.parts.limits;
        let subject = &call.principal.subject;
        let spec = JobSpec {
            principal: call.principal.subject.clone(),
            user_id: query.user_id.clone(),
            from: timestamp(query.from_micros),
            to: timestamp(query.to_micros),
            kinds: query.kinds,
            format,
            request_id,
        };
        // This process's streams are counted under the per-principal lock
        // (streams reserve under it too); other processes' jobs count
        // through their rows.
        let created = jobs::create(
            &self.parts.pool,
            &spec,
            &self.parts.settings.export_prefix,
            || {
                limits
                    .max_exports()
                    .saturating_sub(limits.running_exports(subject))
            },
        )
        .await
        .map_err(|e| ApiError::internal("create export job", e))?;
        match created {
            Created::New(job) => {
                self.parts.wake_jobs.notify_one();
                self.job_message(&job, true).await
            }
            Created::Existing(job) => self.job_message(&job, true).await,
            Created::RequestIdReused(request_id) => {
                Err(InvalidArgument::RequestIdReused { request_id }.into())
            }
            Created::OverLimit => Err(self.export_limit()),
        }
    }

    /// The job `export_id` names, if the caller may see it: a support agent
    /// sees every job; anyone else only the jobs it started of its own
    /// history (a subject may also hold a read-any token, and the jobs that
    /// token started for other users stay out of its customer token's
    /// sight). NOT_FOUND otherwise, the same answer as for a job that does
    /// not exist.
    async fn visible_job(&self, call: &mut Call, export_id: &str) -> Result<jobs::Job, ApiError> {
        let id = request::export_id(export_id)?;
        let job = jobs::get(&self.parts.pool, id)
            .await
            .map_err(|e| ApiError::internal("read export job", e))?
            .ok_or(ApiError::NotFound(NotFound::ExportJob))?;
        let principal = &call.principal;
        let own = job.principal == principal.subject && job.user_id == principal.subject;
        if !own && !principal.read_any {
            return Err(ApiError::NotFound(NotFound::ExportJob));
        }
        call.target = job.user_id.clone();
        Ok(job)
    }

    pub(super) async fn get_job(
        &self,
        call: &mut Call,
        request: &GetExportRequest,
    ) -> Result<ExportJob, ApiError> {
        let job = self.visible_job(call, &request.export_id).await?;
        self.job_message(&job, true).await
    }

    pub(super) async fn cancel_job(
        &self,
        call: &mut Call,
        request: &CancelExportRequest,
    ) -> Result<ExportJob, ApiError> {
        let job = self.visible_job(call, &request.export_id).await?;
        let outcome = jobs::cancel(&self.parts.pool, job)
            .await
            .map_err(|e| ApiError::internal("cancel export job", e))?;
        match outcome {
            Cancelled::Cancelled(job) => self.job_message(&job, false).await,
            Cancelled::AlreadyEnded(job) => Err(ApiError::ExportAlreadyEnded {
                export_id: job.export_id,
                state: match self.state_of(&job) {
                    ExportState::Succeeded => "succeeded",
                    ExportState::Expired => "expired",
                    _ => "failed",
                },
            }),
        }
    }

    /// ListExports: the caller's jobs (or, for a support agent naming a
    /// user, every job of that user), newest first, a page at a time.
    pub(super) async fn list_jobs(
        &self,
        call: &mut Call,
        request: &ListExportsRequest,
    ) -> Result<ListExportsResponse, ApiError> {
        let limit = request::jobs_page_size(request.page_size)?;
        let principal = &call.principal;
        if !principal.read_any
            && !request.user_id.is_empty()
            && request.user_id != principal.subject
        {
            return Err(crate::error::PermissionDenied::OtherUser.into());
        }
        if request.user_id.len() > strata_core::event::MAX_USER_ID_BYTES {
            return Err(InvalidArgument::UserIdTooLong.into());
        }
        if request.user_id.contains('\0') {
            return Err(InvalidArgument::UserIdNul.into());
        }
        // What GetExport would show this caller: an agent, its own jobs or
        // a user's; anyone else, the jobs it started of its own history.
        let listing = if !principal.read_any {
            Listing::PrincipalUser {
                principal: &principal.subject,
                user: &principal.subject,
            }
        } else if request.user_id.is_empty() {
            Listing::Principal(&principal.subject)
        } else {
            Listing::User(&request.user_id)
        };
        call.target = request.user_id.clone();
        // A token pages one listing of one caller: bound to both.
        let listed = match listing {
            Listing::Principal(who) => format!("principal\0{who}"),
            Listing::PrincipalUser { principal, user } => {
                format!("principal-user\0{principal}\0{user}")
            }
            Listing::User(user) => format!("user\0{}\0{user}", principal.subject),
        };
        let binding = Binding {
            method: "ListExports",
            user_id: &listed,
            kinds: &[],
            from_micros: 0,
            to_micros: 0,
            descending: true,
        };
        let cursor = if request.page_token.is_empty() {
            ListCursor::start()
        } else {
            let now = chrono::Utc::now().timestamp();
            let cursor = self
                .parts
                .tokens
                .verify(&request.page_token, &binding, now)
                .map_err(request::page_token)?;
            ListCursor {
                created_at: timestamp(cursor.occurred_at_micros),
                export_id: uuid::Uuid::from_bytes(cursor.event_id),
            }
        };
        // One more than the page, to know whether another page follows.
        let mut found = jobs::list(&self.parts.pool, listing, cursor, limit + 1)
            .await
            .map_err(|e| ApiError::internal("list export jobs", e))?;
        let more = found.len() > limit;
        found.truncate(limit);
        let next_page_token = match (more, found.last()) {
            (true, Some(last)) => {
                let ttl =
                    i64::try_from(self.parts.settings.page_token_ttl.as_secs()).unwrap_or(i64::MAX);
                let expires_at = chrono::Utc::now().timestamp().saturating_add(ttl);
                let cursor = Cursor {
                    occurred_at_micros: last.created_at.timestamp_micros(),
                    event_id: *last.export_id.as_bytes(),
                };
                self.parts.tokens.issue(&cursor, &binding, expires_at)
            }
            _ => String::new(),
        };
        let mut export_jobs = Vec::with_capacity(found.len());
        for job in &found {
            export_jobs.push(self.job_message(job, false).await?);
        }
        Ok(ListExportsResponse {
            export_jobs,
            next_page_token,
        })
    }

    /// The state a client sees: a done job past its retention is expired
    /// even before the sweep has deleted its file.
    fn state_of(&self, job: &jobs::Job) -> ExportState {
        let retention = self.parts.settings.export_retention;
        if job.is_expired(retention, chrono::Utc::now()) {
            return ExportState::Expired;
        }
        match job.state {
            JobState::Pending => ExportState::Pending,
            JobState::Running => ExportState::Running,
            JobState::Done => ExportState::Succeeded,
            JobState::Failed => ExportState::Failed,
            JobState::Expired => ExportState::Expired,
            JobState::Cancelled => ExportState::Cancelled,
        }
    }

    /// The job as the API shows it; with a fresh presigned download URI
    /// when `with_uri` and it succeeded (never a URI to a file that is
    /// gone, or about to be).
    async fn job_message(&self, job: &jobs::Job, with_uri: bool) -> Result<ExportJob, ApiError> {
        let retention = self.parts.settings.export_retention;
        let state = self.state_of(job);
        let format = match Format::from_name(&job.format) {
            Some(Format::Csv) => ExportFormat::Csv,
            Some(Format::JsonLines) => ExportFormat::Jsonl,
            None => ExportFormat::Unspecified,
        };
        let mut message = ExportJob {
            export_id: job.export_id.to_string(),
            state: state as i32,
            event_count: job.events,
            size_bytes: job.bytes,
            download_uri: String::new(),
            download_uri_expire_time: None,
            error: job.error.clone(),
            user_id: job.user_id.clone(),
            start_time: Some(proto_instant(job.from)),
            end_time: Some(proto_instant(job.to)),
            kinds: job.kinds.clone(),
            format: format as i32,
            create_time: Some(proto_instant(job.created_at)),
            finish_time: job.finished_at.map(proto_instant),
            expire_time: job.expires_at(retention).map(proto_instant),
            request_id: job.request_id.map(|id| id.to_string()).unwrap_or_default(),
        };
        if with_uri && state == ExportState::Succeeded {
            let ttl = self.parts.settings.export_url_ttl;
            let url = self
                .parts
                .store
                .presign_get(&job.file_key(), ttl)
                .await
                .map_err(|e| ApiError::internal("presign export URL", e))?;
            message.download_uri = url;
            message.download_uri_expire_time = Some(proto_instant(chrono::Utc::now() + ttl));
        }
        Ok(message)
    }
}

/// Sends export chunks to a streaming client.
struct ChannelSink {
    sender: mpsc::Sender<Result<ExportActivityResponse, Status>>,
}

impl export::Sink for ChannelSink {
    async fn accept(&mut self, chunk: Vec<u8>, _so_far: ExportTotals) -> Result<bool, ExportError> {
        Ok(self
            .sender
            .send(Ok(ExportActivityResponse { data: chunk }))
            .await
            .is_ok())
    }
}
