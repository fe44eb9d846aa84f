#!/usr/bin/env bash
# Compares, in one run against the local PostgreSQL, these paths to the same database:
#   direct     pgbench → PostgreSQL
#   pgbouncer  pgbench → PgBouncer (session mode) → PostgreSQL
#   relay      pgbench → a bare Go io.Copy relay (bench/relay) → PostgreSQL: the floor for a
#              proxy built on a goroutine per direction
#   epoll      pgbench → the same bare relay on epoll event-loop threads (bench/relay -epoll):
#              the floor for the gateway's default design
#   uring      pgbench → the same bare relay on io_uring event-loop threads (bench/relay -uring,
#              Linux 6.1+); only when PATHS names it
#   gw-gor     pgbench → jitgate's gateway relaying on goroutines (relay: goroutines)
#   gateway    pgbench → jitgate's gateway as configured by default (relay: loop, event-loop
#              thread with epoll)
#   gw-base    pgbench → the same gateway built from git revision BASE_REV (default HEAD~1), to
#              compare a change with its base in one run (BASE_REV=... PATHS="gw-base gateway")
#   pgbouncer-tls, gw-tls
#              PgBouncer and the gateway as deployed: TLS from pgbench (sslmode=require, a
#              throwaway self-signed certificate), plaintext to PostgreSQL; only when PATHS
#              names them (PATHS="pgbouncer-tls gw-tls")
# Both gateways record every statement in the audit log and reuse upstream connections.
# Every hop is plaintext on loopback, so the comparison is of the proxies, not of TLS.
# For each: select-only throughput with 8 clients (pgbench -S -c 8 -j 2), single-client latency
# (-S -c 1: mean, median and 99.9th percentile of every transaction's time), and new-connection
# rate (-S -C -c 8). Figures are printed as ratios to direct from the same round; paths
# alternate within each round so drift hits all alike, and the proxies run in reverse order
# every other round.
#
#   bench/pgbench.sh                 # 10 s per measurement, 1 round (~3 minutes)
#   SECONDS_EACH=20 ROUNDS=3 bench/pgbench.sh
#   PATHS="pgbouncer gateway" bench/pgbench.sh   # only these (and direct)
#   CPU_RATE=12000 bench/pgbench.sh  # also each proxy's CPU per transaction (needs perf)
#   LOOPS=1 bench/pgbench.sh         # the gateways' event-loop threads (default: one per CPU)
#   PROXY_SESSION=shared bench/pgbench.sh  # run the proxies in this script's session (see below)
#   CPU_RATE=8000 PROFILE=/tmp/prof bench/pgbench.sh  # and, after the rounds, where each
#                                    # proxy's CPU goes at that rate (perf record; see below)
#
# On two cores shared by pgbench, PostgreSQL and the proxy, one round's throughput ratio
# between two proxies spreads by about 10%; comparing the gateway with PgBouncer takes ten
# rounds or more, an even number (the summary gives the per-round ratio's median and geometric
# mean with its standard error).
#
# Each proxy runs in a session of its own (setsid), as a service would: with the kernel's
# autogroup scheduling on (/proc/sys/kernel/sched_autogroup_enabled), a session is a scheduling
# group, and a proxy started in the session that runs pgbench would share pgbench's share of
# the CPU. That moves the proxies' figures by several percent, and not all alike (bench/README.md);
# PROXY_SESSION=shared runs them in this script's session instead.
#
# CPU_RATE=N adds a measurement per proxy and round: pgbench -S -c 8 held at N transactions a
# second while `perf stat` counts the proxy process's CPU time, printed as microseconds per
# transaction and as a ratio to PgBouncer's. Unlike throughput at saturation, where every
# process competes for the two cores, this is steady from run to run (about ±0.5 µs), so it
# shows small changes; pick N below every path's saturation.
#
# PROFILE=DIR (with CPU_RATE) then holds each proxy at CPU_RATE once more under `perf record -g`
# and writes DIR/PATH.data and DIR/PATH.txt, the proxy's samples by shared object and symbol;
# it prints the samples turned into microseconds of CPU per transaction (a sample at 4,999 Hz
# is about 200 us), so two proxies' profiles compare in the same units.
#
# Needs: pgbench and psql (postgresql-client), a PostgreSQL on 127.0.0.1:5432 reachable as
# postgres without a password, Go. PgBouncer is installed from Debian's packages if missing
# (as root); without it that path is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
T="${SECONDS_EACH:-10}"
ROUNDS="${ROUNDS:-1}"
PGHOST_DIRECT=127.0.0.1 PGPORT_DIRECT=5432
DB=jg_bench
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# detach starts a proxy in a session of its own. A background job of a script is not a process
# group leader, so setsid makes the new session itself and runs the command in its own process:
# $! stays the proxy's.
detach=(setsid)
case "${PROXY_SESSION:-own}" in
  own) command -v setsid >/dev/null || { echo "setsid (util-linux) is needed; or PROXY_SESSION=shared" >&2; exit 2; } ;;
  shared) detach=() ;;
  *) echo "PROXY_SESSION must be own or shared, not '$PROXY_SESSION'" >&2; exit 2 ;;
