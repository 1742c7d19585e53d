#!/usr/bin/env bash
# Training throughput on one GPU, in one go (about 8 minutes on an H100, compilation
# included): fer_jax ResNet-50 (224 px, bf16, large maps; with and without the AU loss,
# interleaved in one measurement), the same step in PyTorch (the paper's setting), and
# fer_jax ViT-B/16. Each prints one JSON line (keys: fer_jax/benchmark.py); with $OUT set
# the lines are also appended to "$OUT/gpu_bench.jsonl".
#
#   scripts/gpu_benchmark.sh            # from anywhere; STEPS=.. REPEATS=.. to change
#
# Needs jax[cuda], flax, optax, orbax-checkpoint, ml_collections (WHEELS=DIR installs it
# from a wheel), absl-py, tqdm, PyYAML, and for the reference torch + timm. No TensorFlow:
# synthetic input never imports it.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS="${STEPS:-20}"
REPEATS="${REPEATS:-3}"
# JAX preallocates 75 % of the GPU by default; ResNet-50 with large maps (28x28 stage4)
# at batch 224 keeps many activations: give it more. Each measurement is its own
# process, so PyTorch gets the whole GPU afterwards.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
export TF_CPP_MIN_LOG_LEVEL=2
RESULTS="${OUT:+$OUT/gpu_bench.jsonl}"

bench() {  # one measurement; a failure is recorded and the next one still runs
  echo "== python -m fer_jax.benchmark $*" >&2
  local line
  line="$(python -m fer_jax.benchmark --steps="$STEPS" --repeats="$REPEATS" "$@" | tail -n 1)" ||
    line="{\"error\": \"exit status $?\", \"args\": \"$*\"}"
  echo "$line"
  if [ -n "$RESULTS" ]; then echo "$line" >> "$RESULTS"; fi
}

if ! python -c "import ml_collections" 2>/dev/null; then
  # No network needed: WHEELS=DIR holding the ml_collections wheel (pure Python).
  [ -n "${WHEELS:-}" ] || { echo "ml_collections is missing (pip install ml_collections," \
                                 "or WHEELS=DIR with its wheel)" >&2; exit 1; }
  pip install --quiet --no-index --no-deps --find-links "$WHEELS" ml_collections
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
bench --config=configs/rafdb_resnet50.py
bench --config=configs/rafdb_resnet50.py --reference=pytorch
bench --config=configs/affectnet_vit_base.py
