#!/usr/bin/env bash
# The prepared GPU run: ONE command, under 8 minutes on one H100 (a hard deadline: BUDGET seconds,
# default 450; a step that would pass it is stopped, and what it measured so far is kept, since every
# speed run writes its JSON after each setting). Everything goes under one folder, $OUT/gpu/
# (OUT defaults to out/gpu-run):
#
#   count-*            ATen / kernel ops, syncs, host-to-device copies added per compressed layer, vs the budgets
#                      (SD 2 base and DiT-XL/2 512, full width, fp16, CUDA)
#   kernels            the Triton kernels against their torch references
#   speed-*-eager      eager calls: baseline, ToMe, L-GTM, ToDo, IE-KVD (fused path) and tomesd on its own copy
#   speed-*-cudagraph  the same calls replayed from CUDA graphs, against the graphed baseline
#   speed-*-compile    the same calls under torch.compile(fullgraph=True), against the compiled baseline
#   speed-sdxl-base-*  SDXL base (full width, random weights) at 1024 px, batch 1 and 2: one denoiser call per
#                      method, eager (tomesd at max_downsample 2, SDXL's finest attention level) and compiled (b2)
#   BENCHMARKS-gpu.md  `bench report` of all of the above (it names the card)
#
# Regimes: SD 2 base at 512 px batch 2, 1024 px batch 2 and the classifier's batch 64 at 512 px;
# DiT-XL/2 512 at batch 2 and 64 (eager and CUDA graphs); the compiled runs, which compile every
# method (tens of seconds each), at batch 2 only and last, so the deadline cuts them first; SDXL's compiled
# run is the very last step.
# $OUT/gpu/log.txt is the log and $OUT/gpu-results.tar.gz packs the folder; unpack it with
# `tar -xzf gpu-results.tar.gz -C assets/bench --strip-components=1` (prefix what you keep, e.g. h100-).
#
#   benchmarks/gpu.sh            # on a CUDA machine (ROUNDS=n timed rounds, default 10; BUDGET=seconds)
#   benchmarks/gpu.sh --tiny     # dry run on a CPU: digits models and narrow configs, every step of the
#                                # pipeline (cudagraph records that it needs CUDA), kernels in the Triton
#                                # interpreter (TRITON_INTERPRET=1); about a minute on 2 cores (more on a cold compile cache)
#
# A bare GPU machine without network: carry the wheels of what it lacks in .whl/ (diffusers,
# tomesd, importlib_metadata; see benchmarks/README.md); they are installed into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
OUT=${OUT:-out/gpu-run}
RES="$OUT/gpu"
mkdir -p "$RES"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export BIGAIN_BENCH_GIT=${BIGAIN_BENCH_GIT:-0}  # the commit is read from .git; no git process
if compgen -G ".whl/*.whl" >/dev/null && [ "$TINY" = 0 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec > >(tee "$RES/log.txt") 2>&1
echo "== $(date -u +%FT%TZ) $(uname -n)"
$PY - <<'EOF'
import torch, importlib.metadata as md
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
for p in ("diffusers", "tomesd", "triton"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "missing")
EOF
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv || true; fi

B="$PY -m bigain.bench"
BUDGET=${BUDGET:-450}
RESERVE=25  # report + tarball
DEADLINE=$((SECONDS + BUDGET))
FAILED=0
step() {  # one failing or overlong step must not cost the others
  local left=$((DEADLINE - RESERVE - SECONDS))
  if [ "$left" -lt 15 ]; then
    echo "!! skipped, the ${BUDGET}s budget is spent: $*"
    FAILED=$((FAILED + 1))
    return 0
  fi
  echo "== $(date -u +%T) [${left}s left] $*"
  timeout -k 10 "$left" "$@" || { echo "!! failed or stopped (rc $?): $*"; FAILED=$((FAILED + 1)); }
}
M="baseline tome:ratio=0.7 lgtm:ratio=0.7 todo iekvd"
R=${ROUNDS:-10}
if [ "$TINY" = 1 ]; then
  C="--device cpu --threads 1"
  step $B count --model digits-dit $C --out "$RES/count-digits-dit"
  step $B count --model digits-unet $C --out "$RES/count-digits-unet"
  step $B count --model sd2-base --width-scale 16 --res 64 $C --out "$RES/count-sd2-base"
  step env TRITON_INTERPRET=1 $B kernels --device cpu --cases 2 --out "$RES/kernels"
  for m in digits-unet digits-dit; do
    step $B speed --model "$m" --random-weights $C --regime 16x2 16x8 --mode eager cudagraph --rounds 2 --warmup 1 \
      --methods $M --out "$RES/speed-$m-eager-cudagraph"
  done
  step $B speed --model digits-dit --random-weights $C --batch 2 --mode compile --rounds 2 --warmup 1 \
    --methods $M --no-flops --no-profile --out "$RES/speed-digits-dit-compile"
  # SDXL's eager step at 1/16 of its width and 128 px (its compiled step is not dry-run: inductor needs over
  # 5 minutes for SDXL's U-Net on 2 CPU cores; the compile path is the digits DiT's step above)
  step $B speed --model sdxl-base --random-weights --width-scale 16 $C --methods $M --regime 128x1 128x2 \
    --mode eager --rounds 1 --warmup 1 --out "$RES/speed-sdxl-base-eager"
else
  G="--device cuda --dtype fp16"
  step $B count --model sd2-base --res 512 $G --out "$RES/count-sd2-base-fp16"
  step $B count --model dit-xl-2-512 $G --out "$RES/count-dit-xl-2-512-fp16"
  step $B kernels --device cuda --out "$RES/kernels"
  SD="--model sd2-base --random-weights $G --triton on --methods $M"
  DIT="--model dit-xl-2-512 --random-weights $G --triton on --methods $M"
  step $B speed $SD --regime 512x2 1024x2 512x64 --mode eager --rounds "$R" --warmup 2 \
    --out "$RES/speed-sd2-base-fp16-eager"
  step $B speed $DIT --regime 512x2 512x64 --mode eager --rounds "$R" --warmup 2 \
    --out "$RES/speed-dit-xl-2-512-fp16-eager"
  XL="--model sdxl-base --random-weights $G --triton on --methods $M"
  step $B speed $XL --regime 1024x1 1024x2 --mode eager --rounds "$R" --warmup 2 --no-count \
    --out "$RES/speed-sdxl-base-fp16-eager"
  step $B speed $SD --regime 512x2 1024x2 512x64 --mode cudagraph --rounds "$R" --warmup 2 --no-flops --no-count \
    --out "$RES/speed-sd2-base-fp16-cudagraph"
  step $B speed $DIT --regime 512x2 512x64 --mode cudagraph --rounds "$R" --warmup 2 --no-flops --no-count \
    --out "$RES/speed-dit-xl-2-512-fp16-cudagraph"
  step $B speed $SD --regime 512x2 --mode compile --rounds "$R" --warmup 2 --no-flops --no-count --no-profile \
    --out "$RES/speed-sd2-base-fp16-compile"
  step $B speed $DIT --regime 512x2 --mode compile --rounds "$R" --warmup 2 --no-flops --no-count --no-profile \
    --out "$RES/speed-dit-xl-2-512-fp16-compile"
  step $B speed $XL --regime 1024x2 --mode compile --rounds "$R" --warmup 1 --no-flops --no-count --no-profile \
    --out "$RES/speed-sdxl-base-fp16-compile"
fi
DEADLINE=$((DEADLINE + RESERVE))
step $B report "$RES" --md "$RES/BENCHMARKS-gpu.md" --eval assets/eval
tar -czf "$OUT/gpu-results.tar.gz" -C "$OUT" gpu
echo "== done $(date -u +%FT%TZ) in ${SECONDS}s, $FAILED failed or skipped step(s); results in $OUT/gpu-results.tar.gz"
