"""`import diffax.continuous` must not pull in the training stack (design.md, section 2)."""

import subprocess
import sys

FORBIDDEN = ("flax", "optax", "orbax", "grain", "tensorflow_datasets", "tensorflow")


def test_import_is_light():
    code = (
        "import sys, diffax.continuous\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=None
    )
    assert out.stdout.strip() == "", f"diffax.continuous imported {out.stdout.strip()}"
