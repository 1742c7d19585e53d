#!/usr/bin/env bash
# The miniature paper table trained on one GPU, and records-to-GPU throughput, in one
# device call (issue 16, section 3).
#
# Here (PyPI and TensorFlow at hand):  scripts/gpu_carry.sh   -> .gpu_carry/ (< 64 MiB)
# On the device (one call, carry [".gpu_carry"], timeout_s 600):
#   PYTHONUNBUFFERED=1 scripts/gpu_paper_table.sh
# Everything it makes lands in $OUT (when set) as well: paper_table_gpu.md/.png/.csv,
# bench.jsonl, cells.tgz (each cell's cell.json, results.json, error.txt), the log. Copy
# the .md and .png into docs/ and commit them.
#
# What it does, each phase bounded so that the whole fits one 10-minute call
# (TOTAL_BUDGET_S=570):
# 1. installs the carried wheels offline (pip --no-index --find-links) unless fer_jax's
#    imports already work;
# 2. `python -m fer_jax.benchmark` for ResNet-50 at 224 px (configs/rafdb_resnet50.py,
#    bf16, batch 224, large maps) from the carried 224 px records (--input=records,
#    BENCH_WORKERS Grain processes) and from one resident random batch
#    (--input=synthetic), one after the other on the idle GPU, sharing one compilation
#    cache; both within BENCH_BUDGET_S (default 220 s; the first gets 2/3). The .md gets
#    images/s of both, their ratio (goal >= 0.95) and the input profile of one core;
# 3. the `paper_table_synthetic` grid (fer_jax.grids): every cell, both columns, every
#    method, at the demo's length (EPOCHS=30, TS-CAM's ViT and APViT too), evaluated
#    with CAMS=all (every CAM method that applies to the cell's model), on the carried
#    synthetic_faces/small. Its SHARDS cells (default: all 16) train at once, one process
#    each, on the one GPU (a tiny model: the GPU idles most of a step; the host's cores
#    do the 64 px decoding and augmentation, INPUT_WORKERS processes per cell).
#    Estimate, not a measurement: 30 epochs are 1,640 steps of 64 images, some 2-3 ms
#    of one core per image (the profile of `fer_jax.benchmark --input=records` on
#    synthetic_faces/small, on the loaded 2-core CPU here): 3.5 to 5 minutes of one core
#    per cell for the input, plus compilation (CAMS=all compiles a dozen CAM methods per
#    cell: 4-5 minutes a cell in the 3-cell DRY_RUN on the 2-core CPU here) and
#    evaluation. On 16 cores that is some 5-7 minutes for the grid: it may not end in the
#    ~5 minutes the benchmark leaves of the call. SKIP_BENCH=1 gives it ~8.5. The device
#    time of a session (15 min, the machine's start included) allows one full call and
#    at most a short second one. GRID_BUDGET_S (default: the call's rest, less a minute)
#    stops the cells still running with SIGTERM: each saves a checkpoint, and the same
#    command again resumes them and skips finished cells (at once on the still-warm
#    machine: workdirs/ is kept between calls; SKIP_BENCH=1, TOTAL_BUDGET_S fitted to the
#    device time left);
# 4. `python -m fer_jax.tables` -> docs/paper_table_gpu.md (GPU, versions, wall times,
#    the table, the benchmark) and docs/paper_table_gpu.png (+ .csv); unfinished cells
#    are named under the table.
#
# DRY_RUN=1: the same script on this CPU (about 6 minutes on 2 cores), for syntax and
# wiring: it builds synthetic_faces/tiny and 24 face records in a scratch folder (instead
# of the carried ones), runs 3 cells of the grid (both columns of the post-hoc model,
# TS-CAM's ViT with AU) for 1 step at 32 px, tabulates them, and runs both benchmarks
# with a narrow ResNet-18 for 1 step; nothing is written to docs/.
set -uo pipefail   # not -e: a failing phase is reported, and the others still run
cd "$(dirname "$0")/.."
ROOT="$PWD"
T0=$(date +%s)

DRY_RUN="${DRY_RUN:-0}"
PYTHON="${PYTHON:-python3}"
CARRY="${CARRY:-$ROOT/.gpu_carry}"
GRID=paper_table_synthetic
EPOCHS="${EPOCHS:-30}"
CAMS="${CAMS:-all}"
INPUT_WORKERS="${INPUT_WORKERS:-1}"
BENCH_WORKERS="${BENCH_WORKERS:-14}"
TOTAL_BUDGET_S="${TOTAL_BUDGET_S:-570}"
BENCH_BUDGET_S="${BENCH_BUDGET_S:-220}"
SKIP_GRID="${SKIP_GRID:-0}"
SKIP_BENCH="${SKIP_BENCH:-0}"
RUNS="${RUNS:-$ROOT/workdirs/gpu_paper_table}"
DOCS="$ROOT/docs"
if [ "$DRY_RUN" = 1 ]; then
  RUNS="${DRY_RUNS:-$(mktemp -d /tmp/fer_jax_gpu_dry.XXXXXX)}"
  DOCS="$RUNS/docs"
  TOTAL_BUDGET_S="${DRY_TOTAL_BUDGET_S:-2400}"
  BENCH_BUDGET_S=900
