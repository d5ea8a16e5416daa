# syntax=docker/dockerfile:1
#
# The `strata` binary on Debian bookworm-slim, as the non-root user strata
# (uid 10001). Build from the repository root:
#
#   docker build -t strata:dev .
#   docker run --rm strata:dev --help
#
# One image for every role: the command is the subcommand (migrate, relay,
# archiver, api, run, ...). Configuration: STRATA_* variables, or a TOML file
# mounted at /etc/strata/strata.toml with STRATA_CONFIG=/etc/strata/strata.toml.
# Inside a container, set api.listen and metrics.listen to 0.0.0.0:<port>
# (STRATA_API__LISTEN, STRATA_METRICS__LISTEN): the defaults are loopback.
# See deploy/compose.yml.

ARG RUST_VERSION=1.94

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# The whole workspace: every member's manifest is needed to resolve it.
COPY . .
# The registry and target caches survive between builds (BuildKit or
# buildah); the binary is copied out of the cached target in the same step.
# Its line tables are stripped (symbols stay, so backtraces name functions):
# 52 MB instead of 254 MB.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo cargo build --release -p strata-cli --locked \
 && install -D -m 0755 target/release/strata /out/strata

FROM debian:bookworm-slim
# ca-certificates: system roots for S3 over HTTPS and Postgres TLS
# (postgres.sslrootcert = "system"). Nothing else: no shell tools, no curl.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 strata \
 && useradd --system --uid 10001 --gid strata --no-create-home \
        --home-dir /var/lib/strata --shell /usr/sbin/nologin strata \
 && install -d -o strata -g strata -m 0750 /var/lib/strata \
 && install -d -m 0755 /etc/strata
COPY --from=builder /out/strata /usr/local/bin/strata
USER 10001:10001
WORKDIR /var/lib/strata
# api.listen (gRPC) and metrics.listen (GET /metrics, GET /healthz).
EXPOSE 50051 9464
# Liveness: GET /healthz on the metrics port, with bash's /dev/tcp (the image
# has no curl). It answers "ok" while the process runs; it does not check the
# databases. Override or disable it when metrics.listen is not port 9464.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && grep -q '^ok' <&3"]
# SIGTERM stops gracefully (the relay finishes its batch in flight); give
# containers a stop timeout of 30 s or more.
STOPSIGNAL SIGTERM
ENTRYPOINT ["strata"]
CMD ["--help"]
