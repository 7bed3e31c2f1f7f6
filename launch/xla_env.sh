#!/bin/bash
# Performance settings for diffax runs at scale, sourced by slurm.sbatch (GPU) and tpu_vm.sh (TPU).
#
#   source launch/xla_env.sh gpu    # H100 / H200: XLA_FLAGS and NCCL / CUDA environment
#   source launch/xla_env.sh tpu    # TPU v5p: LIBTPU_INIT_ARGS
#
# Flags the user already set in XLA_FLAGS / LIBTPU_INIT_ARGS come last and so win. What each flag
# does and where it comes from: launch/XLA_FLAGS.md. Set DIFFAX_NO_XLA_FLAGS=1 to skip all of it.

DIFFAX_GPU_XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true \
--xla_gpu_enable_triton_gemm=false \
--xla_gpu_enable_highest_priority_async_stream=true \
--xla_gpu_all_reduce_combine_threshold_bytes=134217728 \
--xla_gpu_all_gather_combine_threshold_bytes=134217728 \
--xla_gpu_reduce_scatter_combine_threshold_bytes=67108864 \
--xla_gpu_enable_all_gather_combine_by_dim=false \
--xla_gpu_enable_reduce_scatter_combine_by_dim=false \
--xla_gpu_enable_pipelined_all_gather=true \
--xla_gpu_enable_pipelined_reduce_scatter=true \
--xla_gpu_enable_pipelined_all_reduce=true \
--xla_gpu_enable_while_loop_double_buffering=true \
--xla_disable_hlo_passes=rematerialization"

DIFFAX_TPU_LIBTPU_INIT_ARGS="--xla_tpu_enable_data_parallel_all_reduce_opt=true \
--xla_tpu_data_parallel_opt_different_sized_ops=true \
--xla_tpu_enable_async_collective_fusion=true \
--xla_tpu_enable_async_collective_fusion_fuse_all_gather=true \
--xla_tpu_enable_async_collective_fusion_multiple_steps=true \
--xla_tpu_overlap_compute_collective_tc=true \
--xla_enable_async_all_gather=true"

if [ "${DIFFAX_NO_XLA_FLAGS:-0}" != "1" ]; then
  case "${1:-}" in
    gpu)
      export XLA_FLAGS="${DIFFAX_GPU_XLA_FLAGS} ${XLA_FLAGS:-}"
      export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
      export CUDA_DEVICE_MAX_CONNECTIONS="${CUDA_DEVICE_MAX_CONNECTIONS:-1}"
      ;;
    tpu)
      export LIBTPU_INIT_ARGS="${DIFFAX_TPU_LIBTPU_INIT_ARGS} ${LIBTPU_INIT_ARGS:-}"
      ;;
    *)
      echo "usage: source launch/xla_env.sh gpu|tpu" >&2
      return 2 2>/dev/null || exit 2
      ;;
  esac
fi
