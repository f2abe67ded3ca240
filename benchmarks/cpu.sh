#!/usr/bin/env bash
# The CPU benchmarks recorded in BENCHMARKS.md (fp32, random weights, one thread so that other
# processes on a shared machine stall us as little as possible; expect about an hour on 2 cores).
# Results: assets/bench/{ops-cpu-4096,speed-sd2-base-cpu-512,speed-sd2-base-cpu-768}.{json,md,png}
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
T=${THREADS:-1}
OUT=${OUT:-assets/bench}
M="baseline tome:ratio=0.7 lgtm:ratio=0.7 todo iekvd"
$PY -m bigain.bench ops --tokens 4096 --channels 320 --batch 2 --ratio 0.7 --rounds 30 --warmup 3 --threads "$T" \
  --out "$OUT/ops-cpu-4096"
$PY -m bigain.bench speed --model sd2-base --random-weights --res 512 --batch 2 --methods $M \
  --rounds "${ROUNDS_512:-8}" --warmup 1 --threads "$T" --out "$OUT/speed-sd2-base-cpu-512"
$PY -m bigain.bench speed --model sd2-base --random-weights --res 768 --batch 2 --methods $M \
  --rounds "${ROUNDS_768:-4}" --warmup 1 --threads "$T" --out "$OUT/speed-sd2-base-cpu-768"
$PY -m bigain.bench report assets/bench --md BENCHMARKS.md
