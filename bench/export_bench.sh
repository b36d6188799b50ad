#!/usr/bin/env bash
# Export benchmark: random-weight bf16 checkpoints of published Qwen2.5 shapes exported to 4-bit
# GPTQ (group 128) with `vlmforge export`, beside `cp -r` of the same input (this machine's I/O
# limit). Every run starts with cold caches (sync + drop_caches when permitted) and ends with
# sync, so the time includes writing the output to disk. Reports wall time, input MB/s, the
# ratio cp time / export time, CPU seconds per GB of input and peak RSS (GNU time).
#
# Usage: bench/export_bench.sh [--sizes "1.5b 7b"] [--workdir DIR] [--runs N] [--method gptq|awq] [--bits 4|8] [--bin PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="1.5b"
workdir="${TMPDIR:-/tmp}/vlmforge-export-bench"
runs=1
method=gptq
bits=4
bin=build/vlmforge
while (($#)); do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --method) method="$2"; shift 2 ;;
    --bits) bits="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "build first: bash scripts/setup.sh" >&2; exit 2; }
mkdir -p "$workdir"

cold="no (drop_caches not permitted: warm page cache)"
if sync && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then cold=yes; fi
source bench/file_timing.sh

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB RAM, load $(cut -d' ' -f1 /proc/loadavg); cold caches: $cold"
echo "export: --quant_method $method --quant_bits $bits --group_size 128, $runs run(s) each (median)"
printf "%-6s %9s %9s | %8s %9s | %9s %10s %7s %8s %8s\n" size in_GB out_GB cp_s cp_MB/s export_s export_MB/s ratio cpu_s/GB rss_MB
for size in $sizes; do
  base="$workdir/qwen2.5-$size"
  if [ ! -f "$base/config.json" ]; then
    "$bin" generate checkpoint --preset "qwen2.5-$size" --output_dir "$base" >/dev/null
  fi
  bytes=$(du -sb --apparent-size "$base" | cut -f1)
  cp_times=(); ex_times=(); ex_cpu=(); ex_rss=(); out_bytes=0
  for ((i = 0; i < runs; i++)); do
    rm -rf "$workdir/cp-out"
    time_cmd cp cp -r "$base" "$workdir/cp-out"; cp_times+=("$cp_s")
    rm -rf "$workdir/cp-out" "$workdir/exported"
    time_cmd ex "$bin" export --model "$base" --quant_method "$method" --quant_bits "$bits" --output_dir "$workdir/exported"
    ex_times+=("$ex_s"); ex_rss+=("$ex_rss_kb"); ex_cpu+=("$ex_cpu_s")
    out_bytes=$(du -sb --apparent-size "$workdir/exported" | cut -f1)
    rm -rf "$workdir/exported"
  done
  cp_m=$(median "${cp_times[@]}"); ex_m=$(median "${ex_times[@]}")
  gb=$(echo "$bytes/1000000000" | bc -l)
  printf "%-6s %9.2f %9.2f | %8.2f %9.0f | %9.2f %10.0f %7.2f %8.2f %8.0f\n" "$size" "$gb" \
    "$(echo "$out_bytes/1000000000" | bc -l)" "$cp_m" "$(echo "$bytes/1000000/$cp_m" | bc -l)" "$ex_m" \
    "$(echo "$bytes/1000000/$ex_m" | bc -l)" "$(echo "$cp_m/$ex_m" | bc -l)" \
    "$(echo "$(median "${ex_cpu[@]}")/$gb" | bc -l)" "$(echo "$(median "${ex_rss[@]}")/1024" | bc -l)"
done
echo "ratio = cp time / export time (above 1: faster than copying the input); MB/s of input; cpu/GB = (user + system) s per GB of input"
