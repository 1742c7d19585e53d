#!/usr/bin/env bash
# Prepares .gpu_carry/, the folder scripts/gpu_paper_table.sh reads on a device machine
# that has no network, TensorFlow, grain or ml-collections (its image: JAX with CUDA,
# flax, optax, orbax, OpenCV, Pillow, matplotlib, protobuf, tensorboard, PyYAML, ...).
# Run it here, where PyPI and TensorFlow (data_prep) are:
#
#   scripts/gpu_carry.sh        # RECORDS=400 DATA_DIR=~/tensorflow_datasets PY=3.12 to change
#
# It writes (.gpu_carry/ is git-ignored; a device call carries it: carry [".gpu_carry"]):
#   wheels/*.whl, wheels/requirements.txt  what fer_jax imports at train time and the device
#       lacks, at the versions installed here, built for the device's Python (x86-64):
#       grain, array-record (grain imports it), ml-collections, simplejpeg,
#       google-crc32c, portpicker (a grain dependency). No TensorFlow or TFDS: training,
#       evaluation and the benchmark read the records without them.
#   data/synthetic_faces/small/   the grid's records (built in DATA_DIR first if missing)
#   records/image_folder/faces224/  RECORDS generated 224 px faces built by the
#       image_folder builder (the input benchmark's records; data_prep.benchmark)
#   COMMIT   the commit they were prepared at
# and fails unless it plus the files a call sends (tracked and untracked-not-ignored)
# stay under LIMIT_MIB (default 62 of the 64 MiB a call carries).
set -euo pipefail
cd "$(dirname "$0")/.."

CARRY=.gpu_carry
RECORDS="${RECORDS:-400}"
DATA_DIR="${DATA_DIR:-$HOME/tensorflow_datasets}"
PY="${PY:-3.12}"
LIMIT_MIB="${LIMIT_MIB:-62}"
PYTHON="${PYTHON:-python}"
PACKAGES=(grain array-record ml-collections simplejpeg google-crc32c portpicker)

rm -rf "$CARRY"
mkdir -p "$CARRY/wheels" "$CARRY/data" "$CARRY/records"

# The wheels, at the versions tested here.
: > "$CARRY/wheels/requirements.txt"
for name in "${PACKAGES[@]}"; do
  version="$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" \
             "$name")"
  echo "$name==$version" >> "$CARRY/wheels/requirements.txt"
done
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$CARRY/wheels" -r "$CARRY/wheels/requirements.txt"

# The grid's records: synthetic_faces/small, as built here (the bytes do not depend on
# the machine).
if ! "$PYTHON" -c "from fer_jax import datasets; datasets.find('synthetic_faces/small', '$DATA_DIR')" \
     2>/dev/null; then
  "$PYTHON" -m data_prep.build --dataset=synthetic_faces/small --data_dir="$DATA_DIR"
fi
mkdir -p "$CARRY/data/synthetic_faces"
cp -r "$DATA_DIR/synthetic_faces/small" "$CARRY/data/synthetic_faces/"
rm -f "$CARRY"/data/synthetic_faces/small/*/*.offsets.npy   # rebuilt there at first read

# The input benchmark's 224 px records.
"$PYTHON" -m data_prep.benchmark --records_only="$CARRY/records" --num="$RECORDS" \
  --image_size=224

git rev-parse HEAD > "$CARRY/COMMIT" 2>/dev/null || echo unknown > "$CARRY/COMMIT"

# What a device call sends: the files git does not ignore, plus the carried folder.
sent=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null \
       | tail -n 1 | cut -f1)
carried=$(du -sb "$CARRY" | cut -f1)
total_mib=$(( (sent + carried) / 1048576 ))
echo "carry: $(du -sh "$CARRY" | cut -f1) in $CARRY (wheels $(du -sh "$CARRY/wheels" | cut -f1)," \
     "synthetic_faces/small $(du -sh "$CARRY/data" | cut -f1), 224 px records" \
     "$(du -sh "$CARRY/records" | cut -f1)); with the working tree: $total_mib MiB of $LIMIT_MIB"
if (( sent + carried > LIMIT_MIB * 1048576 )); then
  echo "too large for one device call: lower RECORDS (now $RECORDS)" >&2
  exit 1
fi