esac

psql_admin() { psql -X -q -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# The database and the login the gateway injects: it can read, nothing more.
psql_admin -Atc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1 || psql_admin -c "CREATE DATABASE $DB"
psql_admin -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'jg_bench_read') THEN CREATE ROLE jg_bench_read LOGIN; END IF; END \$\$" \
  -c "GRANT pg_read_all_data TO jg_bench_read"
if ! psql -X -h 127.0.0.1 -U postgres -d "$DB" -Atc "SELECT 1 FROM pgbench_accounts LIMIT 1" >/dev/null 2>&1; then
  echo "initializing pgbench tables (scale 10)"
  pgbench -q -i -s 10 -h 127.0.0.1 -U postgres "$DB"
fi

# PgBouncer, session mode, trusting local clients.
declare -A proxy_pid # path → the process to measure with CPU_RATE
if ! command -v pgbouncer >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y pgbouncer >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y pgbouncer >/dev/null 2>&1; } || true
fi
PGBOUNCER=$(command -v pgbouncer || ls /usr/sbin/pgbouncer 2>/dev/null || true)
[ -n "$PGBOUNCER" ] || echo "PgBouncer not available: skipping that path"

# The paths to measure; only their proxies are started (an idle proxy still wakes now and then).
paths=(direct relay epoll gw-gor gateway)
[ -n "$PGBOUNCER" ] && paths=(direct pgbouncer relay epoll gw-gor gateway)
if [ -n "${PATHS:-}" ]; then read -ra paths <<< "direct ${PATHS/direct/}"; fi
keep=()
for p in "${paths[@]}"; do
  case $p in
    direct|relay|gw-gor|gateway|gw-base|gw-tls) keep+=("$p") ;;
    pgbouncer|pgbouncer-tls) [ -n "$PGBOUNCER" ] && keep+=("$p") ;;
    epoll|uring) [ "$(uname -s)" = Linux ] && keep+=("$p") ;; # bench/relay -epoll and -uring need Linux
    *) echo "PATHS: unknown path '$p' (direct pgbouncer relay epoll uring gw-gor gateway gw-base pgbouncer-tls gw-tls)" >&2; exit 2 ;;
  esac
done
paths=("${keep[@]}")
wanted() { [[ " ${paths[*]} " == *" $1 "* ]]; }

# The TLS paths' certificate: self-signed, for 127.0.0.1.
if wanted pgbouncer-tls || wanted gw-tls; then
  command -v openssl >/dev/null || { echo "the TLS paths need openssl" >&2; exit 2; }
  mkdir -p "$work/ssl"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$work/ssl/server.key" -out "$work/ssl/server.crt" \
    -days 2 -nodes -subj "/CN=jitgate bench" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
fi
declare -A bouncer_port
# start_bouncer name [tls]: a PgBouncer of its own, session mode, trusting local clients.
start_bouncer() {
  local name=$1 tls=${2:-}
  bouncer_port[$name]=$(free_port)
  echo '"postgres" ""' > "$work/users.txt"
  cat > "$work/$name.ini" <<INI
[databases]
$DB = host=127.0.0.1 port=5432 dbname=$DB user=postgres
[pgbouncer]
server_tls_sslmode = disable
listen_addr = 127.0.0.1
listen_port = ${bouncer_port[$name]}
auth_type = trust
auth_file = $work/users.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 20
unix_socket_dir =
logfile = $work/$name.log
pidfile = $work/$name.pid
INI
  if [ -n "$tls" ]; then
    printf 'client_tls_sslmode = require\nclient_tls_key_file = %s\nclient_tls_cert_file = %s\n' "$work/ssl/server.key" "$work/ssl/server.crt" >> "$work/$name.ini"
  fi
  runas=()
  [ "$(id -u)" = 0 ] && { chown -R postgres "$work"; runas=(runuser -u postgres --); }
  "${detach[@]}" "${runas[@]}" "$PGBOUNCER" "$work/$name.ini" >/dev/null 2>&1 &
  pids+=($!) # (runuser's: pgbouncer's own is in its pidfile)
}
if wanted pgbouncer; then start_bouncer pgbouncer; fi
if wanted pgbouncer-tls; then start_bouncer pgbouncer-tls tls; fi

