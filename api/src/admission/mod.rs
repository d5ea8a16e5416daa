//! Admission: whether a call may start, decided before any work.
//!
//! In this order: the peer's rate (before anything else, so a token-less
//! flood costs no verification), the bearer token, the principal's rate,
//! whose history and which scopes, and a place among the calls in flight.
//! [`Gate::decide`] gives the typed decision (a [`Call`] or a [`Refused`]);
//! [`Gate::admit`] enforces it: a refusal is audited (on its own while the
//! peer's audit budget lasts, else in the peer's next summary row, see
//! `summaries.rs`), held when a flood could produce it, and answered with
//! the status [`crate::error::status`] gives it.
//!
//! **Invariant:** a refusal for being over a rate or a cap, or for a bad
//! token, is answered after its retry hint, within [`REFUSAL_HOLD`]: a
//! client that retries at once, as a flood does, paces itself to the
//! server instead of spinning on it.

mod caps;
mod summaries;

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tonic::{Request, Status};

pub use caps::{Admission, AdmissionLimits, Cap, Held, InFlight, TokenBuckets};
pub use summaries::PeerSummary;

use crate::audit::{self, AuditDecision, AuditRecord};
use crate::auth::{AuthError, Authenticator, Principal};
use crate::error::{self, code_name, ApiError, InvalidArgument, PermissionDenied};
use crate::limits::Limits;
use crate::pool::Pool;
use crate::request;

/// How long a refusal for being over a rate or a cap is held before it is
/// answered (its retry hint, within these bounds).
pub const REFUSAL_HOLD: std::ops::Range<Duration> =
    Duration::from_millis(250)..Duration::from_secs(1);
/// Retry hint of a refusal for too many calls or archive reads in flight.
pub const BUSY_WAIT: Duration = Duration::from_millis(200);

/// Whose rate a call is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// The caller's network address (before authentication).
    Peer,
    /// The token's principal.
    Principal,
}

impl RateLimit {
    /// The `cap` label of `strata_api_refused_total`.
    pub fn refused_label(self) -> &'static str {
        match self {
            RateLimit::Peer => "peer_rate",
            RateLimit::Principal => "principal_rate",
        }
    }
}

/// What a call needs besides a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read the target user's history.
    Read,
    /// Export the target user's history.
    Export,
    /// Look at an export job (target known only later).
    Job,
    /// Subscribe: with the subscribe scope to any users (target empty),
    /// else to the token's own user (the handler checks the filter).
    Subscribe,
}

/// One admitted call, carried to its audit record.
#[derive(Debug)]
pub struct Call {
    /// The gRPC method (`ListActivity`, ...).
    pub method: &'static str,
    /// The caller's `x-request-id`, or a new one.
    pub request_id: String,
    /// Who calls.
    pub principal: Principal,
    /// Whose history (empty until a job names it, for GetExport).
    pub target: String,
    /// When admission began.
    pub started: Instant,
    /// The caller's network address, when known.
    pub peer: Option<IpAddr>,
    /// When the call must be over (from `started`).
    pub deadline: Duration,
    /// Its place among the calls in flight, given back when it ends.
    _in_flight: Held,
    /// Whether the "allowed" record was written alongside the work (see
    /// [`crate::audit::alongside`]); unset: not written yet.
    pub audited: OnceLock<bool>,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No valid bearer token.
    Unauthenticated(AuthError),
    /// Over the peer's or the principal's rate.
    RateLimited {
        /// Whose rate.
        limit: RateLimit,
        /// When to try again (at least the hold).
        retry_after: Duration,
    },
    /// The token may not make this call.
    PermissionDenied(PermissionDenied),
    /// The user asked for cannot be served to this token (none named, or
    /// too long).
    InvalidArgument(InvalidArgument),
    /// Too many calls in flight.
    Busy(Cap),
}

