"""diffax experiments: one absl app for training, evaluation and sampling.

  python -m experiments.main --config=configs/quickstart.py --workdir=/tmp/run [--mode=train]
  python -m experiments.main --config=configs/quickstart.py --workdir=/tmp/run --mode=eval
  python -m experiments.main --config=configs/quickstart.py --workdir=/tmp/run --mode=sample

Override any config key on the command line: `--config.train.num_steps=200`.
The workdir may be a URL (`--workdir=gs://bucket/run`): it reaches orbax and every writer
unchanged. `--profile_steps=10,15` records a `jax.profiler` trace of steps 10..14 under
`<workdir>/profile` (primary process; open it with TensorBoard's profile plugin or xprof).
Compiled programs go to JAX's persistent compilation cache (`--compilation_cache_dir`, default
~/.cache/diffax/jax; `--nocompilation_cache` turns it off), so a rerun does not compile again.
"""

from __future__ import annotations

import logging as pylogging
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags


def _unknown_config_key(argv: list[str]) -> str | None:
    """The first `--config.a.b=v` override whose key the base config does not define."""
    from configs import base

    config = base.get_config()
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config.") :].split("=", 1)[0].split(".")
        node = config
        for i, part in enumerate(path):
            if not hasattr(node, "keys") or part not in node:
                parent = ".".join(path[:i]) or "<root>"
                allowed = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(a leaf)"
                return (
                    f"--config.{'.'.join(path)}: unknown config key {'.'.join(path)!r}; "
                    f"keys of {parent!r}: {allowed}"
                )
            node = node[part]
    return None


if __name__ == "__main__":
    # ml-collections applies `--config.*` overrides while the flag is defined, so an unknown key
    # must be caught before that to give one clear line instead of a traceback.
    _problem = _unknown_config_key(sys.argv[1:])
    if _problem:
        print(f"error: {_problem}", file=sys.stderr)
        sys.exit(2)

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/quickstart.py", "Path to an ml-collections config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to do.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for multi-process runs (see launch/)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Total number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_PROFILE_STEPS = flags.DEFINE_string(
    "profile_steps",
    None,
    "FIRST,END: write a jax.profiler trace of train steps FIRST..END-1 under <workdir>/profile.",
)
_COMPILATION_CACHE = flags.DEFINE_bool(
    "compilation_cache",
    True,
    "Keep compiled programs in JAX's persistent compilation cache, so a rerun of the same config "
    "does not compile again (--nocompilation_cache: off).",
)
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir",
    None,
    "Directory (or gs:// URL) of the persistent compilation cache. Default: "
    "$DIFFAX_COMPILATION_CACHE, else ~/.cache/diffax/jax ($XDG_CACHE_HOME/diffax/jax).",
)
flags.mark_flag_as_required("workdir")


_DEBUG = flags.DEFINE_bool("debug", False, "Show the Python traceback of a failure.")


def _debugging() -> bool:
    # Read from argv too: flag parsing itself can fail before FLAGS.debug is set.
    return "--debug" in sys.argv or (flags.FLAGS.is_parsed() and _DEBUG.value)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 600 else text[:600] + " ..."


def _fail(message: str, code: int) -> None:
    """Prints one line on stderr and exits: 2 for usage errors, 1 for runtime failures."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _config_error(e: BaseException) -> str:
    path = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), None)
    where = f"--config={path}" if path else "--config"
    if path and not os.path.exists(path.split(":", 1)[0]):
        return f"{where}: no such config file"
    if isinstance(e, SyntaxError):
        return f"{where}: syntax error in the config file at line {e.lineno}: {e.msg}"
    text = _one_line(e)
    locked = re.search(r'Key "(\w+)" does not exist and cannot be added', text)
    if locked:
        return (
            f"{where}: the config file sets key {locked.group(1)!r}, which configs/base.py does "
            "not define; every key must exist in the base config (check the spelling)"
        )
    return f"{where}: {text}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing that reports a bad flag, config file or value as one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        if _debugging():
            raise
        _fail(_one_line(e), 2)
    except Exception as e:  # the config file is executed while its flag is parsed
        if _debugging():
            raise
        _fail(_config_error(e), 2)


def _errno_in(e: BaseException, codes: tuple[int, ...]) -> OSError | None:
    """The first OSError with one of `codes` in the exception's cause/context chain."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in codes:
            return e
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                found = _errno_in(sub, codes)
                if found:
                    return found
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return None


