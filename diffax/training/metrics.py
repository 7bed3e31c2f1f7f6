"""Metric sinks: console, a JSONL file and TensorBoard event files (tensorboardX, no TensorFlow).

Only the primary process (index 0) writes; other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np


def _scalar(v: Any) -> float | int:
    v = np.asarray(v)
    return v.item()


class MetricWriter:
    """Writes scalar metrics to `workdir/metrics.jsonl`, TensorBoard (`workdir/tb`) and stdout.

    Args:
      workdir: run directory.
      enabled: False on non-primary processes (then every call is a no-op).
      console: also print each record as one line.
    """

    def __init__(self, workdir: str, *, enabled: bool = True, console: bool = True):
        self.enabled, self.console = enabled, console
        self._tb = None
        self._jsonl = None
        if enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            self._tb = SummaryWriter(os.path.join(workdir, "tb"), flush_secs=10)

    def write(self, step: int, metrics: dict[str, Any], prefix: str = "train") -> None:
        """Records `metrics` (scalars) at `step` under `prefix/`."""
        if not self.enabled:
            return
        values = {k: _scalar(v) for k, v in metrics.items()}
        record = {"step": int(step), "time": time.time(), "split": prefix, **values}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for k, v in values.items():
            self._tb.add_scalar(f"{prefix}/{k}", v, int(step))
        if self.console:
            body = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
            )
            # tqdm.write keeps an active progress bar intact (and prints plainly without one).
            from tqdm import tqdm

            tqdm.write(f"[{prefix}] step {step}: {body}")

    def write_text(self, step: int, tag: str, text: str) -> None:
        """Records a text blob (e.g. decoded samples) in TensorBoard."""
        if self.enabled:
            self._tb.add_text(tag, text, int(step))

    def close(self) -> None:
        """Flushes and closes the sinks."""
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
