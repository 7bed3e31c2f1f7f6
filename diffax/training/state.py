"""The train state: plain pytrees of arrays, so jit, sharding and orbax see only arrays.

An NNX module is split once into its graph definition (static) and its parameters, which live in
the state as a nested dict ("pure dict"). `ModelDef.apply` rebuilds the module inside `jit`.
"""

from __future__ import annotations

import dataclasses
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


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    """Exponential moving average `decay * ema + (1 - decay) * params`."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype), ema, params)


def tree_all_finite(tree: Any) -> jax.Array:
    """True when every leaf of `tree` is finite (a scalar bool array)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
