#!/usr/bin/env bash
# The test command (README, CI): the whole suite, twice where it matters.
#
#   1. `cargo test --workspace`: unit tests (crates/testkit's too), the API suite on SQLite + a
#      local folder, the S3, Redis and multi-node tests, the fuzz and benchmark smoke tests.
#   2. `NANO_BANANA_TEST_STACK=scaled cargo test --test api`: the same API suite again, every
#      test on PostgreSQL + S3 + Redis (a fresh schema, bucket prefix and key prefix each).
#
# Services: PostgreSQL (NANO_BANANA_TEST_DATABASE_URL, default postgres://root@127.0.0.1:5432/test)
# and Redis (NANO_BANANA_TEST_REDIS_URL, default redis://127.0.0.1:6379) must be running; an S3
# server (SeaweedFS from PyPI) is started here by scripts/dev-services.sh and stopped at the end
# unless one was already running. Nothing is skipped: a missing service fails the run.
#
# The SDK tests (tests/api/sdk.rs) run the official Python SDKs: they need Python 3, and a venv
# with tests/sdk/requirements.txt installed, made here once (in $NANO_BANANA_DEV_DIR/sdk-venv,
# default ${TMPDIR:-/tmp}/nano-banana-dev/sdk-venv, beside the S3 server's state) and made again
# when that file changes. Its python is exported to both passes as NANO_BANANA_TEST_PYTHON (a
# NANO_BANANA_TEST_PYTHON already set is used as it is).
# Extra arguments go to both cargo invocations (e.g. --locked).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "test.sh: $*" >&2; }

database_url=${NANO_BANANA_TEST_DATABASE_URL:-postgres://root@127.0.0.1:5432/test}
redis_url=${NANO_BANANA_TEST_REDIS_URL:-redis://127.0.0.1:6379}
# host:port of a URL, with a default port.
address() {
    local rest=${1#*://}
    rest=${rest##*@}
    rest=${rest%%/*}
    rest=${rest%%\?*}
    [[ $rest == *:* ]] || rest="$rest:$2"
    echo "$rest"
}
for service in "PostgreSQL $(address "$database_url" 5432)" "Redis $(address "$redis_url" 6379)"; do
    name=${service%% *}
    hostport=${service#* }
    if ! timeout 3 bash -c "exec 3<>/dev/tcp/${hostport%:*}/${hostport##*:}" 2>/dev/null; then
        say "ERROR: $name does not answer at $hostport; start it (README: Scaling out) or set"
        say "NANO_BANANA_TEST_DATABASE_URL / NANO_BANANA_TEST_REDIS_URL. The tests never skip."
        exit 1
    fi
done

# S3: SeaweedFS, started (and installed on first use) unless one already answers.
started_s3=false
if ! scripts/dev-services.sh status >/dev/null 2>&1; then
    scripts/dev-services.sh start
    started_s3=true
fi
if $started_s3 && [[ -z ${NANO_BANANA_KEEP_SERVICES:-} ]]; then
    trap 'scripts/dev-services.sh stop || true' EXIT
fi
eval "$(scripts/dev-services.sh env)"

# The official SDKs, pinned, in a venv of their own (scripts/pinned-venv.sh).
# shellcheck source=scripts/pinned-venv.sh
source scripts/pinned-venv.sh
sdk_venv() {
    local venv=${NANO_BANANA_DEV_DIR:-${TMPDIR:-/tmp}/nano-banana-dev}/sdk-venv
    pinned_venv tests/sdk/requirements.txt "$venv" "the SDK tests" \
        "$venv/bin/python" -c 'import openai, google.genai'
    NANO_BANANA_TEST_PYTHON=$venv/bin/python
}
if [[ -z ${NANO_BANANA_TEST_PYTHON:-} ]]; then
    sdk_venv
fi
export NANO_BANANA_TEST_PYTHON
say "the SDK tests use $NANO_BANANA_TEST_PYTHON"

# What the tests leave in the shared PostgreSQL and Redis (a schema, a key prefix per test) is
# noted in this file (crates/testkit/src/leftovers.rs) and removed when the run ends, passed or
# failed: only what this run made, so runs beside it keep theirs.
leftovers=$(mktemp "${TMPDIR:-/tmp}/nano-banana-leftovers.XXXXXX")
export NANO_BANANA_TEST_LEFTOVERS=$leftovers
remove_leftovers() {
    local schemas prefixes removed_keys=0
    schemas=$(awk '$1 == "schema" && $2 ~ /^[a-z0-9_]+$/ {print $2}' "$leftovers" | sort -u)
    prefixes=$(awk '$1 == "redis-prefix" {print $2}' "$leftovers" | sort -u)
    if [[ -n $schemas ]]; then
        { echo "SET client_min_messages = warning;"
          for schema in $schemas; do echo "DROP SCHEMA IF EXISTS $schema CASCADE;"; done
        } | psql -q -X -v ON_ERROR_STOP=0 "$database_url" >/dev/null ||
            say "WARNING: some test schemas could not be dropped"
    fi
    if [[ -n $prefixes ]]; then
        # One scan over the test keys; delete those under a prefix this run noted.
        local keys
        keys=$(redis-cli -u "$redis_url" --scan --pattern 'nb-test:*' |
            awk 'NR == FNR {p[$0]; next} {split($0, a, ":"); if ((a[1] ":" a[2] ":") in p) print}' \
                <(echo "$prefixes") -)
        if [[ -n $keys ]]; then
            removed_keys=$(echo "$keys" | wc -l)
            echo "$keys" | xargs -r -n 500 redis-cli -u "$redis_url" DEL >/dev/null ||
                say "WARNING: some test keys could not be removed from Redis"
        fi
    fi
    say "removed this run's leftovers: $(echo "$schemas" | grep -c . || true) PostgreSQL schemas, $removed_keys Redis keys"
    rm -f "$leftovers"
}

run_passes() {
    say "pass 1: cargo test --workspace (SQLite + local folder; S3, Redis and multi-node tests)"
    # Called where errexit does not apply (`||`): each failure returns by itself.
    cargo test --workspace "$@" || return

    say "pass 2: the API suite on PostgreSQL + S3 + Redis"
    NANO_BANANA_TEST_STACK=scaled cargo test "$@" --test api || return
}
status=0
run_passes "$@" || status=$?
remove_leftovers
exit "$status"
