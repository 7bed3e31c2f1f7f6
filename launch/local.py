"""Starts N diffax processes on this machine, coordinated through 127.0.0.1.

For testing multi-process (multi-host) code on a laptop or CI machine: each process is an
`experiments.main` run with `--coordinator_address`, `--num_processes` and `--process_id`; on CPU
they exchange data through gloo collectives. Output lines are prefixed with the process index.
SIGTERM/SIGINT are forwarded to every process (they agree on one step through JAX's preemption
sync point and each writes its share of that checkpoint); if one process fails, the others are
stopped and the launcher exits with its code.

  python launch/local.py --num_processes=2 --cpu_devices_per_process=2 -- \
      --config=configs/quickstart.py --workdir=/tmp/run2 --config.train.num_steps=100
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pump(stream, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def launch(
    num_processes: int,
    main_args: list[str],
    *,
    cpu_devices_per_process: int = 0,
    port: int = 0,
    module: str = "experiments.main",
) -> int:
    """Runs `num_processes` copies of `python -m module main_args...`; returns the exit code.

    Args:
      num_processes: how many processes (>= 1).
      main_args: arguments for every process (the coordinator flags are appended).
      cpu_devices_per_process: if > 0, run on CPU with this many fake devices per process.
      port: coordinator port on 127.0.0.1 (0: pick a free one).
      module: the Python module each process runs.
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    address = f"127.0.0.1:{port or free_port()}"
    env = dict(os.environ)
    if cpu_devices_per_process > 0:
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={cpu_devices_per_process}"
        ).strip()
    env["PYTHONUNBUFFERED"] = "1"
    procs, threads = [], []
    for i in range(num_processes):
        cmd = [sys.executable, "-m", module, *main_args]
        if num_processes > 1:
            cmd += [
                f"--coordinator_address={address}",
                f"--num_processes={num_processes}",
                f"--process_id={i}",
            ]
        p = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        procs.append(p)
        t = threading.Thread(target=_pump, args=(p.stdout, f"[p{i}] "), daemon=True)
        t.start()
        threads.append(t)

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        pending = set(range(num_processes))
        while pending:
            for i in list(pending):
                try:
                    rc = procs[i].wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                pending.discard(i)
                if rc != 0 and code == 0:
                    code = rc
                    for j in pending:
                        procs[j].terminate()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for t in threads:
            t.join(timeout=5)
    return code


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--cpu_devices_per_process", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--module", default="experiments.main")
    parser.add_argument("main_args", nargs=argparse.REMAINDER, help="arguments after --")
    args = parser.parse_args()
    main_args = args.main_args[1:] if args.main_args[:1] == ["--"] else args.main_args
    sys.exit(
        launch(
            args.num_processes,
            main_args,
            cpu_devices_per_process=args.cpu_devices_per_process,
            port=args.port,
            module=args.module,
        )
    )


if __name__ == "__main__":
    main()
