"""Preemption: SIGTERM/SIGINT become a stop request the train loop checks between steps.

Single process: our handler records the signal, the loop checkpoints the step it is at and stops.

Several processes (`jax.distributed` initialised): a signal reaches one host, or the hosts at
different steps, so each stopping on its own would save different steps (or hang in a collective).
JAX's coordination service solves this: `jax.distributed.initialize` starts a preemption sync
manager whose C++ notifier installs its own SIGTERM handler; the notice is shared with every
process, and `multihost_utils.reached_preemption_sync_point(step)` (orbax:
`CheckpointManager.reached_preemption`) becomes True on every process at the same step (the
largest step any process had reached, plus one). A Python SIGTERM handler installed afterwards
would replace that C++ handler (the notice would then never be sent), so in that mode
`StopSignal` leaves SIGTERM alone and turns SIGINT into a SIGTERM to this process, which the
notifier then propagates like a scheduler's preemption notice.
"""

from __future__ import annotations

import os
import signal


def preemption_sync_enabled() -> bool:
    """True when JAX's multi-host preemption sync manager is running in this process."""
    try:
        from jax._src import distributed
    except ImportError:  # pragma: no cover - a JAX without the private module
        return False
    state = distributed.global_state
    return state.client is not None and state.preemption_sync_manager is not None


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps (preemption).

    Args:
      synchronized: leave SIGTERM to JAX's preemption notifier and forward SIGINT to it (see the
        module docstring); None: decide from `preemption_sync_enabled()`.

    Attributes:
      received: the signal number this process's handler recorded, or None. In synchronized
        mode it stays None: the loop asks the checkpointer's `reached_preemption(step)` instead.
      synchronized: whether the stop is agreed through the coordination service.
    """

    def __init__(self, synchronized: bool | None = None):
        self.received: int | None = None
        self.synchronized = preemption_sync_enabled() if synchronized is None else synchronized
        self._previous = {}

    def __enter__(self):
        if self.synchronized:
            handlers = {signal.SIGINT: self._forward_to_notifier}
        else:
            handlers = {signal.SIGTERM: self._handle, signal.SIGINT: self._handle}
        for sig, handler in handlers.items():
            try:
                self._previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def _forward_to_notifier(self, signum, frame):
        os.kill(os.getpid(), signal.SIGTERM)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
