#!/usr/bin/env bash
# The CPU benchmarks recorded in BENCHMARKS.md (fp32, random weights, one thread so that other
# processes on a shared machine stall us as little as possible; expect about an hour on 2 cores).
# Results: assets/bench/{ops-cpu-4096,speed-sd2-base-cpu-512,speed-sd2-base-cpu-768,layer-sd2-base-cpu,
# speed-digits-*-cpu}.{json,md,png}; then BENCHMARKS.md. (The last two parts take about 15 minutes.)
# On a quiet machine: THREADS=2 SUFFIX=-2threads ONLY=core benchmarks/cpu.sh (ops and SD 2 at 512 px; the
# 768-px run is skipped unless ROUNDS_768 is set).
# ONLY=modes: the figures of the execution-mode issue (about an hour): op counts per compressed layer vs the
# budgets; compiled vs eager at batch 2 on the digits DiT and U-Net (shipped weights) and on SD 2 base at
# 512 px (every method against the compiled baseline); eager SD 2 at 512 px, L-GTM 0.7 vs tomesd 0.7 with
# tomesd on its own patched copy.
# ONLY=backbones: one full-width SD3 / Flux block at 1024 px token counts, and op counts of SDXL, SD3 and Flux.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
T=${THREADS:-1}
OUT=${OUT:-assets/bench}
X=${SUFFIX:-}
M="baseline tome:ratio=0.7 lgtm:ratio=0.7 todo iekvd"
export BIGAIN_BENCH_GIT=${BIGAIN_BENCH_GIT:-0}  # the commit is read from .git; no git process
if [ "${ONLY:-all}" = backbones ]; then
  # one full-width joint block of SD3 medium and of Flux.1 schnell (double- and single-stream) at 1024 px token
  # counts (SD3: 4096 image + 333 text tokens; Flux: 4096 + 256), every method against the baseline, eager,
  # interleaved (about 15 minutes on 1 thread); op counts per compressed layer of SDXL, SD3 and Flux, narrow
  $PY -m bigain.bench speed --model sd3-medium --random-weights --layers 1 --job layer --res 1024 --batch 1 \
    --methods $M --rounds 3 --warmup 1 --threads "$T" --out "$OUT/layer-sd3-medium-cpu-1024$X"
  $PY -m bigain.bench speed --model flux-schnell --random-weights --layers 1 --job layer --layer-index 0 1 \
    --res 1024 --batch 1 --methods $M --rounds 3 --warmup 1 --threads "$T" --out "$OUT/layer-flux-schnell-cpu-1024$X"
  $PY -m bigain.bench count --model sdxl-base --width-scale 16 --threads "$T" --out "$OUT/count-sdxl-base-cpu" ||
    echo "!! a budget is not met (see the table)"
  $PY -m bigain.bench count --model sd3-medium --width-scale 8 --threads "$T" --out "$OUT/count-sd3-medium-cpu" ||
    echo "!! a budget is not met (see the table)"
  $PY -m bigain.bench count --model flux-schnell --width-scale 4 --res 128 --threads "$T" \
    --out "$OUT/count-flux-schnell-cpu" || echo "!! a budget is not met (see the table)"
  $PY -m bigain.bench report assets/bench --md BENCHMARKS.md
  exit 0
fi
if [ "${ONLY:-all}" = modes ]; then
  # counts do not depend on width: the published configs at 1/8 of their width, at their token grids
  $PY -m bigain.bench count --model sd2-base --width-scale 8 --res 512 --threads "$T" --out "$OUT/count-sd2-base-cpu" ||
    echo "!! a budget is not met (see the table)"
  $PY -m bigain.bench count --model dit-xl-2-512 --width-scale 8 --threads "$T" --out "$OUT/count-dit-xl-2-512-cpu" ||
    echo "!! a budget is not met (see the table)"
  for m in digits-dit digits-unet; do
    $PY -m bigain.bench count --model "$m" --threads "$T" --out "$OUT/count-$m-cpu" || echo "!! a budget is not met (see the table)"
    $PY -m bigain.bench speed --model "$m" --mode eager compile --batch 2 --methods $M \
      --rounds 30 --warmup 3 --threads "$T" --out "$OUT/speed-$m-cpu-modes-b2$X"
  done
  $PY -m bigain.bench speed --model sd2-base --random-weights --mode compile --res 512 --batch 2 --methods $M \
    --rounds 5 --warmup 1 --no-profile --no-flops --no-count --threads "$T" --out "$OUT/speed-sd2-base-cpu-512-compile$X"
  $PY -m bigain.bench speed --model sd2-base --random-weights --mode eager --res 512 --batch 2 \
    --methods baseline lgtm:ratio=0.7 tomesd:ratio=0.7 --rounds 16 --warmup 1 --threads "$T" \
    --out "$OUT/speed-sd2-base-cpu-512-lgtm-vs-tomesd$X"
  $PY -m bigain.bench speed --model sd2-base --random-weights --job layer --res 512 --batch 2 \
    --methods baseline lgtm:ratio=0.7 tomesd:ratio=0.7 --rounds 30 --warmup 3 --threads "$T" \
    --out "$OUT/layer-sd2-base-cpu-512-lgtm-vs-tomesd$X"
  $PY -m bigain.bench report assets/bench --md BENCHMARKS.md
  exit 0
fi
$PY -m bigain.bench ops --tokens 4096 --channels 320 --batch 2 --ratio 0.7 --rounds 30 --warmup 3 --threads "$T" \
  --out "$OUT/ops-cpu-4096$X"
$PY -m bigain.bench speed --model sd2-base --random-weights --res 512 --batch 2 --methods $M \
  --rounds "${ROUNDS_512:-8}" --warmup 1 --threads "$T" --out "$OUT/speed-sd2-base-cpu-512$X"
if [ -z "$X" ] || [ -n "${ROUNDS_768:-}" ]; then
  $PY -m bigain.bench speed --model sd2-base --random-weights --res 768 --batch 2 --methods $M \
    --rounds "${ROUNDS_768:-4}" --warmup 1 --threads "$T" --out "$OUT/speed-sd2-base-cpu-768$X"
fi
if [ "${ONLY:-all}" = core ]; then
  $PY -m bigain.bench report assets/bench --md BENCHMARKS.md
  exit 0
fi
# the first compressed layer alone: the A/B of the merge implementations without the rest of the U-Net's noise
$PY -m bigain.bench speed --model sd2-base --random-weights --job layer --res 512 768 --batch 2 --methods $M \
  --rounds 15 --warmup 2 --threads "$T" --out "$OUT/layer-sd2-base-cpu$X"
# the embedded digits models at the classification batch, with the evaluation's methods (accuracy vs speed-up plot)
E="baseline tome:ratio=0.3 tome:ratio=0.5 tome:ratio=0.7 lgtm:ratio=0.3 lgtm:ratio=0.5 lgtm:ratio=0.7 todo"
for m in digits-dit digits-unet; do
  if [ -f "assets/$m/model.safetensors" ]; then
    $PY -m bigain.bench speed --model "$m" --batch 128 --methods $E iekvd:alpha=0 iekvd "iekvd:alpha=0.8;alpha_end=1.2" \
      --no-tomesd --rounds 15 --warmup 2 --threads "$T" --out "$OUT/speed-$m-cpu$X"
  fi
done
$PY -m bigain.bench report assets/bench --md BENCHMARKS.md
