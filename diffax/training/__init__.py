"""The training stack: mesh, sharded train step, checkpoints, metrics, train/eval/sample loop."""

from diffax.training import continuous_task  # noqa: F401  (registers "continuous_diffusion")
from diffax.training.loop import Run, evaluate, sample, train
from diffax.training.tasks import build_task, tasks

__all__ = ["Run", "build_task", "evaluate", "sample", "tasks", "train"]