# The bare relays: a goroutine per direction, and event loops (as many as the gateway's).
go build -o "$work/relay" ./bench/relay
relay_port=$(free_port) epoll_port=$(free_port) uring_port=$(free_port)
if wanted relay; then
  "${detach[@]}" "$work/relay" -listen "127.0.0.1:$relay_port" -upstream 127.0.0.1:5432 &
  pids+=($!)
  proxy_pid[relay]=$!
fi
# start_loop_relay path port: the bare relay on event loops (path epoll or uring), as many as
# the gateway's.
start_loop_relay() {
  local loops=()
  [ "${LOOPS:-0}" != 0 ] && loops=(-loops "$LOOPS")
  "${detach[@]}" "$work/relay" -listen "127.0.0.1:$2" -upstream 127.0.0.1:5432 "-$1" "${loops[@]}" &
  pids+=($!)
  proxy_pid[$1]=$!
}
if wanted epoll; then start_loop_relay epoll "$epoll_port"; fi
if wanted uring; then start_loop_relay uring "$uring_port"; fi

# Two jitgate servers, one per relay; plaintext on loopback, like the other paths.
go build -o "$work/jitgate" ./cmd/jitgate
declare -A gw_port gw_password gw_url
if wanted gw-base; then
  # The base revision's source in a worktree of its own, built there.
  git worktree add -q --detach "$work/base-src" "${BASE_REV:-HEAD~1}"
  (cd "$work/base-src" && go build -buildvcs=false -o "$work/jitgate-base" ./cmd/jitgate)
  git worktree remove --force "$work/base-src"
fi
start_jitgate() { # name relay [binary [tls]]
  local name=$1 relay=$2 bin=${3:-$work/jitgate} dir="$work/$1" http_port transport="insecure_plaintext: true"
  [ -n "${4:-}" ] && transport="tls_cert: $work/ssl/server.crt, tls_key: $work/ssl/server.key"
  mkdir -p "$dir"
  http_port=$(free_port) gw_port[$name]=$(free_port)
  cat > "$dir/jitgate.yaml" <<YAML
server:
  store: sqlite:$dir/jitgate.db
  admins: [admin]
gateway:
  postgres: {addr: "127.0.0.1:${gw_port[$name]}", $transport, relay: $relay, loops: ${LOOPS:-0}}
users:
  - {name: bench, groups: [bench]}
  - {name: admin, groups: [ops]}
resources:
  - name: $DB
    kind: postgres
    address: 127.0.0.1:5432
    database: $DB
    sslmode: disable
    roles:
      - {name: read, grants: [pg_read_all_data], upstream: {user: jg_bench_read}}
policies:
  - name: bench
    requesters: {groups: [bench]}
    resources: [$DB]
    roles: [read]
    max_duration: 8h
    approval: {steps: [{approvers: {groups: [ops]}}]}
    auto_approve: 'true'
YAML
  local token
  token=$("$bin" token create --user bench --config "$dir/jitgate.yaml" 2>/dev/null)
  ${JITGATE_ENV:-} "${detach[@]}" "$bin" server --config "$dir/jitgate.yaml" --http-addr "127.0.0.1:$http_port" --log-level warn 2>"$dir/jitgate.log" &
  pids+=($!)
  proxy_pid[$name]=$!
  gw_url[$name]="http://127.0.0.1:$http_port"
  for _ in $(seq 50); do curl -sf "${gw_url[$name]}/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  JITGATE_TOKEN=$token JITGATE_SERVER=${gw_url[$name]} "$bin" request "$DB" --role read --for 8h --reason "pgbench" >/dev/null
  gw_password[$name]=$(eval "$(JITGATE_TOKEN=$token JITGATE_SERVER=${gw_url[$name]} "$bin" credentials "$DB" 2>/dev/null)"; echo "$PGPASSWORD")
}
if wanted gateway; then start_jitgate gateway loop; fi
if wanted gw-gor; then start_jitgate gw-gor goroutines; fi
if wanted gw-base; then start_jitgate gw-base loop "$work/jitgate-base"; fi
if wanted gw-tls; then start_jitgate gw-tls loop "$work/jitgate" tls; fi

