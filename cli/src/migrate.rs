//! `strata migrate`.

use anyhow::Context;
use strata_core::Config;

use crate::pg;

/// Migrates the hot store, then every source.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let hot_url = config.hot_store_url()?;
    let mut hot = pg::connect(hot_url.expose()).await?;
    let applied = strata_migrations::STORE
        .apply(&mut hot)
        .await
        .context("migrate hot store")?;
    println!("hot store {hot_url}: {applied} migration(s) applied");
    for (name, source) in &config.sources {
        let mut client = pg::connect(source.url.expose()).await?;
        let applied = strata_migrations::OUTBOX
            .apply(&mut client)
            .await
            .with_context(|| format!("migrate source {name}"))?;
        println!(
            "source {name} ({}): {applied} migration(s) applied",
            source.url
        );
    }
    Ok(())
}
