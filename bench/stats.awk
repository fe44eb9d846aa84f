# Helpers for the bench scripts' summaries (awk functions over an array's values): median,
# mean, the mean's standard error, and how many there are. The scripts prepend this file to
# their awk programs.
function count(a,   n, i) { n = 0; for (i in a) n++; return n }
function median(a,   n, i, j, v, tmp) {
  n = 0; for (i in a) v[++n] = a[i]
  for (i = 2; i <= n; i++) { tmp = v[i]; for (j = i - 1; j > 0 && v[j] > tmp; j--) v[j + 1] = v[j]; v[j + 1] = tmp }
  return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
function mean(a,   i, s) { s = 0; for (i in a) s += a[i]; return count(a) ? s / count(a) : 0 }
function se(a,   i, m, n, ss) {
  m = mean(a); n = count(a); ss = 0; for (i in a) ss += (a[i] - m)^2
  return n > 1 ? sqrt(ss / (n - 1) / n) : 0
}
