#!/usr/bin/env bash
# The load a large organisation puts on jitgate, against server processes as deployed (see
# bench/load/main.go and bench/README.md):
#   1. request cycles per second through the REST API (submit, approve = activate, revoke),
#      16 clients, on SQLite (one server) and on PostgreSQL (one and two replicas), the three
#      set-ups alternating round by round;
#   2. revoke on replica A to session closed on replica B, over REVOKE_ROUNDS grants;
#   3. 10,000 grants ending together, 1,000 of them with a live gateway session (SQLite, one
#      server; PostgreSQL, two replicas), EXPIRY_ROUNDS times each; and 1,000 ephemeral users
#      ending together (PostgreSQL, two replicas);
#   4. chaos (CHAOS=0 leaves it out): a replica SIGKILLed in the middle of (1), and in the middle
#      of (3) with the sessions and the ephemeral users together; then the checks.
#   (The audit log at 10 million events is separate: go run ./bench/load -mode audit; see README.)
#
#   bench/load.sh                                   # 3 rounds of 10 s each, 200 revokes
#   ROUNDS=5 SECONDS_EACH=20s REVOKE_ROUNDS=500 EXPIRY_ROUNDS=5 bench/load.sh
#   EXPIRY_ROUNDS=0 CHAOS=0 bench/load.sh           # (1) and (2) only
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
# (3) starts a throwaway PostgreSQL cluster (max_connections raised for the sessions) as the
# databases behind the grants; each run takes about a minute, most of it setting up.
for r in $(seq 1 "${EXPIRY_ROUNDS:-3}"); do
  "$work/load" -mode expiry -store sqlite -replicas 1 -ephemeral 0 -bin "$work/jitgate" | grep all_expired
  "$work/load" -mode expiry -store postgres -replicas 2 -ephemeral 0 -bin "$work/jitgate" | grep all_expired
done
if [ "${EXPIRY_ROUNDS:-3}" != 0 ]; then
  "$work/load" -mode expiry -store postgres -replicas 2 -grants 0 -sessions 0 -ephemeral 1000 -bin "$work/jitgate" | grep all_expired
fi
if [ "${CHAOS:-1}" = 1 ]; then
  # Chaos: SIGKILL the second replica 4 s into a cycles run; then the audit chain must verify,
  # no grant be active past its end, and every stored notification be delivered (the dead
  # replica's claims wait out their one-minute lease first).
  "$work/load" -mode cycles -store postgres -replicas 2 -seconds "$secs" -kill 4s -bin "$work/jitgate"
  # Chaos during (3): SIGKILL the second replica 300 ms after the grants' end, with the
  # sessions and 1,000 ephemeral users ending too; then every grant must be expired, every
  # session closed and recorded, every user dropped and verified once, and the audit verify.
  "$work/load" -mode expiry -store postgres -replicas 2 -kill 300ms -bin "$work/jitgate"
fi
