"""Preemption: SIGTERM/SIGINT become a flag the train loop checks between steps."""

from __future__ import annotations

import signal


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps (preemption)."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
