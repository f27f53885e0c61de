#!/usr/bin/env bash
# The real Ory stack for sessiongate's tests and `scripts/demo.sh --real`.
#
#   scripts/ory.sh build   build Ory Kratos and Ory Hydra (versions pinned in tools/*/go.mod) from the Go
#                          module proxy with the ordinary `go` client, plus the login/consent acceptor
#                          (tools/acceptor), into target/ory/bin; up-to-date binaries are skipped.
#   scripts/ory.sh build-oathkeeper
#                          the same for Ory Oathkeeper (tools/oathkeeper; only the load benchmark uses it).
#   scripts/ory.sh start   render tests/ory/*.yml into the run directory, start Hydra, the acceptor and
#                          Kratos on 127.0.0.1 (in-memory databases, --dev, telemetry off), register
#                          the OAuth2 clients in Hydra, wait until all are ready, print their URLs.
#   scripts/ory.sh stop    stop exactly what `start` started (pid files in the run directory).
#   scripts/ory.sh env     print the URLs of a started stack (KEY=VALUE lines).
#
# Environment (defaults in brackets):
#   ORY_RUN_DIR [target/ory/run]         pid files, logs, rendered configs; one directory per stack
#   ORY_PUBLIC_URL [http://127.0.0.1:4455] the application's public origin (sessiongate), no trailing /
#   KRATOS_PUBLIC_PORT [4433] KRATOS_ADMIN_PORT [4434] HYDRA_PUBLIC_PORT [4444] HYDRA_ADMIN_PORT [4445]
#   ACCEPTOR_PORT [4446]
#   ORY_SERVICES ["hydra acceptor kratos"] which of them `start` starts
#   ORY_READY_TIMEOUT [120]              seconds to wait for readiness
# Any other variable reaches Kratos and Hydra, which read config overrides from the environment
# (e.g. SELFSERVICE_METHODS_OIDC_CONFIG_BASE_REDIRECT_URI).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/ory/bin"
RUN="${ORY_RUN_DIR:-$ROOT/target/ory/run}"
case "$RUN" in /*) ;; *) RUN="$ROOT/$RUN" ;; esac
PUBLIC_URL="${ORY_PUBLIC_URL:-http://127.0.0.1:4455}"
PUBLIC_URL="${PUBLIC_URL%/}"
KRATOS_PUBLIC_PORT="${KRATOS_PUBLIC_PORT:-4433}"
KRATOS_ADMIN_PORT="${KRATOS_ADMIN_PORT:-4434}"
HYDRA_PUBLIC_PORT="${HYDRA_PUBLIC_PORT:-4444}"
HYDRA_ADMIN_PORT="${HYDRA_ADMIN_PORT:-4445}"
ACCEPTOR_PORT="${ACCEPTOR_PORT:-4446}"
SERVICES="${ORY_SERVICES:-hydra acceptor kratos}"
READY_TIMEOUT="${ORY_READY_TIMEOUT:-120}"

say() { echo "ory.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# build

# go_tool_version DIR MODULE: the version of MODULE that tools/DIR/go.mod pins.
go_tool_version() {
  (cd "$ROOT/tools/$1" && go list -m -f '{{.Version}}' "$2")
}

# build_one DIR NAME PACKAGE LDFLAGS: builds tools/DIR's PACKAGE into target/ory/bin/NAME unless the
# binary was built from the same go.mod, go.sum, sources, flags and go version (stamp file beside it).
build_one() {
  local dir="$ROOT/tools/$1" name="$2" pkg="$3" ldflags="$4"
  local tags="sqlite,json1"
  local stamp="$BIN/.$name.stamp"
  local want
  want="$(cat "$dir/go.mod" "$dir/go.sum" "$dir"/*.go 2>/dev/null | sha256sum | cut -d' ' -f1) $tags $ldflags $(go env GOVERSION)"
  if [ -x "$BIN/$name" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "$name is up to date ($BIN/$name)"
    return 0
  fi
  say "building $name ($pkg) ..."
  local started=$SECONDS
  (cd "$dir" && CGO_ENABLED=1 CGO_CPPFLAGS="-DSQLITE_DEFAULT_FILE_PERMISSIONS=0600" \
    go build -trimpath -tags "$tags" -ldflags "-s -w $ldflags" -o "$BIN/$name.tmp" "$pkg")
  mv "$BIN/$name.tmp" "$BIN/$name"
  echo "$want" > "$stamp"
  say "built $name in $((SECONDS - started)) s"
}

check_go() {
  command -v go >/dev/null 2>&1 || die "Go is not installed: the real Ory stack is built with Go >= 1.24 (https://go.dev/doc/install, or Debian's golang-go when new enough)"
  command -v gcc >/dev/null 2>&1 || die "gcc is missing: Kratos and Hydra need cgo for SQLite (apt-get install gcc)"
}

cmd_build() {
  check_go
  mkdir -p "$BIN"
  # -buildvcs=false: the tools modules are inside this repository's checkout.
  export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
  local kv hv
  kv="$(go_tool_version kratos github.com/ory/kratos)"
  hv="$(go_tool_version hydra github.com/ory/hydra/v2)"
  build_one kratos kratos github.com/ory/kratos "-X github.com/ory/kratos/driver/config.Version=$kv"
  build_one hydra hydra github.com/ory/hydra/v2 "-X github.com/ory/hydra/v2/driver/config.Version=$hv"
  build_one acceptor ory-acceptor . ""
  "$BIN/kratos" version | sed 's/^/  kratos: /' >&2
  "$BIN/hydra" version | sed 's/^/  hydra: /' >&2
}

# Ory Oathkeeper, for the load benchmark only (not needed by the tests).
cmd_build_oathkeeper() {
  check_go
  mkdir -p "$BIN"
  export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
  local ov
  ov="$(go_tool_version oathkeeper github.com/ory/oathkeeper)"
  build_one oathkeeper oathkeeper github.com/ory/oathkeeper "-X github.com/ory/oathkeeper/x.Version=$ov"
  "$BIN/oathkeeper" version | sed 's/^/  oathkeeper: /' >&2
}

# ---------------------------------------------------------------------------------------------
# start / stop

render() {
  sed -e "s#@PUBLIC_URL@#$PUBLIC_URL#g" \
    -e "s#@KRATOS_PUBLIC_PORT@#$KRATOS_PUBLIC_PORT#g" -e "s#@KRATOS_ADMIN_PORT@#$KRATOS_ADMIN_PORT#g" \
    -e "s#@HYDRA_PUBLIC_PORT@#$HYDRA_PUBLIC_PORT#g" -e "s#@HYDRA_ADMIN_PORT@#$HYDRA_ADMIN_PORT#g" \
    -e "s#@ACCEPTOR_PORT@#$ACCEPTOR_PORT#g" -e "s#@ORY_CONFIG_DIR@#$ROOT/tests/ory#g" \
    "$ROOT/tests/ory/$1" > "$RUN/$1"
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

launch() {
  local name="$1"; shift
  if alive "$name"; then die "$name is already running (pid $(cat "$RUN/$name.pid"), $RUN); run 'scripts/ory.sh stop' first"; fi
  # setsid: its own process group, so `stop` reaches everything it forks; no terminal signals.
  SQA_OPT_OUT=true setsid "$@" > "$RUN/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}

wait_ready() {
  local name="$1" url="$2" deadline=$((SECONDS + READY_TIMEOUT))
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if ! alive "$name"; then
      tail -n 30 "$RUN/$name.log" >&2 || true
      die "$name exited before it was ready (log: $RUN/$name.log)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$RUN/$name.log" >&2 || true
      die "$name not ready at $url after ${READY_TIMEOUT}s (log: $RUN/$name.log)"
    fi
    sleep 0.2
  done
}

has() { case " $SERVICES " in *" $1 "*) return 0 ;; esac; return 1; }

write_env() {
  cat > "$RUN/env" <<EOF
ORY_PUBLIC_URL=$PUBLIC_URL
KRATOS_PUBLIC_URL=http://127.0.0.1:$KRATOS_PUBLIC_PORT
KRATOS_ADMIN_URL=http://127.0.0.1:$KRATOS_ADMIN_PORT
HYDRA_PUBLIC_URL=http://127.0.0.1:$HYDRA_PUBLIC_PORT
HYDRA_ADMIN_URL=http://127.0.0.1:$HYDRA_ADMIN_PORT
ACCEPTOR_URL=http://127.0.0.1:$ACCEPTOR_PORT
EOF
}

# OAuth2 clients of a fresh (in-memory) Hydra, with the real Hydra CLI:
#  - kratos-test-client: Kratos's `hydra` OIDC provider (confidential; the callback on the public origin)
#  - sessiongate-native-app: a public client (no secret, PKCE) for native apps
create_clients() {
  local e="http://127.0.0.1:$HYDRA_ADMIN_PORT"
  "$BIN/hydra" create oauth2-client -e "$e" --format json-pretty \
    --id kratos-test-client --secret kratos-test-secret-0123456789 \
    --grant-type authorization_code,refresh_token --response-type code \
    --scope openid,email,offline_access \
    --redirect-uri "$PUBLIC_URL/.ory/self-service/methods/oidc/callback/hydra" \
    --token-endpoint-auth-method client_secret_basic > "$RUN/client-kratos.json"
  "$BIN/hydra" create oauth2-client -e "$e" --format json-pretty \
    --id sessiongate-native-app \
    --grant-type authorization_code,refresh_token --response-type code \
    --scope openid,email,offline_access \
    --redirect-uri "myapp://callback,$PUBLIC_URL/app/oauth2-callback" \
    --token-endpoint-auth-method none > "$RUN/client-native.json"
}

cmd_start() {
  for b in kratos hydra ory-acceptor; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run 'scripts/ory.sh build' first"
  done
  mkdir -p "$RUN"
  render kratos.yml
  render hydra.yml
  write_env
  local started=$SECONDS
  if has hydra; then
    launch hydra "$BIN/hydra" serve all -c "$RUN/hydra.yml" --dev --sqa-opt-out
  fi
  if has acceptor; then
    launch acceptor "$BIN/ory-acceptor" -listen "127.0.0.1:$ACCEPTOR_PORT" \
      -hydra-admin "http://127.0.0.1:$HYDRA_ADMIN_PORT"
  fi
  if has kratos; then
    launch kratos "$BIN/kratos" serve -c "$RUN/kratos.yml" --dev --sqa-opt-out
  fi
  trap 'say "start failed; stopping what was started"; cmd_stop' ERR
  if has hydra; then
    wait_ready hydra "http://127.0.0.1:$HYDRA_ADMIN_PORT/health/ready"
    create_clients
  fi
  has acceptor && wait_ready acceptor "http://127.0.0.1:$ACCEPTOR_PORT/health"
  has kratos && wait_ready kratos "http://127.0.0.1:$KRATOS_ADMIN_PORT/admin/health/ready"
  trap - ERR
  say "ready in $((SECONDS - started)) s ($SERVICES; run directory $RUN)"
  cat "$RUN/env"
}

cmd_stop() {
  [ -d "$RUN" ] || return 0
  local pidfile pid name
  for pidfile in "$RUN"/*.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    name="$(basename "$pidfile" .pid)"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      say "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  build) cmd_build ;;
  build-oathkeeper) cmd_build_oathkeeper ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cat "$RUN/env" ;;
  *) die "usage: scripts/ory.sh build|build-oathkeeper|start|stop|env" ;;
esac
