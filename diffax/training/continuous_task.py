"""The continuous-diffusion task: Gaussian diffusion on toy 2-D data or TFDS images.

Data (`data.dataset`): a toy 2-D distribution from `diffax.data.toy` (exact density and moments;
trained with `model.arch="mlp"`, a `TimeMLP`) or a TFDS image dataset read with `tfds.data_source`
(NHWC float32 in [-1, 1]; `model.arch="unet"`, a `UNet`). Process, prediction target, loss
weighting, time sampler and sampler are picked by name from the config and resolved through the
registries of `diffax.continuous`.

Evaluation (`eval.likelihood`) is per dimension:

* "elbo": the continuous-time ELBO (Kingma et al. 2021, VDM). For images, 8-bit pixels are
  recovered exactly from the [-1, 1] batch and uniformly dequantized, so the result bounds
  -log2 P(x) / d of the discrete data (`diffax.continuous.elbo_bpd`);
* "pf_ode": the probability-flow ODE negative log-likelihood (Song et al. 2021), with the exact
  divergence for d <= 16 and the Hutchinson estimator otherwise; for images plus d log 128 nats,
  the dequantization bin term.

Samples go to `workdir/samples`: a `.npy` array and a PNG (a scatter against true samples for 2-D
data, an image grid for images). For toy data the summary line reports the sliced 2-Wasserstein
distance to as many true samples (and its floor between two independent true sets) and the exact
negative log-density of the samples under the data distribution.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

import diffax.continuous as dc
from diffax.data import (
    KNOWN_IMAGE_DATASETS,
    image_dataset,
    image_source,
    is_tfds_dataset,
    toy_dataset,
    toy_distribution,
    toy_heldout,
    unscale_images,
)
from diffax.data.toy import TOY_DISTRIBUTIONS
from diffax.nn import TimeMLP, UNet
from diffax.training.state import ModelDef
from diffax.training.tasks import compute_dtype, tasks

LIKELIHOODS = ("elbo", "pf_ode")
ARCHS = ("mlp", "unet")
PRECONDITIONINGS = ("none", "edm")
# Up to this many dimensions the PF-ODE divergence is computed exactly (one JVP per dimension).
_EXACT_DIVERGENCE_MAX_DIM = 16


def _choice(value, allowed, key: str) -> None:
    if value not in allowed:
        raise ValueError(
            f"{key}={value!r} is not allowed; allowed values: {', '.join(map(repr, allowed))}"
        )


def build_process(p) -> dc.GaussianProcess:
    """The Gaussian process named by `process.name`, with its parameters from the config section."""
    cls = dc.PROCESSES.get(p.name, "process.name")
    if p.name == "vp":
        _choice(p.schedule, ("linear", "cosine"), "process.schedule")
        return cls(p.beta_min, p.beta_max, schedule=p.schedule)
    if p.name == "subvp":
        return cls(p.beta_min, p.beta_max)
    if p.name in ("ve", "edm"):
        return cls(p.sigma_min, p.sigma_max)
    return cls()


@tasks.register("continuous_diffusion")
class ContinuousDiffusionTask:
    """Continuous-time Gaussian diffusion on toy 2-D data (TimeMLP) or TFDS images (UNet).

    Config keys used: data.{dataset, data_dir, train_split, eval_split, num_heldout},
    process.{name, schedule, beta_min, beta_max, sigma_min, sigma_max}, model.{arch, dim, depth,
    mlp_ratio, time_features, channel_mults, num_res_blocks, attention_levels, num_heads,
    num_groups, dtype}, continuous.{prediction, preconditioning, sigma_data, weighting,
    time_sampler, t_min, t_max}, train.loss ("dsm"), eval.{likelihood, num_samples, max_batches},
    sample.{sampler, num_steps, grid}, seed.
    """

    unit = "dim"

    @property
    def metric(self) -> str:
        """What eval reports: "elbo" (a bound) or "nll" (the PF-ODE likelihood)."""
        return "nll" if self.config.eval.likelihood == "pf_ode" else "elbo"

    def __init__(self, config):
        self.config = config
        data, m, c = config.data, config.model, config.continuous
        self.toy = data.dataset in TOY_DISTRIBUTIONS
        if self.toy:
            self.dist = toy_distribution(data.dataset)
            self.event_shape: tuple[int, ...] = (self.dist.dim,)
        else:
            if not is_tfds_dataset(data.dataset):
                raise ValueError(
                    f"data.dataset={data.dataset!r} is not allowed; allowed values: a toy "
                    f"distribution ({', '.join(TOY_DISTRIBUTIONS.names())}) or a TFDS image "
                    f"dataset ({', '.join(KNOWN_IMAGE_DATASETS)}, ...)"
                )
            self.train_source, self.event_shape = image_source(
                data.dataset, split=data.train_split, data_dir=data.data_dir
            )
        self.process = build_process(config.process)
        if config.train.loss != "dsm":
            raise ValueError(
                f"train.loss={config.train.loss!r} is not allowed; allowed values: 'dsm'"
            )
        _choice(c.prediction, dc.PREDICTIONS, "continuous.prediction")
        _choice(c.preconditioning, PRECONDITIONINGS, "continuous.preconditioning")
        if c.preconditioning == "edm" and c.prediction != "x0":
            raise ValueError(
                "continuous.preconditioning='edm' makes the network predict x0: set "
                f"continuous.prediction='x0' (got {c.prediction!r})"
            )
        dc.WEIGHTINGS.get(c.weighting, "continuous.weighting")
        dc.TIME_SAMPLERS.get(c.time_sampler, "continuous.time_sampler")
        dc.SAMPLERS.get(config.sample.sampler, "sample.sampler")
        if config.sample.grid != "default":
            dc.GRIDS.get(config.sample.grid, "sample.grid")
        _choice(config.eval.likelihood, LIKELIHOODS, "eval.likelihood")
        _choice(m.arch, ARCHS, "model.arch")
        want = "mlp" if len(self.event_shape) == 1 else "unet"
        if m.arch != want:
            raise ValueError(
                f"model.arch={m.arch!r} does not fit data.dataset={data.dataset!r} with examples "
                f"of shape {self.event_shape}; use model.arch={want!r}"
            )
        dtype = compute_dtype(m.dtype)

        def build(rngs):
            if m.arch == "mlp":
                return TimeMLP(
                    self.event_shape[0],
                    m.dim,
                    m.depth,
                    rngs=rngs,
                    hidden=int(m.dim * m.mlp_ratio),
                    time_features=m.time_features,
                    dtype=dtype,
                )
            return UNet(
                self.event_shape[-1],
                m.dim,
                tuple(m.channel_mults),
                m.num_res_blocks,
                tuple(m.attention_levels),
                rngs=rngs,
                num_heads=m.num_heads,
                num_groups=m.num_groups,
                dtype=dtype,
            )

        self.model_def, self.init_params = ModelDef.create(build, config.seed)

    # -- data ---------------------------------------------------------------------------------
    def train_dataset(self, batch_per_process: int, shard_index: int, shard_count: int):
        """Infinite per-process grain dataset of `[batch_per_process, *event_shape]` float32."""
        if self.toy:
            return toy_dataset(
                self.dist,
                batch_per_process,
                seed=self.config.seed,
                shard_index=shard_index,
                shard_count=shard_count,
            )
        return image_dataset(
            self.train_source,
            batch_per_process,
            seed=self.config.seed,
            shard_index=shard_index,
            shard_count=shard_count,
        ).to_iter_dataset()

    @functools.cached_property
    def _heldout(self) -> np.ndarray:
        return toy_heldout(self.dist, self.config.data.num_heldout, seed=self.config.seed)

    def eval_batches(self, batch_size: int) -> list[np.ndarray]:
        """Held-out global batches (in order; the tail short of a batch is dropped).

        Toy data: `data.num_heldout` examples of a stream disjoint from training. Images: the
        `data.eval_split` split (only the first `eval.max_batches` batches are read when > 0).
        """
        if self.toy:
            x = self._heldout
            n = len(x) // batch_size
            if n == 0:
                raise ValueError(
                    f"data.num_heldout={len(x)} is fewer than one batch of eval.batch_size="
                    f"{batch_size}"
                )
            return [x[i * batch_size : (i + 1) * batch_size] for i in range(n)]
        d = self.config.data
        source, _ = image_source(d.dataset, split=d.eval_split, data_dir=d.data_dir)
        ds = image_dataset(source, batch_size, seed=self.config.seed, shuffle=False, repeat=False)
        limit = self.config.eval.max_batches
        return [ds[i] for i in range(min(len(ds), limit) if limit > 0 else len(ds))]

    def baselines(self) -> dict[str, float]:
        """Reference values in bits/dim: the exact data entropy (toy), uniform 8 bits (images)."""
        if self.toy:
            logp = self.dist.log_prob(self._heldout)
            if np.all(np.isfinite(logp)):
                nats = -float(np.mean(logp)) / self.dist.dim
                return {"data_entropy_bits_per_dim": nats / math.log(2.0)}
            return {}
        return {"uniform_bits_per_dim": 8.0}

    # -- objective ----------------------------------------------------------------------------
    def model_fn(self, params):
        """`(x: [B, ...], t: [B]) -> [B, ...]` in the `continuous.prediction` parameterization."""
        module = self.model_def.module(params)
        network = lambda x, t: module(x, t)
        c = self.config.continuous
        if c.preconditioning == "edm":
            return dc.edm_denoiser(network, self.process, c.sigma_data)
        return network

    def loss(self, params, key, batch):
        """Mean weighted denoising score-matching loss (per dimension) over the batch."""
        c = self.config.continuous
        options = {"sigma_data": c.sigma_data} if c.weighting == "edm" else {}
        per_example = dc.dsm_loss(
            key,
            self.process,
            self.model_fn(params),
            batch,
            prediction=c.prediction,
            weighting=c.weighting,
            time_sampler=c.time_sampler,
            t_min=c.t_min,
            t_max=c.t_max,
            **options,
        )
        return jnp.mean(per_example), {}

    def eval_nats(self, params, key, batch, num_samples: int):
        """`[B]` negative log-likelihood bound (`eval.likelihood`) in nats per example."""
        c = self.config.continuous
        model_fn, d = self.model_fn(params), math.prod(self.event_shape)
        if self.config.eval.likelihood == "pf_ode":
            logp = dc.log_likelihood(
                key,
                self.process,
                model_fn,
                batch,
                prediction=c.prediction,
                exact_divergence=d <= _EXACT_DIVERGENCE_MAX_DIM,
                t_min=c.t_min,
            )
            # For images the density is of y in [-1, 1]; bins of width 2/256 add d log(128).
            return -logp + (0.0 if self.toy else d * math.log(128.0))
        if self.toy:
            terms = dc.elbo_terms(
                key,
                self.process,
                model_fn,
                batch,
                prediction=c.prediction,
                t_min=c.t_min,
                num_time_samples=num_samples,
            )
            return terms.total
        pixels = jnp.round((batch + 1.0) * 127.5).astype(jnp.int32)  # exact inverse of the scaling
        terms = dc.elbo_bpd(
            key,
            self.process,
            model_fn,
            pixels,
            prediction=c.prediction,
            t_min=c.t_min,
            num_time_samples=num_samples,
        )
        return terms.total * (d * math.log(2.0))

    def tokens_per_example(self) -> int:
        """Dimensions per example (bits per dim = nats / (dims * log 2))."""
        return math.prod(self.event_shape)

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, params, key, num: int):
        """`[num, *event_shape]` float32 samples and the sampler info (`nfe`)."""
        s = self.config.sample
        return dc.sample(
            key,
            self.process,
            self.model_fn(params),
            (num, *self.event_shape),
            sampler=s.sampler,
            num_steps=s.num_steps,
            prediction=self.config.continuous.prediction,
            grid=None if s.grid == "default" else s.grid,
        )

    def write_samples(
        self, samples: np.ndarray, directory: str, step: int
    ) -> tuple[str, list[str]]:
        """Writes `samples_{step}.npy` and a PNG; returns (PNG path, lines: a summary first)."""
        os.makedirs(directory, exist_ok=True)
        stem = os.path.join(directory, f"samples_{step:08d}")
        samples = np.asarray(samples, np.float32)
        np.save(stem + ".npy", samples)
        if self.toy:
            summary = self._toy_summary(samples)
            write_scatter(
                stem + ".png", samples, self.dist.sample(self.config.seed, len(samples), 2)
            )
            rows = [" ".join(f"{v:+.4f}" for v in row) for row in samples]
            return stem + ".png", [summary, *rows]
        write_image_grid(stem + ".png", unscale_images(samples))
        finite = np.isfinite(samples).mean()
        summary = (
            f"{len(samples)} images {samples.shape[1:]}: finite fraction {finite:.3f}, "
            f"mean {np.nanmean(samples):+.3f}, std {np.nanstd(samples):.3f} (clipped for the PNG)"
        )
        return stem + ".png", [summary]

    def _toy_summary(self, samples: np.ndarray) -> str:
        """Sliced W2 to true samples (with its two-true-sets floor) and the exact data NLL."""
        n = len(samples)
        truth = self.dist.sample(self.config.seed, n, stream=2)
        other = self.dist.sample(self.config.seed, n, stream=3)
        key = jax.random.key(self.config.seed)
        sw = float(dc.sliced_wasserstein(key, jnp.asarray(samples), jnp.asarray(truth)))
        floor = float(dc.sliced_wasserstein(key, jnp.asarray(other), jnp.asarray(truth)))
        logp = self.dist.log_prob(samples)
        ok = np.isfinite(logp)
        d = self.dist.dim
        line = (
            f"sliced W2 to {n} true samples: {sw:.4f} (two true sets: {floor:.4f}); "
            f"data NLL of the samples: {-np.mean(logp[ok]) / d:.4f} nats/dim "
            f"(true samples: {-np.mean(self.dist.log_prob(truth)) / d:.4f})"
        )
        if not ok.all():
            line += f"; {ok.mean():.3f} of the samples lie on the support"
        return line


def write_scatter(path: str, samples: np.ndarray, truth: np.ndarray) -> None:
    """Side-by-side scatter plots of model samples and true samples `[N, 2]` as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    lim = float(np.nanmax(np.abs(truth))) * 1.2
    for i, (pts, title) in enumerate(((samples, "model samples"), (truth, "data"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=title, aspect="equal")
    fig.tight_layout()
    fig.savefig(path)


def write_image_grid(path: str, images: np.ndarray) -> None:
    """Writes uint8 images `[N, H, W, C]` (C = 1 or 3) as one PNG grid, ceil(sqrt(N)) per row."""
    from matplotlib.image import imsave

    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + 2), cols * (w + 2), c), np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, q * (w + 2) + 1 : q * (w + 2) + 1 + w] = img
    if c == 1:
        imsave(path, grid[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        imsave(path, grid)
