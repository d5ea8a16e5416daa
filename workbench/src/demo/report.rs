//! What the demo shows once the traffic stopped: the archive catalog, one
//! user's history from the hot store, then the same user's whole history
//! read through the history API (as a client would) with the commands to
//! call it yourself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use strata_archiver::catalog;
use strata_core::config::ApiConfig;
use strata_proto::v1::history_service_client::HistoryServiceClient as HistoryClient;
use strata_proto::v1::ListActivityRequest;
use tokio_util::sync::CancellationToken;

/// The archive catalog as printed (the archiver's catalog offers every
/// column but the commit time).
const ARCHIVE_DAYS_SQL: &str =
    "SELECT day::text, state, rows, files, bytes, coalesce(to_char(committed_at, 'HH24:MI:SS'), '')
               FROM strata.archive_days ORDER BY day";

/// The user with the most events (ties by id): the demo's sample user.
const SAMPLE_USER_SQL: &str =
    "SELECT user_id, count(*) FROM strata.activity GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1";

/// Events in the hot store.
const HOT_EVENTS_SQL: &str = "SELECT count(*) FROM strata.activity";

/// The first 25 events of user `$1`, formatted for the table.
const USER_HISTORY_SQL: &str =
    "SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), kind, \
                    payload->>'ip', coalesce(payload->>'amount' || ' ' || (payload->>'currency'), ''), \
                    payload->'geo'->>'city' \
             FROM strata.activity WHERE user_id = $1 ORDER BY occurred_at, event_id LIMIT 25";

/// Waits (up to a minute) for the backfilled days to be committed and
/// published, then lists the archive's catalog.
pub(super) async fn show_archive(
    hot: &tokio_postgres::Client,
    days: &[NaiveDate],
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    if days.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = catalog::all_days(hot)
            .await?
            .iter()
            .filter(|status| days.contains(&status.day) && status.is_published())
            .count();
        if done >= days.len() || Instant::now() >= deadline || cancel.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rows = hot.query(ARCHIVE_DAYS_SQL, &[]).await?;
    println!(
        "
Archive catalog (strata.archive_days):"
    );
    println!(
        "  {:<12} {:<10} {:>8} {:>6} {:>10} committed",
        "day", "state", "rows", "files", "bytes"
    );
    for row in rows {
        let (day, state, n, files, bytes, at): (String, String, i64, i32, i64, String) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
            row.try_get(5)?,
        );
        println!("  {day:<12} {state:<10} {n:>8} {files:>6} {bytes:>10} {at}");
    }
    Ok(())
}

/// Prints the hot store's size and the first events of the user with the
/// most events; returns that user.
pub(super) async fn show_hot_history(hot: &tokio_postgres::Client) -> anyhow::Result<String> {
    let sample = hot
        .query_one(SAMPLE_USER_SQL, &[])
        .await
        .context("pick a sample user")?;
    let user: String = sample.try_get(0)?;
    let total: i64 = hot.query_one(HOT_EVENTS_SQL, &[]).await?.try_get(0)?;
    println!(
        "\n{total} events in the hot store. History of {user}, in (occurred_at, event_id) order:\n"
    );
    let rows = hot.query(USER_HISTORY_SQL, &[&user]).await?;
    println!(
        "  {:<27} {:<16} {:<16} {:<16} city",
        "occurred_at (UTC)", "kind", "ip", "amount"
    );
    for row in rows {
        let at: String = row.try_get(0)?;
        let kind: String = row.try_get(1)?;
        let ip: Option<String> = row.try_get(2)?;
        let amount: String = row.try_get(3)?;
        let city: Option<String> = row.try_get(4)?;
        println!(
            "  {:<27} {:<16} {:<16} {:<16} {}",
            at,
            kind,
            ip.unwrap_or_default(),
            amount,
            city.unwrap_or_default()
        );
    }
    Ok(user)
}

/// A bearer token for `user`, valid for an hour, signed with the demo's
/// secret (key id `demo`).
pub(super) fn demo_token(secret: &str, api: &ApiConfig, user: &str) -> anyhow::Result<String> {
    let now = Utc::now().timestamp().max(0) as u64;
    strata_api::auth::issue_hs256(
        "demo",
        secret,
        &strata_api::auth::Claims {
            sub: user.to_string(),
            iss: api.jwt_issuer.clone(),
            aud: api.jwt_audience.clone(),
            exp: now + 3600,
            iat: Some(now),
            scope: strata_api::auth::SCOPE_EXPORT.to_string(),
        },
    )
    .context("sign the demo token")
}

/// Reads `user`'s whole history through the API at `address` (across
/// archived and hot days), then prints ready-to-paste grpcurl and Python
/// commands. `listen` is the configured address, for the message.
pub(super) async fn show_api_history(
    address: SocketAddr,
    listen: SocketAddr,
    token: &str,
    user: &str,
    archived_days: &[NaiveDate],
) -> anyhow::Result<()> {
    // Read the whole history through the API, as a client would.
    let mut client = HistoryClient::connect(format!("http://{address}"))
        .await
        .context("connect to the history API")?;
    let (mut events, mut cold, mut pages, mut page_token) = (0usize, 0usize, 0usize, String::new());
    loop {
        let mut request = tonic::Request::new(ListActivityRequest {
            page_size: 100,
            page_token: page_token.clone(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().context("token header")?,
        );
        let page = client
            .list_activity(request)
            .await
            .context("ListActivity")?
            .into_inner();
        pages += 1;
        events += page.events.len();
        cold += page
            .events
            .iter()
            .filter(|e| {
                e.event_time
                    .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                    .is_some_and(|t| archived_days.contains(&t.date_naive()))
            })
            .count();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    println!(
        "\nHistory API on {address} ({listen} in config): read {user}'s whole history in {pages} pages: {events} events, {cold} of them from archived days (Parquet)."
    );
    println!("\nCall it yourself (token valid 1 h, for {user} only):");
    println!(
        "  grpcurl -plaintext -H 'authorization: Bearer {token}' -d '{{\"page_size\": 5}}' {address} strata.v1.HistoryService/ListActivity"
    );
    println!("  python3 -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. strata/v1/history.proto  # pip install grpcio-tools");
    println!(
        "  python3 -c \"import grpc; from strata.v1 import history_pb2 as p, history_pb2_grpc as g; s = g.HistoryServiceStub(grpc.insecure_channel('{address}')); print(s.ListActivity(p.ListActivityRequest(page_size=5), metadata=[('authorization', 'Bearer {token}')]))\""
    );
    Ok(())
}
