//! `GET /readyz`: whether the parts this process's role depends on
//! answer. The relay needs the hot store and its sources, the archiver
//! those and the object store, the API its database and the object store
//! (cold reads); `strata run` all of them. `/healthz` stays liveness only:
//! a process whose database is down is alive, and restarting it helps
//! nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_archive::ObjectStore;
use strata_core::config::{Config, DatabaseUrl};
use tokio::sync::Mutex;

/// How long one check may take before its part counts as down (a probe's
/// own timeout is usually a few seconds).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// A report is reused this long, so frequent probes do not open a session
/// each.
const REUSE_FOR: Duration = Duration::from_secs(1);
/// `application_name` of the probe's sessions.
const APPLICATION_NAME: &str = "strata-readyz";

/// One part a role depends on.
enum Part {
    Database { name: String, url: DatabaseUrl },
    ObjectStore { store: ObjectStore, prefix: String },
}

/// The checks of one process; cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness {
    parts: Arc<Vec<Part>>,
    last: Arc<Mutex<Option<(Instant, bool, String)>>>,
}

impl Readiness {
    /// The relay's parts: the hot store and every source.
    pub fn relay(config: &Config) -> anyhow::Result<Self> {
        Ok(Self::of(databases(config)?))
    }

    /// The archiver's parts: the relay's and the object store.
    pub async fn archiver(config: &Config) -> anyhow::Result<Self> {
        let mut parts = databases(config)?;
        parts.push(object_store(config).await?);
        Ok(Self::of(parts))
    }

    /// The API's parts: its database and the object store.
    pub async fn api(config: &Config) -> anyhow::Result<Self> {
        let url = match &config.api.database_url {
            Some(url) => url.clone(),
            None => config.hot_store_url()?.clone(),
        };
        Ok(Self::of(vec![
            Part::Database {
                name: "api database".into(),
                url,
            },
            object_store(config).await?,
        ]))
    }

    /// `strata run`: everything.
    pub async fn everything(config: &Config) -> anyhow::Result<Self> {
        let mut parts = databases(config)?;
        if let Some(url) = &config.api.database_url {
            parts.push(Part::Database {
                name: "api database".into(),
                url: url.clone(),
            });
        }
        parts.push(object_store(config).await?);
        Ok(Self::of(parts))
    }

    fn of(parts: Vec<Part>) -> Self {
        Self {
            parts: Arc::new(parts),
            last: Arc::default(),
        }
    }

    /// Whether every part answers, and one line per part (`ok hot store`,
    /// `down source payments: connect to ...`).
    pub async fn report(&self) -> (bool, String) {
        let mut last = self.last.lock().await;
        if let Some((at, ready, text)) = last.as_ref() {
            if at.elapsed() < REUSE_FOR {
                return (*ready, text.clone());
            }
        }
        let checks = self.parts.iter().map(|part| async move {
            let (name, result) = match part {
                Part::Database { name, url } => (name.clone(), check_database(url).await),
                Part::ObjectStore { store, prefix } => (
                    format!("object store {}", store.describe()),
                    bounded(async { store.probe(prefix).await.map_err(|e| e.to_string()) }).await,
                ),
            };
            match result {
                Ok(()) => (true, format!("ok {name}\n")),
                Err(error) => (false, format!("down {name}: {error}\n")),
            }
        });
        let results = futures_util::future::join_all(checks).await;
        let ready = results.iter().all(|(ok, _)| *ok);
        let text: String = results.into_iter().map(|(_, line)| line).collect();
        *last = Some((Instant::now(), ready, text.clone()));
        (ready, text)
    }
}

/// The hot store and every source.
fn databases(config: &Config) -> anyhow::Result<Vec<Part>> {
    let mut parts = vec![Part::Database {
        name: "hot store".into(),
        url: config.hot_store_url()?.clone(),
    }];
    for (name, source) in &config.sources {
        parts.push(Part::Database {
            name: format!("source {name}"),
            url: source.url.clone(),
        });
    }
    Ok(parts)
}

async fn object_store(config: &Config) -> anyhow::Result<Part> {
    let store = ObjectStore::from_config(&config.object_store).await?;
    Ok(Part::ObjectStore {
        store,
        prefix: config.object_store.prefix.clone(),
    })
}

async fn check_database(url: &DatabaseUrl) -> Result<(), String> {
    bounded(async {
        let client = strata_pg::connect(url, APPLICATION_NAME, CHECK_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| strata_pg::describe_pg_error(&e))
    })
    .await
}

async fn bounded(
    check: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}
