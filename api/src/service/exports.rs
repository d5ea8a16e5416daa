//! ExportActivity (a streamed export), StartExport and GetExport (export
//! jobs). Both kinds count against the principal's export limit: streams
//! by their slot in this process, jobs by their open rows, in every API
//! process.

use strata_proto::v1::{
    ExportActivityRequest, ExportActivityResponse, ExportJob, ExportState, GetExportRequest,
    StartExportRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::HistoryService;
use crate::admission::Call;
use crate::convert::proto_instant;
use crate::error::{self, ApiError, NotFound};
use crate::event::timestamp;
use crate::export::{self, ExportError, ExportTotals, Format};
use crate::history::Query;
use crate::jobs::{self, JobSpec, JobState};
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
        let open = jobs::open_count(&self.parts.pool, &call.principal.subject)
            .await
            .map_err(|e| ApiError::internal("count export jobs", e))?;
        let slot = self
            .parts
            .limits
            .try_export(&call.principal.subject, open)
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
        let limits = &self.parts.limits;
        // Held while the job is created, so this process's streams see it;
        // once its row exists, the row counts, in every API process.
        let slot = limits
            .try_export(&call.principal.subject, 0)
            .ok_or_else(|| self.export_limit())?;
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
        .map_err(|e| ApiError::internal("create export job", e))?
        .ok_or_else(|| self.export_limit())?;
        drop(slot);
        self.parts.wake_jobs.notify_one();
        self.job_message(&job).await
    }

    pub(super) async fn get_job(
        &self,
        call: &mut Call,
        request: &GetExportRequest,
    ) -> Result<ExportJob, ApiError> {
        let id = request::export_id(&request.export_id)?;
        let job = jobs::get(&self.parts.pool, id)
            .await
            .map_err(|e| ApiError::internal("read export job", e))?
            .ok_or(ApiError::NotFound(NotFound::ExportJob))?;
        if job.principal != call.principal.subject && !call.principal.read_any {
            return Err(ApiError::NotFound(NotFound::ExportJob));
        }
        call.target = job.user_id.clone();
        self.job_message(&job).await
    }

    async fn job_message(&self, job: &jobs::Job) -> Result<ExportJob, ApiError> {
        let retention = self.parts.settings.export_retention;
        if job.is_expired(retention, chrono::Utc::now()) {
            // Never a URL to a file that is gone (or about to be).
            return Err(ApiError::ExportExpired {
                export_id: job.export_id,
                retention,
            });
        }
        let state = match job.state {
            JobState::Pending => ExportState::Pending,
            JobState::Running => ExportState::Running,
            JobState::Done => ExportState::Succeeded,
            JobState::Failed | JobState::Expired => ExportState::Failed,
        };
        let mut message = ExportJob {
            export_id: job.export_id.to_string(),
            state: state as i32,
            event_count: job.events,
            size_bytes: job.bytes,
            download_uri: String::new(),
            download_uri_expire_time: None,
            error: job.error.clone(),
        };
        if state == ExportState::Succeeded {
            let ttl = self.parts.settings.export_url_ttl;
            let url = self
                .parts
                .store
                .presign_get(&job.object_key, ttl)
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
