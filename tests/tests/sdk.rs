//! Producer SDK: validation errors for each bad input with nothing
//! written (test 9), both drivers, ids, and batch atomicity.

use anyhow::Context;
use serde_json::json;
use strata_core::ValidationError;
use strata_producer::{NewEvent, Outbox, ProduceError};
use strata_tests::TestEnv;
use uuid::Uuid;

fn bad_events() -> Vec<(NewEvent, &'static str)> {
    vec![
        (NewEvent::new("", "login"), "empty_user_id"),
        (NewEvent::new("u".repeat(257), "login"), "user_id_too_long"),
        (NewEvent::new("u1", "Login"), "invalid_kind"),
        (NewEvent::new("u1", "log in"), "invalid_kind"),
        (NewEvent::new("u1", "x".repeat(65)), "invalid_kind"),
        (NewEvent::new("u1", ""), "invalid_kind"),
        (
            NewEvent::new("u1", "login").payload(json!([1, 2])),
            "payload_not_object",
        ),
        (
            NewEvent::new("u1", "login").payload(json!("text")),
            "payload_not_object",
        ),
        (
            NewEvent::new("u1", "login").payload(json!(null)),
            "payload_not_object",
        ),
        (
            NewEvent::new("u1", "login").payload(json!({"blob": "x".repeat(70_000)})),
            "payload_too_large",
        ),
        (
            NewEvent::new("u1", "login")
                .occurred_at(chrono::Utc::now() - chrono::TimeDelta::days(401)),
            "occurred_at_out_of_window",
        ),
        (
            NewEvent::new("u1", "login")
                .occurred_at(chrono::Utc::now() + chrono::TimeDelta::days(2)),
            "occurred_at_out_of_window",
        ),
        (
            NewEvent::new("u1", "login").occurred_at(chrono::DateTime::<chrono::Utc>::MIN_UTC),
            "occurred_at_out_of_window",
        ),
    ]
}

