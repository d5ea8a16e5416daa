//! The history API under test: a real `strata api` process on a free port,
//! tokens signed with the test's key, the generated tonic client, and the
//! Python grpcio client generated from the proto by the test itself.

use std::time::Duration;

use anyhow::Context;
use strata_api::auth::{issue_hs256, Claims};
use strata_proto::v1::history_service_client::HistoryServiceClient as HistoryClient;
use tonic::transport::Channel;

use crate::archive::S3Target;
use crate::{wait_until, StrataProcess, TestEnv};

/// The HS256 secret every test API trusts (key id `k1`).
pub const JWT_SECRET: &str = "test-secret-0123456789abcdef-0123456789";
/// The page-token key every test API signs with (unless a test rotates).
pub const PAGE_KEY: &str = "k1=page-token-secret-0123456789abcdef-0123";

/// A free loopback TCP port.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A running `strata api`.
pub struct ApiServer {
    /// The process.
    pub process: StrataProcess,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// Its port.
    pub port: u16,
}

impl ApiServer {
    /// Starts `strata api` for `env` reading `target`, with `extra`
    /// settings on top of the test defaults; waits until it serves.
    pub async fn start(
        env: &TestEnv,
        target: &S3Target,
        name: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_with_failpoints(env, target, name, extra, None).await
    }

    /// [`ApiServer::start`] with `STRATA_FAILPOINTS` set to `failpoints`.
    pub async fn start_with_failpoints(
        env: &TestEnv,
        target: &S3Target,
        name: &str,
        extra: &[(&str, &str)],
        failpoints: Option<&str>,
    ) -> anyhow::Result<Self> {
        // A port free when picked can be taken before the process binds
        // it (by another test, or by this process's own metrics port
        // picked the same way): try another.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_on(env, target, name, extra, failpoints, free_port()?).await {
                Err(err)
                    if attempt < 3 && format!("{err:#}").contains("Address already in use") =>
                {
                    continue
                }
                result => return result,
            }
        }
    }

    /// [`ApiServer::start_with_failpoints`] on `port` (a restart keeps the
    /// port its clients know).
    pub async fn start_on(
        env: &TestEnv,
        target: &S3Target,
        name: &str,
        extra: &[(&str, &str)],
        failpoints: Option<&str>,
        port: u16,
    ) -> anyhow::Result<Self> {
        let listen = format!("\"127.0.0.1:{port}\"");
        let page_keys = format!("[\"{PAGE_KEY}\"]");
        let mut settings: Vec<(String, String)> = target.settings();
        settings.extend(
            [
                ("api.listen", listen.as_str()),
                ("api.jwt_hs256_secrets.k1", JWT_SECRET),
                ("api.page_token_keys", page_keys.as_str()),
                ("api.rate_per_second", "100000"),
                ("api.rate_burst", "100000"),
                // Tests of other capabilities call in bursts from one
                // address; the caps have their own test (starvation.rs).
                ("api.peer_rate_per_second", "100000"),
                ("api.peer_burst", "100000"),
                ("api.max_calls_per_principal", "1000"),
                ("api.max_calls_in_flight", "10000"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        for (k, v) in extra {
            settings.retain(|(key, _)| key != k);
            settings.push((k.to_string(), v.to_string()));
        }
        let borrowed: Vec<(&str, &str)> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut process = StrataProcess::spawn_command(env, &["api"], name, &borrowed, failpoints)?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let up = wait_until(Duration::from_secs(30), || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        if !up || !process.is_running() {
            anyhow::bail!("strata api did not start: {}", process.log_tail());
        }
        Ok(Self {
            process,
            endpoint,
            port,
        })
    }

    /// A tonic client whose connection comes from `local` (any 127.x.y.z
    /// address is the loopback on Linux), so the server sees another peer.
    pub async fn client_from(
        &self,
        local: std::net::IpAddr,
    ) -> anyhow::Result<HistoryClient<Channel>> {
        client_at(&self.endpoint, local).await
    }

    /// A tonic client.
    pub async fn client(&self) -> anyhow::Result<HistoryClient<Channel>> {
        connect(&self.endpoint, None).await
    }
}

/// A client of the API at `endpoint` whose connection comes from `local`.
pub async fn client_at(
    endpoint: &str,
    local: std::net::IpAddr,
) -> anyhow::Result<HistoryClient<Channel>> {
    connect(endpoint, Some(local)).await
}

async fn connect(
    endpoint: &str,
    local: Option<std::net::IpAddr>,
) -> anyhow::Result<HistoryClient<Channel>> {
    let channel = Channel::from_shared(endpoint.to_string())?
        .local_address(local)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .context("connect to strata api")?;
    Ok(HistoryClient::new(channel))
}

/// A token for `sub` with `scopes`, valid for `ttl_secs` (negative:
/// expired), signed with the test key.
pub fn token(sub: &str, scopes: &[&str], ttl_secs: i64) -> String {
    token_with(sub, scopes, ttl_secs, "strata-history", JWT_SECRET)
}

/// A token with a chosen audience and secret.
pub fn token_with(sub: &str, scopes: &[&str], ttl_secs: i64, aud: &str, secret: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: sub.into(),
        iss: "strata".into(),
        aud: aud.into(),
        exp: (now + ttl_secs).max(1) as u64,
        iat: Some(now as u64),
        scope: scopes.join(" "),
    };
    match issue_hs256("k1", secret, &claims) {
        Ok(token) => token,
        Err(err) => panic!("sign test token: {err}"),
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Generates the Python grpcio stubs of the proto (plus nothing else) into
/// a fresh directory with grpc_tools, as a user of the API would.
pub async fn python_stubs() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("strata-pystubs")
        .tempdir()?;
    let python = std::env::var("STRATA_TEST_PYTHON").context("STRATA_TEST_PYTHON")?;
    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let output = tokio::process::Command::new(&python)
        .args([
            "-m",
            "grpc_tools.protoc",
            &format!("-I{proto_root}"),
            &format!("--python_out={}", dir.path().display()),
            &format!("--grpc_python_out={}", dir.path().display()),
            "strata/v1/history.proto",
            "strata/v1/subscription.proto",
        ])
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "grpc_tools.protoc: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(dir)
}

/// Runs `tests/py/<script>` with the stubs on the path and `args`;
/// returns stdout.
pub async fn python_client(
    stubs: &tempfile::TempDir,
    script: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let path = format!("{}/py/{script}", env!("CARGO_MANIFEST_DIR"));
    python_script(stubs, &path, args).await
}

/// Runs the Python script at `path` with the stubs on the path and
/// `args`; returns stdout.
pub async fn python_script(
    stubs: &tempfile::TempDir,
    path: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let python = std::env::var("STRATA_TEST_PYTHON").context("STRATA_TEST_PYTHON")?;
    let script = path.rsplit('/').next().unwrap_or(path);
    let output = tokio::process::Command::new(&python)
        .arg(path)
        .args(args)
        .env("PYTHONPATH", stubs.path())
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}
