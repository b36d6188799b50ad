#!/usr/bin/env bash
# Quantized decode and prefill, vlmforge beside llama.cpp on the same weights (issue #13).
# For one random-weight bf16 Qwen2.5 checkpoint, alternating for --rounds rounds:
#   vlmforge  bf16, q8_0 and q4_0 (--quant_method, quantize on load) and, when --awq DIR is given,
#             an AWQ checkpoint of the same shape: prefill of a --prompt-token prompt, decode at
#             batch 1 (with its share of the bandwidth bound of the bytes it reads) and batch 8;
#   llama.cpp BF16, Q8_0 and Q4_0 GGUFs of the same weights (../shared/peers/st2gguf.py, llama.cpp's
#             reference quantizers), through ../shared/peers/llama_cpp_bench.mjs: prefill and batch-1
#             decode (the peer's runner has no batched decode).
# Prints every run, then medians with the ratios to vlmforge bf16 and to llama.cpp's same format.
# llama.cpp's threads spin: run on a quiet machine (the load is printed).
#
# Usage: bench/quant_side_by_side.sh [--size 0.5b] [--workdir DIR] [--nlc DIR] [--rounds 3]
#          [--prompt 512] [--decode 32] [--threads 2] [--awq DIR] [--build DIR]
#   --nlc: a folder where `npm i -E node-llama-cpp@3.21.1` was run (default /tmp/nlc).
#   VLMFORGE_SIMD_TARGET=avx2 measures vlmforge's AVX2 path (llama.cpp picks its own CPU variant).
set -euo pipefail
cd "$(dirname "$0")/.."
size=0.5b workdir="${TMPDIR:-/tmp}/vlmforge-quant-bench" nlc=/tmp/nlc rounds=3 prompt=512 decode=32 threads=2
awq="" build=build
while (($#)); do
  case "$1" in
    --size) size="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --nlc) nlc="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --prompt) prompt="$2"; shift 2 ;;
    --decode) decode="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --awq) awq="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
peers=../shared/peers
bench="$build/bench/infer_bench"
[ -x "$bench" ] || { echo "build first: cmake --build $build --target infer_bench vlmforge" >&2; exit 2; }
[ -f "$peers/llama_cpp_bench.mjs" ] || { echo "missing $peers/llama_cpp_bench.mjs" >&2; exit 2; }
[ -d "$nlc/node_modules/node-llama-cpp" ] ||
  { echo "install the peer first: mkdir -p $nlc && (cd $nlc && npm init -y && npm i -E node-llama-cpp@3.21.1)" >&2; exit 2; }
# st2gguf.py needs numpy: Debian's python3-numpy, under Debian's python3.
py=/usr/bin/python3
model="$workdir/qwen2.5-$size"
mkdir -p "$workdir"
[ -f "$model/config.json" ] || "$build/vlmforge" generate checkpoint --preset "qwen2.5-$size" --output_dir "$model" >/dev/null
[ -f "$model.gguf" ] || "$py" "$peers/st2gguf.py" "$model" "$model.gguf" >/dev/null
for q in q8_0 q4_0; do
  [ -f "$model-$q.gguf" ] || "$py" "$peers/st2gguf.py" "$model" "$model-$q.gguf" --outtype "$q" >/dev/null
done

runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
# Machine limits once, with the threads of the runs: the bandwidth bound's denominator.
limits=$("$bench" --runs 3 --threads "$threads" | awk '/^limits:/{print $4}')
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads, read bandwidth $limits GB/s"
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"

ours() {  # name, extra infer_bench flags...
  local name=$1; shift
  local out
  out=$("$bench" --model "${model_override:-$model}" --prompt "$prompt" --decode "$decode" --batch 8 --runs 1 \
        --skip_limits --threads "$threads" "$@" 2>&1)
  local pf b1 b8 mb
  pf=$(awk '/^prefill/{print $4; exit}' <<<"$out")
  b1=$(awk '/^decode +batch 1:/{print $4; exit}' <<<"$out")
  b8=$(awk '/^decode +batch 8:/{print $4; exit}' <<<"$out")
  # Bytes a batch-1 step reads: the linears' bytes (the model line) plus the KV cache read.
  mb=$(awk -F'[(,]' '/^model:/{for (i = 1; i <= NF; ++i) if ($i ~ / MB\)?$/) {gsub(/[^0-9.]/, "", $i); print $i}}' <<<"$out" | tail -1)
  echo "vlmforge $name $pf $b1 $b8 ${mb:-0}" | tee -a "$runs"
}
theirs() {  # name, gguf
  local j pf dc
  j=$(cd "$nlc" && node "$OLDPWD/$peers/llama_cpp_bench.mjs" "$2" --random-prompt "$prompt" --seed 1 \
      --gen "$decode" --threads "$threads" --kv f32 2>/dev/null | tail -1)
  pf=$("$py" -c 'import json,sys; print(round(json.loads(sys.argv[1])["prefill_tok_s"],2))' "$j")
  dc=$("$py" -c 'import json,sys; print(round(json.loads(sys.argv[1])["decode_tok_s"],2))' "$j")
  echo "llama.cpp $1 $pf $dc - $(($(stat -c %s "$2") / 1000000))" | tee -a "$runs"
}

echo "runs: engine format prefill_tok_s decode_b1_tok_s decode_b8_tok_s file_or_linear_MB"
for r in $(seq "$rounds"); do
  ours bf16
  ours q8_0 --quant_method q8_0
  ours q4_0 --quant_method q4_0
  [ -z "$awq" ] || model_override="$awq" ours awq
  theirs bf16 "$model.gguf"
  theirs q8_0 "$model-q8_0.gguf"
  theirs q4_0 "$model-q4_0.gguf"
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" - "$runs" "$limits" <<'EOF'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    engine, fmt, pf, b1, b8, mb = line.split()
    rows[(engine, fmt)].append((float(pf), float(b1), None if b8 == "-" else float(b8), float(mb)))
bandwidth = float(sys.argv[2])
med = {k: [statistics.median(x[i] for x in v) if v[0][i] is not None else None for i in range(4)]
       for k, v in rows.items()}
base = med.get(("vlmforge", "bf16"))
print("medians (prefill and decode tok/s; bound = read bandwidth / bytes a batch-1 step reads):")
for (engine, fmt), (pf, b1, b8, mb) in med.items():
    line = f"  {engine:9s} {fmt:5s} prefill {pf:7.1f}  decode b1 {b1:6.2f}"
    if engine == "vlmforge":
        line += f" = {100 * b1 * mb / 1000 / bandwidth:5.1f}% of bound ({mb:.0f} MB/step)"
        line += f"  b8 {b8:6.1f}" if b8 else ""
        if base and fmt != "bf16":
            line += f"  vs bf16: b1 {b1 / base[1]:.2f}x" + (f", b8 {b8 / base[2]:.2f}x" if b8 else "") + f", prefill {pf / base[0]:.2f}x"
        peer = med.get(("llama.cpp", fmt if fmt != "awq" else "q4_0"))
        if peer:
            line += f"  vs llama.cpp {fmt if fmt != 'awq' else 'q4_0'}: b1 {b1 / peer[1]:.2f}x, prefill {pf / peer[0]:.2f}x"
    else:
        line += f"  ({mb:.0f} MB file)"
    print(line)
EOF
