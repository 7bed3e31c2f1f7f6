"""Toy 2-D distributions with exact moments and densities, as deterministic grain sources.

Each distribution maps `k` independent uniforms per example to a point in R^2
(`from_uniforms`), so a sample is a pure function of its uniforms. The pipelines draw those
uniforms from a counter-based hash of (seed, stream, example index, j) (SplitMix64; Steele et al.
2014, Fast Splittable Pseudorandom Number Generators): example i is the same on any number of
processes and after any resume, and a whole batch is generated in one vectorized NumPy call.
Batches follow the convention of `diffax.data.pipeline`: global batch k holds examples
kB .. kB + B - 1 and process p reads the contiguous block p B/P .. (p + 1) B/P - 1 of it.

Densities: Gaussian mixtures and the checkerboard are exact; for the curve distributions (two
moons, swiss roll: a point uniform in a curve parameter plus isotropic Gaussian noise) the density
is the 1-D integral over the curve parameter, computed by the midpoint rule on a fine grid
(accurate to ~1e-6 relative when the grid spacing along the curve is far below the noise scale).
Moments are exact (closed forms, or Gauss-Legendre quadrature of smooth integrands).
"""

from __future__ import annotations

import math

import grain
import numpy as np

from diffax.core import Registry

TOY_DISTRIBUTIONS: Registry[type] = Registry("toy distribution")

