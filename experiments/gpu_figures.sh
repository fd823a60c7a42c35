#!/usr/bin/env bash
# Issue 17's GPU figures in one run (device time is short: prepared here, run once).
#
#   bash experiments/gpu_figures.sh OUT_DIR        # on a machine with one CUDA GPU
#
# SD-1.5-sized parts (860M U-Net, full VAE, 12-layer text tower; random weights: speed only),
# 512 px, bf16, dcgd next to diffusers / a bare loop in the same process:
#   sampling  s/image at 50 and at 10 steps, dcgd vs StableDiffusionInpaintPipeline; at 10
#             steps also compiled (DCGDPipeline.compile, inductor, frozen weights; the
#             compile is reported, not timed), its output checked against eager's;
#   training  samples/s, peak GiB and model FLOP utilisation, with and without the encoding
#             cache (frozen VAE / text encodings reused), dcgd (Lightning) vs the bare loop.
# Each command has its own time limit so one slow part cannot eat the others' time; every
# figure lands in OUT_DIR/<part>.json and the log beside it. Copy them into
# experiments/BENCHMARKS.md with the machine (OUT_DIR/nvidia-smi.txt) and this command.
set -uo pipefail
OUT=${1:-${OUT:-gpu_figures}}
mkdir -p "$OUT"
pip install -q -e . >"$OUT/install.log" 2>&1 || { echo "install failed"; tail -5 "$OUT/install.log"; exit 1; }
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || { echo "no GPU here"; exit 1; }

run() {
  local name=$1 limit=$2
  shift 2
  timeout "$limit" python -m dcgd bench --model-size sd15 --resolution 512 --precision bf16 \
    --device cuda --json "$OUT/$name.json" "$@" >"$OUT/$name.log" 2>&1
  echo "$name: exit $? (limit ${limit}s)"
  grep -E "ratio|TFLOP|GiB" "$OUT/$name.log" | tail -4
}

run sampling_50 120 --only sampling --batch 1 --steps 50 --repeats 3 --no-compile
run sampling_10 210 --only sampling --batch 1 --steps 10 --repeats 3
run training 120 --only training --batch 8 --train-steps 20 --warmup 3
run training_cache 120 --only training --batch 8 --train-steps 20 --warmup 3 \
  --module '{"cache_encodings": true}'