def _describe_failure(e: BaseException, workdir: str) -> tuple[str, int]:
    """(one-line message, exit code) for an exception raised by train/eval/sample."""
    import errno

    from diffax.training.divergence import TrainingDiverged
    from diffax.training.workdir import WorkdirLocked

    full = _errno_in(e, (errno.ENOSPC, errno.EDQUOT))
    if full is not None or "No space left on device" in str(e):
        where = f" at {full.filename}" if full is not None and full.filename else ""
        return (
            f"disk full while writing to --workdir={workdir} (No space left on device{where}); "
            "free some space and rerun the same command: training resumes from the last "
            "complete checkpoint",
            1,
        )
    denied = _errno_in(e, (errno.EACCES, errno.EPERM, errno.EROFS))
    if denied is not None:
        return (
            f"cannot write to --workdir={workdir} ({_one_line(denied)}); pass a directory you "
            "can write to",
            1,
        )
    if isinstance(e, (WorkdirLocked, TrainingDiverged)):
        return _one_line(e), 1
    if isinstance(e, (ValueError, TypeError, FileNotFoundError, KeyError)):
        return _one_line(e), 2
    return f"{type(e).__name__}: {_one_line(e)} (rerun with --debug for the traceback)", 1


class _HideLibraryTracebacks(pylogging.Filter):
    """Drops error records that carry a traceback (orbax logs one per failed save thread).

    The failure itself reaches `main` as an exception and is reported there in one line; with
    `--debug` nothing is hidden.
    """

    def filter(self, record: pylogging.LogRecord) -> bool:
        return not (record.levelno >= pylogging.ERROR and record.exc_info)


class _QuietStderr:
    """stderr that drops one known echo of a failed asynchronous save (the failure itself is
    reported once by `main`): tensorstore's writer threads call back into the asyncio loop of an
    orbax save that already failed, and each call prints a "RuntimeError: Event loop is closed"
    traceback. Every other output passes through unchanged and unbuffered."""

    _ECHO = "RuntimeError: Event loop is closed"

    def __init__(self, stream):
        self._stream, self._block = stream, None

    def write(self, text: str) -> int:
        if self._block is None and not text.startswith("Traceback (most recent call last)"):
            return self._stream.write(text)
        self._block = (self._block or "") + text
        lines = self._block.split("\n")
        done = [line for line in lines[1:-1] if line and not line[0].isspace()]
        if done:  # the exception line that closes the traceback has arrived
            block, self._block = self._block, None
            if done[0].strip() != self._ECHO:
                self._stream.write(block)
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # hide JAX's INFO lines about absent backends
    if not _debugging():
        logging.get_absl_handler().addFilter(_HideLibraryTracebacks())
        sys.stderr = _QuietStderr(sys.stderr)
    try:
        config = _CONFIG.value
        config.to_dict()  # a lazily reported load failure surfaces on first access
    except Exception as e:  # a missing or unloadable config file is reported on first access
        if _debugging():
            raise
        _fail(_config_error(e), 2)
    # Imported here so `--help` and flag errors do not pay for importing JAX.
    from diffax.training.loop import check_profile_steps
    from diffax.training.workdir import workdir_path

    try:
        # A URL such as gs://bucket/run stays as given; a local path is made absolute.
        workdir = workdir_path(_WORKDIR.value)
        profile_steps = check_profile_steps(_PROFILE_STEPS.value)
        if profile_steps is not None and _MODE.value != "train":
            raise ValueError("--profile_steps applies to --mode=train only")
    except ValueError as e:
        _fail(_one_line(e), 2)
    try:
        from diffax import training
        from diffax.core.compilation import enable_compilation_cache
        from diffax.training import distributed

        if _COMPILATION_CACHE.value:
            enable_compilation_cache(_COMPILATION_CACHE_DIR.value)
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        if _MODE.value == "train":
            training.train(config, workdir, profile_steps=profile_steps)
        elif _MODE.value == "eval":
            training.evaluate(config, workdir)
        else:
            training.sample(config, workdir)
    except Exception as e:
        if _debugging():
            raise
        message, code = _describe_failure(e, workdir)
        # Straight to the real stream: an orbax writer thread may be halfway through an echo
        # that `_QuietStderr` is holding back, and our line must not be taken for its end.
        stream = getattr(sys.stderr, "_stream", sys.stderr)
        print(f"error: {message}", file=stream, flush=True)
        sys.stdout.flush()
        # Skip interpreter shutdown: after a failed asynchronous save, orbax/tensorstore threads
        # still running then print tracebacks into a closed event loop. Everything of ours
        # (checkpointer, metric files, workdir lock) was closed while the error propagated.
        os._exit(code)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