_NUM_EXAMPLES = 2**40
_MASK64 = 0xFFFFFFFFFFFFFFFF


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hashed_uniforms(seed: int, stream: int, indices: np.ndarray, k: int) -> np.ndarray:
    """Uniforms in (0, 1), `[N, k]` float64, a deterministic function of (seed, stream, index, j).

    Args:
      seed: data seed (any int).
      stream: a sub-stream id (e.g. 0 for training, 1 for held-out data).
      indices: `[N]` non-negative example indices.
      k: uniforms per example.
    """
    with np.errstate(over="ignore"):
        base = _splitmix64(np.array([seed & _MASK64], np.uint64))
        base = _splitmix64(base ^ np.uint64(stream & _MASK64))
        h = _splitmix64(base ^ np.asarray(indices, np.uint64))[:, None]
        bits = _splitmix64(
            h + np.arange(1, k + 1, dtype=np.uint64)[None] * np.uint64(0xD1B54A32D192ED03)
        )
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _normal_pair(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Box-Muller: two independent standard normals `[N, 2]` from two uniforms in (0, 1)."""
    r = np.sqrt(-2.0 * np.log(u1))
    return np.stack([r * np.cos(2 * math.pi * u2), r * np.sin(2 * math.pi * u2)], axis=-1)


class ToyDistribution:
    """Base class of the 2-D toy distributions.

    Subclasses define `num_uniforms`, `from_uniforms`, `log_prob`, `mean` and `covariance`.
    """

    dim: int = 2
    num_uniforms: int

    def from_uniforms(self, u: np.ndarray) -> np.ndarray:
        """Maps `[N, num_uniforms]` uniforms in (0, 1) to samples `[N, 2]` float32."""
        raise NotImplementedError

    def sample(self, seed: int, num: int, stream: int = 0, start: int = 0) -> np.ndarray:
        """Examples `start .. start + num - 1` of stream `stream` for `seed`, `[num, 2]` float32."""
        u = hashed_uniforms(seed, stream, np.arange(start, start + num), self.num_uniforms)
        return self.from_uniforms(u)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Log-density (nats) of `x: [N, 2]`, `[N]` float64 (-inf off the support)."""
        raise NotImplementedError

    def mean(self) -> np.ndarray:
        """Exact mean `[2]`."""
        raise NotImplementedError

    def covariance(self) -> np.ndarray:
        """Exact covariance `[2, 2]`."""
        raise NotImplementedError


class _Mixture(ToyDistribution):
    """Equal-weight mixture of isotropic Gaussians at `self.means` with standard deviation `std`."""

    num_uniforms = 3
    means: np.ndarray
    std: float

    def mixture(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(weights [K], means [K, 2], scales [K, 2]) for `diffax.continuous.GaussianMixture`."""
        k = len(self.means)
        return np.full(k, 1.0 / k), self.means.copy(), np.full((k, 2), self.std)

    def from_uniforms(self, u):
        comp = np.minimum((u[:, 0] * len(self.means)).astype(np.int64), len(self.means) - 1)
        return (self.means[comp] + self.std * _normal_pair(u[:, 1], u[:, 2])).astype(np.float32)

    def log_prob(self, x):
        d2 = np.sum(np.square(np.asarray(x, np.float64)[:, None] - self.means[None]), axis=-1)
        log_n = -0.5 * d2 / self.std**2 - math.log(2 * math.pi * self.std**2)
        m = np.max(log_n, axis=-1, keepdims=True)
        return (m + np.log(np.mean(np.exp(log_n - m), axis=-1, keepdims=True)))[:, 0]

    def mean(self):
        return self.means.mean(axis=0)

    def covariance(self):
        c = self.means - self.mean()
        return c.T @ c / len(self.means) + self.std**2 * np.eye(2)


@TOY_DISTRIBUTIONS.register("gaussian_ring")
class GaussianRing(_Mixture):
    """`num_modes` equal Gaussians (std `std`) evenly spaced on a circle of radius `radius`."""

    def __init__(self, num_modes: int = 8, radius: float = 2.0, std: float = 0.15):
        if num_modes < 1 or radius < 0 or std <= 0:
            raise ValueError(
                f"need num_modes >= 1, radius >= 0, std > 0; got {num_modes}, {radius}, {std}"
            )
        angles = 2 * math.pi * np.arange(num_modes) / num_modes
        self.means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
        self.std = std


@TOY_DISTRIBUTIONS.register("gaussian_grid")
class GaussianGrid(_Mixture):
    """`size x size` equal Gaussians (std `std`) on a centred square grid with spacing `spacing`."""

    def __init__(self, size: int = 5, spacing: float = 0.8, std: float = 0.08):
        if size < 1 or spacing < 0 or std <= 0:
            raise ValueError(f"need size >= 1, spacing >= 0, std > 0; got {size}, {spacing}, {std}")
        axis = (np.arange(size) - (size - 1) / 2) * spacing
        gx, gy = np.meshgrid(axis, axis, indexing="ij")
        self.means = np.stack([gx.ravel(), gy.ravel()], axis=-1)
        self.std = std


@TOY_DISTRIBUTIONS.register("checkerboard")
class Checkerboard(ToyDistribution):
    """Uniform on the dark cells ((i + j) even) of a centred `size x size` board of side `width`.

    `size` must be even, so the dark cells are symmetric under x -> -x (mean 0).
    """

    num_uniforms = 3

    def __init__(self, size: int = 4, width: float = 4.0):
        if size < 2 or size % 2 or width <= 0:
            raise ValueError(f"need an even size >= 2 and width > 0; got {size}, {width}")
        self.size, self.width = size, width
        self.cell = width / size
        cells = [(i, j) for i in range(size) for j in range(size) if (i + j) % 2 == 0]
        self.cells = np.array(cells, np.int64)  # [size^2 / 2, 2]

    def from_uniforms(self, u):
        n = len(self.cells)
        idx = np.minimum((u[:, 0] * n).astype(np.int64), n - 1)
        corner = self.cells[idx] * self.cell - self.width / 2
        return (corner + self.cell * u[:, 1:3]).astype(np.float32)

    def log_prob(self, x):
        x = np.asarray(x, np.float64)
        ij = np.floor((x + self.width / 2) / self.cell)
        inside = np.all((ij >= 0) & (ij < self.size), axis=-1) & (np.sum(ij, axis=-1) % 2 == 0)
        area = len(self.cells) * self.cell**2
        return np.where(inside, -math.log(area), -np.inf)

    def mean(self):
        centres = (self.cells + 0.5) * self.cell - self.width / 2
        return centres.mean(axis=0)

    def covariance(self):
        centres = (self.cells + 0.5) * self.cell - self.width / 2
        c = centres - centres.mean(axis=0)
        # Between-cell covariance plus the within-cell variance of a uniform on a square.
        return c.T @ c / len(c) + self.cell**2 / 12 * np.eye(2)


class _Curve(ToyDistribution):
    """`curve(s)` at s uniform in [s_lo, s_hi], plus isotropic Gaussian noise of std `noise`."""

    num_uniforms = 3
    noise: float
    s_lo: float
    s_hi: float
    _grid_size = 2048

    def curve(self, s: np.ndarray) -> np.ndarray:
        """`[N] -> [N, 2]` points on the curve."""
        raise NotImplementedError

    def _param(self, u):
        return self.s_lo + (self.s_hi - self.s_lo) * u

    def from_uniforms(self, u):
        x = self.curve(self._param(u[:, 0])) + self.noise * _normal_pair(u[:, 1], u[:, 2])
        return x.astype(np.float32)

    def log_prob(self, x):
        x = np.asarray(x, np.float64)
        s = self._param((np.arange(self._grid_size) + 0.5) / self._grid_size)
        nodes = self.curve(s)  # [G, 2]
        out = np.empty(len(x))
        for i in range(0, len(x), 1024):  # bounded memory: [1024, G] at a time
            d2 = np.sum(np.square(x[i : i + 1024, None] - nodes[None]), axis=-1)
            log_n = -0.5 * d2 / self.noise**2 - math.log(2 * math.pi * self.noise**2)
            m = np.max(log_n, axis=-1, keepdims=True)
            out[i : i + 1024] = (m + np.log(np.mean(np.exp(log_n - m), axis=-1, keepdims=True)))[
                :, 0
            ]
        return out

    def _curve_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """(E c(s), E c c^T) by 256-point Gauss-Legendre quadrature (exact to float64 rounding)."""
        nodes, weights = np.polynomial.legendre.leggauss(256)
        c = self.curve(self._param(0.5 * (nodes + 1.0)))
        w = 0.5 * weights
        return w @ c, np.einsum("n,ni,nj->ij", w, c, c)

    def mean(self):
        return self._curve_moments()[0]

    def covariance(self):
        m, second = self._curve_moments()
        return second - np.outer(m, m) + self.noise**2 * np.eye(2)


@TOY_DISTRIBUTIONS.register("two_moons")
class TwoMoons(_Curve):
    """Two interleaved half circles (the scikit-learn "moons"), centred, scaled by `scale`.

    A uniform s in [0, 2 pi): s < pi is the upper moon (cos s, sin s); s >= pi the lower moon
    (1 - cos(s - pi), 1/2 - sin(s - pi)); both shifted by (-1/2, -1/4) (the mean) and scaled.
    """

    def __init__(self, noise: float = 0.08, scale: float = 1.5):
        if noise <= 0 or scale <= 0:
            raise ValueError(f"need noise > 0 and scale > 0; got {noise}, {scale}")
        self.noise, self.scale = noise, scale
        self.s_lo, self.s_hi = 0.0, 2 * math.pi

    def curve(self, s):
        upper = s < math.pi
        r = np.where(upper, s, s - math.pi)
        x = np.where(upper, np.cos(r), 1.0 - np.cos(r)) - 0.5
        y = np.where(upper, np.sin(r), 0.5 - np.sin(r)) - 0.25
        return self.scale * np.stack([x, y], axis=-1)

    def _curve_moments(self):
        # The curve is only piecewise smooth: integrate each moon separately.
        nodes, weights = np.polynomial.legendre.leggauss(256)
        w = 0.25 * weights  # half of the mass per moon, [-1, 1] -> length-pi interval
        ms, ss = [], []
        for lo in (0.0, math.pi):
            c = self.curve(lo + 0.5 * math.pi * (nodes + 1.0))
            ms.append(w @ c)
            ss.append(np.einsum("n,ni,nj->ij", w, c, c))
        return ms[0] + ms[1], ss[0] + ss[1]


@TOY_DISTRIBUTIONS.register("swiss_roll")
class SwissRoll(_Curve):
    """The 2-D swiss roll: s uniform in [1.5 pi, 4.5 pi], curve `scale * s (cos s, sin s)`, centred.

    The default scale 1/6 gives a per-coordinate standard deviation near 1.
    """

    def __init__(self, noise: float = 0.1, scale: float = 1.0 / 6.0):
        if noise <= 0 or scale <= 0:
            raise ValueError(f"need noise > 0 and scale > 0; got {noise}, {scale}")
        self.noise, self.scale = noise, scale
        self.s_lo, self.s_hi = 1.5 * math.pi, 4.5 * math.pi
        self.offset = np.zeros(2)
        self.offset = self._curve_moments()[0]

    def curve(self, s):
        return self.scale * s[:, None] * np.stack([np.cos(s), np.sin(s)], axis=-1) - self.offset


def toy_distribution(name: str, **kwargs) -> ToyDistribution:
    """The registered toy distribution `name` ("gaussian_ring", "gaussian_grid", "checkerboard",
    "two_moons", "swiss_roll") built with `kwargs`."""
    return TOY_DISTRIBUTIONS.get(name, "dataset")(**kwargs)


class _Batches:
    """Maps a per-process batch number k to its block of global batch k (vectorized)."""

    def __init__(self, dist, batch_size, seed, shard_index, shard_count):
        self.dist, self.batch_size, self.seed = dist, batch_size, seed
        self.first = shard_index * batch_size
        self.global_batch = batch_size * shard_count

    def __call__(self, k: int) -> np.ndarray:
        start = int(k) * self.global_batch + self.first
        indices = np.arange(start, start + self.batch_size, dtype=np.uint64)
        return self.dist.from_uniforms(
            hashed_uniforms(self.seed, 0, indices, self.dist.num_uniforms)
        )


def toy_dataset(
    dist: ToyDistribution,
    batch_size: int,
    *,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
) -> grain.IterDataset:
    """An infinite grain dataset of `[batch_size, 2]` float32 training batches for one process.

    With P processes and per-process batch b, global batch k holds examples kbP .. (k + 1)bP - 1
    of stream 0 and process p reads the contiguous block starting at kbP + pb, so the global batch
    assembled by `jax.make_array_from_process_local_data` is the same for any number of
    processes. The iterator state (the next batch number) goes into checkpoints.

    Args:
      dist: the distribution.
      batch_size: per-process batch size.
      seed: data seed.
      shard_index, shard_count: this process's block of each global batch.
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} must lie in [0, shard_count={shard_count})")
    fn = _Batches(dist, batch_size, seed, shard_index, shard_count)
    num = _NUM_EXAMPLES // (batch_size * shard_count)
    return grain.MapDataset.range(0, num).map(fn).to_iter_dataset()


def toy_heldout(dist: ToyDistribution, num: int, *, seed: int) -> np.ndarray:
    """`[num, 2]` held-out examples (stream 1, disjoint from the training stream 0)."""
    return dist.sample(seed, num, stream=1)
