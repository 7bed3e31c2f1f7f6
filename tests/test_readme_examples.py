"""The README's Python examples run as written, and every name in its feature table exists.

The examples use placeholders for the user's own networks and data (`my_network`, `my_unet`,
`x0`); the test defines small stand-ins with the documented shapes and checks what the comments
promise (output shapes, `info["nfe"]`).
"""

import importlib
import inspect
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)\n```", README, flags=re.S)


def _stub_network(vocab: int):
    """A time-conditioned table model: `[B, L] int32, [B] -> [B, L, vocab]` logits."""
    table = jax.random.normal(jax.random.key(7), (vocab + 1, vocab))

    def net(tokens, t):
        return table[tokens] * (1.0 + t[:, None, None])

    return net


def test_readme_python_examples_run():
    blocks = _python_blocks()
    discrete = [b for b in blocks if "diffax.discrete" in b]
    continuous = [b for b in blocks if "diffax.continuous" in b]
    assert discrete and continuous, "README lost its math-layer examples"

    namespace = {
        "my_network": _stub_network(27),
        "x0": jax.random.randint(jax.random.key(3), (4, 64), 0, 27),
    }
    for block in discrete:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["loss"].shape == (4,) and bool(jnp.all(jnp.isfinite(namespace["loss"])))
    tokens, info = namespace["tokens"], namespace["info"]
    assert tokens.shape == (8, 64) and tokens.dtype == jnp.int32
    assert int(info["nfe"]) == 64  # as the README's comment says
    assert bool(jnp.all((tokens >= 0) & (tokens < 27)))

    namespace.update(
        my_unet=lambda x, t: 0.1 * x * t.reshape((-1,) + (1,) * (x.ndim - 1)),
        x0=jax.random.normal(jax.random.key(4), (2, 32, 32, 3)),
    )
    for block in continuous:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["loss"].shape == (2,)
    assert namespace["x"].shape == (16, 32, 32, 3)
    assert np.all(np.isfinite(np.asarray(namespace["x"])))
    assert namespace["logp"].shape == (2,)


def _feature_rows() -> list[tuple[str, str]]:
    section = README.split("## Features", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("area", "---"):
            rows.append((cells[1], cells[2]))
    return rows


def _resolve(dotted: str):
    """Imports the longest module prefix of `dotted` and returns the attribute path below it."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def test_feature_table_names_exist():
    import diffax.continuous as dc
    import diffax.discrete as dd

    registered = set(dd.SAMPLERS.names()) | set(dc.SAMPLERS.names())
    # Keywords of the entry points and sampler options are names users type too.
    for half in (dd, dc):
        for fn in (half.sample, half.run_steps):
            registered |= set(inspect.signature(fn).parameters)
        for name in half.SAMPLERS.names():
            registered |= set(half.sampler_options(name))
    checked = 0
    for what, where in _feature_rows():
        modules = [m for m in re.findall(r"`([\w.]+)`", where) if m.startswith("diffax")]
        if not modules:
            continue
        homes = [_resolve(m) for m in modules]  # each "where" entry exists
        if not any(m.startswith(("diffax.discrete", "diffax.continuous")) for m in modules):
            continue  # other rows name JAX/orbax/config things; their modules were checked
        for name in re.findall(r"`([A-Za-z_]\w*)`", what):
            found = name in registered or any(hasattr(home, name) for home in homes)
            found = found or any(hasattr(m, name) for m in (dd, dc, jax.lax))
            assert found, f"feature table names {name!r} but {where} has no such name"
            checked += 1
    assert checked >= 20
