#!/usr/bin/env bash
# Pipeline parallelism end to end (engine/pipeline.h): `mpirun -np 2` and `-np 3` on this machine
# (loopback, --oversubscribe) give byte-identical outputs to the one-process run for score, greedy
# infer (text, and Qwen2.5-VL with an image); a killed rank, a stopped rank and
# a different checkpoint on one rank end the job with the stated errors within 30 s.
# Usage: pipeline_mpi_test.sh VLMFORGE MPIEXEC SHARED_DIR CASE   (CASE: outputs | faults)
set -euo pipefail
vlmforge=$1 mpiexec=$2 shared=$3 case=$4
tokenizer=$shared/tokenizer/tokenizer.json
image=$shared/golden/qwen25vl-tiny-bf16/images/half_126x70.png
if [[ ! -f $tokenizer || ! -f $image ]]; then
  [[ -n ${CI:-} ]] && { echo "shared data missing: $shared"; exit 1; }
  echo "shared data missing: $shared (skipped)"; exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
mpi() { local n=$1; shift; timeout 120 "$mpiexec" --oversubscribe -np "$n" "$vlmforge" "$@"; }

# Four layers so that three ranks get one or two each; the real tokenizer's vocabulary.
"$vlmforge" generate checkpoint --preset tiny --num_layers 4 --vocab_size 151936 --dtype float32 \
  --output_dir "$work/text" --tokenizer "$tokenizer" >/dev/null
"$vlmforge" generate checkpoint --preset tiny-vl --num_layers 4 --vocab_size 151936 --dtype float32 \
  --output_dir "$work/vl" --tokenizer "$tokenizer" >/dev/null

same() {  # same NAME FILE_ONE FILE_PIPELINE
  cmp -s "$2" "$3" || { diff <(head -c 2000 "$2") <(head -c 2000 "$3") || true; fail "$1 differs"; }
  [[ -s $2 ]] || fail "$1: empty output"
  echo "ok: $1"
}

# Result lines without their "timings" (seconds differ from run to run), byte for byte otherwise.
without_timings() { python3 -c 'import re,sys; sys.stdout.write(re.sub(r",\"timings\":\{[^}]*\}", "", open(sys.argv[1]).read()))' "$1"; }

case $case in
outputs)
  cat > "$work/rows.jsonl" <<'ROWS'
{"messages": [{"role": "user", "content": "Hello, who are you?"}]}
{"messages": [{"role": "user", "content": "请描述这张图片"}]}
{"query": "def f(x): return x"}
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to ten."}]}
{"query": "The quick brown fox"}
ROWS
  common=(--temperature 0 --max_new_tokens 12 --max_batch_size 2)
  "$vlmforge" infer --model "$work/text" --val_dataset "$work/rows.jsonl" --result_path "$work/infer.1" "${common[@]}" 2>/dev/null
  "$vlmforge" score --model "$work/text" --text "Pipelines keep every stage busy." --json > "$work/score.1" 2>/dev/null
  "$vlmforge" infer --model "$work/vl" --query "<image>Describe this." --images "$image" --json "${common[@]}" \
    --logprobs --top_logprobs 3 > "$work/vl.1" 2>/dev/null
  "$vlmforge" score --model "$work/vl" --text "<image>A picture." --images "$image" --json > "$work/vlscore.1" 2>/dev/null
  for n in 2 3; do
    mpi $n infer --model "$work/text" --val_dataset "$work/rows.jsonl" --result_path "$work/infer.$n" "${common[@]}" \
      2> "$work/err.$n"
    grep -q "^\[pipeline\] rank $((n - 1)) (host .*): layers .* norm, lm_head" "$work/err.$n" ||
      fail "no plan line naming the last rank: $(cat "$work/err.$n")"
    for f in "$work/infer.1" "$work/infer.$n"; do without_timings "$f" > "$f.answers"; done
    same "infer --val_dataset -np $n" "$work/infer.1.answers" "$work/infer.$n.answers"
    mpi $n score --model "$work/text" --text "Pipelines keep every stage busy." --json > "$work/score.$n" 2>/dev/null
    same "score -np $n" "$work/score.1" "$work/score.$n"
    mpi $n infer --model "$work/vl" --query "<image>Describe this." --images "$image" --json "${common[@]}" \
      --logprobs --top_logprobs 3 > "$work/vl.$n" 2>/dev/null
    same "infer Qwen2.5-VL with an image -np $n" "$work/vl.1" "$work/vl.$n"
    mpi $n score --model "$work/vl" --text "<image>A picture." --images "$image" --json > "$work/vlscore.$n" 2>/dev/null
    same "score Qwen2.5-VL with an image -np $n" "$work/vlscore.1" "$work/vlscore.$n"
  done
  ;;
