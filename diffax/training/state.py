"""The train state: plain pytrees of arrays, so jit, sharding and orbax see only arrays.

An NNX module is split once into its graph definition (static) and its parameters, which live in
the state as a nested dict ("pure dict"). `ModelDef.apply` rebuilds the module inside `jit`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """The static half of an NNX module: rebuilds it from a pure-dict of parameters.

    Attributes:
      graphdef: the NNX graph definition.
      treedef: the pytree structure of the module's `nnx.State` of parameters.
      abstract_params: `nnx.State` of abstract `nnx.Variable`s (shapes, dtypes, logical axes).
    """

    graphdef: Any
    treedef: Any
    abstract_params: nnx.State

    @classmethod
    def create(cls, build: Callable[[nnx.Rngs], nnx.Module], seed: int):
        """Builds the module abstractly (no memory) and returns `(ModelDef, init_fn)`.

        `init_fn()` materialises the parameters as a pure dict (call it inside `jit` with output
        shardings to create them directly on the mesh).
        """
        abstract = nnx.eval_shape(lambda: build(nnx.Rngs(seed)))
        graphdef, params = nnx.split(abstract, nnx.Param)
        rest = nnx.state(abstract, ...)
        if len(jax.tree.leaves(rest)) != len(jax.tree.leaves(params)):
            raise ValueError("the model holds non-parameter state, which training does not handle")
        mdef = cls(graphdef, jax.tree.structure(params), params)

        def init_fn():
            _, p = nnx.split(build(nnx.Rngs(seed)), nnx.Param)
            return nnx.to_pure_dict(p)

        return mdef, init_fn

    def module(self, params: dict) -> nnx.Module:
        """The module with `params` (a pure dict) as its parameters."""
        state = jax.tree.unflatten(self.treedef, jax.tree.leaves(params))
        return nnx.merge(self.graphdef, state)

    def count(self) -> int:
        """Number of parameters."""
        return sum(v.size for v in jax.tree.leaves(self.abstract_params))

    def count_groups(self) -> dict[str, int]:
        """Parameter counts by role, for any model: see `parameter_group`.

        Returns:
          {"total", "embedding", "conditioning", "body"}: all parameters; the vocabulary-sized
          ones (token embedding, output head); the time-conditioning ones (adaLN modulation and
          the time MLP); the rest. embedding + conditioning + body = total.
        """
        counts = {"total": 0, "embedding": 0, "conditioning": 0, "body": 0}
        for path, var in nnx.to_flat_state(self.abstract_params):
            n = math.prod(var.get_value().shape) if hasattr(var, "get_value") else var.size
            counts["total"] += n
            counts[parameter_group(path, var.get_metadata().get("logical_axes"))] += n
        return counts


_CONDITIONING = re.compile(r"(^|_)(ada|adaln|modulation|cond|time|t_fc\d*)($|_)", re.IGNORECASE)


def parameter_group(path: tuple, logical_axes: tuple | None) -> str:
    """The role of one parameter from its path and logical axes.

    "embedding" when one of its logical axes is "vocab" (a token embedding table or the output
    head); "conditioning" when a path component names time conditioning (`ada*`, `*_ada`,
    `adaln`, `modulation`, `cond*`, `time*`, `t_fc*`); else "body".

    Args:
      path: the parameter's path in the module, e.g. `("blocks", "ada", "kernel")`.
      logical_axes: its logical axis names, or None.

    Returns:
      "embedding", "conditioning" or "body".
    """
    if logical_axes and "vocab" in logical_axes:
        return "embedding"
    if any(_CONDITIONING.search(str(part)) for part in path):
        return "conditioning"
    return "body"


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    """Exponential moving average `decay * ema + (1 - decay) * params`."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype), ema, params)


def tree_all_finite(tree: Any) -> jax.Array:
    """True when every leaf of `tree` is finite (a scalar bool array)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