run() { # path, pgbench args... → prints tps or latency
  local path=$1; shift
  case $path in
    direct)    PGPASSWORD= PGSSLMODE=disable pgbench -h 127.0.0.1 -p 5432 -U postgres "$@" "$DB" ;;
    pgbouncer) PGPASSWORD= PGSSLMODE=disable pgbench -h 127.0.0.1 -p "${bouncer_port[pgbouncer]}" -U postgres "$@" "$DB" ;;
    pgbouncer-tls) PGPASSWORD= PGSSLMODE=require pgbench -h 127.0.0.1 -p "${bouncer_port[pgbouncer-tls]}" -U postgres "$@" "$DB" ;;
    relay)     PGPASSWORD= PGSSLMODE=disable pgbench -h 127.0.0.1 -p "$relay_port" -U postgres "$@" "$DB" ;;
    epoll)     PGPASSWORD= PGSSLMODE=disable pgbench -h 127.0.0.1 -p "$epoll_port" -U postgres "$@" "$DB" ;;
    uring)     PGPASSWORD= PGSSLMODE=disable pgbench -h 127.0.0.1 -p "$uring_port" -U postgres "$@" "$DB" ;;
    gateway|gw-gor|gw-base) PGPASSWORD=${gw_password[$path]} PGSSLMODE=disable pgbench -h 127.0.0.1 -p "${gw_port[$path]}" -U bench "$@" "$DB" ;;
    gw-tls) PGPASSWORD=${gw_password[$path]} PGSSLMODE=require pgbench -h 127.0.0.1 -p "${gw_port[$path]}" -U bench "$@" "$DB" ;;
  esac 2>&1
}
tps() { run "$@" | awk '/^tps = /{print $3; exit}'; }
# lat path args... → single-client latency from pgbench's log of every transaction: mean, median
# and 99.9th percentile in ms. The mean is about what pgbench reports as its average; the
# median is what a typical query sees, unmoved by the rare slow one (bench/README.md, the
# paragraphs on latency).
lat() {
  rm -f "$work"/txlog.*
  if ! run "$@" -l --log-prefix="$work/txlog" > "$work/lat.out"; then
    echo "warning: pgbench -c1 through $1 failed, its figures cover only what ran: $(grep -m1 -iE 'error|abort|fatal' "$work/lat.out")" >&2
  fi
  awk '{print $3}' "$work"/txlog.* | sort -n |
    awk '{ v[NR] = $1; s += $1 }
      END {
        if (NR == 0) { print "nan nan nan"; exit }
        k = int(NR * 0.999); if (k < 1) k = 1
        printf "%.4f %.4f %.4f\n", s / NR / 1000, v[int((NR + 1) / 2)] / 1000, v[k] / 1000
      }'
}
# cpu path → the proxy's CPU microseconds per transaction at CPU_RATE transactions a second.
cpu() {
  local path=$1 out="$work/cpu.out" ms sc ut st tps
  case $path in pgbouncer|pgbouncer-tls) proxy_pid[$path]=$(cat "$work/$path.pid") ;; esac
  run "$path" -n -S -c 8 -j 2 -R "$CPU_RATE" -T "$T" > "$out" &
  sleep 1
  read -r ms sc ut st <<< "$(measure_proxy "${proxy_pid[$path]}" $((T - 2)))"
  wait
  tps=$(awk '/^tps = /{print $3; exit}' "$out")
  # microseconds of CPU, system calls and the user-mode share of the CPU ticks, per transaction
  awk -v ms="$ms" -v sc="$sc" -v ut="$ut" -v st="$st" -v tps="$tps" -v s=$((T - 2)) 'BEGIN {
    if (!(tps > 0 && ms > 0)) { print "nan nan nan"; exit }
    c = "nan"; if (sc != "nan") c = sprintf("%.2f", sc / (tps * s))
    u = "nan"; if (ut + st > 0) u = sprintf("%.2f", ut / (ut + st))
    printf "%.2f %s %s\n", ms * 1000 / (tps * s), c, u }'
}
check_cpu_rate

