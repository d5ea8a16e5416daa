//! Strata's SQL migrations and the one code path that applies them.
//!
//! Two sets: [`OUTBOX`] for every producer database and [`STORE`] for the
//! hot store. A database may hold both (same-database deployments). Each
//! set is applied under its own session advisory lock, so concurrent
//! `strata migrate` runs (or relays starting together) are safe; every
//! migration runs in one transaction together with its bookkeeping row, and
//! an edited, already-applied migration is refused (checksum mismatch).

#![warn(unreachable_pub)]

use strata_pg::{describe_pg_error, stable_key};
use tokio_postgres::Client;

/// One SQL file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in ascending order.
    pub version: i32,
    /// File name, for humans.
    pub name: &'static str,
    /// The SQL text.
    pub sql: &'static str,
}

/// A set of migrations tracked in `<schema>.schema_migrations`.
#[derive(Debug, Clone, Copy)]
pub struct MigrationSet {
    /// Label in logs and errors.
    pub label: &'static str,
    /// Schema that holds the set's tables and its bookkeeping table.
    pub schema: &'static str,
    /// In version order.
    pub migrations: &'static [Migration],
}

/// The outbox, for producer databases.
pub const OUTBOX: MigrationSet = MigrationSet {
    label: "outbox",
    schema: "strata_outbox",
    migrations: &[
        Migration {
            version: 1,
            name: "0001_outbox.sql",
            sql: include_str!("../outbox/0001_outbox.sql"),
        },
        Migration {
            version: 2,
            name: "0002_outbox_statistics.sql",
            sql: include_str!("../outbox/0002_outbox_statistics.sql"),
        },
        Migration {
            version: 3,
            name: "0003_enqueue.sql",
            sql: include_str!("../outbox/0003_enqueue.sql"),
        },
    ],
};

/// The hot store.
pub const STORE: MigrationSet = MigrationSet {
    label: "store",
    schema: "strata",
    migrations: &[
        Migration {
            version: 1,
            name: "0001_store.sql",
            sql: include_str!("../store/0001_store.sql"),
        },
        Migration {
            version: 2,
            name: "0002_archive.sql",
            sql: include_str!("../store/0002_archive.sql"),
        },
        Migration {
            version: 3,
            name: "0003_api.sql",
            sql: include_str!("../store/0003_api.sql"),
        },
        Migration {
            version: 4,
            name: "0004_hostile_rows.sql",
            sql: include_str!("../store/0004_hostile_rows.sql"),
        },
        Migration {
            version: 5,
            name: "0005_export_retention.sql",
            sql: include_str!("../store/0005_export_retention.sql"),
        },
        Migration {
            version: 6,
            name: "0006_audit_peers.sql",
            sql: include_str!("../store/0006_audit_peers.sql"),
        },
        Migration {
            version: 7,
            name: "0007_export_requests.sql",
            sql: include_str!("../store/0007_export_requests.sql"),
        },
        Migration {
            version: 8,
            name: "0008_export_open_jobs.sql",
            sql: include_str!("../store/0008_export_open_jobs.sql"),
        },
        Migration {
            version: 9,
            name: "0009_stream.sql",
            sql: include_str!("../store/0009_stream.sql"),
        },
        Migration {
            version: 10,
            name: "0010_stream_groups.sql",
            sql: include_str!("../store/0010_stream_groups.sql"),
        },
    ],
};

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A database call failed.
    #[error("{set} migrations: {context}: {}", describe_pg_error(error))]
    Database {
        /// Which set.
        set: &'static str,
        /// What was being done.
        context: &'static str,
        /// The driver error, shown in the message with the server's
        /// SQLSTATE and text (so not also the `source()`: `{err:#}` would
        /// print it twice).
        error: tokio_postgres::Error,
    },
    /// An applied migration's text differs from the one shipped.
    #[error("{set} migration {version} was edited after being applied (checksum {applied} in the database, {shipped} shipped)")]
    ChecksumMismatch {
        /// Which set.
        set: &'static str,
        /// Which migration.
        version: i32,
        /// Recorded checksum.
        applied: String,
        /// Checksum of the shipped text.
        shipped: String,
    },
    /// The database lacks migrations this binary needs.
    #[error(
        "{set} schema is at version {found}, this strata needs {needed}: run `strata migrate`"
    )]
    NotMigrated {
        /// Which set.
        set: &'static str,
        /// Highest applied version (0 = none).
        found: i32,
        /// Highest shipped version.
        needed: i32,
    },
}

impl MigrationSet {
    fn latest(&self) -> i32 {
        self.migrations.last().map_or(0, |m| m.version)
    }

