#!/usr/bin/env bash
# The load a large organisation puts on jitgate, against server processes as deployed (see
# bench/load/main.go and bench/README.md):
#   1. request cycles per second through the REST API (submit, approve = activate, revoke),
#      16 clients, on SQLite (one server) and on PostgreSQL (one and two replicas), the three
#      set-ups alternating round by round;
#   2. revoke on replica A to session closed on replica B, over REVOKE_ROUNDS grants;
#   3. chaos (CHAOS=0 leaves it out): a replica SIGKILLed in the middle of (1), then the checks.
#
#   bench/load.sh                                   # 3 rounds of 10 s each, 200 revokes
#   ROUNDS=5 SECONDS_EACH=20s REVOKE_ROUNDS=500 bench/load.sh
#
# Needs the local PostgreSQL (JITGATE_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432/test):
# each run creates and drops a database of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-3}"
secs="${SECONDS_EACH:-10s}"
revoke_rounds="${REVOKE_ROUNDS:-200}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
go build -o "$work/jitgate" ./cmd/jitgate
go build -o "$work/load" ./bench/load
echo "# $(date -u +%FT%TZ) $(nproc) CPUs; ROUNDS=$rounds SECONDS_EACH=$secs REVOKE_ROUNDS=$revoke_rounds"
for r in $(seq 1 "$rounds"); do
  for setup in "sqlite 1" "postgres 1" "postgres 2"; do
    set -- $setup
    "$work/load" -mode cycles -store "$1" -replicas "$2" -seconds "$secs" -bin "$work/jitgate"
  done
done | tee "$work/cycles.txt"
echo "# request cycles per second: mean (standard error) over rounds"
awk '{
  for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
  key = f["store"] " replicas=" f["replicas"]; sub("/s", "", f["rate"])
  n[key]++; s[key] += f["rate"]; ss[key] += f["rate"] * f["rate"]
} END {
  for (k in n) {
    m = s[k] / n[k]; var = (n[k] > 1) ? (ss[k] - n[k] * m * m) / (n[k] - 1) : 0
    printf "  %-22s %8.1f/s (SE %.1f, %d rounds)\n", k, m, sqrt(var > 0 ? var : 0) / sqrt(n[k]), n[k]
  }
}' "$work/cycles.txt" | sort
"$work/load" -mode revoke -replicas 2 -rounds "$revoke_rounds" -bin "$work/jitgate"
if [ "${CHAOS:-1}" = 1 ]; then
  # Chaos: SIGKILL the second replica 4 s into a cycles run; then the audit chain must verify,
  # no grant be active past its end, and every stored notification be delivered (the dead
  # replica's claims wait out their one-minute lease first).
  "$work/load" -mode cycles -store postgres -replicas 2 -seconds "$secs" -kill 4s -bin "$work/jitgate"
fi