fn code(err: &ProduceError) -> &'static str {
    match err {
        ProduceError::Invalid { source, .. } => source.code(),
        _ => "not a validation error",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_rejects_each_bad_input_and_writes_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new("sdk_pg").await?;
    let mut client = env.source().await?;
    let outbox = Outbox::new("sdk-test")?;
    for (event, expected) in bad_events() {
        let tx = client.transaction().await?;
        let err = outbox
            .enqueue_pg(&tx, &event)
            .await
            .expect_err("bad event must be rejected");
        assert_eq!(code(&err), expected, "{err}");
        // The transaction is still usable: validation happened client-side.
        tx.execute("SELECT 1", &[]).await?;
        tx.commit().await?;
    }
    // One bad event in a batch rejects the whole batch.
    let tx = client.transaction().await?;
    let batch = vec![
        NewEvent::new("u1", "login"),
        NewEvent::new("u1", "deposit").payload(json!(42)),
    ];
    let err = outbox
        .enqueue_many_pg(&tx, &batch)
        .await
        .expect_err("bad batch");
    assert!(
        matches!(err, ProduceError::Invalid { index: 1, .. }),
        "{err}"
    );
    tx.commit().await?;
    assert_eq!(env.outbox_len().await?, 0, "nothing may be written");

    // Good events: generated UUIDv7 ids, or the caller's own.
    let own = Uuid::new_v4();
    let tx = client.transaction().await?;
    let generated = outbox
        .enqueue_pg(&tx, &NewEvent::new("u1", "login"))
        .await?;
    let kept = outbox
        .enqueue_pg(&tx, &NewEvent::new("u1", "login").event_id(own))
        .await?;
    let many = outbox
        .enqueue_many_pg(
            &tx,
            &[
                NewEvent::new("u2", "2fa_reset"),
                NewEvent::new("u3", "withdrawal"),
            ],
        )
        .await?;
    tx.commit().await?;
    assert_eq!(generated.get_version_num(), 7);
    assert_eq!(kept, own);
    assert_eq!(many.len(), 2);
    assert_eq!(env.outbox_len().await?, 4);
    let source: String = env
        .source()
        .await?
        .query_one("SELECT DISTINCT source FROM strata_outbox.events", &[])
        .await?
        .get(0);
    assert_eq!(source, "sdk-test");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_rejects_each_bad_input_and_commits_with_the_caller() -> anyhow::Result<()> {
    let env = TestEnv::new("sdk_sqlx").await?;
    let pool = sqlx::PgPool::connect(&env.source_url).await?;
    let outbox = Outbox::new("sdk-test")?;
    for (event, expected) in bad_events() {
        let mut tx = pool.begin().await?;
        let err = outbox
            .enqueue_sqlx(&mut tx, &event)
            .await
            .expect_err("bad event must be rejected");
        assert_eq!(code(&err), expected, "{err}");
        tx.commit().await?;
    }
    assert_eq!(env.outbox_len().await?, 0);

    // Rolled back with the caller's transaction.
    let mut tx = pool.begin().await?;
    outbox
        .enqueue_sqlx(&mut tx, &NewEvent::new("u1", "login"))
        .await?;
    tx.rollback().await?;
    assert_eq!(env.outbox_len().await?, 0);

    // Committed with it.
    let mut tx = pool.begin().await?;
    outbox
        .enqueue_sqlx(
            &mut tx,
            &NewEvent::new("u1", "login").payload(json!({"ip": "10.0.0.1"})),
        )
        .await?;
    outbox
        .enqueue_many_sqlx(
            &mut tx,
            &[
                NewEvent::new("u2", "deposit"),
                NewEvent::new("u2", "withdrawal"),
            ],
        )
        .await?;
    tx.commit().await?;
    assert_eq!(env.outbox_len().await?, 3);
    let payload: String = env
        .source()
        .await?
        .query_one(
            "SELECT payload::text FROM strata_outbox.events WHERE user_id = 'u1'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(payload, r#"{"ip": "10.0.0.1"}"#);
    Ok(())
}

#[test]
fn limits_are_configurable() {
    let outbox = Outbox::new("svc")
        .expect("valid")
        .with_limits(strata_producer::EventLimits {
            max_payload_bytes: 10,
            ..Default::default()
        });
    let err = outbox
        .prepare(&[NewEvent::new("u", "login").payload(json!({"k": "0123456789"}))])
        .expect_err("too large");
    assert!(matches!(
        err,
        ProduceError::Invalid {
            source: ValidationError::PayloadTooLarge { max: 10, .. },
            ..
        }
    ));
}

/// The SQL producer API (`strata_outbox.enqueue`, migration 0003) from
/// Python with psycopg, as a service in another language uses it:
/// `tests/py/sql_producer.py` runs README's example as a role that is only
/// a member of `strata_producer`, and each validation error (asserting its
/// SQLSTATE, its message, and that the business insert of the same
/// transaction rolled back). Then a relay ships what it enqueued: every
/// event reaches the hot store and none is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_producer_api_from_python_validates_and_its_events_are_relayed() -> anyhow::Result<()> {
    let env = TestEnv::new("sqlprod").await?;
    let python = std::env::var("STRATA_TEST_PYTHON")
        .context("STRATA_TEST_PYTHON is not set: run the suite through scripts/test")?;
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/sql_producer.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(&env.source_url)
        .arg("--keep-events")
        .output()
        .await
        .context("run tests/py/sql_producer.py")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "sql_producer.py printed no JSON: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    assert!(
        output.status.success() && report["ok"] == true,
        "{report:#}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report["checks"].as_u64().unwrap_or(0) >= 100, "{report:#}");
    let errors = report["errors"].as_object().context("errors")?;
    for (sqlstate, code) in [
        ("SV001", "empty_user_id"),
        ("SV002", "user_id_too_long"),
        ("SV003", "invalid_kind"),
        ("SV004", "payload_not_object"),
        ("SV005", "payload_too_large"),
        ("SV006", "invalid_source"),
        ("SV007", "occurred_at_out_of_window"),
        ("SV008", "invalid_batch"),
    ] {
        assert_eq!(
            errors.get(sqlstate).and_then(|c| c.as_str()),
            Some(code),
            "{report:#}"
        );
    }
    let ids: Vec<Uuid> = report["event_ids"]
        .as_array()
        .context("event_ids")?
        .iter()
        .filter_map(|id| id.as_str()?.parse().ok())
        .collect();
    assert!(ids.len() >= 5, "{report:#}");
    assert!(
        ids.iter()
            .all(|id| id.get_version_num() == 7 || id.get_version_num() == 4),
        "{ids:?}"
    );
    crate::archive::ship(&env).await?;
    let hot = env.hot().await?;
    let stored: i64 = hot
        .query_one(
            "SELECT count(*) FROM strata.activity WHERE event_id = ANY($1)",
            &[&ids],
        )
        .await?
        .get(0);
    let dead: i64 = hot
        .query_one("SELECT count(*) FROM strata.dead_letters", &[])
        .await?
        .get(0);
    assert_eq!((stored, dead), (ids.len() as i64, 0));
    Ok(())
}
