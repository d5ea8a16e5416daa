//! The admission decision, without I/O.

use std::collections::BTreeMap;

use super::*;
use crate::auth::{issue_hs256, Claims};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

struct Parts {
    auth: Authenticator,
    limits: Limits,
    admission: Admission,
    pool: Pool,
}

fn parts(peer_burst: u32, calls_per_principal: u32) -> Parts {
    let hs = BTreeMap::from([("k1".to_string(), SECRET.to_string())]);
    Parts {
        auth: Authenticator::new(&hs, &BTreeMap::new(), "strata", "history", Duration::ZERO)
            .expect("keys"),
        limits: Limits::new(0.001, 2, 1),
        admission: Admission::new(AdmissionLimits {
            peer_rate: 0.001,
            peer_burst,
            audit_rate: 1.0,
            audit_burst: 1,
            calls_per_principal,
            calls_total: 10,
            cold_reads_per_principal: 1,
            cold_reads_total: 1,
            subscriptions_per_principal: 1,
            subscriptions_total: 1,
        }),
        // Never connects: `decide` does no I/O.
        pool: Pool::new("postgres://nobody@localhost/none", None, Duration::ZERO, 1),
    }
}

impl Parts {
    fn gate(&self) -> Gate<'_> {
        Gate {
            auth: &self.auth,
            limits: &self.limits,
            admission: &self.admission,
            pool: &self.pool,
            request_timeout: Duration::from_secs(5),
        }
    }
}

fn bearer(sub: &str, scope: &str) -> String {
    let now = chrono::Utc::now().timestamp() as u64;
    let claims = Claims {
        sub: sub.into(),
        iss: "strata".into(),
        aud: "history".into(),
        exp: now + 60,
        iat: Some(now),
        scope: scope.into(),
    };
    format!(
        "Bearer {}",
        issue_hs256("k1", SECRET, &claims).expect("token")
    )
}

fn refusal(result: Result<Admitted, Refused>) -> (String, Refusal) {
    match result {
        Ok(admitted) => panic!("admitted {:?}", admitted.principal),
        Err(refused) => (refused.principal, refused.refusal),
    }
}

#[test]
fn the_peer_rate_comes_before_the_token() {
    let parts = parts(1, 5);
    let gate = parts.gate();
    let peer = Some("10.0.0.1".parse().expect("ip"));
    assert_eq!(
        refusal(gate.decide(peer, None, "", Need::Read)),
        (String::new(), Refusal::Unauthenticated(AuthError::Missing))
    );
    let (principal, refused) = refusal(gate.decide(peer, None, "", Need::Read));
    assert_eq!(principal, "");
    assert!(
        matches!(refused, Refusal::RateLimited { limit: RateLimit::Peer, retry_after } if retry_after >= REFUSAL_HOLD.start),
        "{refused:?}"
    );
    assert_eq!(refused.refused_label(), Some("peer_rate"));
}

#[test]
fn customers_read_only_their_own_history() {
    let parts = parts(100, 5);
    let gate = parts.gate();
    let alice = bearer("alice", "");
    let admitted = gate
        .decide(None, Some(&alice), "", Need::Read)
        .expect("own history");
    assert_eq!(admitted.target, "alice");
    assert_eq!(
        refusal(gate.decide(None, Some(&alice), "bob", Need::Read)),
        (
            "alice".into(),
            Refusal::PermissionDenied(PermissionDenied::OtherUser)
        )
    );
    // Two requests a burst: the third is over the principal's rate.
    let (_, refused) = refusal(gate.decide(None, Some(&alice), "", Need::Read));
    assert!(
        matches!(
            refused,
            Refusal::RateLimited {
                limit: RateLimit::Principal,
                ..
            }
        ),
        "{refused:?}"
    );
}

#[test]
fn agents_name_the_user_and_exports_need_their_scope() {
    let parts = parts(100, 5);
    let gate = parts.gate();
    let agent = bearer("agent", "activity:read:any");
    assert_eq!(
        refusal(gate.decide(None, Some(&agent), "", Need::Read)).1,
        Refusal::InvalidArgument(InvalidArgument::UserIdRequired)
    );
    assert_eq!(
        refusal(gate.decide(None, Some(&agent), "u1", Need::Export)).1,
        Refusal::PermissionDenied(PermissionDenied::ExportScope)
    );
    let exporter = bearer("exporter", "activity:read:any activity:export");
    let long = "u".repeat(strata_core::event::MAX_USER_ID_BYTES + 1);
    assert_eq!(
        refusal(gate.decide(None, Some(&exporter), &long, Need::Read)).1,
        Refusal::InvalidArgument(InvalidArgument::UserIdTooLong)
    );
    assert_eq!(
        refusal(gate.decide(
            None,
            Some(&bearer("agent-2", "activity:read:any")),
            "u\0",
            Need::Read
        ))
        .1,
        Refusal::InvalidArgument(InvalidArgument::UserIdNul)
    );
    let job = gate
        .decide(None, Some(&exporter), "", Need::Job)
        .expect("job");
    assert_eq!(job.target, "");
}

#[test]
fn a_principal_gets_its_share_of_the_calls_in_flight() {
    let parts = parts(100, 1);
    let gate = parts.gate();
    let alice = bearer("alice", "");
    let first = gate
        .decide(None, Some(&alice), "", Need::Read)
        .expect("first");
    let (principal, refused) = refusal(gate.decide(None, Some(&alice), "", Need::Read));
    assert_eq!(
        (principal.as_str(), &refused),
        ("alice", &Refusal::Busy(Cap::PerPrincipal))
    );
    assert_eq!(refused.refused_label(), Some("calls_per_principal"));
    drop(first);
}

#[test]
fn refusals_a_flood_can_produce_are_held() {
    let hold = |refusal: Refusal| refusal.hold();
    assert_eq!(
        hold(Refusal::Unauthenticated(AuthError::Expired)),
        Some(REFUSAL_HOLD.start)
    );
    assert_eq!(hold(Refusal::Busy(Cap::Total)), Some(REFUSAL_HOLD.start));
    assert_eq!(
        hold(Refusal::RateLimited {
            limit: RateLimit::Principal,
            retry_after: Duration::from_secs(5),
        }),
        Some(REFUSAL_HOLD.end)
    );
    assert_eq!(
        hold(Refusal::RateLimited {
            limit: RateLimit::Peer,
            retry_after: Duration::from_millis(400),
        }),
        Some(Duration::from_millis(400))
    );
    assert_eq!(
        hold(Refusal::PermissionDenied(PermissionDenied::OtherUser)),
        None
    );
    assert_eq!(
        hold(Refusal::InvalidArgument(InvalidArgument::UserIdTooLong)),
        None
    );
}
