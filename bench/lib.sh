# Shell helpers bench/pgbench.sh and bench/sysbench.sh share (sourced from the repository root).

# check_cpu_rate: CPU_RATE needs rounds of 5 s or more and perf (installed as root if
# missing); without perf, CPU_RATE is cleared and the measurement skipped.
check_cpu_rate() {
  [ -n "${CPU_RATE:-}" ] || return 0
  [ "$T" -ge 5 ] || { echo "CPU_RATE needs SECONDS_EACH of at least 5" >&2; exit 2; }
  if ! perf stat -e task-clock true >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y linux-perf >/dev/null 2>&1 || true; fi
    perf stat -e task-clock true >/dev/null 2>&1 || { echo "CPU_RATE: perf is not available; skipping that measurement"; CPU_RATE=""; }
  fi
}

# round_order R: the paths in the order round R measures them. A measurement depends on what
# ran just before it, so every other round runs the proxies in reverse order (direct stays
# first).
round_order() {
  if [ $(($1 % 2)) = 1 ]; then
    echo "${paths[@]}"
    return
  fi
  local o=(direct) i
  for ((i = ${#paths[@]} - 1; i > 0; i--)); do o+=("${paths[i]}"); done
  echo "${o[@]}"
}

# stats_awk: awk functions for the summaries (median, mean, standard error, count).
stats_awk=$(cat bench/stats.awk)

# measure_proxy PID SECONDS: counts what process PID does for SECONDS: its CPU time (perf stat's
# task-clock, every thread), its system calls (the raw_syscalls:sys_enter tracepoint; "nan" if
# perf may not read tracepoints) and its user and system CPU ticks (/proc/PID/stat). Prints
# "cpu_ms syscalls user_ticks system_ticks". System calls per transaction hold from day to day
# even where the time each one takes does not (a virtual machine's are slow on a busy host).
measure_proxy() {
  local pid=$1 s=$2 u0 s0 u1 s1 out
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  out=$(perf stat -x, -e task-clock,raw_syscalls:sys_enter -p "$pid" -- sleep "$s" 2>&1 ||
    perf stat -x, -e task-clock -p "$pid" -- sleep "$s" 2>&1)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  awk -F, -v u=$((u1 - u0)) -v k=$((s1 - s0)) '
    /task-clock/ { ms = $1 } /raw_syscalls:sys_enter/ && $1 ~ /^[0-9]+$/ { sc = $1 }
    END { printf "%s %s %d %d\n", ms == "" ? "nan" : ms, sc == "" ? "nan" : sc, u, k }' <<< "$out"
}
