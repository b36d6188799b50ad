#!/usr/bin/env bash
# Load test of `vlmforge deploy` on loopback (bench/server_load.mjs: CLIENTS concurrent clients for
# DURATION s, twice in a row), with the shared random-weight qwen2-tiny-bf16 checkpoint (hidden 64,
# 2 layers, the real 151,936-token vocabulary and tokenizer) so it means something on 2 cores. Reports requests/s, latency p50/p99, tokens/s, errors (429s apart) and the
# server's RSS at start, after warm-up and after each round (flat = no leak beyond caches). The
# peer run side by side, once before and once after the server: `vlmforge infer` answering
# 30 x --max_batch_size prompts with the same token budget in fixed batches (static batching, each
# batch waits for its longest answer), i.e. the engine's throughput with no server in front.
# Usage: bench/server_load.sh [--clients 32] [--duration 30] [--batch 8] [--queue 16] [--max_tokens 32] [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=32 duration=30 batch=8 queue=16 max_tokens=32 build=build
while (($#)); do
  case "$1" in
    --clients) clients="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --queue) queue="$2"; shift 2 ;;
    --max_tokens) max_tokens="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
vlmforge="$build/vlmforge"
[ -x "$vlmforge" ] || { echo "build first: cmake --build $build --target vlmforge" >&2; exit 2; }
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
model=../shared/golden/qwen2-tiny-bf16
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$server_pid/status"; }

# The peer: the same model answering 30 fixed batches of `batch` prompts of max_tokens; prints
# its throughput (generated tokens per second, prefill included).
for i in $(seq $((batch * 30))); do echo "Write about topic number $i"; done > "$work/prompts.txt"
peer() {
  "$vlmforge" infer --model "$model" --max_batch_size "$batch" --max_new_tokens "$max_tokens" --temperature 0.8 \
    --max_model_len 512 --json < "$work/prompts.txt" 2> "$work/infer.err" > /dev/null
  python3 - "$(grep '\[stats\]' "$work/infer.err")" <<'PY'
import re, sys
m = re.search(r"prefill (\d+) tokens ([\d.]+) tok/s(?: \([\d.]+ s\))?, decode (\d+) tokens ([\d.]+) tok/s", sys.argv[1])
prefill_n, prefill_rate, decode_n, decode_rate = int(m[1]), float(m[2]), int(m[3]), float(m[4])
print(f"{decode_n / (prefill_n / prefill_rate + decode_n / decode_rate):.1f}")
PY
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
peer_before=$(peer)
echo "peer infer before the server (30 fixed batches of $batch): $peer_before tok/s; load $(cut -d' ' -f1-3 /proc/loadavg)"
"$vlmforge" deploy --model "$model" --served_model_name tiny --port 0 --max_batch_size "$batch" \
  --max_queue "$queue" --max_model_len 512 > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
for _ in $(seq 100); do grep -q 'http://' "$work/server.out" && break; sleep 0.1; done
port=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/server.out")
echo "server: max_batch_size $batch, max_queue $queue, RSS at start $(rss)"
BASE="http://127.0.0.1:$port" MODEL=tiny CLIENTS=4 DURATION=3 MAX_TOKENS="$max_tokens" node bench/server_load.mjs >/dev/null
echo "RSS after warm-up: $(rss)"
for round in 1 2; do
  result=$(BASE="http://127.0.0.1:$port" MODEL=tiny CLIENTS="$clients" DURATION="$duration" MAX_TOKENS="$max_tokens" node bench/server_load.mjs)
  echo "round $round: $result"
  echo "$result" >> "$work/rounds.jsonl"
  echo "RSS after round $round: $(rss); load $(cut -d' ' -f1-3 /proc/loadavg)"
done
kill -TERM "$server_pid"
wait "$server_pid" && echo "server: SIGTERM -> exit 0" || echo "server: exit $?"
server_pid=""
tail -n 1 "$work/server.err"

peer_after=$(peer)
echo "peer infer after the server: $peer_after tok/s"
python3 - "$work/rounds.jsonl" "$peer_before" "$peer_after" <<'PY'
import json, sys
before, after = float(sys.argv[2]), float(sys.argv[3])
for i, line in enumerate(open(sys.argv[1]), 1):
    server = json.loads(line)["tokens_per_s"]
    print(f"round {i}: server {server} tok/s = {server / before:.2f}x / {server / after:.2f}x of infer's fixed batches "
          f"before / after ({before} / {after} tok/s, prefill included)")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
