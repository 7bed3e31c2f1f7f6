"""Device meshes and the mapping of logical parameter axes onto them.

The mesh has three axes: `data` (pure data parallelism), `fsdp` (data parallelism whose members
also shard parameters and optimizer state) and `model` (tensor parallelism). The batch is split
over ("data", "fsdp"). Parameters carry logical axis names (`logical_axes` metadata, see
`diffax.nn.layers`) that rules such as `(("embed", "fsdp"), ("mlp", "model"))` map to mesh axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")


def resolve_mesh_shape(shape: dict[str, int], num_devices: int) -> tuple[int, int, int]:
    """Resolves one -1 entry of {"data", "fsdp", "model"} to "the rest" and checks the product.

    Raises `ValueError` naming the mesh and the device count when they do not fit.
    """
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    desc = ", ".join(f"{a}={s}" for a, s in zip(MESH_AXES, sizes, strict=True))
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh ({desc}): sizes must be positive, with at most one -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"mesh ({desc}) does not divide the {num_devices} devices")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh ({desc}) has {math.prod(sizes)} devices but {num_devices} are available; "
            "use -1 for one axis to take the rest"
        )
    return tuple(sizes)


def make_mesh(shape: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, model) mesh over `devices` (default: all devices of all processes)."""
    devices = list(devices) if devices is not None else jax.devices()
    sizes = resolve_mesh_shape(shape, len(devices))
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a batch: leading axis split over (data, fsdp), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding on `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def _spec_for(shape, logical_axes, rules: dict[str, str | None], mesh: Mesh) -> PartitionSpec:
    spec, used = [], set()
    for dim, name in zip(shape, logical_axes, strict=True):
        axis = rules.get(name) if name is not None else None
        # An axis is sharded only when its size divides evenly and the mesh axis is unused.
        if axis is None or axis in used or mesh.shape[axis] == 1 or dim % mesh.shape[axis]:
            spec.append(None)
        else:
            spec.append(axis)
            used.add(axis)
    return PartitionSpec(*spec)


def param_shardings(params: nnx.State, rules: Sequence[tuple[str, str | None]], mesh: Mesh):
    """NamedShardings for an `nnx.State` of parameters from their `logical_axes` metadata.

    Args:
      params: state whose leaves are `nnx.Variable`s (from `nnx.split` / `nnx.eval_shape`).
      rules: (logical axis, mesh axis or None) pairs.
      mesh: the device mesh.

    Returns:
      A pytree of `NamedSharding` with the structure of the arrays in `params`.
    """
    rules = dict(rules)
    for logical, axis in rules.items():
        if axis is not None and axis not in MESH_AXES:
            raise ValueError(
                f"sharding rule {logical!r} -> {axis!r}: mesh axis must be one of {MESH_AXES}"
            )

    def one(v):
        axes = v.get_metadata().get("logical_axes") or (None,) * v.ndim
        return NamedSharding(mesh, _spec_for(v.shape, axes, rules, mesh))

    return jax.tree.map(one, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def global_array(local, sharding: NamedSharding) -> jax.Array:
    """Assembles per-process host data `[B / P, ...]` into one global array `[B, ...]`."""
    import numpy as np

    return jax.make_array_from_process_local_data(sharding, np.asarray(local))
