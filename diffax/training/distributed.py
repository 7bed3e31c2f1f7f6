"""Multi-process start-up: `jax.distributed.initialize` for clusters and local test runs.

Three ways a run becomes multi-process:
* explicit flags (`--coordinator_address`, `--num_processes`, `--process_id`), as `launch/local.py`
  passes them to N processes on one machine;
* a SLURM job step with more than one task (JAX reads the SLURM environment);
* a multi-worker Cloud TPU VM (JAX reads the TPU metadata).
On CPU the cross-process collectives use gloo.
"""

from __future__ import annotations

import os

import jax


def cluster_detected() -> bool:
    """True inside a multi-task SLURM step or on a multi-worker TPU VM slice."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hosts.split(",") if h]) > 1


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Initialises the JAX distributed runtime when the run spans several processes.

    Args:
      coordinator_address: "host:port" of process 0; when given, `num_processes` and `process_id`
        must be given too.
      num_processes: total number of processes.
      process_id: this process's index in [0, num_processes).

    Returns:
      True when the distributed runtime was initialised, False for a single-process run.
    """
    explicit = [coordinator_address, num_processes, process_id]
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ValueError(
                "coordinator_address, num_processes and process_id must be given together; got "
                f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
                f"process_id={process_id!r}"
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process_id={process_id} must lie in [0, {num_processes})")
        if num_processes == 1:
            return False
    elif not cluster_detected():
        return False
    # Only the CPU client reads this; asking for the backend here would initialise it too early.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True
