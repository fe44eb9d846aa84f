#!/usr/bin/env bash
# Compares, in one run against the local MariaDB (or MySQL), these paths to the same database:
#   direct   sysbench → MariaDB
#   relay    sysbench → a bare Go io.Copy relay (bench/relay) → MariaDB: the floor for a proxy
#            built on a goroutine per direction, the MySQL gateway's design
#   epoll    sysbench → the same bare relay on epoll event-loop threads (bench/relay -epoll)
#   gateway  sysbench → jitgate's MySQL gateway, recording every statement in the audit log and
#            reusing upstream connections (reuse_upstream, default 30s)
#   gw-tls   the same gateway as deployed: TLS from sysbench to it (a self-signed certificate;
#            sysbench --mysql-ssl=on), plaintext to MariaDB. Not run unless PATHS names it.
# Every hop is plaintext on loopback, so the comparison is of the proxies, not of TLS (the
# gateway runs with insecure_plaintext: true; its clients then send the session credential
# encrypted with the gateway's RSA key).
# For each: oltp_point_select throughput with 8 threads, single-thread latency (average and 99th
# percentile), and a new connection per transaction (bench/sysbench/connect.lua, 8 threads). Paths alternate
# within each round, in reverse order every other round.
#
#   bench/sysbench.sh                         # 10 s per measurement, 1 round (~2 minutes)
#   SECONDS_EACH=8 ROUNDS=6 bench/sysbench.sh
#   PATHS="relay gateway" bench/sysbench.sh   # only these (and direct)
#   CPU_RATE=4000 bench/sysbench.sh           # also each proxy's CPU per transaction (needs perf)
#
# CPU_RATE=N adds a measurement per proxy and round: 8 threads held at N transactions a second
# (sysbench --rate) while `perf stat` counts the proxy process's CPU time, printed as
# microseconds per transaction. Unlike throughput at saturation, where sysbench, MariaDB and the
# proxy compete for the same two cores, it holds from day to day; pick N below every path's
# saturation.
#
# Needs: sysbench (installed from Debian's packages if missing, as root), a MariaDB or MySQL on
# 127.0.0.1:3306 where root logs in without a password (MYSQL_ADMIN_ARGS to change that), Go.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
T="${SECONDS_EACH:-10}"
ROUNDS="${ROUNDS:-1}"
DB=jg_sbench
PW=jg-sbench-read-pw
ADMIN=(${MYSQL_ADMIN_ARGS:--h 127.0.0.1 -P 3306 -u root})
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

if ! command -v sysbench >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing sysbench"
    (apt-get install -y sysbench >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y sysbench >/dev/null 2>&1; }) || true
  fi
  command -v sysbench >/dev/null || { echo "sysbench is needed (Debian package sysbench)" >&2; exit 2; }
fi

# The database and the account the gateway injects: it can read, nothing more.
mysql "${ADMIN[@]}" -e "CREATE DATABASE IF NOT EXISTS $DB;
  CREATE USER IF NOT EXISTS 'jg_sbench_read'@'%' IDENTIFIED BY '$PW';
  ALTER USER 'jg_sbench_read'@'%' IDENTIFIED BY '$PW';
  GRANT SELECT ON $DB.* TO 'jg_sbench_read'@'%'"
sb_common=(--db-driver=mysql --mysql-db="$DB" --tables=1 --table-size=100000)
if ! mysql "${ADMIN[@]}" -e "SELECT 1 FROM $DB.sbtest1 LIMIT 1" >/dev/null 2>&1; then
  echo "preparing sysbench's table (100,000 rows)"
  admin_host=127.0.0.1 admin_port=3306
  sysbench oltp_point_select "${sb_common[@]}" --mysql-ssl=off --mysql-host=$admin_host --mysql-port=$admin_port --mysql-user=root prepare >/dev/null
fi

paths=(direct relay epoll gateway)
if [ -n "${PATHS:-}" ]; then read -ra paths <<< "direct ${PATHS/direct/}"; fi
for p in "${paths[@]}"; do
  case $p in direct|relay|epoll|gateway|gw-tls) ;; *) echo "PATHS: unknown path '$p' (direct relay epoll gateway gw-tls)" >&2; exit 2 ;; esac
done
wanted() { [[ " ${paths[*]} " == *" $1 "* ]]; }

go build -o "$work/relay" ./bench/relay
relay_port=$(free_port) epoll_port=$(free_port)
declare -A proxy_pid
if wanted relay; then setsid "$work/relay" -listen "127.0.0.1:$relay_port" -upstream 127.0.0.1:3306 & pids+=($!); proxy_pid[relay]=$!; fi
if wanted epoll; then setsid "$work/relay" -listen "127.0.0.1:$epoll_port" -upstream 127.0.0.1:3306 -epoll & pids+=($!); proxy_pid[epoll]=$!; fi

