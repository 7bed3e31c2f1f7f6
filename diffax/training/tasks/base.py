"""The `Task` interface the train / eval / sample loop relies on, and the `TASKS` registry.

A task is what is trained: data source, forward process, network and objective. It is built from
a config once (`build_task`); its constructor resolves every name (process, loss, sampler and
its options, data source) to objects and numbers, and its methods read only those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import jax

from diffax.core import Registry
from diffax.data import Source
from diffax.training.state import ModelDef


@runtime_checkable
class Task(Protocol):
    """Everything `diffax.training` (loop, evaluation, sampling, validation) reads from a task.

    Attributes:
      unit: what evaluation is reported per ("char" or "token" for text, "dim" for vectors and
        images).
      metric: what `eval_nats` computes: "elbo" (a bound) or "nll" (a likelihood); the result
        key is `f"{metric}_bits_per_{unit}"`.
      source: the data source (`diffax.data.Source`): training and held-out batches, baselines,
        writing samples.
      model_def: the network's graph definition (`count()`, `abstract_params`, `module(params)`).
      init_params: `() -> params`, the initial parameters (a pure function; jit-able).
    """

    unit: str
    metric: str
    source: Source
    model_def: ModelDef
    init_params: Callable[[], Any]

    @staticmethod
    def sampler_options(sampler: str) -> tuple[str, ...]:
        """Every option keyword the task's sampler `sampler` accepts (raises for unknown names).

        Static, so a config's `sample.options` can be checked without building the task.
        """

    def loss(self, params: Any, key: jax.Array, batch: jax.Array) -> tuple[jax.Array, dict]:
        """`(mean loss per unit, extra metrics)` of a `[B, *example_shape]` training batch."""

    def eval_nats(
        self, params: Any, key: jax.Array, batch: jax.Array, num_time_samples: int
    ) -> jax.Array:
        """`[B]` negative log-likelihood (bound) in nats per example, `num_time_samples`
        Monte-Carlo time samples each (ignored by estimators without time samples)."""

    def tokens_per_example(self) -> int:
        """Units per example (bits per unit = nats / (units * log 2); tokens/s in the logs)."""

    def sample(self, params: Any, key: jax.Array, num: int) -> tuple[jax.Array, dict]:
        """`([num, *example_shape] samples, info)`, `info["nfe"]` the network evaluations."""


TASKS: Registry[Callable[[Any], Task]] = Registry("task")
tasks = TASKS  # the older lower-case name


def build_task(config) -> Task:
    """The task named by `config.task`, built from the whole config."""
    return TASKS.get(config.task, "task")(config)
