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