declare -A gw_port gw_url gw_password
# start_gateway name listener-options: a jitgate server of its own with the MySQL gateway.
start_gateway() {
  local name=$1 listener=$2 dir="$work/$1" http_port token
  mkdir -p "$dir"
  gw_port[$name]=$(free_port) http_port=$(free_port)
  cat > "$dir/jitgate.yaml" <<YAML
server:
  store: sqlite:$dir/jitgate.db
  admins: [admin]
gateway:
  mysql: {addr: "127.0.0.1:${gw_port[$name]}", $listener}
users:
  - {name: bench, groups: [bench]}
  - {name: admin, groups: [ops]}
resources:
  - name: $DB
    kind: mysql
    address: 127.0.0.1:3306
    database: $DB
    sslmode: disable
    roles:
      - {name: read, grants: ["SELECT ON $DB.*"], upstream: {user: jg_sbench_read, password_env: JG_SBENCH_PASSWORD}}
policies:
  - name: bench
    requesters: {groups: [bench]}
    resources: [$DB]
    roles: [read]
    max_duration: 8h
    approval: {steps: [{approvers: {groups: [ops]}}]}
    auto_approve: 'true'
YAML
  token=$("$work/jitgate" token create --user bench --config "$dir/jitgate.yaml" 2>/dev/null)
  JG_SBENCH_PASSWORD=$PW setsid "$work/jitgate" server --config "$dir/jitgate.yaml" --http-addr "127.0.0.1:$http_port" --log-level warn 2>"$dir/jitgate.log" &
  pids+=($!)
  proxy_pid[$name]=$!
  gw_url[$name]="http://127.0.0.1:$http_port"
  for _ in $(seq 50); do curl -sf "${gw_url[$name]}/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  JITGATE_TOKEN=$token JITGATE_SERVER=${gw_url[$name]} "$work/jitgate" request "$DB" --role read --for 8h --reason "sysbench" >/dev/null
  gw_password[$name]=$(eval "$(JITGATE_TOKEN=$token JITGATE_SERVER=${gw_url[$name]} "$work/jitgate" credentials "$DB" 2>/dev/null)"; echo "$MYSQL_PWD")
}
if wanted gateway || wanted gw-tls; then go build -o "$work/jitgate" ./cmd/jitgate; fi
if wanted gateway; then start_gateway gateway "insecure_plaintext: true"; fi
if wanted gw-tls; then
  # sysbench --mysql-ssl=on reads cacert.pem, client-cert.pem and client-key.pem from its
  # working directory (the gateway asks for no client certificate, but the files must load).
  command -v openssl >/dev/null || { echo "gw-tls needs openssl" >&2; exit 2; }
  mkdir -p "$work/ssl"
  for f in server client; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$work/ssl/$f-key.pem" -out "$work/ssl/$f-cert.pem" \
      -days 2 -nodes -subj "/CN=jitgate bench $f" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
  done
  cp "$work/ssl/server-cert.pem" "$work/ssl/cacert.pem"
  start_gateway gw-tls "tls_cert: $work/ssl/server-cert.pem, tls_key: $work/ssl/server-key.pem"
fi

run() { # path [connect], sysbench args... → sysbench's output (connect: bench/sysbench/connect.lua)
  local path=$1; shift
  local port=3306 user=jg_sbench_read pw=$PW ssl=off dir=.
  case $path in
    relay) port=$relay_port ;;
    epoll) port=$epoll_port ;;
    gateway) port=${gw_port[gateway]} user=bench pw=${gw_password[gateway]} ;;
    gw-tls) port=${gw_port[gw-tls]} user=bench pw=${gw_password[gw-tls]} ssl=on dir=$work/ssl ;;
  esac
  local script=oltp_point_select
  if [ "${1:-}" = connect ]; then script=$PWD/bench/sysbench/connect.lua; shift; fi
  (cd "$dir" && sysbench "$script" "${sb_common[@]}" --mysql-ssl="$ssl" --mysql-host=127.0.0.1 --mysql-port="$port" --mysql-user="$user" \
    --mysql-password="$pw" --time="$T" --report-interval=0 "$@" run 2>&1)
}
tps() { run "$@" | awk '/transactions:/{gsub(/\(/, "", $3); print $3; exit}'; }
lat() { # path → mean latency in us (from one thread's rate: sysbench prints its average in 10 us
  # steps) and the 99th percentile in ms
  run "$1" --threads=1 --percentile=99 | awk '/transactions:/{gsub(/\(/, "", $3); t=$3} /99th percentile:/{p=$3} END{printf "%.2f %s\n", 1e6 / t, p}'
}

