//! End-to-end test harness: fresh databases on the test cluster, relay
//! processes that can be killed, a ledger of producer commits and a checker
//! that reports lost, duplicated, phantom and out-of-order events.
//!
//! The test command (`scripts/test`) starts a private Postgres cluster and
//! exports `STRATA_TEST_PG_URL` (a superuser URL without a database) and
//! `STRATA_BIN` (the `strata` binary). A missing service is a loud failure.

pub mod api;
pub mod archive;
pub mod checker;
pub mod db;
pub mod ledger;
pub mod load;
pub mod process;

pub use checker::{check, Report};
pub use db::{connect, TestEnv};
pub use ledger::{Ledger, Outcome};
pub use process::StrataProcess;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `condition` every 50 ms until it holds or `timeout` passes;
/// returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` on 127.0.0.1:`port` (the metrics endpoint); the raw response.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

/// The value of the first sample line starting with `series`.
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
