//! The `strata.v1.HistoryService` gRPC service: the tonic trait, and around
//! every handler admission first and audit last.
//!
//! Every call goes through [`Gate::admit`] first (peer rate, bearer token,
//! principal rate, whose history, scopes, a place among the calls in
//! flight), then its handler within the call's deadline, then
//! `HistoryService::finish`, which writes its one audit record (a call
//! whose record cannot be written fails with UNAVAILABLE instead of
//! returning data) and counts it. Handlers return [`ApiError`]; `finish`
//! turns it into the call's status through [`crate::error::status`], the
//! one table. The handlers live in `read.rs` (ListActivity, GetEvent) and
//! `exports.rs` (ExportActivity and the export jobs' StartExport,
//! GetExport, ListExports, CancelExport).

mod exports;
mod group;
mod read;
mod subscribe;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_archive::ObjectStore;
use strata_proto::v1::history_service_server::HistoryService as HistoryApi;
use strata_proto::v1::{
    CancelExportRequest, CancelExportResponse, ExportActivityRequest, ExportActivityResponse,
    GetEventRequest, GetEventResponse, GetExportRequest, GetExportResponse, ListActivityRequest,
    ListActivityResponse, ListExportsRequest, ListExportsResponse, StartExportRequest,
    StartExportResponse,
};
use tokio::sync::Notify;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::admission::{Admission, Call, Gate, Held, InFlight, Need};
use crate::auth::Authenticator;
use crate::error::{self, ApiError};
use crate::history::HistoryReader;
use crate::limits::Limits;
use crate::page_token::PageTokenKeys;
use crate::pool::Pool;

pub use crate::request::{DEFAULT_PAGE_SIZE, MAX_KINDS, MAX_PAGE_SIZE};

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
    /// When a group member's process is taken for dead.
    pub group_session_timeout: Duration,
    /// How long a group delivery may stay unacknowledged.
    pub group_ack_timeout: Duration,
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
    /// Subscriptions' connections and live feeds.
    pub streams: Arc<crate::subscribe::Streams>,
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

impl HistoryService {
    /// The service over `parts`.
    pub fn new(parts: ServiceParts) -> Self {
        Self {
            parts: Arc::new(parts),
        }
    }

    /// What admission consults.
    fn gate(&self) -> Gate<'_> {
        Gate {
            auth: &self.parts.auth,
            limits: &self.parts.limits,
            admission: &self.parts.admission,
            pool: &self.parts.pool,
            request_timeout: self.parts.settings.request_timeout,
        }
    }

    /// Runs `work` within the call's deadline; DEADLINE_EXCEEDED after it.
    /// Whatever `work` holds (a pooled connection, a permit) is given back
    /// when it is dropped; an open transaction rolls back.
    async fn bounded<T>(
        &self,
        call: &Call,
        work: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        within(call.method, call.deadline, call.started, work).await
    }

    /// A permit to read the archive for `call`, or RESOURCE_EXHAUSTED.
    fn cold_permit(&self, call: &Call) -> Result<Held, ApiError> {
        self.permit(call, InFlight::ArchiveReads)
    }

    /// A place among `what` in flight for `call`'s principal, or
    /// RESOURCE_EXHAUSTED (counted by cap).
    fn permit(&self, call: &Call, what: InFlight) -> Result<Held, ApiError> {
        self.parts
            .admission
            .enter(what, &call.principal.subject)
            .map_err(|cap| {
                crate::metrics::REFUSED
                    .with_label_values(&[what.refused_label(cap)])
                    .inc();
                ApiError::Busy { cap, what }
            })
    }

    /// Answers an admitted call: its status from the one table, its audit
    /// record, its metrics, its `x-request-id`.
    async fn finish<T>(
        &self,
        call: Call,
        result: Result<T, ApiError>,
    ) -> Result<Response<T>, Status> {
        let result = result.map_err(|err| error::status(err, &call.request_id));
        let result = if crate::audit::outcome(&self.parts.pool, &call, &result).await {
            result
        } else {
            Err(error::status(ApiError::AuditUnavailable, &call.request_id))
        };
        match result {
            Ok(value) => {
                crate::metrics::call_finished(call.method, tonic::Code::Ok, call.started);
                let mut response = Response::new(value);
                if let Ok(value) = call.request_id.parse() {
                    response.metadata_mut().insert("x-request-id", value);
                }
                Ok(response)
            }
            Err(status) => {
                crate::metrics::call_finished(call.method, status.code(), call.started);
                Err(error::with_request_id(status, &call.request_id))
            }
        }
    }
}

