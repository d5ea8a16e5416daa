//! The timeout wrapper around one database call: every call Strata makes
//! on a session goes through it, so a stalled server costs a bounded wait.

use std::future::Future;
use std::time::Duration;

use crate::error::PgError;

/// Runs `future` (one tokio-postgres call) under `timeout`:
/// [`PgError::Timeout`] when it expires (the future is dropped, which on a
/// transaction rolls it back), [`PgError::Database`] when it fails, both
/// naming `context`, a short verb phrase ("claim batch").
pub async fn bounded<T>(
    context: &'static str,
    timeout: Duration,
    future: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PgError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(PgError::Database { context, error }),
        Err(_) => Err(PgError::Timeout { context, timeout }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_does_not_finish_in_time_is_a_timeout() {
        let never = std::future::pending::<Result<(), tokio_postgres::Error>>();
        let err = bounded("sample lag", Duration::from_millis(10), never)
            .await
            .expect_err("pending forever");
        assert!(
            matches!(
                err,
                PgError::Timeout { context: "sample lag", timeout } if timeout == Duration::from_millis(10)
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_call_that_finishes_in_time_gives_its_value() {
        let value = bounded("read", Duration::from_secs(3), async {
            Ok::<_, tokio_postgres::Error>(7)
        })
        .await
        .expect("ready");
        assert_eq!(value, 7);
    }
}
