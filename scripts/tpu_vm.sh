#!/usr/bin/env bash
# Train on an existing Cloud TPU VM: one host (v4-8) or every worker of a pod slice
# (v4-32 and up). Creates nothing: the TPU VM, the bucket and the records must exist.
#
#   scripts/tpu_vm.sh setup NAME ZONE              copy this checkout (git HEAD) to every
#                                                  worker and install it there
#   scripts/tpu_vm.sh train NAME ZONE FLAGS...     run python -m fer_jax.main FLAGS... on
#                                                  every worker at once
#
# Example (records built once with data_prep.build, then copied to a bucket):
#   scripts/tpu_vm.sh setup my-v4-32 us-central2-b
#   scripts/tpu_vm.sh train my-v4-32 us-central2-b --config=configs/rafdb_resnet50.py \
#       --workdir=gs://my-bucket/runs/rafdb \
#       --config.dataset.data_dir=gs://my-bucket/tensorflow_datasets
#
# - Every worker runs the same command. JAX detects the pod slice and fer_jax initialises
#   jax.distributed by itself (one process per host); each host reads its own shards of
#   the records, straight from GCS (`data_dir=gs://...`).
# - `--workdir` must be the same place for every worker: a gs:// path (orbax writes the
#   checkpoints there from all hosts; process 0 writes results.json, pictures and
#   TensorBoard).
# - Resuming: run the same `train` command again. Every worker restores the latest
#   checkpoint of the workdir; the run continues exactly where it stopped. A worker that
#   receives SIGTERM (maintenance, preemption) makes all of them save the same step and
#   exit with status 75, which means "restart me"; with RETRY=1 every worker does so:
#       RETRY=1 scripts/tpu_vm.sh train ...
#   (train.max_steps_per_run=N stops after N steps the same way: jobs in time slices.)
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 2; }
[ $# -ge 3 ] || usage
action="$1" name="$2" zone="$3"
shift 3
on_all() {
  gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="$1"
}

case "$action" in
  setup)
    cd "$(dirname "$0")/.."
    archive="$(mktemp -d)/fer_jax.tar.gz"
    git archive --format=tar.gz -o "$archive" HEAD
    gcloud compute tpus tpu-vm scp "$archive" "$name":~/fer_jax.tar.gz \
      --zone="$zone" --worker=all
    on_all 'rm -rf ~/fer_jax && mkdir ~/fer_jax && tar -xzf ~/fer_jax.tar.gz -C ~/fer_jax &&
            pip install -q -e ~/fer_jax "jax[tpu]"'
    ;;
  train)
    [ $# -ge 1 ] || usage
    run="python3 -m fer_jax.main $(printf '%q ' "$@")"
    if [ "${RETRY:-0}" = 1 ]; then
      # On each worker: start again while the trainer exits with 75 (checkpoint saved).
      run="until $run; do s=\$?; [ \$s -eq 75 ] || exit \$s; echo 'Resuming.' >&2; done"
    fi
    on_all "cd ~/fer_jax && $run"
    ;;
  *) usage ;;
esac
