"""Test-wide setup: 8 fake CPU devices (multi-device code runs on a laptop/CI machine)."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
