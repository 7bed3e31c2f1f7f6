"""The training stack: meshes, sharded train step, checkpoints, metrics, the train/eval/sample loop."""

from diffax.training.loop import Run, evaluate, sample, train
from diffax.training.tasks import build_task, tasks

__all__ = ["Run", "build_task", "evaluate", "sample", "tasks", "train"]
