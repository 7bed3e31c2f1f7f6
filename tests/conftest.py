"""Test-wide setup: 8 fake CPU devices (multi-device code runs on a laptop/CI machine)."""

import os

# Must happen before JAX initialises its backends; keep any other XLA flags the user has set.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count=8".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