faults)
  # A rank killed mid-generation: mpirun ends the job naming it, non-zero.
  for sig in KILL STOP; do
    start=$(date +%s)
    timeout 60 "$mpiexec" --oversubscribe -x "VLMFORGE_TEST_JOB=$work/$sig" -np 3 "$vlmforge" infer --model "$work/text" \
      --query hi --temperature 0 --max_new_tokens 30000 --max_model_len 32000 --pipeline_timeout 5 \
      > /dev/null 2> "$work/$sig.err" &
    job=$!
    pids+=("$job")
    victim=""
    for _ in $(seq 200); do
      victim=$(grep -l -s -a "VLMFORGE_TEST_JOB=$work/$sig" /proc/[0-9]*/environ |
               xargs -r grep -l -s -a "OMPI_COMM_WORLD_RANK=2" | head -1 | cut -d/ -f3 || true)
      [[ -n $victim ]] && grep -q "^\[pipeline\] rank 2" "$work/$sig.err" && break
      sleep 0.1
    done
    [[ -n $victim ]] || fail "rank 2 not found"
    sleep 1  # mid-generation
    kill "-$sig" "$victim"
    code=0
    wait "$job" || code=$?
    kill -KILL "$victim" 2>/dev/null || true
    took=$(($(date +%s) - start - 1))
    [[ $code -ne 0 && $code -ne 124 ]] || fail "SIG$sig on rank 2: exit $code"
    ((took <= 30)) || fail "SIG$sig on rank 2: $took s"
    if [[ $sig == KILL ]]; then
      grep -q "process rank 2 .* on node .* exited on signal 9" "$work/$sig.err" || fail "no report naming rank 2: $(cat "$work/$sig.err")"
    else
      grep -q "error: rank 2 (host .*) stopped responding" "$work/$sig.err" || fail "no report naming rank 2 (exit $code, $took s): $(cat "$work/$sig.err")"
    fi
    echo "ok: SIG$sig on rank 2 ends the job (exit $code) in $took s"
  done
  # Another checkpoint of the same shape on one rank: refused before any weight is read.
  "$vlmforge" generate checkpoint --preset tiny --num_layers 4 --vocab_size 151936 --dtype float32 --seed 7 \
    --output_dir "$work/other" --tokenizer "$tokenizer" >/dev/null
  code=0
  timeout 60 "$mpiexec" --oversubscribe -np 1 "$vlmforge" infer --model "$work/text" --query hi : \
    -np 1 "$vlmforge" infer --model "$work/other" --query hi > /dev/null 2> "$work/mismatch.err" || code=$?
  [[ $code -eq 2 ]] || fail "mismatched checkpoint: exit $code"
  grep -q "error: rank 1 (host .*) sees a different checkpoint than rank 0" "$work/mismatch.err" || fail "$(cat "$work/mismatch.err")"
  grep -q "\[pipeline\]" "$work/mismatch.err" && fail "weights were placed before the check"
  code=0
  timeout 60 "$mpiexec" --oversubscribe -np 1 "$vlmforge" infer --model "$work/text" --query hi : \
    -np 1 "$vlmforge" infer --model "$work/text" --query hi --kv_cache_dtype bfloat16 > /dev/null 2> "$work/flags.err" || code=$?
  [[ $code -eq 2 ]] || fail "mismatched flags: exit $code"
  grep -q "error: rank 1 (host .*) runs with other flags than rank 0" "$work/flags.err" || fail "$(cat "$work/flags.err")"
  echo "ok: a different checkpoint or flags on one rank is refused"
  ;;
*) fail "unknown case $case" ;;
esac
