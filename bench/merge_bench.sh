#!/usr/bin/env bash
# Merge benchmark: random-weight bf16 checkpoints of published Qwen2.5 shapes and an r=64 adapter
# on all seven projection kinds. For each size, side by side on the same files:
#   cp -r of the base dir (this machine's I/O limit), vlmforge merge-lora, and optionally a
#   PyTorch full-load merge (what PEFT's merge_and_unload does: whole model in RAM).
# Every run starts with cold caches (sync + drop_caches when permitted) and ends with sync, so
# the time includes writing the output to disk. Reports wall time, MB/s, ratio to cp, peak RSS.
#
# CPU seconds (user + system) per GB of output are reported too. --simd NAME runs vlmforge with
# Highway's dispatch capped at that target (VLMFORGE_SIMD_TARGET), e.g. avx2 on an AVX-512 machine.
#
# Usage: bench/merge_bench.sh [--sizes "0.5b 1.5b 7b"] [--workdir DIR] [--torch] [--runs N] [--simd avx2] [--bin PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="0.5b 1.5b"
workdir="${TMPDIR:-/tmp}/vlmforge-merge-bench"
with_torch=0
runs=3
bin=build/vlmforge
while (($#)); do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --torch) with_torch=1; shift ;;
    --runs) runs="$2"; shift 2 ;;
    --simd) export VLMFORGE_SIMD_TARGET="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;  # another vlmforge binary (say, the previous commit's) on the same files
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "build first: bash scripts/setup.sh" >&2; exit 2; }
mkdir -p "$workdir"

source bench/file_timing.sh

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB RAM, load $(cut -d' ' -f1 /proc/loadavg)"
echo "simd: ${VLMFORGE_SIMD_TARGET:-best available} (Highway dispatch)"
printf "%-6s %9s %8s | %8s %9s %8s | %8s %9s %7s %8s %9s %10s" size bytes_GB largest cp_s cp_MB/s cp_cpu/GB merge_s merge_MB/s ratio cpu_s/GB rss_MB rss_bound_MB
[ "$with_torch" = 1 ] && printf " | %8s %9s" torch_s torch_rss_MB
printf "\n"
for size in $sizes; do
  base="$workdir/qwen2.5-$size"
  adapter="$workdir/qwen2.5-$size-lora64"
  if [ ! -f "$base/config.json" ]; then
    "$bin" generate checkpoint --preset "qwen2.5-$size" --output_dir "$base" >/dev/null
  fi
  if [ ! -f "$adapter/adapter_config.json" ]; then
    "$bin" generate adapter --model "$base" --output_dir "$adapter" --r 64 --lora_alpha 128 >/dev/null
  fi
  bytes=$(du -sb --apparent-size "$base" | cut -f1)
  largest=$("$bin" inspect "$base" --json | python3 -c 'import json,sys; print(max(t["bytes"] for t in json.load(sys.stdin)["tensors"]))')
  cp_times=(); cp_cpu=(); merge_times=(); merge_cpu=(); merge_rss=(); torch_times=(); torch_rss=()
  for ((i = 0; i < runs; i++)); do
    rm -rf "$workdir/cp-out"
    time_cmd cp cp -r "$base" "$workdir/cp-out"; cp_times+=("$cp_s"); cp_cpu+=("$cp_cpu_s")
    rm -rf "$workdir/cp-out" "$workdir/merged"
    time_cmd merge "$bin" merge-lora --model "$base" --adapters "$adapter" --output_dir "$workdir/merged" --overwrite
    merge_times+=("$merge_s"); merge_rss+=("$merge_rss_kb"); merge_cpu+=("$merge_cpu_s")
    rm -rf "$workdir/merged"
    if [ "$with_torch" = 1 ]; then
      time_cmd torch /usr/bin/python3 bench/torch_merge.py --model "$base" --adapter "$adapter" --output_dir "$workdir/torch-out"
      torch_times+=("$torch_s"); torch_rss+=("$torch_rss_kb")
      rm -rf "$workdir/torch-out"
    fi
  done
  cp_m=$(median "${cp_times[@]}"); merge_m=$(median "${merge_times[@]}"); rss_m=$(median "${merge_rss[@]}")
  gb=$(echo "$bytes/1000000000" | bc -l)
  printf "%-6s %9.2f %8.0f | %8.2f %9.0f %8.2f | %8.2f %9.0f %7.2f %8.2f %9.0f %10.0f" "$size" "$gb" \
    "$(echo "$largest/1000000" | bc -l)" "$cp_m" "$(echo "$bytes/1000000/$cp_m" | bc -l)" \
    "$(echo "$(median "${cp_cpu[@]}")/$gb" | bc -l)" "$merge_m" \
    "$(echo "$bytes/1000000/$merge_m" | bc -l)" "$(echo "$cp_m/$merge_m" | bc -l)" \
    "$(echo "$(median "${merge_cpu[@]}")/$gb" | bc -l)" "$(echo "$rss_m/1024" | bc -l)" \
    "$(echo "(3*$largest)/1048576+200" | bc -l)"
  if [ "$with_torch" = 1 ]; then
    printf " | %8.2f %9.0f" "$(median "${torch_times[@]}")" "$(echo "$(median "${torch_rss[@]}")/1024" | bc -l)"
  fi
  printf "\n"
done
echo "ratio = cp time / merge time (targets: >= 0.8 for 0.5B, >= 0.9 for 1.5B and 7B); cpu/GB = median (user + system) s per GB; rss_bound = 3 x largest tensor + 200 MB"
