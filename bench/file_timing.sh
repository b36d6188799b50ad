# Timing helpers the file benchmarks source (merge_bench.sh, export_bench.sh); they use $workdir.

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
# time_cmd PREFIX cmd...: sets ${PREFIX}_s (wall incl. final sync), ${PREFIX}_rss_kb and ${PREFIX}_cpu_s, caches dropped first
time_cmd() {
  local prefix=$1; shift
  drop_caches
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f "%M %U %S" -o "$workdir/rss" "$@" >/dev/null
  sync
  end=$(date +%s.%N)
  printf -v "${prefix}_s" "%.3f" "$(echo "$end - $start" | bc -l)"
  local rss user sys
  read -r rss user sys < <(tail -n1 "$workdir/rss")
  printf -v "${prefix}_rss_kb" "%s" "$rss"
  printf -v "${prefix}_cpu_s" "%.3f" "$(echo "$user + $sys" | bc -l)"
}
median() { printf "%s\n" "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
