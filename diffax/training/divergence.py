"""Dead-run detection: too many skipped steps, or a non-finite evaluation, stop the run."""

from __future__ import annotations

import collections
import math

import jax


class TrainingDiverged(RuntimeError):
    """The run is dead: too many skipped steps, or a non-finite evaluation."""


class SkipMonitor:
    """Tracks the NaN/inf guard's skipped steps over a sliding window, off the critical path.

    Each step's cumulative `skipped` counter stays on the device until `check`, which fetches the
    pending ones at once (at log and checkpoint points), so the loop does not wait on every step.
    """

    def __init__(self, window: int, max_fraction: float, start_skipped: int):
        self.window, self.max_fraction = window, max_fraction
        self._pending: list[jax.Array] = []
        self._history = collections.deque([start_skipped], maxlen=window + 1)

    def record(self, skipped: jax.Array) -> None:
        self._pending.append(skipped)

    def check(self, step: int, *, final: bool = False) -> None:
        """Raises `TrainingDiverged` when the skipped fraction is over the limit.

        A full window is needed while training; at the end (`final`) a run shorter than the
        window is judged on all the steps it took.
        """
        self._history.extend(int(x) for x in jax.device_get(self._pending))
        self._pending = []
        steps = len(self._history) - 1
        if steps == 0 or (steps < self.window and not final):
            return
        skipped = self._history[-1] - self._history[0]
        if skipped / steps > self.max_fraction:
            raise TrainingDiverged(
                f"training diverged: {skipped} of the last {steps} steps (up to step {step}) "
                "were skipped for non-finite loss or gradients, more than "
                f"train.max_skipped_fraction={self.max_fraction}; stopped without writing a "
                "checkpoint. Lower optimizer.lr (or raise optimizer.warmup_steps) and restart"
            )


def check_eval(result: dict[str, float], task, step: int) -> None:
    value = result[f"{task.metric}_bits_per_{task.unit}"]
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"training diverged: the held-out {task.metric} at step {step} is {value}; stopped "
            "without writing a checkpoint. Lower optimizer.lr (or raise optimizer.warmup_steps) "
            "and restart"
        )