impl Refusal {
    /// How long the answer is held: refusals a flood can produce (a bad
    /// token, a rate, a cap) are held, and may be summarized beyond the
    /// peer's audit budget; authorisation and argument denials come after
    /// the principal's rate limit and are answered at once and always
    /// audited one by one.
    pub fn hold(&self) -> Option<Duration> {
        let hint = match self {
            // A client with an expired token refreshes it anyway.
            Refusal::Unauthenticated(_) => Duration::ZERO,
            Refusal::RateLimited { retry_after, .. } => *retry_after,
            Refusal::Busy(_) => BUSY_WAIT,
            Refusal::PermissionDenied(_) | Refusal::InvalidArgument(_) => return None,
        };
        Some(hint.clamp(REFUSAL_HOLD.start, REFUSAL_HOLD.end))
    }

    /// The `cap` label of `strata_api_refused_total`, for refusals over a
    /// rate or a cap.
    pub fn refused_label(&self) -> Option<&'static str> {
        match self {
            Refusal::RateLimited { limit, .. } => Some(limit.refused_label()),
            Refusal::Busy(cap) => Some(InFlight::Calls.refused_label(*cap)),
            _ => None,
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unauthenticated(err) => ApiError::Unauthenticated(err),
            Refusal::RateLimited { limit, retry_after } => {
                ApiError::RateLimited { limit, retry_after }
            }
            Refusal::PermissionDenied(denied) => ApiError::PermissionDenied(denied),
            Refusal::InvalidArgument(invalid) => ApiError::InvalidArgument(invalid),
            Refusal::Busy(cap) => ApiError::Busy {
                cap,
                what: InFlight::Calls,
            },
        }
    }
}

/// A refusal and whom it refused (empty before authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The principal's subject, once known.
    pub principal: String,
    /// Why.
    pub refusal: Refusal,
}

/// A call admitted by [`Gate::decide`].
#[derive(Debug)]
pub struct Admitted {
    /// Who calls.
    pub principal: Principal,
    /// Whose history.
    pub target: String,
    /// Its place among the calls in flight.
    pub in_flight: Held,
}

/// A refused call, for its audit record and metrics.
struct RefusedCall<'a> {
    method: &'static str,
    request_id: &'a str,
    peer: Option<IpAddr>,
    /// The user asked for, cut to 256 bytes.
    target: &'a str,
    started: Instant,
}

/// Everything admission consults.
pub struct Gate<'a> {
    /// Bearer-token verification.
    pub auth: &'a Authenticator,
    /// Per-principal rates.
    pub limits: &'a Limits,
    /// Per-peer rates, the caps on calls in flight, the audit budgets.
    pub admission: &'a Admission,
    /// Where refusals are audited.
    pub pool: &'a Pool,
    /// The longest deadline of a call.
    pub request_timeout: Duration,
}