fi
RESULTS="${OUT:-$RUNS/out}"
mkdir -p "$RUNS/logs" "$RESULTS" "$DOCS"
LOG="$RESULTS/gpu_paper_table.log"
exec > >(tee -a "$LOG") 2>&1
echo "== gpu_paper_table.sh $(date -u +%FT%TZ) DRY_RUN=$DRY_RUN runs in $RUNS"

export TF_CPP_MIN_LOG_LEVEL=2
export JAX_COMPILATION_CACHE_DIR="$RUNS/jit_cache"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# -- 1. the packages the device image lacks ----------------------------------------------
IMPORTS="import jax, flax, optax, orbax.checkpoint, grain, ml_collections, simplejpeg, \
google_crc32c, cv2, matplotlib, fer_jax.train, fer_jax.tables, fer_jax.benchmark"
if ! "$PYTHON" -c "$IMPORTS" 2>/dev/null; then
  echo "== installing the carried wheels ($CARRY/wheels)"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --find-links "$CARRY/wheels" --target /tmp/fer_jax_site -r "$CARRY/wheels/requirements.txt" \
    || { echo "pip install failed" >&2; exit 1; }
  export PYTHONPATH="$PYTHONPATH:/tmp/fer_jax_site"
  "$PYTHON" -c "$IMPORTS" || { echo "fer_jax's imports still fail" >&2; exit 1; }
fi

# -- the data ----------------------------------------------------------------------------
if [ "$DRY_RUN" = 1 ]; then
  DATA="$RUNS/data"
  RECORDS_DIR="$RUNS/records"
  "$PYTHON" -m data_prep.build --dataset=synthetic_faces/tiny --data_dir="$DATA" \
    > "$RUNS/logs/build.log" 2>&1 || { echo "building synthetic_faces/tiny failed" >&2; exit 1; }
  "$PYTHON" -m data_prep.benchmark --records_only="$RECORDS_DIR" --num=24 --image_size=224 \
    >> "$RUNS/logs/build.log" 2>&1 || { echo "building the face records failed" >&2; exit 1; }
  EPOCHS=1   # 1 step: 112 examples, batch 64
  BENCH_WORKERS=1
  DATASET=(--config.dataset.name=synthetic_faces/tiny --config.dataset.image_size=32
           --config.train.num_epochs="$EPOCHS" --config.eval.faithfulness_steps=2
           --config.eval.num_plot_images=2)
  BENCH_FLAGS=(--steps=1 --repeats=1 --input_batches=1 --profile_steps=1
               --config.model.name=resnet18 --config.model.width=4
               --config.train.batch_size=8 --config.input.workers="$BENCH_WORKERS")
else
  DATA="$CARRY/data"
  RECORDS_DIR="$CARRY/records"
  DATASET=(--config.train.num_epochs="$EPOCHS")
  BENCH_FLAGS=(--steps=10 --repeats=2 --input_batches=20 --profile_steps=1
               --config.input.workers="$BENCH_WORKERS")
fi

# -- the environment, for the record -----------------------------------------------------
GPU="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
       | head -n 1)"
GPU="${GPU:-none (CPU)}"
VERSIONS="$("$PYTHON" - <<'EOF'
import importlib.metadata as m, platform
import jax
names = ["jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "opencv-python-headless"]
found = []
for n in names:
    try:
        found.append(f"{n} {m.version(n)}")
    except m.PackageNotFoundError:
        pass
print(f"Python {platform.python_version()}, " + ", ".join(found)
      + f"; JAX backend {jax.default_backend()}, {jax.device_count()} device(s): "
      + f"{jax.devices()[0].device_kind}")
EOF
)"
# The checkout's commit; on the device (no .git) the one the carry was prepared at.
COMMIT="$(git rev-parse HEAD 2>/dev/null || cat "$CARRY/COMMIT" 2>/dev/null || echo unknown)"
CORES="$(nproc)"
echo "GPU: $GPU"
echo "$VERSIONS"
echo "commit $COMMIT, $CORES CPU cores"

