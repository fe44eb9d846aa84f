#!/usr/bin/env bash
# Runs jitgate's Go benchmarks against SQLite and the local PostgreSQL
# (JITGATE_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432/test). Every figure comes
# with its direct-path baseline from the same run; compare ratios, not absolute times.
#   bench/run.sh            # one pass, ~1 minute
#   COUNT=5 bench/run.sh    # five passes, for benchstat
set -euo pipefail
cd "$(dirname "$0")/.."
count="${COUNT:-1}"
benchtime="${BENCHTIME:-2s}"
go test -run '^$' -bench 'BenchmarkDecision' -benchtime "$benchtime" -count "$count" ./policy/
go test -run '^$' -bench 'BenchmarkCycle|BenchmarkCommit|BenchmarkRecordStatements' -benchtime "$benchtime" -count "$count" ./access/
go test -run '^$' -bench 'BenchmarkParse' -benchtime "$benchtime" -count "$count" ./store/internal/statements/
go test -run '^$' -bench 'BenchmarkRelayTransaction|BenchmarkSocketCalls' -benchtime "$benchtime" -count "$count" ./gateway/postgres/
go test -run '^$' -bench 'BenchmarkAPICycle' -benchtime "$benchtime" -count "$count" ./httpapi/
