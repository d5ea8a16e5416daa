//! End-to-end test harness: fresh databases on the test cluster, relay
//! processes that can be killed, a ledger of producer commits and a checker
//! that reports lost, duplicated, phantom and out-of-order events.
//!
//! The test command (`scripts/test`) starts a private Postgres cluster and
//! exports `STRATA_TEST_PG_URL` (a superuser URL without a database) and
//! `STRATA_BIN` (the `strata` binary). A missing service is a loud failure.

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
