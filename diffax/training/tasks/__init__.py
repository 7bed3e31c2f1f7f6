"""Tasks: what is trained (data source + forward process + network + objective).

`TASKS` maps `config.task` to a task class; importing this package registers both built-in
tasks, "text_diffusion" (`text.py`) and "continuous_diffusion" (`continuous.py`). The interface
the loop relies on is the `Task` protocol (`base.py`).
"""

from diffax.training.tasks.base import TASKS, Task, build_task, tasks
from diffax.training.tasks.continuous import ContinuousDiffusionTask, build_process
from diffax.training.tasks.model_dtype import compute_dtype
from diffax.training.tasks.sample_options import parse_options, sample_options
from diffax.training.tasks.text import TextDiffusionTask, make_discrete_process

# `diffax.training.tasks` used to be the registry itself; its lookups keep working on the package.
get, names, register = TASKS.get, TASKS.names, TASKS.register

__all__ = [
    "TASKS",
    "ContinuousDiffusionTask",
    "Task",
    "TextDiffusionTask",
    "build_process",
    "build_task",
    "compute_dtype",
    "make_discrete_process",
    "parse_options",
    "sample_options",
    "tasks",
]