    fn lock_key(&self) -> i64 {
        stable_key(&format!("strata.migrate.{}", self.schema))
    }

    fn db_err(&self, context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> MigrateError {
        let set = self.label;
        move |error| MigrateError::Database {
            set,
            context,
            error,
        }
    }

    /// Applies pending migrations; returns how many were applied.
    pub async fn apply(&self, client: &mut Client) -> Result<usize, MigrateError> {
        client
            .execute("SELECT pg_advisory_lock($1)", &[&self.lock_key()])
            .await
            .map_err(self.db_err("take migration lock"))?;
        let result = self.apply_locked(client).await;
        // Unlock even on failure; if this fails too the session's end frees it.
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.lock_key()])
            .await;
        result
    }

    async fn apply_locked(&self, client: &mut Client) -> Result<usize, MigrateError> {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     checksum text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now())",
                schema = self.schema
            ))
            .await
            .map_err(self.db_err("create bookkeeping table"))?;
        let rows = client
            .query(
                &format!(
                    "SELECT version, checksum FROM {}.schema_migrations",
                    self.schema
                ),
                &[],
            )
            .await
            .map_err(self.db_err("read applied migrations"))?;
        let applied = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(i32, String)>, tokio_postgres::Error>>()
            .map_err(self.db_err("decode applied migrations"))?;
        let mut count = 0;
        for migration in self.migrations {
            let shipped = checksum(migration.sql);
            if let Some((_, recorded)) = applied.iter().find(|(v, _)| *v == migration.version) {
                if *recorded != shipped {
                    return Err(MigrateError::ChecksumMismatch {
                        set: self.label,
                        version: migration.version,
                        applied: recorded.clone(),
                        shipped,
                    });
                }
                continue;
            }
            let tx = client
                .transaction()
                .await
                .map_err(self.db_err("begin migration"))?;
            tx.batch_execute(migration.sql)
                .await
                .map_err(self.db_err("run migration"))?;
            tx.execute(
                &format!(
                    "INSERT INTO {}.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    self.schema
                ),
                &[&migration.version, &migration.name, &shipped],
            )
            .await
            .map_err(self.db_err("record migration"))?;
            tx.commit().await.map_err(self.db_err("commit migration"))?;
            tracing::info!(
                set = self.label,
                version = migration.version,
                name = migration.name,
                "applied migration"
            );
            count += 1;
        }
        Ok(count)
    }

    /// Fails with [`MigrateError::NotMigrated`] unless every shipped
    /// migration is applied.
    pub async fn check(&self, client: &Client) -> Result<(), MigrateError> {
        let exists: bool = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("{}.schema_migrations", self.schema)],
            )
            .await
            .map_err(self.db_err("look for bookkeeping table"))?
            .try_get(0)
            .map_err(self.db_err("decode bookkeeping lookup"))?;
        let found: i32 = if exists {
            client
                .query_one(
                    &format!(
                        "SELECT coalesce(max(version), 0) FROM {}.schema_migrations",
                        self.schema
                    ),
                    &[],
                )
                .await
                .map_err(self.db_err("read schema version"))?
                .try_get(0)
                .map_err(self.db_err("decode schema version"))?
        } else {
            0
        };
        if found < self.latest() {
            return Err(MigrateError::NotMigrated {
                set: self.label,
                found,
                needed: self.latest(),
            });
        }
        Ok(())
    }
}

fn checksum(sql: &str) -> String {
    format!("{:016x}", stable_key(sql) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_ascend() {
        for set in [OUTBOX, STORE] {
            let versions: Vec<i32> = set.migrations.iter().map(|m| m.version).collect();
            let mut sorted = versions.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(versions, sorted, "{}", set.label);
        }
    }

    /// The sets' advisory-lock keys, as they were when the key function
    /// lived here: a changed key would let two versions migrate at once.
    #[test]
    fn lock_keys_are_pinned() {
        assert_eq!(OUTBOX.lock_key(), -5_388_012_852_865_440_482);
        assert_eq!(STORE.lock_key(), 3_880_605_105_321_530_842);
        assert_eq!(checksum("a"), "af63dc4c8601ec8c");
    }

    use strata_core::error_chain as chain;

    #[test]
    fn a_database_error_prints_its_cause_once() {
        let driver = "port=notaport"
            .parse::<tokio_postgres::Config>()
            .expect_err("not a port");
        let described = describe_pg_error(&driver);
        let err = MigrateError::Database {
            set: "store",
            context: "lock",
            error: driver,
        };
        assert_eq!(
            err.to_string(),
            format!("store migrations: lock: {described}")
        );
        assert_eq!(chain(&err), err.to_string());
    }
}
