#!/usr/bin/env bash
# GPU figures in one run (issue 16): RAFT, 7B-class captioning, full-size generation.
#
#   bash bench/gpu.sh OUTDIR            # one H100/H200: the whole run ends within 8 minutes
#   bash bench/gpu.sh OUTDIR --tiny     # the same parts at toy sizes on a CPU (a test runs this)
#   bash bench/gpu.sh OUTDIR --parts raft,caption --cap raft=60
#   bash bench/gpu.sh /tmp/gpu --tar "$OUT/gpu-results.tgz"   # also pack OUTDIR into one file
#
# On the lent GPU machine (it hands back at most 8 files): one call, with a timeout of ~540 s:
#   bash bench/gpu.sh /tmp/gpu --tar "$OUT/gpu-results.tgz"; cp /tmp/gpu/summary.md "$OUT/"
#
# Writes into OUTDIR: env.json (device, versions, date, bf16 matmul TFLOP/s), pytest-gpu.json,
# raft.json, caption.json, generate.json (fps low + medium, eager fp32 baseline at low),
# generate-high.json (fps high, only when enough time is left), <part>-profile.txt/.json
# (torch.profiler top kernels), <part>.log, status-<part>.json (rc, seconds, cap, timed out)
# and summary.json + summary.md (goals met or missed; the profile where one is missed).
#
# Each part runs under its own `timeout`, so one slow part cannot eat the others' time, and no
# part starts past the overall deadline (KVID_GPU_TOTAL_S, default 470 s). Only motion/, caption/
# and generate/ code runs: no Ray, PySceneDetect or ffmpeg is needed (RAFT's end-to-end stage
# row, which decodes mp4, runs only when ffmpeg is on PATH). Random weights everywhere: nothing
# is downloaded. Python: $PYTHON (default python3). KVID_GPU_COMPILE=1 adds torch.compile to the
# optimised generator (compilation is timed inside the part's cap: off by default).
set -u -o pipefail

