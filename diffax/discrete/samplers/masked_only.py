"""The check shared by the samplers that need an absorbing (masked) process."""

from __future__ import annotations

from diffax.discrete.processes import Process


def require_absorbing(process: Process, sampler: str) -> None:
    """Raises `TypeError` unless `process` has an absorbing mask state (`mask_id` not None)."""
    if process.mask_id is None:
        raise TypeError(
            f"sampler {sampler!r} needs process=Masked or another absorbing process (allowed "
            f"processes: Masked, or any Process whose mask_id is not None), got "
            f"{type(process).__name__}"
        )