/// Runs `work` until `deadline` after `started`; DEADLINE_EXCEEDED after.
async fn within<T>(
    method: &'static str,
    deadline: Duration,
    started: Instant,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let left = deadline.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, work).await {
        Ok(result) => result,
        Err(_) => {
            crate::metrics::DEADLINES.with_label_values(&[method]).inc();
            Err(ApiError::DeadlineExceeded { deadline })
        }
    }
}

#[tonic::async_trait]
impl HistoryApi for HistoryService {
    async fn list_activity(
        &self,
        request: Request<ListActivityRequest>,
    ) -> Result<Response<ListActivityResponse>, Status> {
        let user = request.get_ref().user_id.clone();
        let call = self
            .gate()
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
    ) -> Result<Response<GetEventResponse>, Status> {
        let user = request.get_ref().user_id.clone();
        let call = self
            .gate()
            .admit("GetEvent", &request, &user, Need::Read)
            .await?;
        let result = self
            .bounded(&call, self.get_event_inner(&call, request.get_ref()))
            .await
            .map(|event| GetEventResponse { event: Some(event) });
        self.finish(call, result).await
    }

    type ExportActivityStream = ReceiverStream<Result<ExportActivityResponse, Status>>;

    async fn export_activity(
        &self,
        request: Request<ExportActivityRequest>,
    ) -> Result<Response<Self::ExportActivityStream>, Status> {
        let user = request.get_ref().user_id.clone();
        let call = self
            .gate()
            .admit("ExportActivity", &request, &user, Need::Export)
            .await?;
        let result = self
            .bounded(&call, self.start_stream(&call, request.get_ref()))
            .await;
        self.finish(call, result).await
    }

    async fn start_export(
        &self,
        request: Request<StartExportRequest>,
    ) -> Result<Response<StartExportResponse>, Status> {
        let user = request.get_ref().user_id.clone();
        let call = self
            .gate()
            .admit("StartExport", &request, &user, Need::Export)
            .await?;
        let result = self
            .bounded(&call, self.start_job(&call, request.get_ref()))
            .await
            .map(|job| StartExportResponse {
                export_job: Some(job),
            });
        self.finish(call, result).await
    }

    async fn get_export(
        &self,
        request: Request<GetExportRequest>,
    ) -> Result<Response<GetExportResponse>, Status> {
        let mut call = self
            .gate()
            .admit("GetExport", &request, "", Need::Job)
            .await?;
        let (deadline, started) = (call.deadline, call.started);
        let result = within(
            "GetExport",
            deadline,
            started,
            self.get_job(&mut call, request.get_ref()),
        )
        .await
        .map(|job| GetExportResponse {
            export_job: Some(job),
        });
        self.finish(call, result).await
    }

    async fn list_exports(
        &self,
        request: Request<ListExportsRequest>,
    ) -> Result<Response<ListExportsResponse>, Status> {
        let mut call = self
            .gate()
            .admit("ListExports", &request, "", Need::Job)
            .await?;
        let (deadline, started) = (call.deadline, call.started);
        let result = within(
            "ListExports",
            deadline,
            started,
            self.list_jobs(&mut call, request.get_ref()),
        )
        .await;
        self.finish(call, result).await
    }

    async fn cancel_export(
        &self,
        request: Request<CancelExportRequest>,
    ) -> Result<Response<CancelExportResponse>, Status> {
        let mut call = self
            .gate()
            .admit("CancelExport", &request, "", Need::Job)
            .await?;
        let (deadline, started) = (call.deadline, call.started);
        let result = within(
            "CancelExport",
            deadline,
            started,
            self.cancel_job(&mut call, request.get_ref()),
        )
        .await
        .map(|job| CancelExportResponse {
            export_job: Some(job),
        });
        self.finish(call, result).await
    }
}
