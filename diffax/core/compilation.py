"""JAX's persistent compilation cache, switched on in one call.

A compiled sampler or train step is written to disk keyed by its HLO, JAX/XLA versions and
device, so a fresh process running the same program loads it instead of compiling again (a 20-NFE
sampler: seconds of XLA compilation become a file read). Tracing and lowering still run; only
the XLA compilation is skipped. See the JAX documentation, "Persistent compilation cache".
"""

from __future__ import annotations

import os
import pathlib

import jax

#: Environment variable that overrides the default cache directory ("0" or "off" disables).
CACHE_ENV = "DIFFAX_COMPILATION_CACHE"


def default_cache_dir() -> pathlib.Path:
    """`$DIFFAX_COMPILATION_CACHE`, else `$XDG_CACHE_HOME/diffax/jax`, else
    `~/.cache/diffax/jax`."""
    env = os.environ.get(CACHE_ENV, "")
    if env and env.lower() not in ("0", "off", "false", "none"):
        return pathlib.Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "diffax" / "jax"


def enable_compilation_cache(
    path: str | os.PathLike | None = None,
    *,
    min_compile_time_secs: float = 0.0,
) -> str | None:
    """Turns on JAX's persistent compilation cache and returns its directory.

    Call it once, before the first compilation (later calls change the directory for programs
    compiled afterwards). Every compiled program is cached, however fast it compiled, unless
    `min_compile_time_secs` says otherwise.

    Args:
      path: the cache directory: a local path (created if missing) or a URL such as
        `gs://bucket/jax_cache` (used as given). None: `default_cache_dir()`, unless the
        environment variable `DIFFAX_COMPILATION_CACHE` is "0"/"off", which disables the cache.
        An empty string also disables it (the command-line off switch).
      min_compile_time_secs: only programs that took at least this long to compile are written.

    Returns:
      The directory in use, or None when the cache stays off.

    Raises:
      ValueError: `min_compile_time_secs` is negative.
    """
    if min_compile_time_secs < 0:
        raise ValueError(f"min_compile_time_secs must be >= 0, got {min_compile_time_secs}")
    if path is None:
        if os.environ.get(CACHE_ENV, "").lower() in ("0", "off", "false", "none"):
            return None
        path = default_cache_dir()
    path = os.fspath(path)
    if not path:
        return None
    if "://" not in path:
        path = str(pathlib.Path(path).expanduser().resolve())
        os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def disable_compilation_cache() -> None:
    """Turns the persistent compilation cache off for programs compiled from now on."""
    jax.config.update("jax_compilation_cache_dir", None)
