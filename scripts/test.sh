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

say "pass 1: cargo test --workspace (SQLite + local folder; S3, Redis and multi-node tests)"
cargo test --workspace "$@"

say "pass 2: the API suite on PostgreSQL + S3 + Redis"
NANO_BANANA_TEST_STACK=scaled cargo test "$@" --test api
