#!/usr/bin/env bash
# Speed where it shows: the embedded glyph models (1024 tokens per compressed layer), CPU, fp32, 1 thread,
# random weights of the shipped architectures (speed does not depend on weight values), every method
# interleaved with the baseline in one run; batch 4 (the app's generation: two samples with their CFG twins)
# and the classifier's batch (64: about one adaptive round of the glyph protocol), eager and compiled.
# Targets (issue 19): every method ≥ ×1.25 on glyphs-dit, ≥ ×1.10 on glyphs-unet.
# About 15 minutes on a quiet 2-core machine. Results: assets/bench/speed-glyphs-{dit,unet}-cpu*.{json,md,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-assets/bench}
M="baseline tome:ratio=0.5 lgtm:ratio=0.5 tome:ratio=0.7 lgtm:ratio=0.7 todo iekvd iekvd:alpha=0.8;alpha_end=1.2 sito:ratio=0.5 freqkv"
CORE="baseline tome:ratio=0.5 lgtm:ratio=0.5 todo iekvd"  # the classifier's batch and compiled mode: the paper's four
export BIGAIN_BENCH_GIT=${BIGAIN_BENCH_GIT:-0}
for m in glyphs-dit glyphs-unet; do
  $PY -m bigain.bench speed --model "$m" --random-weights --regime 32x4 --methods $M \
    --rounds "${ROUNDS:-5}" --warmup 1 --threads 1 --no-tomesd --out "$OUT/speed-$m-cpu"
  $PY -m bigain.bench speed --model "$m" --random-weights --regime 32x64 --methods $CORE \
    --rounds "${ROUNDS:-5}" --warmup 1 --threads 1 --no-tomesd --no-flops --out "$OUT/speed-$m-cpu-b64"
  $PY -m bigain.bench speed --model "$m" --random-weights --regime 32x4 --mode compile --methods $CORE \
    --rounds "${ROUNDS:-5}" --warmup 1 --threads 1 --no-tomesd --no-flops --out "$OUT/speed-$m-cpu-compile"
done