usage() { echo "usage: bash bench/gpu.sh OUTDIR [--tiny] [--parts p1,p2] [--cap part=seconds] [--tar FILE]" >&2; exit 2; }
[[ $# -ge 1 && $1 != -* ]] || usage
OUTDIR=$1
shift
TINY=0
TAR=""
PARTS_SEL="env,pytest,raft,caption,generate,generate-high"
declare -A CAP_OVERRIDE=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --tiny) TINY=1 ;;
    --parts) [[ $# -ge 2 ]] || usage; PARTS_SEL=$2; shift ;;
    --cap) [[ $# -ge 2 && $2 == *=* ]] || usage; CAP_OVERRIDE[${2%%=*}]=${2#*=}; shift ;;
    --tar) [[ $# -ge 2 ]] || usage; TAR=$2; shift ;;
    *) usage ;;
  esac
  shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ -z $TAR || $TAR == /* ]] || TAR="$PWD/$TAR"
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false

if [[ $TINY == 1 ]]; then
  # Under 2 minutes on an idle 2-core CPU; the caps are loose so a busy machine does not cut a part.
  TOTAL_S=${KVID_GPU_TOTAL_S:-900}
  declare -A CAP=([env]=120 [pytest]=120 [raft]=180 [caption]=180 [generate]=240 [generate-high]=240)
  MIN_HIGH_S=20
  DEVICE=cpu
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # toy sizes: threads only add contention on a small CPU
else
  TOTAL_S=${KVID_GPU_TOTAL_S:-470}
  # Expected: env 10, pytest 60, raft 45, caption 70, generate 110 s; fps high gets what is left.
  declare -A CAP=([env]=20 [pytest]=110 [raft]=70 [caption]=100 [generate]=160 [generate-high]=0)
  MIN_HIGH_S=100  # rebuild + warm-up + one fps-high video + FLOP count: a shorter cap would lose it all
  DEVICE=cuda
fi
for k in "${!CAP_OVERRIDE[@]}"; do CAP[$k]=${CAP_OVERRIDE[$k]}; done
START=$(date +%s)
DEADLINE=$((START + TOTAL_S))
SUMMARY_RESERVE=10

selected() { [[ ,$PARTS_SEL, == *,$1,* ]]; }

# part NAME CAP_SECONDS COMMAND...: run under timeout, log to NAME.log, status to status-NAME.json
part() {
  local name=$1 cap=$2
  shift 2
  local left=$((DEADLINE - SUMMARY_RESERVE - $(date +%s)))
  local state=""
  if ((left < 5)); then
    state="skipped: overall deadline reached"
  elif [[ ${cap%.*} -gt $left ]]; then
    cap=$left
  fi
  local t0 rc=0 timed_out=false
  t0=$(date +%s.%N)
  if [[ -z $state ]]; then
    echo "== $name (cap ${cap} s) $(date -u +%H:%M:%S)"
    timeout -k 10 "$cap" "$@" >"$OUTDIR/$name.log" 2>&1 || rc=$?
    [[ $rc == 124 || $rc == 137 ]] && timed_out=true
    if [[ $timed_out == true ]]; then state="timed out"; elif [[ $rc == 0 ]]; then state=ok; else state="failed (rc $rc)"; fi
  else
    rc=-1
  fi
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '{"part": "%s", "state": "%s", "rc": %s, "seconds": %s, "cap": %s, "timed_out": %s}\n' \
    "$name" "$state" "$rc" "$secs" "$cap" "$timed_out" >"$OUTDIR/status-$name.json"
  echo "   $name: $state in ${secs} s"
}

skip() {  # skip NAME REASON
  printf '{"part": "%s", "state": "skipped: %s", "rc": -1, "seconds": 0, "cap": 0, "timed_out": false}\n' \
    "$1" "$2" >"$OUTDIR/status-$1.json"
  echo "   $1: skipped ($2)"
}

TINY_FLAG=()
[[ $TINY == 1 ]] && TINY_FLAG=(--tiny)

# 0. environment: device name, versions, date, achieved bf16 matmul TFLOP/s
selected env && part env "${CAP[env]}" "$PY" bench/gpu_parts.py env "$OUTDIR" --device "$DEVICE" "${TINY_FLAG[@]}"

# 1. pytest -m gpu over the files that hold GPU tests (on a CPU: collect only, which still
#    imports every module they need without Ray, PySceneDetect or ffmpeg)
if selected pytest; then
  mapfile -t GPU_TESTS < <(grep -l "pytest.mark.gpu" tests/test_*.py)
  if [[ $TINY == 1 ]]; then
    part pytest "${CAP[pytest]}" "$PY" -m pytest -m gpu --collect-only -q -p no:cacheprovider \
      --continue-on-collection-errors "${GPU_TESTS[@]}"
  else
    # a per-test limit (pytest-timeout) so one hung test fails alone and the XML is still written
    PER_TEST=()
    "$PY" -c "import pytest_timeout" 2>/dev/null && PER_TEST=(--timeout "${KVID_GPU_TEST_TIMEOUT_S:-75}")
    part pytest "${CAP[pytest]}" "$PY" -m pytest -m gpu -v -p no:cacheprovider --continue-on-collection-errors \
      "${PER_TEST[@]}" --junitxml="$OUTDIR/pytest-gpu.xml" "${GPU_TESTS[@]}"
  fi
  "$PY" bench/gpu_parts.py pytest-json "$OUTDIR" "${TINY_FLAG[@]}" >/dev/null || echo "   pytest-json failed"
fi

# 2. RAFT large and small at 256 px, fp32 and bf16, batch 1..64: pairs/s, clip-seconds/s
if selected raft; then
  STAGE=none
  [[ $TINY == 0 ]] && command -v ffmpeg >/dev/null && STAGE=raft_large
  if [[ $TINY == 1 ]]; then
    RAFT_ARGS=(--device cpu --sizes 64 --dtypes fp32 --batch-sizes 1,2 --frames 3 --num-flow-updates 2
               --warmup 1 --iters 1 --budget-s 0.5)
  else
    RAFT_ARGS=(--device cuda --sizes 256 --dtypes fp32,bf16 --batch-sizes 1,2,4,8,16,32,64 --frames 65
               --warmup 2 --iters 5 --budget-s 1.5)
  fi
  part raft "${CAP[raft]}" "$PY" bench/motion.py --backends raft_large,raft_small "${RAFT_ARGS[@]}" \
    --stage "$STAGE" --out "$OUTDIR/raft.json" --profile "$OUTDIR/raft-profile.txt"
fi

# 3. captioning: Qwen2.5-VL-7B architecture built in code (random bf16 weights), transformers,
#    8 frames, 128 new tokens, batch 1..16: clips/s and peak memory
if selected caption; then
  if [[ $TINY == 1 ]]; then
    CAP_ARGS=(--device cpu --size tiny --frames 2 --max-new-tokens 2 --batch-sizes 1,2 --min-clips 2 --threads 1)
  else
    CAP_ARGS=(--device cuda --size full --frames 8 --max-new-tokens 128 --batch-sizes 1,4,8,16 --min-clips 16
              --budget-s 6)
  fi
  part caption "${CAP[caption]}" "$PY" bench/caption.py --model qwen2_5_vl --backend transformers "${CAP_ARGS[@]}" \
    --out "$OUTDIR/caption.json" --profile "$OUTDIR/caption-profile.txt"
fi

# 4. generation, random weights, 512x512 (tiny: 64x64, 2 + 1 steps): fps low and medium, optimised
#    (bf16, batched guidance) against eager fp32 at low in the same run; then fps high if time allows
COMPILE=()
[[ ${KVID_GPU_COMPILE:-0} == 1 ]] && COMPILE=(--compile)
if [[ $TINY == 1 ]]; then
  GEN_ARGS=(--size tiny --device cpu --dtype fp32 --steps 2 --interp-steps 1 --threads 1 --no-warmup)
else
  GEN_ARGS=(--size full --device cuda --dtype bf16 --width 512 --height 512 --steps 50 --interp-steps 10
            --peak-tflops "${KVID_GPU_PEAK_TFLOPS:-989}" "${COMPILE[@]}")
fi
if selected generate; then
  part generate "${CAP[generate]}" "$PY" bench/generate.py "${GEN_ARGS[@]}" --fps low medium --baseline low \
    --out "$OUTDIR/generate.json" --profile "$OUTDIR/generate-profile.txt"
fi
if selected generate-high; then
  HIGH_CAP=${CAP[generate-high]}
  left=$((DEADLINE - SUMMARY_RESERVE - $(date +%s)))
  if [[ $HIGH_CAP == 0 ]]; then HIGH_CAP=$left; fi  # GPU: whatever is left of the budget
  if ((HIGH_CAP < MIN_HIGH_S || left < MIN_HIGH_S)); then
    skip generate-high "only ${left} s left (needs ${MIN_HIGH_S})"
  else
    part generate-high "$HIGH_CAP" "$PY" bench/generate.py "${GEN_ARGS[@]}" --fps high --baseline none \
      --out "$OUTDIR/generate-high.json"
  fi
fi

# summary: goals met or missed, with the profile of a part that missed one
"$PY" bench/gpu_parts.py summary "$OUTDIR" >"$OUTDIR/summary.log" 2>&1 || echo "summary failed: see $OUTDIR/summary.log"
cat "$OUTDIR/summary.md" 2>/dev/null
if [[ -n $TAR ]]; then
  tar -czf "$TAR" -C "$OUTDIR" . && echo "packed $OUTDIR into $TAR"
fi
echo "total $(($(date +%s) - START)) s; results in $OUTDIR"
