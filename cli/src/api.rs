//! `strata api` (serve the history API) and `strata token` (issue a bearer
//! token signed with a configured HS256 secret).

use std::time::Duration;

use anyhow::Context;
use strata_api::auth::{issue_hs256, Claims};
use strata_api::ApiOptions;
use strata_core::Config;
use tokio_util::sync::CancellationToken;

use crate::metrics_server;

/// The API's options from the configuration.
pub fn options(config: &Config) -> anyhow::Result<ApiOptions> {
    if config.object_store.kind.is_none() {
        anyhow::bail!(
            "invalid configuration: `object_store.kind` is required: the API reads the archive (\"s3\" or \"local\")"
        );
    }
    Ok(ApiOptions {
        api: config.api.clone(),
        hot_store_url: config.hot_store_url()?.clone(),
        object_store: config.object_store.clone(),
    })
}

/// Serves until `cancel`.
pub async fn run(config: &Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let options = options(config)?;
    let readiness = crate::readiness::Readiness::api(config).await?;
    let metrics = metrics_server::spawn(&config.metrics, "api", readiness, cancel.clone()).await?;
    let result = strata_api::serve(options, cancel.clone(), None)
        .await
        .context("run the history API");
    cancel.cancel();
    if let Some(handle) = metrics {
        let _ = handle.await;
    }
    result
}

/// Arguments of `strata token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Subject: the customer's user id, or the agent's id.
    #[arg(long)]
    sub: String,
    /// Scopes (repeatable): `activity:read:any`, `activity:export`.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Lifetime, e.g. `15m`, `1h`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// Key id in `api.jwt_hs256_secrets` (default: the first).
    #[arg(long)]
    kid: Option<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    strata_core::duration::parse(text)
}

/// Prints a signed token.
pub fn issue(args: TokenArgs, config: &Config) -> anyhow::Result<()> {
    let secrets = &config.api.jwt_hs256_secrets;
    let (kid, secret) = match &args.kid {
        Some(kid) => secrets
            .get_key_value(kid)
            .with_context(|| format!("api.jwt_hs256_secrets has no key {kid:?}"))?,
        None => secrets
            .iter()
            .next()
            .context("api.jwt_hs256_secrets is empty: configure a secret to sign with")?,
    };
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let claims = Claims {
        sub: args.sub,
        iss: config.api.jwt_issuer.clone(),
        aud: config.api.jwt_audience.clone(),
        exp: now + args.ttl.as_secs(),
        iat: Some(now),
        scope: args.scopes.join(" "),
    };
    let token = issue_hs256(kid, secret.expose(), &claims).context("sign token")?;
    println!("{token}");
    Ok(())
}
