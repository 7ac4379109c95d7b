#!/usr/bin/env bash
# S5 on PostgreSQL + S3 (BENCHMARKS.md, "S5 on PostgreSQL and S3"): the benchmark's S5 with the
# server on a fresh PostgreSQL schema and the S3 server of scripts/dev-services.sh, sending
# EDITS edits (default 1000) in each server phase, and printing the database's growth per edit.
#
#   scripts/bench-s5-scaled.sh [--server-bin PATH] [--work-dir DIR] …   (any nano-banana-bench flag)
#
# Needs PostgreSQL (NANO_BANANA_TEST_DATABASE_URL, default postgres://root@127.0.0.1:5432/test)
# and a release build (BENCH, default target/release/nano-banana-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/dev-services.sh env)"
base=${NANO_BANANA_TEST_DATABASE_URL:-postgres://root@127.0.0.1:5432/test}
schema="bench_s5_$(date +%s)_$$"
psql -q "$base" -c "CREATE SCHEMA $schema"
separator='?'
case "$base" in *'?'*) separator='&' ;; esac
export NANO_BANANA_DATABASE_URL="$base${separator}options=-c%20search_path%3D$schema"
export NANO_BANANA_STORAGE="s3://$NANO_BANANA_TEST_S3_BUCKET/$schema"
export NANO_BANANA_S3_ENDPOINT="$NANO_BANANA_TEST_S3_ENDPOINT"
export NANO_BANANA_S3_PATH_STYLE=true
export NANO_BANANA_S3_ACCESS_KEY_ID="$NANO_BANANA_TEST_S3_ACCESS_KEY_ID"
export NANO_BANANA_S3_SECRET_ACCESS_KEY="$NANO_BANANA_TEST_S3_SECRET_ACCESS_KEY"
echo "schema $schema, bucket prefix $schema" >&2
"${BENCH:-target/release/nano-banana-bench}" s5 --s5-requests "${EDITS:-1000}" "$@"