# Each round's figures go to a table; the summary is, per path, the median over rounds of each
# round's ratio to direct (one disturbed round, say a checkpoint, does not skew it).
results="$work/results"
: > "$results"
# A measurement depends on what ran just before it: over 40 rounds of -S -c8 alternating
# PgBouncer and two gateway builds, whichever build ran right after PgBouncer made up to 7%
# more. So every other round runs the proxies in reverse order (direct stays first).
for r in $(seq "$ROUNDS"); do
  read -ra order <<< "$(round_order "$r")"
  for p in "${order[@]}"; do
    t=$(tps "$p" -n -S -c 8 -j 2 -T "$T")
    read -r l lmed l999 <<< "$(lat "$p" -n -S -c 1 -j 1 -T "$T")"
    c=$(tps "$p" -n -S -C -c 8 -j 2 -T "$T")
    echo "$r $p $t $l $c $lmed $l999" >> "$results"
    printf 'round %d %-9s  -S -c8: %10.0f tps   -S -c1: %7.3f ms (median %.3f, 99.9%% %.3f)   -S -C -c8: %7.0f tps' "$r" "$p" "$t" "$l" "$lmed" "$l999" "$c"
    if [ -n "${CPU_RATE:-}" ] && [ "$p" != direct ]; then
      read -r u sc us <<< "$(cpu "$p")"
      echo "$r $p $u $sc $us" >> "$results.cpu"
      printf '   CPU at %d/s: %6.2f us/tx, %s system calls/tx, %s in user mode' "$CPU_RATE" "$u" "$sc" "$us"
    fi
    echo
  done
done

echo
echo "median over $ROUNDS round(s) of each round's figure relative to direct:"
printf '%-10s %10s %14s %14s %12s %10s\n' path "-S -c8" "-S -c1 added" "median added" "99.9% (ms)" "-S -C -c8"
for p in "${paths[@]}"; do
  awk -v p="$p" "$stats_awk"'
    $2 == "direct" { td[$1] = $3; ld[$1] = $4; cd[$1] = $5; md[$1] = $6 }
    $2 == p { t[$1] = $3; l[$1] = $4; c[$1] = $5; m[$1] = $6; q[$1] = $7 }
    END {
      for (r in t) { rt[r] = t[r] / td[r]; rl[r] = (l[r] - ld[r]) * 1000; rm[r] = (m[r] - md[r]) * 1000; rc[r] = c[r] / cd[r] }
      printf "%-10s %9.2fx %+11.1f us %+11.1f us %12.3f %9.2fx\n", p, median(rt), median(rl), median(rm), median(q), median(rc)
    }' "$results"
done
if wanted gw-base && wanted gateway; then
  echo
  awk "$stats_awk"'
    $2 == "gw-base" { bt[$1] = $3; bl[$1] = $4; bc[$1] = $5 }
    $2 == "gateway" { gt[$1] = $3; gl[$1] = $4; gc[$1] = $5 }
    END {
      for (r in gt) if (bt[r] > 0 && gt[r] > 0) { lr[r] = log(gt[r] / bt[r]); lc[r] = log(gc[r] / bc[r]); dl[r] = (gl[r] - bl[r]) * 1000 }
      if (count(lr)) printf "gateway against gw-base (%s): -S -c8 geometric mean %.3fx (%.3f-%.3f at one standard error); -S -C -c8 %.3fx (%.3f-%.3f); -S -c1 latency %+.1f us (standard error %.1f); %d round(s)\n", base, exp(mean(lr)), exp(mean(lr) - se(lr)), exp(mean(lr) + se(lr)), exp(mean(lc)), exp(mean(lc) - se(lc)), exp(mean(lc) + se(lc)), mean(dl), se(dl), count(lr)
    }' base="${BASE_REV:-HEAD~1}" "$results"
