//! Start-up check: refuse a hot store that can lose committed data.

use std::time::Duration;

use tokio_postgres::Client;

use crate::error::{db, RelayError};

/// Fails on `fsync=off`, `full_page_writes=off` or `synchronous_commit=off`
/// unless `allow_unsafe`, in which case it logs an error per bad setting.
pub(crate) async fn check_hot_store(
    client: &Client,
    allow_unsafe: bool,
    timeout: Duration,
) -> Result<(), RelayError> {
    let row = db(
        "read hot store durability settings",
        timeout,
        client.query_one(
            "SELECT current_setting('fsync'), current_setting('full_page_writes'), \
                    current_setting('synchronous_commit')",
            &[],
        ),
    )
    .await?;
    let read = |index: usize| {
        row.try_get::<_, String>(index)
            .map_err(RelayError::row("read hot store durability settings"))
    };
    let settings: [(&'static str, String); 3] = [
        ("fsync", read(0)?),
        ("full_page_writes", read(1)?),
        ("synchronous_commit", read(2)?),
    ];
    for (setting, value) in settings {
        if value == "off" {
            if allow_unsafe {
                tracing::error!(
                    setting,
                    value,
                    "hot store runs with unsafe durability; continuing because hot_store.allow_unsafe_durability is set: a server crash can lose shipped events"
                );
            } else {
                return Err(RelayError::UnsafeDurability { setting, value });
            }
        }
    }
    Ok(())
}