impl Gate<'_> {
    /// The decision on a call from `peer` with `authorization`, asking for
    /// `requested_user`'s history (empty: the token's own) with `need`.
    pub fn decide(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&str>,
        requested_user: &str,
        need: Need,
    ) -> Result<Admitted, Refused> {
        let refused = |principal: &str, refusal: Refusal| Refused {
            principal: principal.to_string(),
            refusal,
        };
        if let Some(peer) = peer {
            if !self.admission.peer_allows(peer) {
                let retry_after = self.admission.peer_wait_hint().max(REFUSAL_HOLD.start);
                return Err(refused(
                    "",
                    Refusal::RateLimited {
                        limit: RateLimit::Peer,
                        retry_after,
                    },
                ));
            }
        }
        let principal = self
            .auth
            .authenticate(authorization)
            .map_err(|err| refused("", Refusal::Unauthenticated(err)))?;
        let subject = principal.subject.as_str();
        if !self.limits.try_request(subject) {
            let retry_after = self.limits.wait_hint().max(REFUSAL_HOLD.start);
            return Err(refused(
                subject,
                Refusal::RateLimited {
                    limit: RateLimit::Principal,
                    retry_after,
                },
            ));
        }
        if matches!(need, Need::Export | Need::Job) && !principal.export {
            return Err(refused(
                subject,
                Refusal::PermissionDenied(PermissionDenied::ExportScope),
            ));
        }
        let target = if need == Need::Job {
            String::new()
        } else if need == Need::Subscribe {
            if principal.subscribe {
                String::new()
            } else {
                principal.subject.clone()
            }
        } else if principal.read_any {
            if requested_user.is_empty() {
                return Err(refused(
                    subject,
                    Refusal::InvalidArgument(InvalidArgument::UserIdRequired),
                ));
            }
            requested_user.to_string()
        } else if requested_user.is_empty() || requested_user == subject {
            principal.subject.clone()
        } else {
            return Err(refused(
                subject,
                Refusal::PermissionDenied(PermissionDenied::OtherUser),
            ));
        };
        if target.len() > strata_core::event::MAX_USER_ID_BYTES {
            return Err(refused(
                subject,
                Refusal::InvalidArgument(InvalidArgument::UserIdTooLong),
            ));
        }
        if target.contains('\0') {
            return Err(refused(
                subject,
                Refusal::InvalidArgument(InvalidArgument::UserIdNul),
            ));
        }
        let in_flight = self
            .admission
            .enter_call(subject)
            .map_err(|cap| refused(subject, Refusal::Busy(cap)))?;
        Ok(Admitted {
            principal,
            target,
            in_flight,
        })
    }

    /// Admits a call of `method` (see [`Self::decide`]); a refusal is
    /// counted, held, audited and returned as its status.
    pub async fn admit<T>(
        &self,
        method: &'static str,
        request: &Request<T>,
        requested_user: &str,
        need: Need,
    ) -> Result<Call, Status> {
        let started = Instant::now();
        let request_id = request::request_id(request);
        let peer = request.remote_addr().map(|address| address.ip());
        let deadline = request::deadline(request, self.request_timeout);
        let authorization = request::authorization(request);
        match self.decide(peer, authorization, requested_user, need) {
            Ok(admitted) => Ok(Call {
                method,
                request_id,
                principal: admitted.principal,
                target: admitted.target,
                started,
                peer,
                deadline,
                _in_flight: admitted.in_flight,
                audited: OnceLock::new(),
            }),
            Err(refused) => {
                let call = RefusedCall {
                    method,
                    request_id: &request_id,
                    peer,
                    target: request::truncate(requested_user, 256),
                    started,
                };
                Err(self.refuse(&call, refused).await)
            }
        }
    }

    /// Answers a refused call: counted, held, then audited (one by one, or
    /// in its peer's next summary row).
    async fn refuse(&self, call: &RefusedCall<'_>, refused: Refused) -> Status {
        if let Some(label) = refused.refusal.refused_label() {
            crate::metrics::REFUSED.with_label_values(&[label]).inc();
        }
        let hold = refused.refusal.hold();
        if let Some(hold) = hold {
            tokio::time::sleep(hold).await;
        }
        let status = error::with_request_id(
            error::status(refused.refusal.into(), call.request_id),
            call.request_id,
        );
        let code = status.code();
        let summarizable = hold.is_some();
        let individually = !summarizable
            || call.peer.is_none_or(|peer| {
                self.admission
                    .audit_individually(peer, call.method, code_name(code))
            });
        if individually {
            let record = AuditRecord {
                request_id: call.request_id,
                principal: &refused.principal,
                target: call.target,
                method: call.method,
                decision: AuditDecision::Denied,
                code,
                detail: status.message(),
                peer: call.peer,
            };
            audit::write(self.pool, &record).await;
        } else {
            crate::metrics::AUDIT_SUMMARIZED.inc();
        }
        crate::metrics::call_finished(call.method, code, call.started);
        status
    }
}

#[cfg(test)]
mod tests;
