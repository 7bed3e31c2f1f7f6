"""Metric sinks: console, a JSONL file and TensorBoard event files (tensorboardX, no TensorFlow).

Only the primary process (index 0) writes; other processes get a writer that does nothing.

The workdir is an `etils.epath` path. Locally `metrics.jsonl` is appended to and flushed after
every record. Object stores (`gs://...`) cannot append, so for a URL workdir both the JSONL file
and the TensorBoard event file are kept in memory and the whole object is rewritten at most every
`remote_flush_secs` seconds and on `close` (what tensorboardX's own GCS writer does).
"""

from __future__ import annotations

import io
import json
import os
import time
from typing import Any

import numpy as np
from etils import epath

from diffax.training.workdir import is_url, workdir_path


def _scalar(v: Any) -> float | int:
    v = np.asarray(v)
    return v.item()


class _WholeObjectFile:
    """A write-only file on an object store: buffered, each flush rewrites the whole object."""

    def __init__(self, path: epath.Path, initial: bytes = b"", min_interval: float = 0.0):
        self.path, self.min_interval = path, min_interval
        self._buffer = io.BytesIO()
        self._buffer.write(initial)
        self._last = 0.0
        self._dirty = False

    def write(self, data: bytes | str) -> None:
        self._buffer.write(data.encode() if isinstance(data, str) else data)
        self._dirty = True

    def flush(self, force: bool = False) -> None:
        now = time.time()
        if self._dirty and (force or now - self._last >= self.min_interval):
            self.path.write_bytes(self._buffer.getvalue())
            self._last, self._dirty = now, False

    def close(self) -> None:
        self.flush(force=True)


class _EpathRecordWriterFactory:
    """tensorboardX writer factory for URL log directories, writing through `etils.epath`."""

    def __init__(self, min_interval: float):
        self.min_interval = min_interval

    def open(self, path: str):
        return _WholeObjectFile(epath.Path(path), min_interval=self.min_interval)

    def directory_check(self, path: str) -> None:
        epath.Path(path).mkdir(parents=True, exist_ok=True)


def _register_url_scheme(logdir: str, min_interval: float) -> None:
    from tensorboardX import record_writer

    scheme = logdir.split("://", 1)[0]
    record_writer.register_writer_factory(scheme, _EpathRecordWriterFactory(min_interval))


class MetricWriter:
    """Writes scalar metrics to `workdir/metrics.jsonl`, TensorBoard (`workdir/tb`) and stdout.

    Args:
      workdir: run directory (a local path or a URL such as `gs://bucket/run`).
      enabled: False on non-primary processes (then every call is a no-op).
      console: also print each record as one line.
      remote_flush_secs: for a URL workdir, the shortest time between two rewrites of the files.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        enabled: bool = True,
        console: bool = True,
        remote_flush_secs: float = 30.0,
    ):
        self.enabled, self.console = enabled, console
        self._tb = None
        self._jsonl = None
        if enabled:
            from tensorboardX import SummaryWriter

            wd = workdir_path(workdir)
            wd.mkdir(parents=True, exist_ok=True)
            path = wd / "metrics.jsonl"
            if is_url(wd):
                old = path.read_bytes() if path.exists() else b""
                self._jsonl = _WholeObjectFile(path, old, remote_flush_secs)
                _register_url_scheme(os.fspath(wd), remote_flush_secs)
            else:
                self._jsonl = open(path, "a")
            self._tb = SummaryWriter(os.fspath(wd / "tb"), flush_secs=10)

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
