#!/usr/bin/env bash
# API fuzzing (CI, README: Testing): schemathesis, pinned from PyPI, against our own
# /openapi.json — every operation, every check, the stateful phase over the document's `links`.
#
#   scripts/schemathesis.sh            build target/debug/nano-banana, start it, fuzz it, stop it
#
# The server runs in placeholder mode (no upstream key) on SQLite and a local folder in a temp
# dir, on a free loopback port, with an admin key made for the run. An application and a token
# for the fuzzer are made through the admin API. Two runs follow, each with its JUnit report in
# target/schemathesis/: the API operations with that token (api.xml), then the admin operations
# with the admin key (admin.xml) — last, because the fuzzer may disable or revoke what it finds.
# Auth and the per-operation settings are in tests/schemathesis/schemathesis.toml. Any failure
# exits non-zero; the server's log is kept as target/schemathesis/server.log.
#
# No network but loopback: where the machine allows it (root, or unprivileged user namespaces),
# the server and the fuzzer run in a network namespace of their own (`unshare`), so the image
# URLs and callback URLs the fuzzer invents cannot reach any outside host; the server's own
# outbound policy refuses private addresses anyway. Elsewhere it says so and runs as it is.
#
# Settings (environment): NANO_BANANA_SCHEMATHESIS_MAX_EXAMPLES (test cases per operation and
# phase, default 30; the run takes a few minutes on 2 cores), NANO_BANANA_SCHEMATHESIS_SEED (a
# seed to replay a run; default random, printed). The venv is made once in
# $NANO_BANANA_DEV_DIR/schemathesis-venv (default ${TMPDIR:-/tmp}/nano-banana-dev/…) and made
# again when tests/schemathesis/requirements.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "schemathesis.sh: $*" >&2; }

reports=target/schemathesis
config=tests/schemathesis/schemathesis.toml
max_examples=${NANO_BANANA_SCHEMATHESIS_MAX_EXAMPLES:-30}
seed=${NANO_BANANA_SCHEMATHESIS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}

# Inside the network namespace (or without one): start the server, fuzz it, stop it.
if [[ ${1:-} == --inner ]]; then
    venv=$2
    if [[ ${3:-} == isolated ]]; then
        ip link set lo up
    fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/nano-banana-schemathesis.XXXXXX")
    server_pid=
    stop() {
        if [[ -n $server_pid ]]; then
            kill "$server_pid" 2>/dev/null || true
            wait "$server_pid" 2>/dev/null || true
        fi
        cp "$work/server.log" "$reports/server.log" 2>/dev/null || true
        rm -rf "$work"
    }
    trap stop EXIT

    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    base=http://127.0.0.1:$port
    admin_key=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    # A clean environment: no upstream key (placeholder mode), no NANO_BANANA_* of the caller's.
    # Input downloads give up after 3 s, so a URL that goes nowhere costs little.
    env -i PATH="$PATH" HOME="${HOME:-/tmp}" RUST_LOG=info \
        target/debug/nano-banana serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
        --admin-key "$admin_key" --fetch-timeout 3 >"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "$base/readyz" 2>/dev/null && break
        kill -0 "$server_pid" 2>/dev/null || {
            cat "$work/server.log" >&2
            say "ERROR: the server did not start"
            exit 1
        }
        sleep 0.2
    done
    curl -fsS -o /dev/null "$base/readyz" || {
        say "ERROR: the server is not ready after 20 s"
        exit 1
    }

    # The fuzzer's application and token, through the admin API.
    admin() {
        curl -fsS -X POST -H "authorization: Bearer $admin_key" \
            -H 'content-type: application/json' --data "$2" "$base$1"
    }
    field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
    app_id=$(admin /admin/apps '{"name": "schemathesis", "credits": 1000000000}' | field id)
    token=$(admin "/admin/apps/$app_id/tokens" '{"name": "schemathesis"}' | field token)

    export NANO_BANANA_FUZZ_TOKEN=$token NANO_BANANA_FUZZ_ADMIN_KEY=$admin_key
    status=0
    for run in api admin; do
        if [[ $run == api ]]; then
            filter=(--exclude-path-regex '^/admin/')
        else
            filter=(--include-path-regex '^/admin/')
        fi
        say "run '$run': max $max_examples examples per operation and phase, seed $seed"
        "$venv/bin/schemathesis" --config-file "$config" run "$base/openapi.json" \
            "${filter[@]}" --max-examples "$max_examples" --seed "$seed" \
            --report junit --report-junit-path "$reports/$run.xml" || status=1
    done
    exit "$status"
fi

# The pinned schemathesis in a venv of its own (scripts/pinned-venv.sh).
# shellcheck source=scripts/pinned-venv.sh
source scripts/pinned-venv.sh
venv=${NANO_BANANA_DEV_DIR:-${TMPDIR:-/tmp}/nano-banana-dev}/schemathesis-venv
for tool in curl python3; do
    command -v "$tool" >/dev/null || {
        say "ERROR: $tool is needed"
        exit 1
    }
done
pinned_venv tests/schemathesis/requirements.txt "$venv" schemathesis "$venv/bin/schemathesis" --version
say "$("$venv/bin/schemathesis" --version)"

say "cargo build --locked --bin nano-banana"
cargo build --locked --bin nano-banana

rm -rf "$reports"
mkdir -p "$reports"
started=$(date +%s)
status=0
export NANO_BANANA_SCHEMATHESIS_SEED=$seed
if unshare -rn ip link set lo up 2>/dev/null; then
    say "the server and the fuzzer run in a network namespace of their own: loopback only"
    unshare -rn "$0" --inner "$venv" isolated || status=$?
else
    say "WARNING: no network namespace here (unshare -rn failed): the server runs with the"
    say "machine's network; its outbound policy still refuses private addresses"
    "$0" --inner "$venv" || status=$?
fi
say "reports: $reports/api.xml, $reports/admin.xml; server log: $reports/server.log"
say "took $(($(date +%s) - started)) s"
if [[ $status -ne 0 ]]; then
    say "FAILED: schemathesis found failures (above; reproduce with NANO_BANANA_SCHEMATHESIS_SEED=$seed)"
    exit 1
fi
say "ok: no failures"
