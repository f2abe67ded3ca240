#!/usr/bin/env bash
# The prepared GPU run (about 3–5 minutes on one H100): Triton kernels vs torch on CUDA, the
# operator micro-benchmarks, and the speed benchmark at fp16 on SD 2 base (512 and 768 px,
# batch 2) and DiT-XL/2 512 with CUDA synchronisation — torch vs Triton paths and tomesd.
# Results go to $OUT/gpu-results.tar.gz (JSON + Markdown + PNG of every run) and $OUT/log.txt
# (OUT defaults to out/gpu); unpack with `tar -xzf gpu-results.tar.gz -C assets/bench --strip-components=1`.
#
#   benchmarks/gpu.sh            # on a CUDA machine (QUICK=1: SD 2 + DiT + kernels + 4096-token ops only;
#                                # ROUNDS=n: timed rounds of the two main speed runs, default 20)
#   benchmarks/gpu.sh --tiny     # dry run on a CPU: digits models, tiny grids, kernels in the
#                                # Triton interpreter (TRITON_INTERPRET=1)
#
# A bare GPU machine without network: carry the wheels of what it lacks in .whl/ (diffusers,
# tomesd, importlib_metadata; see benchmarks/README.md); they are installed into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
OUT=${OUT:-out/gpu}
WORK=$(mktemp -d)
RES="$WORK/gpu"
mkdir -p "$RES" "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null && [ "$TINY" = 0 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec > >(tee "$OUT/log.txt") 2>&1
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
FAILED=0
step() {  # one failing step must not cost the others
  echo "== $(date -u +%T) $*"
  "$@" || { echo "!! failed: $*"; FAILED=$((FAILED + 1)); }
}
if [ "$TINY" = 1 ]; then
  step env TRITON_INTERPRET=1 $B kernels --device cpu --cases 2 --out "$RES/kernels"
  step $B ops --device cpu --tokens 256 --channels 64 --rounds 5 --warmup 1 --out "$RES/ops-fp32"
  step $B speed --model digits-unet --random-weights --device cpu --batch 2 --rounds 2 --warmup 1 \
    --methods baseline tome:ratio=0.7 lgtm:ratio=0.7 todo iekvd --out "$RES/speed-digits-unet"
  step $B speed --model digits-dit --random-weights --device cpu --batch 2 --rounds 2 --warmup 1 \
    --methods baseline tome:ratio=0.7 lgtm:ratio=0.7 todo iekvd --out "$RES/speed-digits-dit"
else
  step $B kernels --device cuda --out "$RES/kernels"
  step $B ops --device cuda --dtype fp16 --tokens 4096 --channels 320 --batch 2 --rounds 50 --warmup 10 \
    --out "$RES/ops-fp16-4096"
  M="baseline tome:ratio=0.5 tome:ratio=0.7 lgtm:ratio=0.5 lgtm:ratio=0.7 todo iekvd"
  step $B speed --model sd2-base --random-weights --device cuda --dtype fp16 --res 512 768 --batch 2 \
    --rounds "${ROUNDS:-20}" --warmup 5 --methods $M --out "$RES/speed-sd2-base-fp16"
  step $B speed --model dit-xl-2-512 --random-weights --device cuda --dtype fp16 --batch 2 \
    --rounds "${ROUNDS:-20}" --warmup 5 --methods $M --out "$RES/speed-dit-xl-2-512-fp16"
  step $B speed --model sd2-base --random-weights --device cuda --dtype fp16 --job layer --res 512 768 --batch 2 \
    --rounds 30 --warmup 5 --methods baseline tome:ratio=0.7 lgtm:ratio=0.7 todo iekvd --out "$RES/layer-sd2-base-fp16"
  if [ "${QUICK:-0}" = 1 ]; then echo "== QUICK=1: skipping the extra ops and vanilla-attention runs"; else
  step $B ops --device cuda --dtype fp16 --tokens 9216 --channels 320 --batch 2 --rounds 30 --warmup 5 \
    --out "$RES/ops-fp16-9216"
  step $B ops --device cuda --dtype fp32 --tokens 4096 --channels 320 --batch 2 --rounds 30 --warmup 5 \
    --out "$RES/ops-fp32-4096"
  step $B speed --model sd2-base --random-weights --device cuda --dtype fp16 --attn vanilla --res 512 --batch 2 \
    --rounds 10 --warmup 3 --methods baseline tome:ratio=0.7 lgtm:ratio=0.7 todo iekvd --no-flops \
    --out "$RES/speed-sd2-base-fp16-vanilla"
  fi
fi
step $B report "$RES" --md "$RES/BENCHMARKS-gpu.md" --eval assets/eval
tar -czf "$OUT/gpu-results.tar.gz" -C "$WORK" gpu
echo "== done $(date -u +%FT%TZ), $FAILED failed step(s)"
