"""The training stack: mesh, sharded train step, checkpoints, metrics, tasks, train/eval/sample."""

from diffax.training.loop import Run, evaluate, sample, train
from diffax.training.tasks import TASKS, Task, build_task

__all__ = ["TASKS", "Run", "Task", "build_task", "evaluate", "sample", "train"]
