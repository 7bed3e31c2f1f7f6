#!/bin/bash
# Runs the same training command on every worker of a Cloud TPU VM slice.
#
#   launch/tpu_vm.sh TPU_NAME ZONE configs/quickstart.py gs://bucket/runs/my_run [--config.k=v ...]
#
# Each worker installs diffax with the `tpu` extra (first run only) and starts experiments.main;
# jax.distributed.initialize() discovers the slice from the TPU metadata. The workdir should be a
# GCS path (gs://..., passed to orbax unchanged) or a shared file system every worker can write.
# LIBTPU_INIT_ARGS for TPU v5p come from launch/xla_env.sh (see launch/XLA_FLAGS.md). A
# maintenance event sends SIGTERM to the workers: they agree on one step through JAX's
# preemption sync point, all save it, and rerunning this command resumes from it.
set -euo pipefail
TPU=${1:?usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [overrides...]}
ZONE=${2:?zone}
CONFIG=${3:?config}
WORKDIR=${4:?workdir}
shift 4
REPO_DIR=${REPO_DIR:-diffax}
OVERRIDES=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  set -e
  cd $REPO_DIR
  python3 -m pip install -q -e '.[tpu]'
  source launch/xla_env.sh tpu
  python3 -m experiments.main --config=$CONFIG --workdir=$WORKDIR $OVERRIDES
"