# -- 2. records -> GPU against a resident batch, on the idle GPU ---------------------------
BENCH="$RESULTS/bench.jsonl"
BENCH_S=0
if [ "$SKIP_BENCH" != 1 ]; then
  t=$(date +%s)
  export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
  for input in records synthetic; do
    echo "== benchmark ResNet-50 224 px, --input=$input"
    extra=()
    if [ "$input" = records ]; then
      extra=(--config.dataset.name=image_folder/faces224 --config.dataset.data_dir="$RECORDS_DIR")
    fi
    # The records' run compiles; the synthetic one finds the same programs in the cache.
    left=$(( BENCH_BUDGET_S - ($(date +%s) - t) ))
    if [ "$input" = records ]; then limit=$(( left * 2 / 3 )); else limit=$left; fi
    timeout -s TERM -k 15 "$limit" "$PYTHON" -m fer_jax.benchmark \
      --config=configs/rafdb_resnet50.py --input="$input" "${BENCH_FLAGS[@]}" "${extra[@]}" \
      > "$RUNS/logs/bench_$input.log" 2>&1
    status=$?
    line="$(grep '^{' "$RUNS/logs/bench_$input.log" | tail -n 1)"
    [ $status = 0 ] && [ -n "$line" ] || line="{\"input\": \"$input\", \"error\": \"exit status $status\"}"
    echo "$line" | tee -a "$BENCH"
    if [ "$input" = records ]; then   # the input profile's table, for the .md
      sed -n '/^Input pipeline, one core/,/^Grain pipeline/p' "$RUNS/logs/bench_records.log" \
        > "$RUNS/logs/bench_records_profile.txt"
    fi
  done
  unset XLA_PYTHON_CLIENT_MEM_FRACTION
  BENCH_S=$(( $(date +%s) - t ))
fi

# -- 3. the grid: every cell at once, one process each -----------------------------------
CELLS="$("$PYTHON" -c "from fer_jax import grids; print(len(grids.get('$GRID').cells))")"
SHARDS="${SHARDS:-$CELLS}"
if [ "$DRY_RUN" = 1 ]; then RUN_SHARDS="${DRY_SHARDS:-0 1 13}"; else RUN_SHARDS="$(seq 0 $((SHARDS - 1)))"; fi
GRID_S=0
if [ "$SKIP_GRID" != 1 ]; then
  # What is left of the call, less a minute for the table and the report.
  GRID_BUDGET_S="${GRID_BUDGET_S:-$(( TOTAL_BUDGET_S - ($(date +%s) - T0) - 60 ))}"
  echo "== grid $GRID: shards {$(echo $RUN_SHARDS | tr ' ' ,)} of $SHARDS at once," \
       "within $GRID_BUDGET_S s (logs: $RUNS/logs/shard*.log)"
  n_run=$(echo $RUN_SHARDS | wc -w)
  # Each process takes GPU memory as it needs it, at most its share.
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
  XLA_PYTHON_CLIENT_MEM_FRACTION="$("$PYTHON" -c "print(round(0.9 / $n_run, 3))")"
  export XLA_PYTHON_CLIENT_MEM_FRACTION
  t=$(date +%s)
  pids=()
  for i in $RUN_SHARDS; do
    timeout -s TERM -k 30 "$GRID_BUDGET_S" "$PYTHON" -m fer_jax.experiments --grid="$GRID" \
      --out="$RUNS/cells" --shard="$i/$SHARDS" --config.dataset.data_dir="$DATA" \
      --config.eval.cam_methods="$CAMS" --config.input.workers="$INPUT_WORKERS" \
      --config.train.progress_bar=False "${DATASET[@]}" > "$RUNS/logs/shard$i.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  unset XLA_PYTHON_CLIENT_PREALLOCATE XLA_PYTHON_CLIENT_MEM_FRACTION
  GRID_S=$(( $(date +%s) - t ))
  echo "grid: $GRID_S s"
  grep -h "^cell " "$RUNS"/logs/shard*.log || true
fi

# -- 4. the table --------------------------------------------------------------------------
"$PYTHON" -m fer_jax.tables --out="$RUNS/cells" > "$RUNS/logs/tables.log" 2>&1 \
  || echo "fer_jax.tables failed: $(tail -n 3 "$RUNS/logs/tables.log")"

