"""Checks shared by the samplers that only make sense for the masked process."""

from __future__ import annotations

from diffax.discrete.processes import Masked, Process


def require_masked(process: Process, sampler: str) -> None:
    """Raises `TypeError` unless `process` is `Masked`."""
    if not isinstance(process, Masked):
        raise TypeError(
            f"sampler {sampler!r} needs process=Masked (allowed processes: Masked), got "
            f"{type(process).__name__}"
        )