fi
# against_bouncer gateway bouncer: the gateway against PgBouncer, round by round.
against_bouncer() {
  awk -v g="$1" -v b="$2" "$stats_awk"'
    $2 == b { bt[$1] = $3; bl[$1] = $4; bm[$1] = $6 }
    $2 == g { gt[$1] = $3; gl[$1] = $4; gm[$1] = $6 }
    END {
      for (r in gt) if (bt[r] > 0 && gt[r] > 0) { ratio[r] = gt[r] / bt[r]; lr[r] = log(ratio[r]) }
      for (r in gl) if (bl[r] > 0 && gl[r] > 0) { dl[r] = (gl[r] - bl[r]) * 1000; dm[r] = (gm[r] - bm[r]) * 1000 }
      if (count(ratio)) printf "%s against %s, -S -c8 throughput per round: median %.3fx, geometric mean %.3fx (%.3f-%.3f at one standard error), %d round(s)\n", g, b, median(ratio), exp(mean(lr)), exp(mean(lr) - se(lr)), exp(mean(lr) + se(lr)), count(ratio)
      if (count(dl)) printf "%s minus %s, -S -c1 latency per round: mean %+.1f us (standard error %.1f), median %+.1f us (standard error %.1f), %d round(s)\n", g, b, mean(dl), se(dl), mean(dm), se(dm), count(dl)
    }' "$results"
}
if wanted pgbouncer && wanted gateway; then echo; against_bouncer gateway pgbouncer; fi
if wanted pgbouncer-tls && wanted gw-tls; then echo; against_bouncer gw-tls pgbouncer-tls; fi
if [ -s "$results.cpu" ]; then
  echo
  echo "CPU per transaction at $CPU_RATE transactions/s (median over rounds; ratio to PgBouncer's in the same round):"
  for p in "${paths[@]}"; do
    [ "$p" = direct ] && continue
    awk -v p="$p" "$stats_awk"'
      $2 == (p ~ /tls/ ? "pgbouncer-tls" : "pgbouncer") { b[$1] = $3 }
      $2 == p { u[$1] = $3; if ($4 != "nan") sc[$1] = $4; if ($5 != "nan") us[$1] = $5 }
      END {
        for (r in u) if (b[r] > 0 && u[r] > 0) { rr[r] = u[r] / b[r]; lr[r] = log(rr[r]) }
        line = sprintf("%-10s %8.2f us", p, median(u))
        if (count(rr)) line = line sprintf(" %6.3fx (geometric mean %.3fx, %.3f-%.3f at one standard error)", median(rr), exp(mean(lr)), exp(mean(lr) - se(lr)), exp(mean(lr) + se(lr)))
        if (count(sc)) line = line sprintf("; %.2f system calls/tx", median(sc))
        if (count(us)) line = line sprintf("; %.0f%% in user mode", 100 * median(us))
        print line
      }' "$results.cpu"
  done
fi
if [ -n "${PROFILE:-}" ] && [ -n "${CPU_RATE:-}" ]; then
  mkdir -p "$PROFILE"
  echo
  echo "profiles at $CPU_RATE transactions/s in $PROFILE (perf samples at 4,999 Hz, about 200 us of CPU each):"
  for p in "${paths[@]}"; do
    [ "$p" = direct ] && continue
    case $p in pgbouncer|pgbouncer-tls) proxy_pid[$p]=$(cat "$work/$p.pid") ;; esac
    run "$p" -n -S -c 8 -j 2 -R "$CPU_RATE" -T "$T" > "$work/prof.out" &
    load=$!
    sleep 1
    perf record -q -F 4999 -g -p "${proxy_pid[$p]}" -o "$PROFILE/$p.data" -- sleep $((T - 2)) >/dev/null 2>&1 || true
    wait "$load"
    tx=$(awk -v s=$((T - 2)) '/^tps = /{printf "%d", $3 * s; exit}' "$work/prof.out")
    perf report -q -g none -i "$PROFILE/$p.data" --no-children --sort dso,sym --percent-limit 0.5 2>/dev/null |
      grep -v '^$' | grep -v '^ *|' | grep -v '^ *-' > "$PROFILE/$p.txt" || true
    samples=$(perf report -i "$PROFILE/$p.data" --stdio -n --no-children -g none --sort dso 2>/dev/null | awk '$1 ~ /%$/ { n += $2 } END { print n + 0 }')
    printf '%-10s %s samples over %s transactions: %.1f us of CPU per transaction; the top of %s:\n' "$p" "$samples" "$tx" \
      "$(awk -v a="$samples" -v b="${tx:-0}" 'BEGIN { print (b > 0 ? a * 1e6 / 4999 / b : 0) }')" "$PROFILE/$p.txt"
    head -8 "$PROFILE/$p.txt"
  done
fi
if wanted gateway; then
  echo
  echo "gateway (loop) metrics:"
  curl -s "${gw_url[gateway]}/metrics" | grep -E '^jitgate_gateway_(statements|recorder|upstream)' || true
fi