# -- the report ------------------------------------------------------------------------------
TOTAL_S=$(( $(date +%s) - T0 ))
GPU="$GPU" VERSIONS="$VERSIONS" COMMIT="$COMMIT" CORES="$CORES" GRID_S="$GRID_S" \
BENCH_S="$BENCH_S" TOTAL_S="$TOTAL_S" EPOCHS="$EPOCHS" CAMS="$CAMS" SHARDS="$SHARDS" \
RUN_SHARDS="$RUN_SHARDS" INPUT_WORKERS="$INPUT_WORKERS" BENCH_WORKERS="$BENCH_WORKERS" \
DRY_RUN="$DRY_RUN" RUNS="$RUNS" DOCS="$DOCS" BENCH="$BENCH" "$PYTHON" - <<'EOF'
import json, os, shutil
e = os.environ
cells, docs = os.path.join(e["RUNS"], "cells"), e["DOCS"]
lines = ["# The miniature paper table on a GPU (synthetic_faces/small, 30 epochs)", ""]
if e["DRY_RUN"] == "1":
    lines = ["# DRY RUN (CPU, tiny data, 1 step): wiring only, no result", ""]
lines += [
    "Produced by `scripts/gpu_paper_table.sh` (inputs prepared by `scripts/gpu_carry.sh`) at "
    f"commit {e['COMMIT'][:12]}.", "",
    f"- GPU: {e['GPU']}; {e['CORES']} CPU cores.",
    f"- {e['VERSIONS']}.",
    f"- Grid `paper_table_synthetic`, every cell with `--config.train.num_epochs={e['EPOCHS']}` "
    f"and `--config.eval.cam_methods={e['CAMS']}` (the table's title is the grid's "
    f"description, with the CPU miniature's epochs); {len(e['RUN_SHARDS'].split())} cells "
    f"trained at once on one device (one process each, input.workers={e['INPUT_WORKERS']}).",
    f"- Wall time: grid {int(e['GRID_S']) / 60:.1f} min, benchmark {int(e['BENCH_S']) / 60:.1f} "
    f"min, whole script {int(e['TOTAL_S']) / 60:.1f} min.", ""]
table = os.path.join(cells, "table.md")
if os.path.exists(table):
    with open(table, encoding="utf-8") as f:
        lines += [f.read().rstrip(), "", "![without -> with AU, per method](paper_table_gpu.png)", ""]
    shutil.copy(os.path.join(cells, "paper_table.png"), os.path.join(docs, "paper_table_gpu.png"))
    shutil.copy(os.path.join(cells, "table.csv"), os.path.join(docs, "paper_table_gpu.csv"))
else:
    lines += ["No cell finished: no table.", ""]
bench = {}
if os.path.exists(e["BENCH"]):
    with open(e["BENCH"]) as f:
        for line in f:
            row = json.loads(line)
            bench[row.get("input")] = row
if bench:
    rec, syn = bench.get("records", {}), bench.get("synthetic", {})
    lines += ["## Records to GPU: ResNet-50, 224 px, batch 224, bf16, large maps", "",
              "`python -m fer_jax.benchmark --config=configs/rafdb_resnet50.py --input=records` "
              f"(image_folder/faces224 records, {e['BENCH_WORKERS']} Grain workers) against "
              "`--input=synthetic` (one random batch resident on the GPU), one after the other.", "",
              "| input | images/s with AU loss | images/s without | input alone, images/s |",
              "|---|---|---|---|"]
    for name, row in (("records", rec), ("synthetic", syn)):
        lines.append(f"| {name} | {row.get('images_per_s_align', row.get('error'))} | "
                     f"{row.get('images_per_s_no_align')} | {row.get('input_images_per_s')} |")
    ra, sa = rec.get("images_per_s_align"), syn.get("images_per_s_align")
    if ra and sa:
        lines += ["", f"Records / synthetic (with AU loss): {ra / sa:.3f} (goal >= 0.95)."]
    profile = os.path.join(e["RUNS"], "logs", "bench_records_profile.txt")
    if os.path.exists(profile):
        with open(profile) as f:
            lines += ["", "```", f.read().rstrip(), "```"]
    lines.append("")
with open(os.path.join(docs, "paper_table_gpu.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
print("\n".join(lines))
EOF

# -- what comes back ------------------------------------------------------------------------
for f in paper_table_gpu.md paper_table_gpu.png paper_table_gpu.csv; do
  [ -f "$DOCS/$f" ] && [ "$DOCS" != "$RESULTS" ] && cp "$DOCS/$f" "$RESULTS/"
done
(cd "$RUNS" && tar czf "$RESULTS/cells.tgz" \
   $(find cells -maxdepth 2 \( -name cell.json -o -name results.json -o -name error.txt \) \
     2>/dev/null) logs 2>/dev/null)
echo "== done in $(( $(date +%s) - T0 )) s; outputs in $RESULTS: $(ls "$RESULTS" | tr '\n' ' ')"