# cpu path → the proxy's CPU microseconds per transaction at CPU_RATE transactions a second.
cpu() {
  local path=$1 out="$work/cpu.out" ms sc ut st tps
  run "$path" --threads=8 --rate="$CPU_RATE" > "$out" &
  sleep 1
  read -r ms sc ut st <<< "$(measure_proxy "${proxy_pid[$path]}" $((T - 2)))"
  wait
  tps=$(awk '/transactions:/{gsub(/\(/, "", $3); print $3; exit}' "$out")
  # microseconds of CPU, system calls and the user-mode share of the CPU ticks, per transaction
  awk -v ms="$ms" -v sc="$sc" -v ut="$ut" -v st="$st" -v tps="$tps" -v s=$((T - 2)) 'BEGIN {
    if (!(tps > 0 && ms > 0)) { print "nan nan nan"; exit }
    c = "nan"; if (sc != "nan") c = sprintf("%.2f", sc / (tps * s))
    u = "nan"; if (ut + st > 0) u = sprintf("%.2f", ut / (ut + st))
    printf "%.2f %s %s\n", ms * 1000 / (tps * s), c, u }'
}
check_cpu_rate

results="$work/results"
: > "$results"
for r in $(seq "$ROUNDS"); do
  read -ra order <<< "$(round_order "$r")"
  for p in "${order[@]}"; do
    t=$(tps "$p" --threads=8)
    read -r l l99 <<< "$(lat "$p")"
    c=$(tps "$p" connect --threads=8)
    echo "$r $p $t $l $l99 $c" >> "$results"
    printf 'round %d %-8s  8 threads: %9.0f tps   1 thread: %6.1f us (99th %.3f ms)   connect: %7.0f tps' "$r" "$p" "$t" "$l" "$l99" "$c"
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
printf '%-8s %10s %14s %12s %12s\n' path "8 threads" "1 thread added" "99th (ms)" "connect"
for p in "${paths[@]}"; do
  awk -v p="$p" "$stats_awk"'
    $2 == "direct" { td[$1] = $3; ld[$1] = $4; cd[$1] = $6 }
    $2 == p { t[$1] = $3; l[$1] = $4; q[$1] = $5; c[$1] = $6 }
    END {
      for (r in t) { rt[r] = t[r] / td[r]; rl[r] = l[r] - ld[r]; rc[r] = c[r] / cd[r] }
      printf "%-8s %9.2fx %+11.1f us %12.3f %11.2fx\n", p, median(rt), median(rl), median(q), median(rc)
    }' "$results"
done
if wanted relay && wanted gateway; then
  echo
  awk "$stats_awk"'
    $2 == "relay" { bt[$1] = $3; bl[$1] = $4 }
    $2 == "gateway" { gt[$1] = $3; gl[$1] = $4 }
    $2 == "direct" { dc[$1] = $6 }
    $2 == "gateway" { gc[$1] = $6 }
    END {
      for (r in gt) if (bt[r] > 0 && gt[r] > 0) { lr[r] = log(gt[r] / bt[r]); dl[r] = gl[r] - bl[r] }
      for (r in gc) if (dc[r] > 0 && gc[r] > 0) lc[r] = log(gc[r] / dc[r])
      if (count(lr)) printf "gateway against the bare relay, 8 threads, per round: geometric mean %.3fx (%.3f-%.3f at one standard error); 1-thread latency %+.1f us (standard error %.1f); %d round(s)\n", exp(mean(lr)), exp(mean(lr) - se(lr)), exp(mean(lr) + se(lr)), mean(dl), se(dl), count(lr)
      if (count(lc)) printf "gateway against direct, a connection per transaction: geometric mean %.2fx (%.2f-%.2f)\n", exp(mean(lc)), exp(mean(lc) - se(lc)), exp(mean(lc) + se(lc))
    }' "$results"
fi
if [ -s "$results.cpu" ]; then
  echo
  echo "CPU per transaction at $CPU_RATE transactions/s (median over rounds; ratio to the bare relay's in the same round):"
  for p in "${paths[@]}"; do
    [ "$p" = direct ] && continue
    awk -v p="$p" "$stats_awk"'
      $2 == "relay" { b[$1] = $3 }
      $2 == p { u[$1] = $3; if ($4 != "nan") sc[$1] = $4; if ($5 != "nan") us[$1] = $5 }
      END {
        for (r in u) if (b[r] > 0) rr[r] = u[r] / b[r]
        line = sprintf("%-8s %8.2f us", p, median(u))
        if (count(rr)) line = line sprintf(" %8.2fx (standard error of the mean %.2f us)", median(rr), se(u))
        if (count(sc)) line = line sprintf("; %.2f system calls/tx", median(sc))
        if (count(us)) line = line sprintf("; %.0f%% in user mode", 100 * median(us))
        print line
      }' "$results.cpu"
  done
fi
if wanted gateway; then
  echo
  echo "gateway metrics:"
  curl -s "${gw_url[gateway]}/metrics" | grep -E '^jitgate_gateway_(statements|recorder|upstream)' || true
fi
